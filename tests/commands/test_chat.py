"""``lightning-mm chat``: streamed answers about images from a checkpoint or an exported folder, one or many turns."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image

from lightning_mm import create_model
from lightning_mm.chat import ChatModel, ChatSession, load_chat_model, missing_downloads, weight_sources
from lightning_mm.checkpoint.load import load_module
from lightning_mm.commands.chat import run
from lightning_mm.data import SyntheticVQADataset
from lightning_mm.data.synthetic import render_scene
from lightning_mm.interop.export import export_hf
from lightning_mm.interop.parts import export_model
from lightning_mm.zoo import get_spec

QUESTION = "What color is the shape?"
CHAT = ("-m", "lightning_mm.cli", "chat")


@pytest.fixture(scope="module")
def scene_images(tmp_path_factory) -> list[str]:
    """Two PNG files of the synthetic task's scenes (32 px, the tiny tower's input size)."""
    root = tmp_path_factory.mktemp("images")
    paths = []
    for k, (color, shape, position) in enumerate([("red", "square", "top-left"), ("blue", "circle", "bottom-right")]):
        img = render_scene(32, color, shape, position, np.random.default_rng(k))  # (3, 32, 32) in [0, 1]
        path = root / f"{color}_{shape}.png"
        Image.fromarray((img.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def exported(quickstart_run, tmp_path_factory) -> Path:
    """The quickstart run's checkpoint written by ``export``."""
    return export_model(load_module(quickstart_run["ckpt"]), tmp_path_factory.mktemp("export") / "model")


def test_a_question_about_an_image_from_a_checkpoint_streams_the_greedy_answer(
    quickstart_run, scene_images, run_python
):
    proc = run_python(*CHAT, str(quickstart_run["ckpt"]), "--image", scene_images[0], QUESTION, "--max-new-tokens", "6")
    expected = ChatSession(load_chat_model(str(quickstart_run["ckpt"])), scene_images[:1], max_new_tokens=6).ask(
        QUESTION
    )
    assert expected  # a non-empty answer
    assert proc.stdout == expected + "\n"


def test_questions_from_stdin_are_one_conversation_with_an_exported_folder(
    quickstart_run, exported, scene_images, run_python
):
    questions = [QUESTION, "Which color does the shape have?"]
    proc = run_python(
        *CHAT, str(exported), "--image", scene_images[1], "--max-new-tokens", "6", stdin="\n".join(questions) + "\n"
    )
    session = ChatSession(load_chat_model(str(exported)), scene_images[1:], max_new_tokens=6)
    answers = [session.ask(q) for q in questions]
    assert proc.stdout.splitlines() == answers
    # the second prompt holds the first turn and its answer; the image only once
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]
    second = session.model.contract.tokenizer.decode(session.prompt_ids(questions[1])[0])
    assert second.count(answers[0]) >= 1 and second.count("<image>") == session.model.contract.num_image_tokens

    # the exported folder answers as the checkpoint does
    from_ckpt = ChatSession(load_chat_model(str(quickstart_run["ckpt"])), scene_images[1:], max_new_tokens=6)
    assert [from_ckpt.ask(q) for q in questions] == answers


def test_the_prompt_is_the_one_the_model_was_trained_on(quickstart_run):
    model = load_chat_model(str(quickstart_run["ckpt"]))
    c = model.contract
    data = SyntheticVQADataset(
        c.tokenizer,
        c.num_image_tokens,
        c.image_data_config,
        c.image_token_id,
        num_samples=1,
        question_types=["color"],
        generation=True,
    )
    sample = data[0]
    question = data.scene(0)["questions"][0][1]
    image = torch.zeros(1, *c.image_data_config["input_size"])
    session = ChatSession(model)
    session.pixel_values, session.image_paths = image, ["scene.png"]
    session.image_prompts = [c.layout.prompt_ids(tuple(c.image_data_config["input_size"][1:]))]
    assert torch.equal(session.prompt_ids(question)[0], sample["input_ids"])


def test_repeated_images_each_get_a_placeholder(quickstart_run, scene_images):
    model = load_chat_model(str(quickstart_run["ckpt"]))
    session = ChatSession(model, scene_images, max_new_tokens=2)
    ids = session.prompt_ids(QUESTION)
    assert int((ids == model.contract.image_token_id).sum()) == 2 * model.contract.num_image_tokens
    assert session.pixel_values.shape[0] == 2
    session.ask(QUESTION)
    assert session.messages[0]["content"].count("<image>") == 2
    assert (
        int((session.prompt_ids(QUESTION) == model.contract.image_token_id).sum())
        == 2 * model.contract.num_image_tokens
    )


def test_a_folder_that_is_not_an_export_and_a_missing_image_are_clear_errors(tmp_path, quickstart_run, capsys):
    assert run([str(tmp_path), QUESTION]) == 2
    assert "model_spec.json or config.json" in capsys.readouterr().err
    assert run([str(quickstart_run["ckpt"]), "--image", str(tmp_path / "nope.png"), QUESTION]) == 2
    assert "nope.png" in capsys.readouterr().err
    assert run([str(tmp_path / "last.ckpt"), QUESTION]) == 2
    assert "no such checkpoint file or export folder" in capsys.readouterr().err


def test_a_folder_in_transformers_format_answers_as_the_module(tmp_path, scene_images):
    torch.manual_seed(0)
    module = create_model("tiny-llava")
    folder = export_hf(module, tmp_path / "hf")
    mine = ChatModel.from_module(module.eval())
    expected = ChatSession(mine, scene_images[:1], max_new_tokens=4).ask(QUESTION)
    imported = load_chat_model(str(folder))
    # the folder does not record the chat template the model was trained with: the import takes LLaVA-1.5's
    imported.contract = dataclasses.replace(imported.contract, template=mine.contract.template, stop_token_ids=[])
    assert ChatSession(imported, scene_images[:1], max_new_tokens=4).ask(QUESTION) == expected


def test_a_tiling_model_reads_each_image_at_its_own_size():
    """LLaVA-NeXT: each image's own tiles and token run (by its size) in the prompt, the tiles passed to generation."""
    assets = Path(__file__).resolve().parents[1] / "assets"
    torch.manual_seed(0)
    module = create_model("tiny-llava-next", tokenizer=str(assets / "tokenizer")).eval()
    model = ChatModel.from_module(module)
    paths = [str(assets / "llava" / "images" / name) for name in ("blue_wide.png", "green_tall.png")]
    session = ChatSession(model, images=paths, max_new_tokens=3)
    sizes = [(im.height, im.width) for im in map(Image.open, paths)]
    assert session.image_sizes.tolist() == [list(s) for s in sizes]
    assert session.pixel_values.shape[0] == int(session.tiles_per_image.sum()) > len(paths)
    ids = session.prompt_ids("What differs?")[0]
    expected = sum(len(model.contract.layout.prompt_ids(s)) for s in sizes)
    assert int((ids == model.contract.image_token_id).sum()) == expected != 2 * module.num_image_tokens
    assert isinstance(session.ask("What differs?"), str)  # the network takes the tiles (a count mismatch raises)


def test_a_zoo_name_without_weights_chats_offline_and_one_with_weights_names_its_downloads(
    monkeypatch, tmp_path, scene_images, capsys
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert weight_sources(get_spec("tiny")) == []  # built with a random initialisation, nothing to download
    assert run(["tiny", "--image", scene_images[0], QUESTION, "--max-new-tokens", "2"]) == 0
    assert missing_downloads(get_spec("llava-1.5-7b-components")) == [
        "timm/vit_large_patch14_clip_336.openai",
        "lmsys/vicuna-7b-v1.5",
    ]
    capsys.readouterr()
    assert run(["llava-1.5-7b-components", QUESTION]) == 2
    err = capsys.readouterr().err
    assert "timm/vit_large_patch14_clip_336.openai, lmsys/vicuna-7b-v1.5" in err and "HF_HUB_OFFLINE" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
