"""Configuration errors: raised before training, printed by ``lightning-mm`` as one short paragraph."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = ["ConfigError", "check_choice", "check_range", "close_matches", "did_you_mean", "find_config_error"]


class ConfigError(ValueError):
    """A setting that cannot work: an unknown name, a LoRA target that matches nothing, an unreadable checkpoint file.

    Raised before the first training step, with a message that names the key, name or file and what is wrong. The
    ``lightning-mm`` command prints the message alone (no traceback) and exits with status 2. A ``ValueError``, so
    code that catches those keeps working.
    """


def close_matches(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` entries of ``choices`` that look like ``name``, best first.

    difflib's similarity ratio must be at least 0.6 and within 0.1 of the best one (``v_poj`` suggests ``v_proj``,
    not ``q_proj`` too).
    """
    close = difflib.get_close_matches(name, sorted(set(choices)), n=n, cutoff=0.6)
    ratios = [difflib.SequenceMatcher(None, name, c).ratio() for c in close]
    return [c for c, r in zip(close, ratios, strict=True) if r >= max(ratios) - 0.1]


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """`` Did you mean 'x'?`` (or ``'x' or 'y'``) for the close matches of ``name``; empty when there is none."""
    close = close_matches(name, choices, n)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def find_config_error(error: BaseException) -> ConfigError | None:
    """The :class:`ConfigError` that caused ``error``: itself, or one in its ``__cause__`` / ``__context__`` chain.

    Libraries wrap errors raised while they build objects (jsonargparse reports a class that failed to instantiate
    inside a message of its own); the chain still holds the original one.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ConfigError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def check_choice(key: str, value: Any, choices: Iterable[str]) -> None:
    """Raise a :class:`ConfigError` naming ``key``, the accepted values and the closest one unless ``value`` is one.

    ``check_choice("schedule", "cosin", SCHEDULES)``: ``schedule: 'cosin' is not accepted. Did you mean 'cosine'?
    Accepted: 'cosine', 'linear', 'constant'.``
    """
    choices = list(choices)
    if value not in choices:
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        raise ConfigError(f"{key}: {value!r} is not accepted.{hint} Accepted: {', '.join(repr(c) for c in choices)}.")


def check_range(key: str, value: Any, low: float | None = None, high: float | None = None) -> None:
    """Raise a :class:`ConfigError` naming ``key`` unless ``low <= value <= high`` (a bound left None is open).

    ``check_range("batch_size", 0, 1)``: ``batch_size must be >= 1, got 0.``
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return  # not a number: the type checks of the caller (or of jsonargparse) apply
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (
            f"in [{low}, {high}]"
            if low is not None and high is not None
            else f">= {low}"
            if low is not None
            else f"<= {high}"
        )
        raise ConfigError(f"{key} must be {bounds}, got {value}.")
