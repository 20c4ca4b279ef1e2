"""``lightning-mm zoo``: print the model zoo as a table."""

from __future__ import annotations

import argparse

from lightning_mm.cli import register_command


@register_command("zoo", "list the model zoo")
def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lightning-mm zoo", description="List the named models of the zoo.")
    parser.add_argument("pattern", nargs="?", default=None, help="shell-style filter, e.g. 'llava-*'")
    args = parser.parse_args(argv)
    from lightning_mm.zoo import get_spec, list_models

    rows = [(n, get_spec(n).vision_model, get_spec(n).llm or "(config)", get_spec(n).description) for n in list_models(args.pattern)]
    widths = [max(len(str(r[i])) for r in [("name", "vision", "llm", "description"), *rows]) for i in range(4)]
    for r in [("name", "vision", "llm", "description"), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0
