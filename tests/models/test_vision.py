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


@pytest.mark.parametrize("n_images", [1, 2, 3])
def test_keep_prefix_tokens_of_a_tower_without_any(n_images):
    # SigLIP has no CLS token: keeping "the prefix tokens" keeps the patch tokens, for any number of images
    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2}
    keep = VisionTower("vit_base_patch16_siglip_224", drop_prefix_tokens=False, model_kwargs=kwargs)
    drop = VisionTower("vit_base_patch16_siglip_224", drop_prefix_tokens=True, model_kwargs=kwargs)
    drop.load_state_dict(keep.state_dict())
    assert keep.num_prefix_tokens == 0
    x = torch.randn(n_images, 3, 32, 32)
    out = keep(x)
    assert out.shape == (n_images, 16, 32)
    torch.testing.assert_close(out, drop(x), rtol=0, atol=0)


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


def _by_hand(raw: torch.Tensor, mean, std) -> torch.Tensor:
    """(N, 3, H, W) float32: what ``ImageProcessor(normalize=True)`` computes on the CPU."""
    mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return (raw.float() / 255 - mean) / std


@pytest.mark.parametrize("arch", ["vit_tiny_patch16_224", "vit_base_patch16_clip_quickgelu_224"])
def test_uint8_images_are_normalised_with_the_towers_own_mean_and_std(arch):
    torch.manual_seed(0)
    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2}
    tower = VisionTower(arch, model_kwargs=kwargs)
    cfg = timm.data.resolve_model_data_config(tower.model)
    assert (tower.pixel_mean, tower.pixel_std) == (tuple(cfg["mean"]), tuple(cfg["std"]))
    raw = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)  # (2, 3, 32, 32)
    normalised = _by_hand(raw, cfg["mean"], cfg["std"])
    torch.testing.assert_close(tower.normalize(raw), normalised, rtol=0, atol=1e-5)
    torch.testing.assert_close(tower(raw), tower(normalised), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(tower(raw.float()), tower(normalised), atol=1e-2)  # floats are taken as normalised


def test_uint8_normalisation_follows_the_tower_dtype_and_adds_no_state():
    tower = _tower()
    keys = list(tower.state_dict())
    tower.to(torch.bfloat16)
    raw = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert tower.normalize(raw).dtype == torch.bfloat16
    assert tower(raw).dtype == torch.bfloat16
    assert tower.normalize(raw, torch.float32).dtype == torch.float32
    assert list(tower.state_dict()) == keys  # checkpoints keep their keys: mean/std are not buffers
    assert all(k.startswith("model.") for k in keys)


def test_meta_device_tower_normalises_after_materialisation():
    """Mean and std are plain floats: nothing is left uninitialised by meta-device construction."""
    with torch.device("meta"):
        tower = _tower()
        assert tower(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape == (1, 16, 32)
    tower.to_empty(device="cpu")
    raw = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(
        tower.normalize(raw), _by_hand(raw, tower.pixel_mean, tower.pixel_std), rtol=0, atol=1e-5
    )
