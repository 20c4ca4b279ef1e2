"""Tiny transformers Gemma 3 / PaliGemma checkpoints and their networks of ours, with the same weights (float64)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig

from lightning_mm.zoo.registry import get_spec
from lightning_mm.zoo.spec import build_network


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` with every norm weight and bias moved off its initial value (zeros / ones would hide mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias") or "projection_weight" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def hf_checkpoint(config: dict, path: Path, hf_class: type, attn: str = "eager") -> torch.nn.Module:
    """A random transformers model of ``config`` (float64, perturbed), saved to ``path``; returned in eval mode."""
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(**config)
    model = perturbed(hf_class._from_config(cfg, attn_implementation=attn, dtype=torch.float64))
    model.save_pretrained(path)
    return model.eval()


def our_network(spec_name: str, path: Path) -> torch.nn.Module:
    """Our network of zoo entry ``spec_name`` with the weights of the checkpoint at ``path`` (float64)."""
    spec = get_spec(spec_name).replace(checkpoint=str(path))
    with torch.device("cpu"):
        net = build_network(spec, pretrained=True, torch_dtype=torch.float64)
    return net.to(torch.float64)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())
