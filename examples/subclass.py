"""Example: a MultimodalModule subclass with another projector and an auxiliary loss.

Train it from the CLI with ``--model.class_path examples.subclass.NormedProjectorModule`` (run from the repository
root), or import it in your own project. ``tests/test_examples.py`` trains it for a few steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightning_mm import MultimodalModule
from lightning_mm.models import VisionLanguageModel


class NormedProjector(nn.Module):
    """LayerNorm on the vision features, then LLaVA's two-layer GELU MLP."""

    def __init__(self, vision_dim: int, text_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(vision_dim)
        self.mlp = nn.Sequential(nn.Linear(vision_dim, text_dim), nn.GELU(), nn.Linear(text_dim, text_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(x))  # (N_img, L, D_v) -> (N_img, L, D_t)


class NormedProjectorModule(MultimodalModule):
    """The base module with :class:`NormedProjector` and an L2 penalty on the projected image tokens.

    Args:
        feature_penalty: Weight of the mean squared norm of the projected image tokens, per supervised target.
        **kwargs: Arguments of :class:`~lightning_mm.MultimodalModule`.
    """

    def __init__(self, feature_penalty: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.feature_penalty = feature_penalty
        self._image_tokens: torch.Tensor | None = None

    def build_network(self) -> VisionLanguageModel:
        net = super().build_network()
        net.projector = NormedProjector(net.vision.hidden_size, net.llm.config.hidden_size)
        net.projector.register_forward_hook(lambda mod, inp, out: setattr(self, "_image_tokens", out))
        return net

    def compute_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss_sum, n_items = super().compute_loss(hidden, labels)
        if self._image_tokens is not None and self.training:
            penalty = self._image_tokens.pow(2).sum(-1).mean()
            # the base loss is a sum over targets, normalised later: scale the penalty the same way
            loss_sum = loss_sum + self.feature_penalty * penalty * n_items
            self.log("train/feature_penalty", penalty.detach())
        return loss_sum, n_items
