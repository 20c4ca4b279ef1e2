"""QLoRA checkpoints: adapter-only and whole ones reload quantised, resume, predict, and export merged in float32."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM, LlavaForConditionalGeneration

from lightning_mm import MultimodalModule, export_hf
from lightning_mm.callbacks import AdapterOnlyCheckpoint
from lightning_mm.checkpoint.load import load_module
from lightning_mm.data import SyntheticVQADataModule
from lightning_mm.interop.parts import export_model
from lightning_mm.placement import apply_placements, dequantize, quantized_layers
from tests.placement.conftest import lora_placements

pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def qlora_run(fit_placed, tmp_path_factory):
    """One bf16-mixed QLoRA fit of ``tiny-llava`` (NF4 CLIP-style tower and LLM, LoRA r=4, projector full).

    Returns its module, its losses and the folder of its whole and adapter-only checkpoints.
    """
    root = tmp_path_factory.mktemp("qlora")
    module, trainer, losses = fit_placed(root, lora_placements("nf4", double_quant=True), model="tiny-llava")
    trainer.save_checkpoint(root / "whole.ckpt")
    trainer.callbacks.append(AdapterOnlyCheckpoint())  # the next save leaves the frozen base out
    trainer.save_checkpoint(root / "adapters.ckpt")
    return {"module": module, "root": root, "losses": losses}


@pytest.fixture(scope="module")
def batch(qlora_run):
    module = qlora_run["module"]
    dm = SyntheticVQADataModule(train_samples=4, val_samples=4, batch_size=4)
    dm.bind(module.data_contract)
    return next(iter(dm.val_dataloader()))


def _hidden(module: MultimodalModule, batch: dict) -> torch.Tensor:
    apply_placements(module.network, module.placements, torch.bfloat16)  # as stored under bf16-mixed
    module.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return module(batch).float()  # (B, T, H)


def test_an_adapter_only_checkpoint_holds_the_adapters_and_the_placement(qlora_run):
    saved = torch.load(qlora_run["root"] / "adapters.ckpt", weights_only=True)
    trainable = {n for n, p in qlora_run["module"].named_parameters() if p.requires_grad}
    assert set(saved["state_dict"]) == trainable  # no packed weights, no absmax / quant_map / nested statistics
    assert saved["hyper_parameters"]["placements"]["llm"]["quantize"] == "nf4"
    whole = torch.load(qlora_run["root"] / "whole.ckpt", weights_only=True)
    assert any(k.endswith(".weight.absmax") for k in whole["state_dict"])  # a whole one keeps them


@pytest.mark.parametrize("name", ["adapters.ckpt", "whole.ckpt"])
def test_a_quantised_checkpoint_reloads_quantised_with_the_same_outputs(qlora_run, batch, name):
    L.seed_everything(0, verbose=False)  # an adapter-only checkpoint rebuilds its random base under the run's seed
    loaded = MultimodalModule.load_from_checkpoint(qlora_run["root"] / name)
    assert loaded.base_mismatch == []
    assert len(quantized_layers(loaded.network)) == len(quantized_layers(qlora_run["module"].network)) > 0
    torch.testing.assert_close(_hidden(loaded, batch), _hidden(qlora_run["module"], batch), rtol=0, atol=0)


def test_an_adapter_only_qlora_checkpoint_resumes(qlora_run, fit_placed, tmp_path):
    path = qlora_run["root"] / "adapters.ckpt"
    placements = lora_placements("nf4", double_quant=True)
    module, trainer, losses = fit_placed(
        tmp_path, placements, max_epochs=2, callbacks=[AdapterOnlyCheckpoint()], ckpt_path=path, model="tiny-llava"
    )
    assert trainer.global_step == 4 and len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert quantized_layers(module.network.llm)


def test_predict_and_generation_run_on_a_quantised_checkpoint(qlora_run, batch):
    module = load_module(qlora_run["root"] / "adapters.ckpt", seed=0)  # what `chat` and `predict` load
    rows = module.predict_step(batch, 0)
    assert len(rows) == batch["input_ids"].shape[0] and all(isinstance(r["prediction"], str) for r in rows)


def test_export_dequantises_merges_in_float32_and_writes_the_dtype_asked(qlora_run, tmp_path):
    module = load_module(qlora_run["root"] / "adapters.ckpt", seed=0)
    layer = module.network.llm.model.layers[1].mlp.down_proj
    reference = layer.base_layer
    dense = torch.nn.Sequential(reference)
    dequantize(dense, torch.float32)
    scale = layer.scaling["default"]
    delta = (layer.lora_B["default"].weight @ layer.lora_A["default"].weight).detach() * scale  # (out, in)
    expected = dense[0].weight.detach() + delta
    export_model(module, tmp_path / "parts")
    llm = AutoModelForCausalLM.from_pretrained(tmp_path / "parts" / "llm")
    assert {p.dtype for p in llm.parameters()} == {torch.float32}
    torch.testing.assert_close(llm.model.layers[1].mlp.down_proj.weight, expected, rtol=0, atol=1e-6)
    assert quantized_layers(module.network)  # the module keeps its quantised layers and adapters
    out = export_hf(module, tmp_path / "hf", dtype=torch.bfloat16)
    hf = LlavaForConditionalGeneration.from_pretrained(out)
    assert {p.dtype for p in hf.parameters()} == {torch.bfloat16}
    torch.testing.assert_close(
        hf.model.language_model.layers[1].mlp.down_proj.weight.float(), expected.bfloat16().float(), rtol=0, atol=0
    )
