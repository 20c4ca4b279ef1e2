"""``sdpa_packed``: scaled-dot-product attention that runs each packed sample on its own block.

For packed rows (several samples per row, ``position_ids`` restarting at 0 for each), transformers' ``sdpa`` backend
gets a dense block-diagonal ``(B, 1, T, T)`` mask and computes every query-key pair of the row, the masked blocks
included: a row of ``k`` samples of length ``L`` costs ``(kL)^2`` instead of ``k L^2`` (2-3x the attention work at
LLaVA-1.5's lengths in rows of 2048). ``flash_attention_2`` avoids this on GPUs with variable-length kernels; this
backend does the same with ``torch.nn.functional.scaled_dot_product_attention``: one causal call per sample (and per
padding run), cut where the positions do not increase by one (transformers' rule for packed rows); a sample whose block
of the mask is not causal (bidirectional image or prefix blocks) gets that block as its mask. Rows without
``position_ids``, with a cache, or of one sample each run transformers' ``sdpa`` unchanged.

Select it on the language model with :func:`use_packed_attention` (or ``attn_implementation="sdpa_packed"``);
importing this module registers the name with transformers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

__all__ = ["PACKED_SDPA", "packed_sdpa_attention", "sample_spans", "use_packed_attention"]

#: Name of the backend in transformers' attention registry.
PACKED_SDPA = "sdpa_packed"


def sample_spans(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the ``(start, end)`` spans of consecutive positions (a new span wherever a position is not previous + 1).

    Args:
        position_ids: (B, T).
    """
    starts = torch.diff(position_ids, dim=-1, prepend=position_ids[:, :1]) != 1  # (B, T)
    starts[:, 0] = True  # every row starts a span
    total = position_ids.shape[-1]
    spans = []
    for row in starts.tolist():
        cuts = [t for t, s in enumerate(row) if s] + [total]
        spans.append(list(zip(cuts[:-1], cuts[1:], strict=True)))
    return spans


def _sample_mask(attention_mask: torch.Tensor | None, b: int, s: int, e: int) -> torch.Tensor | None:
    """The (1, 1, L, L) block of sample ``[s, e)`` of row ``b`` in a boolean 4-D mask, or None when it is causal (an
    attention pattern with bidirectional blocks, :mod:`lightning_mm.models.attention_pattern`, makes it not)."""
    if attention_mask is None or attention_mask.dim() != 4 or attention_mask.dtype != torch.bool:
        return None
    block = attention_mask[b : b + 1, :, s:e, s:e]  # (1, 1, L, L)
    causal = torch.ones(e - s, e - s, dtype=torch.bool, device=block.device).tril_()  # (L, L)
    return None if bool((block == causal).all()) else block


def packed_sdpa_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention of a transformers attention module, block by block for packed rows.

    Args:
        module: The attention module (its ``is_causal`` is honoured by the ``sdpa`` fallback).
        query: (B, H, T, D).
        key: (B, H_kv, T, D).
        value: (B, H_kv, T, D).
        attention_mask: What transformers built for ``sdpa`` (used only by the fallback).
        dropout: Attention dropout probability.
        scaling: Softmax scale (None: 1 / sqrt(D)).
        position_ids: (B, T) positions; packed rows restart them at each sample.
        **kwargs: Passed to the ``sdpa`` fallback.

    Returns:
        ((B, T, H, D) attention output, None).
    """
    q_len = query.shape[2]
    if position_ids is None or key.shape[2] != q_len or position_ids.shape[-1] != q_len:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    spans = sample_spans(position_ids.expand(query.shape[0], -1))
    if all(len(row) == 1 for row in spans):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    gqa = key.shape[1] != query.shape[1]
    p = dropout if module.training else 0.0
    rows = []
    for b, row in enumerate(spans):
        blocks = [
            F.scaled_dot_product_attention(
                query[b : b + 1, :, s:e],  # (1, H, L, D)
                key[b : b + 1, :, s:e],  # (1, H_kv, L, D)
                value[b : b + 1, :, s:e],
                attn_mask=(block := _sample_mask(attention_mask, b, s, e)),
                dropout_p=p,
                is_causal=block is None,
                scale=scaling,
                enable_gqa=gqa,
            )
            for s, e in row
        ]
        rows.append(torch.cat(blocks, dim=2))  # (1, H, T, D)
    return torch.cat(rows).transpose(1, 2).contiguous(), None  # (B, T, H, D)


def use_packed_attention(llm: PreTrainedModel, enable: bool = True) -> PreTrainedModel:
    """Switch a transformers model (and its sub-configs) from ``sdpa`` to :data:`PACKED_SDPA` (back with
    ``enable=False``); returns it."""
    old, new = ("sdpa", PACKED_SDPA) if enable else (PACKED_SDPA, "sdpa")
    for config in (llm.config, *(getattr(m, "config", None) for m in llm.modules())):
        if config is not None and getattr(config, "_attn_implementation", None) == old:
            config._attn_implementation = new
    return llm


AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)
