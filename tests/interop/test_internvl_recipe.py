"""recipes/internvl: LoRA fine-tuning of an imported InternVL checkpoint trains under a Trainer, predicts, exports
to transformers and chats with each image at its own tiling."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch
from transformers import AutoModelForImageTextToText

from lightning_mm.chat import ChatSession, load_chat_model
from lightning_mm.checkpoint.load import load_module
from lightning_mm.cli import main
from lightning_mm.data import LlavaDataModule
from lightning_mm.interop.export import to_hf_model
from lightning_mm.placement import merge_lora
from tests.interop.conftest import ASSETS, rel_err
from tests.interop.internvl_fixtures import (
    CONTEXT,
    END,
    PER_TILE,
    START,
    TILE,
    internvl_tokenizer,
    make_hf,
    save_checkpoint,
)

RECIPE = Path(__file__).parents[2] / "recipes" / "internvl" / "internvl3_1b_lora.yaml"
DATA = ASSETS / "llava"


@pytest.mark.slow
def test_recipe_fine_tunes_predicts_exports_and_chats(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    released = make_hf().float()
    source = save_checkpoint(released, internvl_tokenizer(), tmp_path / "released")
    main(
        [
            "fit",
            "--config",
            str(RECIPE),
            f"--model.init_args.model=hf:{source.name}",
            "--model.init_args.activation_checkpointing=false",
            f"--data.init_args.train_path={DATA / 'llava_tiny.json'}",
            f"--data.init_args.image_folder={DATA}",
            "--data.init_args.num_workers=0",
            "--data.init_args.batch_size=2",
            "--trainer.accelerator=cpu",
            "--trainer.precision=32-true",
            "--trainer.max_steps=2",
            "--trainer.accumulate_grad_batches=1",
            "--trainer.enable_progress_bar=false",
        ]
    )
    checkpoint = next((tmp_path / "runs" / "internvl3_1b_lora").rglob("last.ckpt"))
    module = load_module(checkpoint)  # adapter-only: the imported base + the trained adapters
    assert {c: p.mode for c, p in module.placements.items()} == {
        "vision": "frozen",
        "projector": "frozen",
        "llm": "lora",
    }

    # predict: greedy answers for the committed conversations, each image at its own tiling
    data = LlavaDataModule(
        train_path=str(DATA / "llava_tiny.json"),
        predict_path=str(DATA / "llava_tiny.json"),
        image_folder=str(DATA),
        template="chatml",
        batch_size=2,
        num_workers=0,
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    module.max_new_tokens = 3
    rows = [row for batch in trainer.predict(module, datamodule=data) for row in batch]
    assert rows and all(isinstance(r["prediction"], str) and r["prompt"] for r in rows)
    batch = next(iter(data.predict_dataloader()))
    ids = batch["input_ids"][0].tolist()
    first = ids.index(CONTEXT)
    assert ids[first - 1] == START and ids.count(CONTEXT) == int(batch["tiles_per_image"][0]) * PER_TILE
    assert ids[first + ids.count(CONTEXT)] == END

    # the merged network is transformers' model after the fine-tuning
    network = copy.deepcopy(module.network).eval()
    merge_lora(network)
    exported = to_hf_model(network, "internvl")
    gen = torch.Generator().manual_seed(0)
    ids = torch.tensor([[1, 20, START, *([CONTEXT] * PER_TILE), END, 30, 31]])  # one 32 px tile
    pixels = torch.rand(1, 3, TILE, TILE, generator=gen) * 2 - 1
    with torch.no_grad():
        ours = network.lm_head(network(ids, None, pixels))
        theirs = exported(input_ids=ids, pixel_values=pixels).logits
        before = released.eval()(input_ids=ids, pixel_values=pixels).logits
    assert rel_err(ours, theirs) < 1e-5
    assert (before - theirs).abs().max() > 1e-5  # the fine-tuning changed the model

    # the command writes transformers' InternVL; chat on the folder tiles each image as the layout does
    out = tmp_path / "hf"
    assert main(["export", str(checkpoint), str(out), "--format", "hf"]) == 0
    loaded = AutoModelForImageTextToText.from_pretrained(out).eval()
    assert type(loaded).__name__ == "InternVLForConditionalGeneration"
    with torch.no_grad():
        assert rel_err(loaded(input_ids=ids, pixel_values=pixels).logits, theirs) < 1e-5
    model = load_chat_model(str(out))
    session = ChatSession(model, [str(DATA / "images" / "blue_wide.png")], max_new_tokens=2)
    size = tuple(session.image_sizes[0].tolist())
    assert int(session.tiles_per_image[0]) == model.contract.layout.num_tiles(size) > 1
    prompt = session.prompt_ids("What is it?")[0].tolist()
    assert prompt.count(model.contract.image_token_id) == model.contract.layout.num_image_tokens(size)
    assert isinstance(session.ask("What is it?"), str)
