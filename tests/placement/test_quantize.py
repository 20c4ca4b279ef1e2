"""QLoRA: bitsandbytes-quantised frozen layers, exact against their dequantised weights, and the errors before training."""

from __future__ import annotations

import copy
import sys
from types import SimpleNamespace

import pytest
import timm
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from lightning_mm import MultimodalModule, create_model
from lightning_mm.callbacks import ComponentPlacement, LoRAComponent
from lightning_mm.errors import ConfigError
from lightning_mm.placement import (
    Placement,
    dequantize,
    quantize_component,
    quantized_layers,
    quantized_linear_bytes,
    stored_bytes,
)
from lightning_mm.zoo import get_spec, load_tokenizer
from tests.placement.conftest import lora_placements, randomize_lora_b, step

bnb = pytest.importorskip("bitsandbytes")

LLAMA = {  # a 2-layer Llama saved with save_pretrained, standing in for a hub checkpoint
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}
TOWER = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def _plain_linear(module: nn.Module) -> set[str]:
    """Paths of the plain nn.Linear layers of ``module`` (LoRA's own matrices left out)."""
    return {n for n, m in module.named_modules() if type(m) is nn.Linear and ".lora_" not in f".{n}"}


@pytest.mark.parametrize(("quantize", "double_quant"), [("nf4", False), ("nf4", True), ("fp4", False)])
def test_a_4bit_step_equals_the_step_on_its_dequantised_weights(build_module, vqa_batch, quantize, double_quant):
    """Loss to 1e-5 and LoRA gradients to 1e-4 against plain nn.Linear layers holding the dequantised bf16 weights."""
    module = build_module(lora_placements(quantize, double_quant, storage_dtype="bfloat16"))
    randomize_lora_b(module)
    reference = copy.deepcopy(module)
    replaced = dequantize(reference.network, torch.bfloat16)
    assert replaced == len(quantized_layers(module.network)) > 0 and not quantized_layers(reference.network)
    loss, grads = step(module, vqa_batch)
    loss_ref, grads_ref = step(reference, vqa_batch)
    torch.testing.assert_close(loss, loss_ref, rtol=0, atol=1e-5)
    lora = [n for n in grads if ".lora_" in n]
    assert any(".vision." in n for n in lora) and any(".llm." in n for n in lora)
    for name in lora:
        assert grads[name].abs().sum() > 0, name
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=0, atol=1e-4)


def test_every_linear_layer_but_the_output_projection_is_quantised(build_module):
    plain = build_module(lora_placements())
    module = build_module(lora_placements("nf4"))
    llm_layers = set(quantized_layers(module.network.llm))
    assert llm_layers == _plain_linear(plain.network.llm) - {"lm_head"}
    assert set(quantized_layers(module.network.vision)) == _plain_linear(plain.network.vision)  # qkv, proj, fc1, fc2
    layer = module.network.llm.model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.dtype == torch.uint8
    rows = {r["component"]: r for r in module.placement_table()}
    plain_rows = {r["component"]: r for r in plain.placement_table()}
    assert rows["llm"]["total"] == plain_rows["llm"]["total"]  # packed weights counted at their unpacked size
    assert rows["llm"]["mode"] == "lora r=4 a=8 nf4"


def test_nf4_weights_take_under_0_3_of_their_bf16_bytes(build_module):
    module = build_module({"llm": Placement("lora", r=4, quantize="nf4")})
    layers = quantized_layers(module.network.llm)
    nf4 = sum(stored_bytes(layer)["frozen"] for layer in layers.values())
    bf16 = sum(2 * layer.in_features * layer.out_features for layer in layers.values())
    assert nf4 <= 0.30 * bf16
    assert nf4 == sum(quantized_linear_bytes(m.out_features, m.in_features, "nf4") for m in layers.values())


def test_a_quantised_layer_computes_the_same_in_eval_and_keeps_its_format(build_module, vqa_batch):
    """bitsandbytes repacks 4-bit weights for CPU inference on an eval forward (no backward there): switched off."""
    module = build_module(lora_placements("nf4"))
    randomize_lora_b(module)
    loss, grads = step(module, vqa_batch)
    module.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        module(vqa_batch)
    assert not any(
        getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in quantized_layers(module).values()
    )
    loss_after, grads_after = step(module, vqa_batch)
    torch.testing.assert_close(loss_after, loss, rtol=0, atol=0)
    for name, g in grads.items():
        torch.testing.assert_close(grads_after[name], g, rtol=0, atol=0)


def test_int8_lora_trains_close_to_float(build_module, vqa_batch):
    reference = build_module(lora_placements(storage_dtype="bfloat16"))
    module = build_module(lora_placements("int8", storage_dtype="bfloat16"))
    randomize_lora_b(reference)
    randomize_lora_b(module)
    assert isinstance(module.network.llm.model.layers[0].mlp.up_proj.base_layer, bnb.nn.Linear8bitLt)
    loss_ref, _ = step(reference, vqa_batch)
    loss, grads = step(module, vqa_batch)
    torch.testing.assert_close(loss, loss_ref, rtol=2e-2, atol=0)
    assert all(g.abs().sum() > 0 for n, g in grads.items() if ".lora_A." in n)
    dense = copy.deepcopy(module)
    dequantize(dense.network, torch.float32)  # int8 rows x scale / 127
    w = dense.network.llm.model.layers[0].mlp.up_proj.base_layer.weight
    w_ref = reference.network.llm.model.layers[0].mlp.up_proj.base_layer.weight.float()
    assert (w - w_ref).abs().max() <= w_ref.abs().max() / 127  # int8: within one step of the row's scale


def test_quantising_a_fully_trained_component_or_the_projector_is_refused():
    with pytest.raises(ConfigError, match=r"quantize='nf4' on the llm, which trains fully"):
        ComponentPlacement("llm", "full", quantize="nf4")
    with pytest.raises(ConfigError, match=r"quantize='int8' on the projector"):
        LoRAComponent("projector", quantize="int8")


def test_a_fully_trained_quantised_placement_fails_when_applied(build_module):
    with pytest.raises(ConfigError, match=r"on the vision, which trains fully"):
        build_module({"vision": Placement("full", quantize="nf4")})


def test_bad_quantize_settings_are_config_errors():
    with pytest.raises(ConfigError, match=r"Unknown quantize 'nf5'; known: nf4, fp4, int8"):
        Placement("lora", quantize="nf5")
    with pytest.raises(ConfigError, match=r"double_quant applies to 4-bit quantize"):
        Placement("lora", quantize="int8", double_quant=True)


def test_a_layer_bitsandbytes_cannot_quantise_is_named():
    gpt2_like = nn.Sequential(nn.Linear(8, 8), Conv1D(8, 8))
    with pytest.raises(ConfigError, match=r"the llm's layer '1' is a Conv1D"):
        quantize_component(gpt2_like, "llm", "nf4")
    assert type(gpt2_like[0]) is nn.Linear  # nothing was quantised before the error
    attention = nn.Module()
    attention.attn = nn.MultiheadAttention(8, 2)  # its out_proj weight is read directly by the attention function
    with pytest.raises(ConfigError, match=r"the vision's layer 'attn.out_proj' is a NonDynamicallyQuantizableLinear"):
        quantize_component(attention, "vision", "nf4")


def test_without_bitsandbytes_the_error_names_the_extra(build_module, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes -> ImportError
    with pytest.raises(
        ConfigError, match=r'quantize=.nf4. on the llm needs bitsandbytes.*pip install "lightning_mm\[quant\]"'
    ):
        build_module({"llm": Placement("lora", r=4, quantize="nf4")})


def test_fsdp2_sharding_of_a_quantised_component_is_refused(build_module):
    module = build_module({"llm": Placement("lora", r=4, quantize="nf4"), "vision": Placement("frozen")})
    module._device_mesh = object()  # what ModelParallelStrategy hands the module
    trainer = SimpleNamespace(precision="bf16-mixed", strategy=SimpleNamespace())
    with pytest.raises(ConfigError, match=r"cannot shard quantised components \(llm \(nf4\)\)"):
        module.apply_storage(trainer)
    module._device_mesh = None
    module.apply_storage(trainer)  # one process (or DDP): fine


def test_a_pretrained_llm_is_quantised_while_loading_as_the_layer_by_layer_path_does(tmp_path):
    """transformers' BitsAndBytesConfig and quantize_component give the same packed bytes for the same weights."""
    torch.manual_seed(0)
    vocab = len(load_tokenizer(get_spec("tiny")))
    llm = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", vocab_size=vocab, **LLAMA))
    llm.save_pretrained(tmp_path / "llm")
    tower = timm.create_model("vit_tiny_patch16_224", num_classes=0, **TOWER)
    torch.save(tower.state_dict(), tmp_path / "tower.pth")
    overrides = {
        "llm": str(tmp_path / "llm"),
        "llm_config": {"model_type": "llama", **LLAMA},
        "vision_kwargs": {**TOWER, "pretrained_cfg_overlay": {"file": str(tmp_path / "tower.pth")}},
    }
    loaded = create_model("tiny", pretrained=True, **overrides)  # float32 weights, then quantised layer by layer
    loaded.set_placement("llm", Placement("lora", r=4, quantize="nf4"))
    quantized = MultimodalModule(model="tiny", pretrained=True, model_overrides=overrides)
    quantized.set_placement("llm", Placement("lora", r=4, quantize="nf4"))
    quantized.configure_model()  # transformers' from_pretrained(quantization_config=...)
    ours, theirs = quantized_layers(loaded.network.llm), quantized_layers(quantized.network.llm)
    assert sorted(ours) == sorted(theirs) and ours
    for name, layer in ours.items():
        assert torch.equal(layer.weight.data, theirs[name].weight.data), name
        torch.testing.assert_close(layer.weight.quant_state.absmax, theirs[name].weight.quant_state.absmax)
