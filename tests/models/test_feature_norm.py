"""VisionTower(feature_norm=True): the features of the chosen block through the tower's final norm (SmolVLM)."""

import torch

from lightning_mm.models import VisionTower

KWARGS = {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2, "global_pool": ""}


def test_features_go_through_the_final_norm_and_it_is_used():
    torch.manual_seed(0)
    tower = VisionTower("vit_base_patch16_siglip_224", feature_layer=-1, feature_norm=True, model_kwargs=KWARGS)
    plain = VisionTower("vit_base_patch16_siglip_224", feature_layer=-1, model_kwargs=KWARGS)
    plain.load_state_dict(tower.state_dict())
    with torch.no_grad():
        tower.model.norm.bias.add_(0.5)  # away from init, so a missing norm would show
        plain.model.norm.bias.add_(0.5)
        x = torch.randn(2, 3, 32, 32)  # (N, 3, H, W) normalised
        normed, raw = tower(x), plain(x)  # (N, 16, 16)
    assert normed.shape == raw.shape == (2, 16, 16)
    torch.testing.assert_close(normed, tower.model.norm(raw))
    assert not torch.allclose(normed, raw)
    assert not any(n.startswith("model.norm.") for n in tower.unused_parameter_names())
    assert {"model.norm.weight", "model.norm.bias"} <= set(plain.unused_parameter_names())
