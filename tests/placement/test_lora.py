"""LoRA targets are checked entry by entry: a typo is an error before training, not a silently smaller adapter set."""

from __future__ import annotations

import pytest

from lightning_mm.errors import ConfigError
from lightning_mm.placement import Placement


def test_a_misspelt_target_names_itself_and_the_close_layer_names(build_module):
    with pytest.raises(ValueError, match=r"LoRA target 'v_poj' \(did you mean 'v_proj'") as info:
        build_module({"llm": Placement("lora", target_modules=["q_proj", "v_poj"])})
    message = str(info.value)
    assert isinstance(info.value, ConfigError) and "\n" not in message and len(message) < 600
    assert "'q_proj'" not in message.split("of target_modules")[0]  # only the unmatched entry is reported
    assert "v_proj" in message.split("linear layers are named")[1]


def test_every_unmatched_target_is_listed(build_module):
    with pytest.raises(ConfigError, match=r"targets 'qkvv' \(did you mean 'qkv'\?\), 'fc3'.*of target_modules"):
        build_module({"vision": Placement("lora", target_modules=["qkvv", "fc3", "fc1"])})


def test_a_target_of_layers_that_never_run_says_so(build_module):
    with pytest.raises(ConfigError, match=r"'blocks.2.attn.qkv' \(only layers that never run\)"):
        build_module({"vision": Placement("lora", target_modules=["blocks.2.attn.qkv", "qkv"])})


def test_default_and_matching_targets_still_build(build_module):
    # the default vision targets name layers of several timm families; the tiny ViT has only some of them
    module = build_module({"vision": Placement("lora"), "llm": Placement("lora", target_modules=["q_proj", "v_proj"])})
    assert any(".lora_A." in n for n, _ in module.network.vision.named_parameters())
    adapted = {
        n.split(".lora_A.")[0].rsplit(".", 1)[-1] for n, _ in module.network.llm.named_parameters() if ".lora_A." in n
    }
    assert adapted == {"q_proj", "v_proj"}
