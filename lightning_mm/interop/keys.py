"""Weight-name rules between two layouts of the same network: renames, fused/split tensors, extra singleton dims.

A :class:`KeyRule` ties one or more tensors of our layout to one or more tensors of transformers' layout that hold the
same numbers: both sides, concatenated along their first axis, are the same tensor. That covers plain renames, timm's
fused ``qkv`` against separate ``q/k/v_proj``, and an attention-pool ``in_proj`` against separate ``q`` and ``kv``.
Templates use ``{i}`` for a layer index and ``{p}`` for ``weight``/``bias``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

__all__ = ["KeyRule", "apply_rules", "convert_network_state", "rename_prefixes"]

_PLACEHOLDERS = {"{i}": r"(?P<i>\d+)", "{p}": r"(?P<p>weight|bias)"}


def _regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name, group in _PLACEHOLDERS.items():
        pattern = pattern.replace(re.escape(name), group)
    return re.compile(pattern)


@dataclass(frozen=True)
class KeyRule:
    """Tensors of our layout (``ours``) that hold the numbers of transformers' tensors (``hf``).

    Attributes:
        ours: Our tensor names (templates), in concatenation order.
        hf: transformers' tensor names (templates), in concatenation order.
        ours_parts: Relative sizes (first axis) of our tensors, e.g. ``(1, 2)`` for ``q`` (D rows) and ``kv`` (2D).
        hf_parts: Relative sizes of transformers' tensors, e.g. ``(1, 1, 1)`` for ``q/k/v_proj``.
        lead: Leading singleton dims our tensors have in addition (timm ``cls_token`` (1, 1, D) against (D,): 2).
    """

    ours: tuple[str, ...]
    hf: tuple[str, ...]
    ours_parts: tuple[int, ...] = (1,)
    hf_parts: tuple[int, ...] = (1,)
    lead: int = 0

    @classmethod
    def rename(cls, ours: str, hf: str, lead: int = 0) -> KeyRule:
        """One tensor on each side."""
        return cls((ours,), (hf,), lead=lead)

    @cached_property
    def _ours_regex(self) -> re.Pattern:
        return _regex(self.ours[0])

    @cached_property
    def _hf_regex(self) -> re.Pattern:
        return _regex(self.hf[0])

    def convert(self, state: dict[str, torch.Tensor], to: str) -> dict[str, torch.Tensor]:
        """Pop the source tensors this rule matches from ``state`` and return them in the other layout.

        Args:
            state: Source tensors (consumed in place: what no rule matches stays behind).
            to: ``"hf"`` (source is ours) or ``"ours"`` (source is transformers').
        """
        if to == "hf":
            src, dst, dst_parts, regex = self.ours, self.hf, self.hf_parts, self._ours_regex
        else:
            src, dst, dst_parts, regex = self.hf, self.ours, self.ours_parts, self._hf_regex
        out: dict[str, torch.Tensor] = {}
        for key in [k for k in state if regex.fullmatch(k)]:
            groups = regex.fullmatch(key).groupdict()
            names = [t.format(**groups) for t in src]
            if not all(n in state for n in names):
                continue  # an incomplete group stays behind and is reported as left over
            tensors = [state.pop(n) for n in names]
            if to == "hf":  # drop our extra singleton dims first: (1, 1, D) -> (D,)
                tensors = [t.reshape(t.shape[self.lead :]) for t in tensors]
            full = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)  # (sum of parts, ...)
            unit, rest = divmod(full.shape[0], sum(dst_parts)) if len(dst_parts) > 1 else (full.shape[0], 0)
            if rest:
                raise ValueError(f"{key}: {tuple(full.shape)} cannot be split into parts {dst_parts}.")
            pieces = full.split([unit * n for n in dst_parts], dim=0) if len(dst_parts) > 1 else (full,)
            for template, piece in zip(dst, pieces, strict=True):
                if to == "ours":
                    piece = piece.reshape((1,) * self.lead + tuple(piece.shape))
                out[template.format(**groups)] = piece
        return out


def apply_rules(
    state: Mapping[str, torch.Tensor], rules: Iterable[KeyRule], to: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Convert ``state`` with ``rules``.

    Args:
        state: Source tensors (not modified).
        rules: The rules of one component.
        to: ``"hf"`` or ``"ours"``.

    Returns:
        (converted tensors, source names no rule took), the latter sorted.
    """
    remaining = dict(state)
    out: dict[str, torch.Tensor] = {}
    for rule in rules:
        out.update(rule.convert(remaining, to))
    return out, sorted(remaining)


def rename_prefixes(keys: Iterable[str], prefixes: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Old name -> new name, replacing the first matching prefix of each key (keys without one are kept)."""
    prefixes = list(prefixes)
    out = {}
    for key in keys:
        new = key
        for old, repl in prefixes:
            if key.startswith(old):
                new = repl + key[len(old) :]
                break
        out[key] = new
    return out


def convert_network_state(
    state: Mapping[str, torch.Tensor],
    to: str,
    vision: tuple[str, str],
    vision_rules: Sequence[KeyRule],
    projector_rules: Sequence[KeyRule],
    llm: Sequence[tuple[str, str]],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Names of a whole VLM state dict converted one way: the tower by its rules, the projector by its rules, the LM
    renamed by prefix.

    Args:
        state: The tensors, by the source side's names.
        to: ``"hf"`` (ours -> transformers') or ``"ours"``.
        vision: (our tower prefix, transformers' tower prefix).
        vision_rules: The tower family's rules (names relative to the tower prefixes).
        projector_rules: The projector's rules (whole names).
        llm: (our prefix, transformers' prefix) pairs renamed as they are (decoder, output projection).

    Returns:
        (converted tensors, the source names no rule or prefix took, sorted).
    """
    src, dst = vision if to == "hf" else vision[::-1]
    prefixes = list(llm) if to == "hf" else [pair[::-1] for pair in llm]
    tower = {k[len(src) :]: v for k, v in state.items() if k.startswith(src)}
    converted, left = apply_rules(tower, vision_rules, to)
    out = {dst + k: v for k, v in converted.items()}
    leftover = [src + k for k in left]
    rest = {k: v for k, v in state.items() if not k.startswith(src)}
    converted, left = apply_rules(rest, projector_rules, to)
    out.update(converted)
    renamed = rename_prefixes(left, prefixes)
    for key in left:
        if renamed[key] == key:
            leftover.append(key)
        else:
            out[renamed[key]] = rest[key]
    return out, sorted(leftover)
