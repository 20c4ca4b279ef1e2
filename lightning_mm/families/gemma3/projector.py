"""Gemma 3's multimodal projector: average pooling of the patch grid, Gemma RMSNorm, one matrix without bias.

The same computation as transformers' ``Gemma3MultiModalProjector``, with its parameter names (so the weights convert
by renaming): ``mm_soft_emb_norm.weight`` (D_v,) and ``mm_input_projection_weight`` (D_v, D_t). The norm is
transformers' ``Gemma3RMSNorm`` (``x / rms(x) * (1 + weight)``, computed in float32).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

from lightning_mm.models.projector import register_projector

__all__ = ["Gemma3Projector"]


class Gemma3Projector(nn.Module):
    """(N, P*P, D_v) patch features -> (N, tokens, D_t) image tokens.

    Args:
        vision_dim: Width D_v of the tower's features.
        text_dim: Width D_t of the LM's embeddings.
        tokens_per_image: Tokens an image becomes (a square number dividing the patch grid: 256 for a 64 x 64 grid).
        eps: Epsilon of the RMSNorm (the tower's ``layer_norm_eps``).
        patch_grid: Side of the tower's patch grid (64 at 896 px), when known: sets :attr:`scale_factor`.

    Attributes:
        scale_factor: Side of the square of patches pooled into one token (4 for 64 -> 16), or 1 when unknown.
    """

    def __init__(
        self, vision_dim: int, text_dim: int, tokens_per_image: int = 256, eps: float = 1e-6, patch_grid: int = 0
    ) -> None:
        super().__init__()
        side = math.isqrt(tokens_per_image)
        if side * side != tokens_per_image:
            raise ValueError(f"Gemma 3's tokens per image must be a square number, got {tokens_per_image}.")
        if patch_grid and patch_grid % side:
            raise ValueError(
                f"Gemma 3's {tokens_per_image} tokens do not divide a {patch_grid}x{patch_grid} patch grid."
            )
        self.tokens_per_side = side
        self.scale_factor = patch_grid // side if patch_grid else 1
        self.mm_input_projection_weight = nn.Parameter(torch.zeros(vision_dim, text_dim))  # (D_v, D_t)
        self.mm_soft_emb_norm = Gemma3RMSNorm(vision_dim, eps=eps)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n, length, dim = features.shape
        grid = math.isqrt(length)
        if grid * grid != length or grid % self.tokens_per_side:
            raise ValueError(
                f"Gemma 3's projector pools a square patch grid to {self.tokens_per_side}^2 tokens; got {length} patches."
            )
        kernel = grid // self.tokens_per_side
        x = features.transpose(1, 2).reshape(n, dim, grid, grid)  # (N, D_v, P, P)
        x = F.avg_pool2d(x, kernel_size=kernel, stride=kernel)  # (N, D_v, S, S)
        x = x.flatten(2).transpose(1, 2)  # (N, S*S, D_v), row-major
        x = self.mm_soft_emb_norm(x)  # (N, S*S, D_v)
        return torch.matmul(x, self.mm_input_projection_weight).type_as(features)  # (N, S*S, D_t)


def _register(tokens: int) -> None:
    """Register ``gemma3_pool<tokens>`` (names the checks know; :class:`~lightning_mm.families.gemma3.family.
    Gemma3Family` builds it with the tower's norm eps and patch grid)."""

    @register_projector(f"gemma3_pool{tokens}")
    def _build(vision_dim: int, text_dim: int) -> nn.Module:
        return Gemma3Projector(vision_dim, text_dim, tokens)


for _tokens in (16, 64, 256):
    _register(_tokens)
