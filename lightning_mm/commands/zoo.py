"""``lightning-mm zoo``: print the model zoo as a table (parameters counted on the meta device, offline)."""

from __future__ import annotations

import argparse

from lightning_mm.commands.registry import register_command
from lightning_mm.families import get_family
from lightning_mm.zoo import ModelSpec, count_image_tokens, get_spec, list_models, parameter_counts

HEADER = ("name", "family", "vision", "llm", "params", "img tokens", "template")


def format_count(n: int) -> str:
    """``7063427072`` -> ``7.06B``; ``489472`` -> ``489.5K``."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.{2 if unit == 'B' else 1}f}{unit}"
    return str(n)


def image_tokens(spec: ModelSpec) -> str:
    """The image-token column, as the model's family writes it: one number for a fixed-size view, per tile or per
    view (``"576/tile"``, ``"64/view"``) when an image takes several."""
    return get_family(spec.family).image_tokens_label(spec, count_image_tokens(spec)[0])


def _row(name: str, exact: bool, describe: bool) -> tuple[str, ...]:
    spec = get_spec(name)
    try:
        total = parameter_counts(spec)["total"]
        params = f"{total:,}" if exact else format_count(total)
    except (OSError, ValueError):  # a spec whose vocabulary comes from a tokenizer that is not available offline
        params = "?"
    llm = (
        spec.llm
        or spec.checkpoint  # a whole released VLM: its checkpoint
        or f"({spec.llm_config.get('model_type', '?')}, {spec.llm_config.get('num_hidden_layers', '?')}L)"
    )
    row = (name, spec.family, spec.vision_model, llm, params, image_tokens(spec), spec.template)
    return (*row, spec.description) if describe else row


@register_command("zoo", "list the model zoo")
def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lightning-mm zoo", description="List the named models of the zoo.")
    parser.add_argument("pattern", nargs="?", default=None, help="shell-style filter, e.g. 'llava-*'")
    parser.add_argument("--exact", action="store_true", help="print exact parameter counts")
    parser.add_argument("-v", "--verbose", action="store_true", help="add each model's description")
    args = parser.parse_args(argv)
    names = list_models(args.pattern)
    if not names:
        print(f"No model matches {args.pattern!r}.")
        return 1
    header = (*HEADER, "description") if args.verbose else HEADER
    rows = [header, *(_row(n, args.exact, args.verbose) for n in names)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0
