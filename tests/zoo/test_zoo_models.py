"""Every zoo entry builds on the meta device, offline, with the released architecture."""

from __future__ import annotations

import math

import pytest
import torch

import lightning_mm.zoo.spec as spec_mod
from lightning_mm.zoo import build_network, count_image_tokens, get_spec, list_models, parameter_counts

# Released llava-1.5-7b-hf (LlavaForConditionalGeneration): total, CLIP vision tower, multi-modal projector.
LLAVA_15_7B_TOTAL = 7_063_427_072
LLAVA_15_7B_VISION = 303_507_456
LLAVA_15_7B_PROJECTOR = 20_979_712


@pytest.fixture(scope="module")
def meta_networks():
    """Each entry's network built once on the meta device, without a tokenizer where the spec is complete."""
    nets = {}
    for name in list_models():
        spec = get_spec(name)
        with torch.device("meta"):
            nets[name] = build_network(spec, pretrained=False)
    return nets


def test_required_entries_are_registered():
    names = list_models()
    for name in ("llava-1.5-7b", "llava-1.5-13b", "tiny"):
        assert name in names
    assert list_models("llava-1.5-*") == [
        "llava-1.5-13b",
        "llava-1.5-13b-components",
        "llava-1.5-7b",
        "llava-1.5-7b-components",
    ]
    assert any(
        "siglip" in get_spec(n).vision_model and get_spec(n).llm_config.get("model_type") == "qwen2" for n in names
    )
    assert any("reg4_dinov2" in get_spec(n).vision_model for n in names)


def test_llava_15_7b_parameter_counts():
    counts = parameter_counts("llava-1.5-7b")
    assert math.isclose(counts["total"], LLAVA_15_7B_TOTAL, rel_tol=1e-3)
    assert counts["vision"] == LLAVA_15_7B_VISION
    assert counts["projector"] == LLAVA_15_7B_PROJECTOR


def test_every_entry_builds_on_meta_with_consistent_vocabulary(meta_networks):
    for name, net in meta_networks.items():
        spec = get_spec(name)
        params = list(net.parameters())
        assert params and all(p.is_meta for p in params), name
        rows = net.llm.get_input_embeddings().num_embeddings
        if "vocab_size" in spec.llm_config:
            assert rows == spec.llm_config["vocab_size"], name
        assert 0 <= net.image_token_id < rows, name
        # the projector maps the tower's width to the LM's
        tokens = net.vision.model.patch_embed.num_patches  # a token-reducing projector needs the whole grid
        out = net.projector(torch.empty(1, tokens, net.vision.hidden_size, device="meta"))
        assert out.shape[-1] == net.llm.get_input_embeddings().embedding_dim, name


def test_real_entries_are_complete_and_build_without_a_tokenizer(monkeypatch):

    def no_tokenizer(spec):
        raise AssertionError(f"{spec.name}: the tokenizer was loaded")

    monkeypatch.setattr(spec_mod, "load_tokenizer", no_tokenizer)
    real = [n for n in list_models() if get_spec(n).llm is not None]
    assert len(real) >= 4
    for name in real:
        assert not get_spec(name).needs_tokenizer, name
        assert parameter_counts(name)["total"] > 0


def test_llava_tower_reads_patch_tokens_of_the_second_to_last_block(meta_networks):
    for name in ("llava-1.5-7b", "llava-1.5-13b", "llava-1.5-7b-components", "llava-1.5-13b-components"):
        tower = meta_networks[name].vision
        assert tower.block_index == tower.depth - 2
        assert tower.num_prefix_tokens == 1 and tower.drop_prefix_tokens
        # OpenAI's CLIP was trained with QuickGELU
        assert type(tower.model.blocks[0].mlp.act).__name__ == "QuickGELU"
        grid = tower.model.patch_embed.grid_size
        assert count_image_tokens(get_spec(name))[0] == grid[0] * grid[1] == 576


def test_13b_differs_from_7b_only_in_the_llm(meta_networks):
    small, big = parameter_counts("llava-1.5-7b"), parameter_counts("llava-1.5-13b")
    assert small["vision"] == big["vision"]
    width_13b = meta_networks["llava-1.5-13b"].llm.config.hidden_size
    # mlp2x_gelu: Linear(1024, D) + Linear(D, D)
    assert big["projector"] == 1024 * width_13b + width_13b + width_13b * width_13b + width_13b
    assert big["llm"] > 1.9 * small["llm"]


@pytest.mark.parametrize("family", ["siglip", "reg4_dinov2"])
def test_prefix_tokens_are_dropped_and_no_patch_is_lost(meta_networks, family):
    names = [n for n in list_models() if family in get_spec(n).vision_model]
    assert names
    for name in names:
        tower = meta_networks[name].vision
        grid = tower.model.patch_embed.grid_size
        if family == "siglip":
            assert tower.num_prefix_tokens == 0, name  # no CLS: nothing may be dropped
        else:
            assert tower.num_prefix_tokens == 5, name  # CLS + 4 registers
        newline = get_spec(name).image_tiling is not None  # a tiling model closes an untiled image with a newline
        # pixel shuffle by s turns s x s patches into one token (SmolVLM: s = 4)
        reduction = getattr(meta_networks[name].projector, "scale_factor", 1) ** 2
        assert count_image_tokens(get_spec(name))[0] == grid[0] * grid[1] // reduction + newline, name


def test_small_qwen2_entries_tie_embeddings(meta_networks):
    for name in list_models():
        if get_spec(name).llm_config.get("model_type") != "qwen2":
            continue
        if get_spec(name).family == "internvl":  # InternVL3 trains its own lm_head: untied, as released
            assert meta_networks[name].llm.config.tie_word_embeddings is False, name
            continue
        llm = meta_networks[name].llm
        assert llm.get_output_embeddings().weight is llm.get_input_embeddings().weight
        attn = llm.model.layers[0].self_attn
        assert attn.k_proj.out_features < attn.q_proj.out_features  # grouped-query attention


def test_siglip_entries_use_the_tanh_gelu_they_were_trained_with(meta_networks):
    seen = set()
    for name, net in meta_networks.items():
        act = type(net.vision.model.blocks[0].mlp.act).__name__
        if "siglip" in get_spec(name).vision_model:
            assert act == "GELUTanh", name
            seen.add("siglip")
        elif "dinov2" in get_spec(name).vision_model:
            assert act == "GELU", name  # DINOv2 uses the exact GELU
            seen.add("dinov2")
    assert seen == {"siglip", "dinov2"}
