"""recipes/smolvlm: LoRA fine-tuning of an imported SmolVLM checkpoint runs, and the result exports to transformers."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText

from lightning_mm.chat import ChatSession, load_chat_model
from lightning_mm.checkpoint.load import load_module
from lightning_mm.cli import main
from lightning_mm.interop.export import to_hf_model
from lightning_mm.placement import merge_lora
from tests.helpers import RECIPE_ON_LLAVA_ASSETS
from tests.interop.conftest import ASSETS, rel_err
from tests.interop.smolvlm_fixtures import TILE, make_hf, save_checkpoint, smolvlm_tokenizer

RECIPE = Path(__file__).parents[2] / "recipes" / "smolvlm" / "smolvlm_256m_lora.yaml"


@pytest.mark.slow
def test_recipe_fine_tunes_an_imported_checkpoint_and_exports_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    released = make_hf("smolvlm")
    source = save_checkpoint(released, smolvlm_tokenizer(), tmp_path / "released")
    rc = main(
        [
            "fit",
            "--config",
            str(RECIPE),
            f"--model.init_args.model=hf:{source.name}",
            *RECIPE_ON_LLAVA_ASSETS,
        ]
    )
    assert rc == 0
    checkpoint = next((tmp_path / "runs" / "smolvlm_256m_lora").rglob("last.ckpt"))
    module = load_module(checkpoint)  # adapter-only: the imported base + the trained adapters
    assert {c: p.mode for c, p in module.placements.items()} == {"vision": "frozen", "projector": "full", "llm": "lora"}
    network = copy.deepcopy(module.network).eval()
    merge_lora(network)
    exported = to_hf_model(network, "smolvlm")
    gen = torch.Generator().manual_seed(0)
    ids = torch.tensor([[1, 20, 21, *([4] * 4), 30, 31]])  # one 32 px view: 4 image tokens
    pixels = torch.rand(1, 1, 3, TILE, TILE, generator=gen) * 2 - 1
    with torch.no_grad():
        ours = network.lm_head(network(ids, None, pixels[0]))
        theirs = exported(input_ids=ids, pixel_values=pixels).logits
        before = released.eval()(input_ids=ids, pixel_values=pixels).logits
    assert rel_err(ours, theirs) < 1e-5
    assert (before - theirs).abs().max() > 1e-5  # the fine-tuning changed the model

    # the command writes the family's transformers format (Idefics3, the released class); it loads and answers alike
    out = tmp_path / "hf"
    assert main(["export", str(checkpoint), str(out), "--format", "hf"]) == 0
    loaded = AutoModelForImageTextToText.from_pretrained(out).eval()
    assert type(loaded).__name__ == "Idefics3ForConditionalGeneration"
    with torch.no_grad():
        assert rel_err(loaded(input_ids=ids, pixel_values=pixels).logits, theirs) < 1e-5
    # chat on the exported folder reads each image at its own size: its tiles and its run of marker and image tokens
    model = load_chat_model(str(out))
    image = ASSETS / "llava" / "images" / "blue_wide.png"
    session = ChatSession(model, [str(image)], max_new_tokens=2)
    size = tuple(session.image_sizes[0].tolist())
    assert int(session.tiles_per_image[0]) == model.contract.layout.num_tiles(size) > 1
    prompt = session.prompt_ids("What is it?")[0].tolist()
    assert prompt.count(model.contract.image_token_id) == model.contract.layout.num_image_tokens(size)
