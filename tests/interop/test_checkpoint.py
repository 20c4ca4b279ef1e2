"""Import: a transformers LLaVA checkpoint -> our network computes the same logits (float64, 1e-6 relative)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import lightning_mm
from tests.interop.conftest import batch, perturb


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_imported_logits_equal_transformers(hf_checkpoint, float64):
    pair, hf_model, path = hf_checkpoint
    module = lightning_mm.create_model(f"hf:{path}", pretrained=True)
    net = module.network.eval()
    b = batch()
    with torch.no_grad():
        ours = net.lm_head(net(b["input_ids"], b["attention_mask"], b["pixel_values"]))  # (B, T, V)
        theirs = hf_model(**b).logits  # (B, T, V)
    real = b["attention_mask"].bool()
    assert ours.dtype == torch.float64
    assert _rel_err(ours[real], theirs[real]) < 1e-6, pair


def test_multimodal_module_imports_with_pretrained(hf_checkpoint, float64):
    _, hf_model, path = hf_checkpoint
    module = lightning_mm.MultimodalModule(model=f"hf:{path}", pretrained=True)
    module.configure_model()
    ours = module.network.state_dict()
    embed = hf_model.model.language_model.embed_tokens.weight
    assert torch.equal(ours["llm.model.embed_tokens.weight"], embed)
    assert module.tokenizer.convert_tokens_to_ids("<image>") == module.image_token_id == 4


def test_without_pretrained_the_weights_are_not_read(hf_checkpoint, tmp_path):
    _, _, path = hf_checkpoint
    (path / "model.safetensors").unlink()  # nothing to read: building must not try
    module = lightning_mm.create_model(f"hf:{path}", pretrained=False)
    assert module.num_image_tokens == 4
    meta = lightning_mm.create_model(f"hf:{path}", device="meta")
    assert all(p.is_meta for p in meta.network.parameters())
    with pytest.raises(FileNotFoundError, match="no weights"):
        lightning_mm.create_model(f"hf:{path}", pretrained=True)


def test_a_checkpoint_that_is_not_llava_is_named(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(
        LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)
    ).save_pretrained(tmp_path / "llama")
    with pytest.raises(ValueError, match=r"not a LLaVA checkpoint.*'llama' \(LlamaForCausalLM\)"):
        lightning_mm.create_model(f"hf:{tmp_path / 'llama'}")


def test_original_llava_code_checkpoints_point_to_the_conversion(tmp_path):
    (tmp_path / "orig").mkdir()
    (tmp_path / "orig" / "config.json").write_text(
        json.dumps({"architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama"})
    )
    with pytest.raises(ValueError, match="LlavaLlamaForCausalLM.*convert_llava_weights_to_hf"):
        lightning_mm.create_model(f"hf:{tmp_path / 'orig'}")


def test_an_unsupported_tower_is_named(hf_checkpoint):
    _, _, path = hf_checkpoint
    config = json.loads((path / "config.json").read_text())
    config["vision_config"] = {
        "model_type": "dinov2",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "image_size": 16,
        "patch_size": 8,
    }
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="Unsupported vision tower 'dinov2'.*clip_vision_model, siglip_vision_model"):
        lightning_mm.create_model(f"hf:{path}")


def _rewrite(path, edit):
    state = load_file(path / "model.safetensors")
    edit(state)
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})


def test_missing_keys_are_named(hf_checkpoint):
    _, _, path = hf_checkpoint
    gone = "language_model.model.layers.1.mlp.up_proj.weight"
    _rewrite(path, lambda s: s.pop(gone))
    with pytest.raises(
        ValueError, match=r"missing from the checkpoint: model\.language_model\.layers\.1\.mlp\.up_proj"
    ):
        lightning_mm.create_model(f"hf:{path}", pretrained=True)


def test_a_missing_part_of_a_fused_tensor_is_named(hf_checkpoint):
    _, _, path = hf_checkpoint
    _rewrite(path, lambda s: s.pop("vision_tower.encoder.layers.0.self_attn.k_proj.weight"))
    with pytest.raises(
        ValueError, match=r"missing.*: model\.vision_tower\.encoder\.layers\.0\.self_attn\.k_proj\.weight\.$"
    ):
        lightning_mm.create_model(f"hf:{path}", pretrained=True)


def test_unexpected_keys_are_named(hf_checkpoint):
    _, _, path = hf_checkpoint
    _rewrite(path, lambda s: s.update({"multi_modal_projector.linear_3.weight": torch.zeros(2, 2)}))
    with pytest.raises(ValueError, match=r"unexpected key\(s\).*multi_modal_projector\.linear_3\.weight"):
        lightning_mm.create_model(f"hf:{path}", pretrained=True)


def test_wrong_shapes_are_named(hf_checkpoint):
    _, _, path = hf_checkpoint
    key = "multi_modal_projector.linear_1.bias"
    _rewrite(path, lambda s: s.update({key: torch.zeros(7, dtype=s[key].dtype)}))
    with pytest.raises(ValueError, match=r"shape.*multi_modal_projector\.linear_1\.bias \(7,\) \(model: \(48,\)\)"):
        lightning_mm.create_model(f"hf:{path}", pretrained=True)


def test_several_feature_layers_are_refused(hf_checkpoint):
    _, _, path = hf_checkpoint
    config = json.loads((path / "config.json").read_text())
    config["vision_feature_layer"] = [-2, -1]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"vision_feature_layer=\[-2, -1\]; only one feature layer"):
        lightning_mm.create_model(f"hf:{path}")


def test_a_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Checkpoint directory .*nowhere.* does not exist"):
        lightning_mm.create_model(f"hf:{tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="names no checkpoint"):
        lightning_mm.create_model("hf:")


@pytest.mark.parametrize(
    ("pair", "changes"),
    [
        ("clip-llama", {"vision_feature_layer": 2}),  # positive: transformers' hidden state 2 = our block 1
        ("clip-llama", {"vision_feature_select_strategy": "full"}),  # CLS kept
        ("siglip-qwen2", {"vision_config": {"vision_use_head": False}}),  # no attention-pool head (OneVision)
    ],
)
def test_config_variants_import_and_export_exactly(pair, changes, float64, tmp_path):
    from transformers import LlavaForConditionalGeneration

    from tests.interop.conftest import make_hf_llava, save_checkpoint

    base = make_hf_llava(pair)
    config = base.config.to_dict()
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    if config["vision_feature_select_strategy"] == "full" and pair == "clip-llama":
        config["image_seq_length"] = 5
    hf_model = LlavaForConditionalGeneration(type(base.config).from_dict(config)).to(torch.float64).eval()
    perturb(hf_model)
    path = save_checkpoint(hf_model, tmp_path / "hf")
    module = lightning_mm.create_model(f"hf:{path}", pretrained=True)
    net = module.network.eval()
    n_tokens = module.num_image_tokens
    assert n_tokens == hf_model.config.image_seq_length
    b = batch(image_tokens=n_tokens)
    with torch.no_grad():
        ours = net.lm_head(net(**b))
        theirs = hf_model(**b).logits
    real = b["attention_mask"].bool()
    assert _rel_err(ours[real], theirs[real]) < 1e-6
    out = lightning_mm.export_hf(module, tmp_path / "export")
    back = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.float64).eval()
    for key in ("vision_feature_layer", "vision_feature_select_strategy", "image_seq_length"):
        assert getattr(back.config, key) == getattr(hf_model.config, key), key
    assert sorted(back.state_dict()) == sorted(hf_model.state_dict())
