"""Token-reducing projectors: shapes written out, and pixel shuffle equal to transformers' SmolVLM connector."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import SmolVLMConfig
from transformers.models.smolvlm.modeling_smolvlm import SmolVLMConnector

from lightning_mm.models import build_projector, list_projectors
from lightning_mm.models.token_reduction import PixelShuffleProjector, pixel_shuffle


@pytest.mark.parametrize(
    ("name", "tokens_in", "tokens_out"),
    [
        ("pixel_shuffle2_linear", 16 * 16, 8 * 8),  # (3, 256, 12) -> (3, 64, 20): 4x fewer tokens
        ("pixel_shuffle3_linear", 27 * 27, 9 * 9),  # SigLIP so400m-384: 729 -> 81
        ("pixel_shuffle4_linear", 32 * 32, 8 * 8),  # SmolVLM-256M: 1024 -> 64
        ("pixel_shuffle2_mlp2x_gelu", 16 * 16, 8 * 8),
        ("avgpool2x2_linear", 24 * 24, 12 * 12),  # 576 -> 144
        ("avgpool2x2_mlp2x_gelu", 24 * 24, 12 * 12),
        ("bilinear64_mlp2x_gelu", 24 * 24, 64),  # 576 -> 8 x 8
        ("bilinear144_linear", 27 * 27, 144),  # 729 -> 12 x 12
    ],
)
def test_shapes(name, tokens_in, tokens_out):
    projector = build_projector(name, 12, 20)
    out = projector(torch.randn(3, tokens_in, 12))  # (N_img, L, D_v)
    assert out.shape == (3, tokens_out, 20)  # (N_img, L', D_t)


def test_names_are_listed():
    names = list_projectors()
    for name in ("pixel_shuffle2_linear", "pixel_shuffle3_mlp2x_gelu", "pixel_shuffle4_linear", "avgpool2x2_linear"):
        assert name in names
    assert "bilinear576_mlp2x_gelu" in names


def test_pixel_shuffle_layout_by_hand():
    # a 4 x 4 grid of 1-wide tokens numbered 0..15 row-major; s = 2 gathers each 2 x 2 block, row offset first
    x = torch.arange(16.0).reshape(1, 16, 1)  # (1, 16, 1)
    out = pixel_shuffle(x, 2)  # (1, 4, 4)
    assert out[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pixel_shuffle_equals_smolvlm_connector(scale):
    torch.manual_seed(scale)
    side, dim, text = 12, 6, 8  # 144 tokens; 12 is divisible by 2, 3 and 4
    config = SmolVLMConfig(
        vision_config={"hidden_size": dim, "num_attention_heads": 2},
        text_config={"hidden_size": text, "num_attention_heads": 2, "num_key_value_heads": 2, "model_type": "llama"},
        scale_factor=scale,
    )
    theirs = SmolVLMConnector(config).double()
    ours = PixelShuffleProjector(dim, text, scale_factor=scale, head="linear").double()
    assert ours.proj.bias is None  # SmolVLM's modality projection has no bias
    ours.proj.weight.data.copy_(theirs.modality_projection.proj.weight)
    x = torch.randn(2, side * side, dim, dtype=torch.float64)  # (N, 144, 6)
    assert torch.equal(pixel_shuffle(x, scale), theirs.pixel_shuffle(x, scale))
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=0)  # (N, 144 / s^2, 8)


def test_avgpool_and_bilinear_compute_what_they_say():
    x = torch.randn(2, 16, 3)  # (2, 4x4, 3)
    pool = build_projector("avgpool2x2_linear", 3, 3)
    pool.proj = nn.Identity()
    expected = x.reshape(2, 2, 2, 2, 2, 3).mean(dim=(2, 4)).reshape(2, 4, 3)  # mean of each 2 x 2 block
    torch.testing.assert_close(pool(x), expected)
    bil = build_projector("bilinear64_linear", 3, 3)
    bil.proj = nn.Identity()
    y = torch.randn(1, 144, 3)  # (1, 12x12, 3)
    grid = y.transpose(1, 2).reshape(1, 3, 12, 12)
    expected = F.interpolate(grid, size=(8, 8), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(bil(y), expected)


def test_bad_grids_are_clear_errors():
    with pytest.raises(ValueError, match="577 tokens do not form a square grid"):
        build_projector("pixel_shuffle2_linear", 4, 4)(torch.randn(1, 577, 4))  # CLS kept
    with pytest.raises(ValueError, match="27x27 token grid is not divisible by 2"):
        build_projector("pixel_shuffle2_linear", 4, 4)(torch.randn(1, 729, 4))
    with pytest.raises(ValueError, match="odd side"):
        build_projector("avgpool2x2_linear", 4, 4)(torch.randn(1, 729, 4))
