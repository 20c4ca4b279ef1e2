"""``lightning-mm zoo``: print the model zoo as a table (parameters counted on the meta device, offline).

Building every entry on the meta device to count its parameters and image tokens takes seconds (torch, transformers
and timm to import, then 24 networks), so the table of the built-in entries is kept in a cache file
(``$LIGHTNING_MM_CACHE``, else ``$XDG_CACHE_HOME/lightning_mm``, else ``~/.cache/lightning_mm``). Its name holds a
fingerprint of the package's source files and of the torch, timm and transformers versions: a change to any of them
is a new file, computed once. With the cache, ``lightning-mm zoo`` imports none of those libraries. Called from
Python after models were registered there, the command computes the rows the cache does not hold.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from lightning_mm import families, zoo
from lightning_mm.commands.registry import register_command

__all__ = ["HEADER", "cache_path", "format_count", "image_tokens", "run", "zoo_rows"]

HEADER = ("name", "family", "vision", "llm", "params", "img tokens", "template")
_PACKAGE = Path(__file__).resolve().parents[1]
_LIBRARIES = ("torch", "timm", "transformers")


def format_count(n: int) -> str:
    """``7063427072`` -> ``7.06B``; ``489472`` -> ``489.5K``."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.{2 if unit == 'B' else 1}f}{unit}"
    return str(n)


def image_tokens(spec: Any) -> str:
    """The image-token column, as the model's family writes it: one number for a fixed-size view, per tile or per
    view (``"576/tile"``, ``"64/view"``) when an image takes several."""
    return families.get_family(spec.family).image_tokens_label(spec, zoo.count_image_tokens(spec)[0])


def _compute_row(name: str) -> dict[str, Any]:
    """One entry's columns, its parameter count as a number (None: not countable offline)."""
    spec = zoo.get_spec(name)
    try:
        params = zoo.parameter_counts(spec)["total"]
    except (OSError, ValueError):  # a spec whose vocabulary comes from a tokenizer that is not available offline
        params = None
    llm = (
        spec.llm
        or spec.checkpoint  # a whole released VLM: its checkpoint
        or f"({spec.llm_config.get('model_type', '?')}, {spec.llm_config.get('num_hidden_layers', '?')}L)"
    )
    return {
        "name": name,
        "family": spec.family,
        "vision": spec.vision_model,
        "llm": llm,
        "params": params,
        "img tokens": image_tokens(spec),
        "template": spec.template,
        "description": spec.description,
    }


def _fingerprint() -> str:
    """What the built-in rows depend on: the package's sources and the libraries that build the networks."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    for name in _LIBRARIES:
        try:
            digest.update(f"{name}={metadata.version(name)}\0".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=none\0".encode())
    return digest.hexdigest()[:20]


def cache_path() -> Path:
    """The cache file of this package version and these libraries (see the module's docstring)."""
    root = os.environ.get("LIGHTNING_MM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "lightning_mm"
    )
    return Path(root) / f"zoo-{_fingerprint()}.json"


def _read_cache(path: Path) -> dict[str, dict[str, Any]] | None:
    try:
        rows = json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return rows if isinstance(rows, dict) else None


def _write_cache(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"rows": rows}, indent=1))
        os.replace(tmp, path)  # whole or absent, also with two commands at once
    except OSError:
        pass  # a read-only home: the table is computed each time


def _registry_loaded() -> bool:
    """Whether this process loaded the zoo's registry (where models of its own may be registered)."""
    return "lightning_mm.zoo.registry" in sys.modules


def zoo_rows(pattern: str | None = None) -> list[dict[str, Any]]:
    """The table's rows of the models whose names match ``pattern``, sorted by name.

    In a process that has not loaded the zoo yet (the ``lightning-mm zoo`` command), the rows come from the cache, or
    are computed for every built-in entry and cached; otherwise the registry's names are listed and the rows the
    cache lacks are computed (models registered from Python).
    """
    path = cache_path()
    cached = _read_cache(path) or {}
    if not _registry_loaded():  # only the built-in entries can be registered
        if not cached:
            cached = {name: _compute_row(name) for name in zoo.list_models()}
            _write_cache(path, cached)
        names = sorted(fnmatch.filter(cached, pattern) if pattern else cached)
    else:
        names = zoo.list_models(pattern)
    return [cached[name] if name in cached else _compute_row(name) for name in names]


@register_command("zoo", "list the model zoo")
def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lightning-mm zoo", description="List the named models of the zoo.")
    parser.add_argument("pattern", nargs="?", default=None, help="shell-style filter, e.g. 'llava-*'")
    parser.add_argument("--exact", action="store_true", help="print exact parameter counts")
    parser.add_argument("-v", "--verbose", action="store_true", help="add each model's description")
    args = parser.parse_args(argv)
    rows = zoo_rows(args.pattern)
    if not rows:
        print(f"No model matches {args.pattern!r}.")
        return 1
    header = (*HEADER, "description") if args.verbose else HEADER

    def cells(row: dict[str, Any]) -> tuple[str, ...]:
        params = row["params"]
        count = "?" if params is None else f"{params:,}" if args.exact else format_count(params)
        return tuple(count if column == "params" else str(row[column]) for column in header)

    table = [header, *map(cells, rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0
