"""Import: a transformers LLaVA checkpoint -> our network computes the same logits (float64, 1e-6 relative)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, LlavaForConditionalGeneration

import lightning_mm
from tests.interop.conftest import batch, make_hf_llava, perturb, rel_err, save_checkpoint


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
    assert rel_err(ours[real], theirs[real]) < 1e-6, pair


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
    LlamaForCausalLM(
        LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)
    ).save_pretrained(tmp_path / "llama")
    with pytest.raises(ValueError, match=r"not a supported vision-language checkpoint.*'llama' \(LlamaForCausalLM\)"):
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


@pytest.mark.parametrize(
    ("pair", "changes", "error"),
    [
        ("clip-llama", {"vision_feature_layer": [-2, -1]}, r"vision_feature_layer=\[-2, -1\]; only one feature layer"),
        ("clip-llama", {"vision_feature_layer": 0}, r"vision_feature_layer=0 reads the patch embeddings"),
        ("clip-llama", {"vision_feature_layer": -4}, r"vision_feature_layer=-4 reads the patch embeddings"),
        ("clip-llama", {"vision_feature_layer": 4}, r"vision_feature_layer=4 is out of range for 3 vision layers"),
        ("siglip-qwen2", {"vision_feature_select_strategy": "default"}, r"'default' drops the first token.*siglip"),
        ("clip-llama", {"projector_hidden_act": "relu"}, r"projector_hidden_act='relu', multimodal_projector_bias"),
        ("clip-llama", {"multimodal_projector_bias": False}, r"multimodal_projector_bias=False; only"),
        ("clip-llama", {"vision_config": {"hidden_act": "relu"}}, r"hidden_act='relu' has no timm equivalent"),
    ],
)
def test_configs_our_network_cannot_compute_are_refused_naming_the_key(pair, changes, error, tmp_path):
    path = save_checkpoint(make_hf_llava(pair), tmp_path / "hf")
    config = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=error):
        lightning_mm.create_model(f"hf:{path}", device="meta")


def test_tied_embeddings_with_different_values_in_the_checkpoint_are_named(tmp_path):
    path = save_checkpoint(make_hf_llava("siglip-qwen2"), tmp_path / "hf")  # tied: no lm_head in the file
    embed = "language_model.model.embed_tokens.weight"
    _rewrite(path, lambda s: s.update({"language_model.lm_head.weight": s[embed] + 1}))
    with pytest.raises(ValueError, match=r"lm_head\.weight and model\.language_model\.embed_tokens\.weight are tied"):
        lightning_mm.create_model(f"hf:{path}", pretrained=True)
    _rewrite(path, lambda s: s.update({"language_model.lm_head.weight": s[embed].clone()}))  # equal: fine
    lightning_mm.create_model(f"hf:{path}", pretrained=True)


def test_the_image_processor_resampling_is_read(hf_checkpoint, tmp_path):
    _, _, path = hf_checkpoint
    settings = path / "processor_config.json"
    processor = json.loads(settings.read_text())
    processor["image_processor"]["resample"] = 2  # PIL bilinear
    settings.write_text(json.dumps(processor))
    module = lightning_mm.create_model(f"hf:{path}", device="meta")
    assert module.image_data_config["interpolation"] == "bilinear"
    processor["image_processor"]["resample"] = 7  # PIL's MKS2021: timm has none
    settings.write_text(json.dumps(processor))
    with pytest.raises(ValueError, match=r"resample=7 \(mks2021\) has no timm equivalent"):
        lightning_mm.create_model(f"hf:{path}", device="meta")


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
        ("clip-llama", {"tie_word_embeddings": True}),  # tied by the LLaVA config, not by its text config
    ],
)
def test_config_variants_import_and_export_exactly(pair, changes, float64, tmp_path):
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
    assert rel_err(ours[real], theirs[real]) < 1e-6
    out = lightning_mm.export_hf(module, tmp_path / "export")
    back = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.float64).eval()
    for key in ("vision_feature_layer", "vision_feature_select_strategy", "image_seq_length"):
        assert getattr(back.config, key) == getattr(hf_model.config, key), key
    assert sorted(back.state_dict()) == sorted(hf_model.state_dict())
