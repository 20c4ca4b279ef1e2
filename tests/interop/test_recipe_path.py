"""The whole recipes/interop path: import -> LoRA fine-tune with placement callbacks -> export -> transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from lightning_mm.checkpoint.load import load_module
from lightning_mm.cli import main
from tests.helpers import RECIPE_ON_LLAVA_ASSETS
from tests.interop.conftest import batch, make_hf_llava, rel_err, save_checkpoint

RECIPE = Path(__file__).parents[2] / "recipes" / "interop" / "llava15_7b_lora.yaml"


@pytest.mark.slow
def test_recipe_fine_tunes_an_imported_checkpoint_and_exports_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = save_checkpoint(make_hf_llava("clip-llama").float(), tmp_path / "released")
    rc = main(
        [
            "fit",
            "--config",
            str(RECIPE),
            f"--model.init_args.model=hf:{source.name}",  # relative, as a user types it
            *RECIPE_ON_LLAVA_ASSETS,
        ]
    )
    assert rc == 0
    checkpoint = next((tmp_path / "runs" / "llava15_7b_lora").rglob("last.ckpt"))
    monkeypatch.chdir(checkpoint.parent)  # exported from elsewhere: the recorded base must still be found
    assert main(["export", str(checkpoint), str(tmp_path / "mine"), "--format", "hf"]) == 0

    module = load_module(checkpoint)  # adapter-only: the imported base + the trained adapters
    assert {p.mode for p in module.placements.values()} == {"frozen", "full", "lora"}
    hf = LlavaForConditionalGeneration.from_pretrained(tmp_path / "mine").eval()
    b = batch(pixel_dtype=torch.float32)
    net = module.network.eval()
    with torch.no_grad():
        ours = net.lm_head(net(**b))
        theirs = hf(**b).logits
        released = LlavaForConditionalGeneration.from_pretrained(source).eval()(**b).logits
    real = b["attention_mask"].bool()
    assert rel_err(ours[real], theirs[real]) < 1e-5
    assert (released[real] - theirs[real]).abs().max() > 1e-4  # the fine-tuning changed the model
