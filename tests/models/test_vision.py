import pytest
import timm
import torch

from lightning_mm.models import VisionTower


def _tower(**kw):
    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2}
    return VisionTower("vit_tiny_patch16_224", model_kwargs=kwargs, **kw)


def test_second_to_last_block_patch_tokens_only():
    torch.manual_seed(0)
    tower = _tower(feature_layer=-2)
    x = torch.randn(2, 3, 32, 32)
    out = tower(x)
    assert out.shape == (2, 16, 32)  # 4x4 patches, CLS dropped
    # reference: run the blocks by hand and read block index 1 (= -2 of 3), without the final norm
    m = tower.model
    h = m.norm_pre(m._pos_embed(m.patch_embed(x)))
    for blk in m.blocks[:2]:
        h = blk(h)
    torch.testing.assert_close(out, h[:, m.num_prefix_tokens :])


def test_keep_prefix_tokens():
    tower = VisionTower(
        "vit_tiny_patch16_224",
        drop_prefix_tokens=False,
        model_kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "reg_tokens": 2},
    )
    assert tower.num_prefix_tokens == 3
    assert tower(torch.randn(1, 3, 32, 32)).shape == (1, 16 + 3, 32)


def test_unused_parameters_are_the_blocks_after_the_feature_layer():
    tower = _tower(feature_layer=-2)
    unused = tower.unused_parameter_names()
    assert unused and all(n.startswith(("model.blocks.2.", "model.norm.")) for n in unused)
    tower(torch.randn(1, 3, 32, 32)).sum().backward()
    for name, p in tower.named_parameters():
        assert (p.grad is None) == (name in unused), name


def test_data_config_follows_img_size_override():
    assert _tower().data_config()["input_size"] == (3, 32, 32)


def test_unknown_timm_model_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown timm vision model 'vit_does_not_exist'"):
        VisionTower("vit_does_not_exist")


def test_feature_layer_out_of_range():
    with pytest.raises(ValueError, match="feature_layer=5"):
        _tower(feature_layer=5)


def test_pretrained_loads_local_weights(tmp_path):
    """The real timm pretrained path, fed a local file instead of the hub."""
    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    src = timm.create_model("vit_tiny_patch16_224", num_classes=0, **kwargs)
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    tower = VisionTower(
        "vit_tiny_patch16_224", pretrained=True, model_kwargs={**kwargs, "pretrained_cfg_overlay": {"file": str(path)}}
    )
    torch.testing.assert_close(tower.model.patch_embed.proj.weight, src.patch_embed.proj.weight)
