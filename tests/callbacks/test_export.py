"""``lightning-mm export``: LoRA merged into the base weights, each part loadable by its own library, outputs equal."""

from __future__ import annotations

import lightning as L
import pytest
import timm
import torch
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightning_mm.callbacks import Placement
from lightning_mm.cli import main
from lightning_mm.interop.parts import export_model, load_exported

PLACEMENTS = {
    "vision": Placement("lora", r=4, alpha=8.0),
    "projector": Placement("lora", r=2, alpha=4.0),
    "llm": Placement("lora", r=4, alpha=8.0),
}


@pytest.fixture(scope="module")
def adapted(build_module, tmp_path_factory):
    """A module with LoRA on every component and non-zero updates, and its Lightning-format checkpoint."""
    module = build_module(PLACEMENTS)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".lora_B." in name:
                p.normal_(std=0.05)
    module.eval()
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": L.__version__,
    }
    module.on_save_checkpoint(checkpoint)
    path = tmp_path_factory.mktemp("export") / "adapted.ckpt"
    torch.save(checkpoint, path)
    return module, path


def test_cli_export_merges_and_reloads_with_equal_outputs(adapted, vqa_batch, build_module, tmp_path):
    module, path = adapted
    out = tmp_path / "exported"
    assert main(["export", str(path), str(out)]) == 0
    merged = load_exported(out)
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    with torch.no_grad():
        expected = module(vqa_batch)  # (B, T, H), unmerged
        got = merged(vqa_batch["input_ids"], vqa_batch["attention_mask"], vqa_batch["pixel_values"])
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        base = build_module({c: Placement("frozen") for c in PLACEMENTS}).eval()  # same seed: the same base
        assert (base(vqa_batch) - expected).abs().max() > 1e-3  # the adapters matter, so equality means something

    llm = AutoModelForCausalLM.from_pretrained(out / "llm")  # plain transformers
    assert not any("lora" in k for k in llm.state_dict())
    for name, value in merged.llm.state_dict().items():
        assert torch.equal(llm.state_dict()[name], value), name
    tokenizer = AutoTokenizer.from_pretrained(out / "llm")
    assert tokenizer.convert_tokens_to_ids(module.spec.image_token) == module.image_token_id

    tower = timm.create_model(f"local-dir:{out / 'vision'}", pretrained=True)  # timm's own format
    assert tower.state_dict().keys() == merged.vision.model.state_dict().keys()
    assert all(torch.equal(v, merged.vision.model.state_dict()[k]) for k, v in tower.state_dict().items())


def test_export_of_a_live_module_leaves_its_adapters(adapted, tmp_path):
    module, _ = adapted
    n_lora = sum(isinstance(m, LoraLayer) for m in module.modules())
    export_model(module, tmp_path / "copy")
    assert sum(isinstance(m, LoraLayer) for m in module.modules()) == n_lora == 8 + 2 + 14
    assert (tmp_path / "copy" / "model_spec.json").exists() and (tmp_path / "copy" / "projector.safetensors").exists()
