"""A family registered from outside the package trains, predicts and chats without any change to the package."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from lightning_mm import MultimodalModule
from lightning_mm.chat import ChatSession, load_chat_model
from lightning_mm.cli import main
from lightning_mm.commands.zoo import image_tokens
from lightning_mm.data import SyntheticVQADataModule
from lightning_mm.data.scenes import render_scene
from lightning_mm.zoo import get_spec
from tests.families.toy_family import END, MODEL, START, TEMPLATE, FramedLayout, register

register()


def _frames(ids: torch.Tensor, image_id: int, start: int, end: int) -> list[tuple[int, int]]:
    """(token before, token after) each run of image tokens in a 1-D id tensor."""
    ids = ids.tolist()
    runs, k = [], 0
    while k < len(ids):
        if ids[k] == image_id:
            j = k
            while j < len(ids) and ids[j] == image_id:
                j += 1
            runs.append((ids[k - 1], ids[j] if j < len(ids) else None))
            k = j
        else:
            k += 1
    return runs


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("toy_family")
    L.seed_everything(0, verbose=False)
    module = MultimodalModule(model=MODEL, max_new_tokens=3)
    module.configure_model()
    before = {k: v.clone() for k, v in module.network.state_dict().items()}
    data = SyntheticVQADataModule(train_samples=32, val_samples=8, predict_samples=4, batch_size=8)
    trainer = L.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        num_sanity_val_steps=0,
        limit_val_batches=1,
    )
    trainer.fit(module, data)
    ckpt = root / "toy.ckpt"
    trainer.save_checkpoint(ckpt)
    predictions = trainer.predict(module, datamodule=data)
    image = root / "scene.png"
    scene = render_scene(32, "red", "square", "top-left", np.random.default_rng(0))  # (3, 32, 32) in [0, 1]
    Image.fromarray((scene.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(image)
    changed = [k for k, v in module.network.state_dict().items() if not torch.equal(v, before[k])]
    return {
        "changed": changed,
        "module": module,
        "data": data,
        "trainer": trainer,
        "ckpt": ckpt,
        "predictions": predictions,
        "image": image,
    }


def test_the_family_owns_its_layout_and_template(trained):
    module, data = trained["module"], trained["data"]
    contract = module.data_contract
    assert isinstance(contract.layout, FramedLayout) and contract.template.name == TEMPLATE
    assert data.contract is contract  # the datamodule bound to the model's contract under the Trainer
    batch = next(iter(data.train_dataloader()))
    start, end = contract.tokenizer.convert_tokens_to_ids([START, END])
    for row in batch["input_ids"]:
        assert _frames(row, contract.image_token_id, start, end) == [(start, end)]
    assert int((batch["input_ids"][0] == contract.image_token_id).sum()) == module.num_image_tokens == 16
    assert image_tokens(get_spec(MODEL)) == "16+2"


def test_it_trains_and_predicts(trained):
    assert trained["trainer"].global_step == 4
    changed = trained["changed"]  # every component took optimiser steps
    assert all(any(k.startswith(f"{c}.") for k in changed) for c in ("vision", "projector", "llm"))
    rows = [row for batch in trained["predictions"] for row in batch]
    assert len(rows) == 4 and all(isinstance(r["prediction"], str) for r in rows)


def test_it_chats_from_its_checkpoint(trained, capsys):
    model = load_chat_model(str(trained["ckpt"]))
    assert isinstance(model.contract.layout, FramedLayout)
    session = ChatSession(model, [str(trained["image"])], max_new_tokens=3)
    ids = session.prompt_ids("What color is the shape?")[0]
    start, end = model.contract.tokenizer.convert_tokens_to_ids([START, END])
    assert _frames(ids, model.contract.image_token_id, start, end) == [(start, end)]
    answer = session.ask("What color is the shape?")
    assert isinstance(answer, str)
    assert main(["chat", str(trained["ckpt"]), "--image", str(trained["image"]), "--max-new-tokens", "3", "What?"]) == 0
    assert capsys.readouterr().out.strip() == ChatSession(model, [str(trained["image"])], max_new_tokens=3).ask("What?")


def test_an_unknown_family_is_a_config_error_naming_the_key():
    with pytest.raises(ValueError, match=r"model_overrides.family: unknown model family 'toy_framd'.*'toy_framed'"):
        MultimodalModule(model=MODEL, model_overrides={"family": "toy_framd"})


def test_no_module_of_the_package_names_a_family():
    """Outside ``families/`` (and the family registry's list of built-ins), no module names a built-in family."""
    package = Path(__file__).resolve().parents[2] / "lightning_mm"
    words = (
        "smolvlm",
        "llava_next",
        "llava-next",
        "onevision",
        "idefics3",
        "anyres",
        "internvl",
        "gemma3",
        "paligemma",
    )
    offenders = []
    for path in package.rglob("*.py"):
        rel = path.relative_to(package).as_posix()
        if rel.startswith("families/"):
            continue
        text = path.read_text().lower()
        offenders += [f"{rel}: {w}" for w in words if w in text]
    assert not offenders, offenders
