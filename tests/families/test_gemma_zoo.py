"""The full-size Gemma 3 / PaliGemma 2 entries: meta builds with transformers' parameter counts; bad inputs are clear
errors naming the sample or the config key."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, Gemma3ForConditionalGeneration, PaliGemmaForConditionalGeneration

from lightning_mm.data.collate import VLMCollator
from lightning_mm.families.gemma3.zoo import GEMMA3_4B_CONFIG
from lightning_mm.families.paligemma.zoo import PALIGEMMA2_3B_224_CONFIG, PALIGEMMA2_3B_448_CONFIG
from lightning_mm.interop.checkpoint import config_spec_fields
from lightning_mm.zoo.registry import get_spec
from lightning_mm.zoo.spec import build_network, count_image_tokens

ENTRIES = [
    ("gemma-3-4b-it", GEMMA3_4B_CONFIG, Gemma3ForConditionalGeneration, 4_300_079_472, 256),
    ("paligemma2-3b-pt-224", PALIGEMMA2_3B_224_CONFIG, PaliGemmaForConditionalGeneration, 3_032_242_416, 256),
    ("paligemma2-3b-pt-448", PALIGEMMA2_3B_448_CONFIG, PaliGemmaForConditionalGeneration, 3_033_127_152, 1024),
]


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied embeddings counted once


@pytest.mark.parametrize(("name", "config", "hf_class", "params", "tokens"), ENTRIES)
def test_meta_build_equals_transformers(name, config, hf_class, params, tokens):
    with torch.device("meta"):
        ours = build_network(get_spec(name))
        theirs = hf_class(AutoConfig.for_model(**config))
    assert _count(ours) == _count(theirs) == params
    assert count_image_tokens(get_spec(name))[0] == tokens


def test_pooling_head_in_the_vision_config_is_named():
    config = {**PALIGEMMA2_3B_224_CONFIG, "vision_config": {**PALIGEMMA2_3B_224_CONFIG["vision_config"]}}
    config["vision_config"]["vision_use_head"] = True
    with pytest.raises(ValueError, match="vision_use_head"):
        config_spec_fields(config, None, "x")


def test_pan_and_scan_in_the_processor_is_named():
    with pytest.raises(ValueError, match="do_pan_and_scan"):
        config_spec_fields(GEMMA3_4B_CONFIG, {"do_pan_and_scan": True}, "google/gemma-3-4b-it")


def test_image_token_count_mismatch_names_the_sample():
    network = build_network(get_spec("tiny-paligemma"))
    ids = torch.tensor([[511] * 16 + [5, 6], [511] * 15 + [5, 6, 7]])
    pixels = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="first mismatching sample: index 1"):
        network(ids, torch.ones_like(ids), pixels, prefix_mask=torch.ones_like(ids).bool())


def test_multi_turn_sample_cannot_be_a_prefix_lm_sample():
    ids = torch.arange(10, 20)
    labels = torch.tensor([-100, -100, 12, 13, -100, -100, 16, 17, -100, -100])
    with pytest.raises(ValueError, match="'two-turns'.*one prefix and one answer"):
        VLMCollator(0, prefix_lm=True)([{"id": "two-turns", "input_ids": ids, "labels": labels}])
