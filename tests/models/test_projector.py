import pytest
import torch
from torch import nn

from lightning_mm.models import build_projector


def test_linear_and_mlp2x_gelu_layout():
    lin = build_projector("linear", 8, 16)
    assert [type(m) for m in lin] == [nn.Linear]
    mlp = build_projector("mlp2x_gelu", 8, 16)
    assert [type(m) for m in mlp] == [nn.Linear, nn.GELU, nn.Linear]  # LLaVA-1.5: mm_projector.0 / .2
    assert mlp(torch.randn(2, 5, 8)).shape == (2, 5, 16)
    assert len(build_projector("mlp3x_gelu", 8, 16)) == 5


def test_unknown_projector_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown projector 'mlp2x_relu'.*linear"):
        build_projector("mlp2x_relu", 8, 16)
