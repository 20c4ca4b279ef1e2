"""Weight bytes: the meta-build prediction equals what a built network stores, in every storage setting."""

from __future__ import annotations

import pytest
import torch

from lightning_mm.placement import Placement, apply_placements, predicted_bytes, stored_bytes
from lightning_mm.zoo import build_network, get_spec
from tests.placement.conftest import lora_placements

pytest.importorskip("bitsandbytes")

SETTINGS = [(None, False), ("nf4", False), ("nf4", True), ("fp4", True), ("int8", False)]


@pytest.mark.parametrize("storage", [None, torch.bfloat16], ids=["as-built", "bf16"])
@pytest.mark.parametrize(("quantize", "double_quant"), SETTINGS)
def test_the_meta_prediction_equals_the_stored_bytes(build_module, quantize, double_quant, storage):
    placements = lora_placements(quantize, double_quant)
    placements["vision"] = Placement("frozen", quantize=quantize, double_quant=double_quant)
    module = build_module(placements)
    apply_placements(module.network, module.placements, storage)
    with torch.device("meta"):
        network = build_network(get_spec("tiny"), module.tokenizer)
    predicted = predicted_bytes(network, placements, storage)
    for component in ("vision", "projector", "llm"):
        assert predicted[component] == stored_bytes(getattr(module.network, component)), component


def test_llava_7b_weights_per_setting():
    """LLaVA-1.5-7B, LoRA r=128 on every LLM linear: bf16 halves the frozen bytes, NF4 + double quant < 0.3 of bf16."""
    lora = {"projector": Placement("full"), "vision": Placement("frozen")}
    results = {}
    for label, llm in {
        "fp32": Placement("lora", r=128, storage_dtype="float32"),
        "bf16": Placement("lora", r=128, storage_dtype="bfloat16"),
        "nf4+dq": Placement("lora", r=128, quantize="nf4", double_quant=True),
    }.items():
        with torch.device("meta"):
            network = build_network(get_spec("llava-1.5-7b"))
        results[label] = predicted_bytes(network, {**lora, "llm": llm}, torch.bfloat16)["llm"]
    assert results["bf16"]["frozen"] * 2 == results["fp32"]["frozen"]
    assert results["bf16"]["trainable"] == results["fp32"]["trainable"] > 0  # float32 adapters either way
    assert results["nf4+dq"]["frozen"] <= 0.30 * results["bf16"]["frozen"]
    assert 13.0e9 < results["bf16"]["frozen"] < 13.6e9  # 6.74 B parameters in 2 bytes
