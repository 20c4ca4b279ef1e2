"""LoRA's input dropout fused into the ``lora_A`` projection, so backward keeps a 1-byte mask per input element.

peft computes the LoRA branch as ``lora_B(lora_A(dropout(x)))``. For backward, ``nn.Dropout`` keeps its mask (a
float tensor the size of ``x`` on CPU) and ``lora_A`` keeps the dropped copy of ``x``: two tensors the size of the
layer's input for every adapted linear, although the input itself is shared by several of them (q/k/v, gate/up).
:class:`DropoutLinear` does both in one autograd function that keeps ``x`` itself (the same storage for every adapter
that reads it) and a boolean mask, and rebuilds the dropped input in backward. The numbers are those of dropout
followed by the linear layer; only the rounding of the ``1 / (1 - p)`` scaling differs (it is applied to the rank-r
output instead of the input).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DropoutLinear", "drop_mask", "dropout_linear"]


def drop_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """A bool tensor of ``shape``, each element True with probability ``p``, from ``device``'s default generator.

    On the CPU, ``bernoulli_`` draws a double-precision uniform (two 32-bit Mersenne-twister outputs and a double
    conversion) per element; a single-precision uniform compared with ``p`` takes one draw, and the comparison runs
    on every thread (``p`` exact to ``2**-24``). It is an ordinary random op, so compiled regions trace it (with
    ``aot_eager`` they draw eager's masks; inductor draws its own, in forward and recompute alike). Other devices use
    ``bernoulli_``.
    """
    if device.type != "cpu":
        return torch.empty(shape, dtype=torch.bool, device=device).bernoulli_(p)
    return torch.rand(shape, device=device) < p  # (...)


class _DropoutLinearFunction(torch.autograd.Function):
    """``linear(dropout(x), weight)`` (no bias) saving ``x`` and a bool mask instead of the dropped copy."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, p: float, dtype: torch.dtype) -> torch.Tensor:
        # x: (..., in); weight: (r, in); dtype: the compute dtype (autocast's, or the inputs' own)
        drop = drop_mask(x.shape, p, x.device)  # (..., in) True = dropped
        scale = 1.0 / (1.0 - p)
        with torch.autocast(x.device.type, enabled=False):
            out = F.linear(x.masked_fill(drop, 0).to(dtype), weight.to(dtype)).mul_(scale)  # (..., r)
        ctx.save_for_backward(x, drop, weight)
        ctx.scale, ctx.dtype = scale, dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # grad_out: (..., r)
        x, drop, weight = ctx.saved_tensors
        g = grad_out.to(ctx.dtype) * ctx.scale  # (..., r)
        grad_x = grad_w = None
        with torch.autocast(x.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_x = (g @ weight.to(ctx.dtype)).masked_fill_(drop, 0).to(x.dtype)  # (..., in)
            if ctx.needs_input_grad[1]:
                x_drop = x.masked_fill(drop, 0).to(ctx.dtype).reshape(-1, x.shape[-1])  # (N, in)
                grad_w = (g.reshape(-1, g.shape[-1]).T @ x_drop).to(weight.dtype)  # (r, in)
        return grad_x, grad_w, None, None


def dropout_linear(x: torch.Tensor, weight: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.linear(F.dropout(x, p, training), weight)`` keeping ``x`` and a bool mask for backward.

    Under autocast the matrix products run in autocast's dtype, as ``F.linear`` would; gradients come back in the
    dtypes of ``x`` and ``weight``.

    Args:
        x: (..., in) input.
        weight: (out, in) weight (no bias).
        p: Probability of zeroing an input element, in [0, 1).
        training: Apply dropout (False: a plain linear layer).

    Returns:
        (..., out).
    """
    if not training or p == 0.0:
        return F.linear(x, weight)
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    device = x.device.type
    dtype = (
        torch.get_autocast_dtype(device)
        if torch.is_autocast_enabled(device)
        else torch.promote_types(x.dtype, weight.dtype)
    )
    return _DropoutLinearFunction.apply(x, weight, p, dtype)


class DropoutLinear(nn.Linear):
    """A bias-free ``nn.Linear`` whose input goes through dropout first, fused (see the module docstring).

    It stands in for peft's ``lora_A`` layer (with peft's ``lora_dropout`` set to identity): the parameter keeps its
    name (``lora_A.<adapter>.weight``), so checkpoints and merging are those of peft.

    Args:
        in_features: Input width.
        out_features: Output width (the LoRA rank).
        p: Dropout probability on the input, in [0, 1).
        device: Device of the weight.
        dtype: Dtype of the weight.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        p: float,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=False, device=device, dtype=dtype)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    @classmethod
    def from_linear(cls, linear: nn.Linear, p: float) -> DropoutLinear:
        """A :class:`DropoutLinear` that shares ``linear``'s weight Parameter (no copy; ``linear`` has no bias)."""
        if linear.bias is not None:
            raise ValueError("DropoutLinear replaces bias-free layers only (peft's lora_A has no bias)")
        new = cls(linear.in_features, linear.out_features, p, device="meta")
        new.weight = linear.weight
        new.train(linear.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return dropout_linear(x, self.weight, self.p, self.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"
