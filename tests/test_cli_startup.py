"""``lightning-mm --help`` and ``lightning-mm zoo`` start without torch or Lightning; the zoo's table is cached; the
registry of subcommands and the top-level help agree with what the subcommands register."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from lightning_mm.cli import TRAINER_SUBCOMMANDS, main, usage
from lightning_mm.commands import BUILTIN_COMMANDS, EXTRA_COMMANDS, chat, export  # noqa: F401  (they register)
from lightning_mm.commands import zoo as zoo_command

ROOT = Path(__file__).parents[1]
HEAVY = ("torch", "lightning", "transformers", "timm")


def _fresh(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, LIGHTNING_MM_CACHE=str(tmp_path), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_import_help_and_a_cached_zoo_load_no_heavy_library(tmp_path):
    """Before: ``import lightning_mm`` imported torch, transformers, timm and Lightning (5-13 s)."""
    row = {"name": "tiny", "family": "llava", "vision": "vit", "llm": "(llama, 2L)", "params": 489472}
    row |= {"img tokens": "16", "template": "chatml", "description": "cached"}
    code = (
        "import sys, json\n"
        "import lightning_mm\n"
        f"assert not [m for m in {HEAVY!r} if m in sys.modules], 'import lightning_mm'\n"
        "from lightning_mm.cli import main\n"
        "from lightning_mm.commands.zoo import cache_path\n"
        f"cache_path().write_text(json.dumps({{'rows': {{'tiny': {row!r}}}}}))\n"
        "assert main(['--help']) == 0 and main(['zoo', '-v']) == 0\n"
        f"print('loaded:', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    proc = _fresh(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "loaded: []" in proc.stdout
    assert "Project subcommands" in proc.stdout and "489.5K" in proc.stdout and "cached" in proc.stdout


def test_zoo_table_is_computed_once_then_read_from_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIGHTNING_MM_CACHE", str(tmp_path))
    monkeypatch.setattr(zoo_command, "_registry_loaded", lambda: False)  # a fresh process: built-in entries only
    computed: list[str] = []

    def row(name: str) -> dict:
        computed.append(name)
        return {
            "name": name,
            "family": "llava",
            "vision": "v",
            "llm": "l",
            "params": 12,
            "img tokens": "1",
            "template": "t",
        }

    monkeypatch.setattr(zoo_command, "_compute_row", row)
    assert main(["zoo", "tiny"]) == 0
    assert computed and computed == sorted(computed) and "tiny" in computed  # every built-in entry, once
    rows = json.loads(zoo_command.cache_path().read_text())["rows"]
    assert sorted(rows) == computed
    computed.clear()
    assert [r["name"] for r in zoo_command.zoo_rows("tiny*")] == sorted(n for n in rows if n.startswith("tiny"))
    assert computed == []
    capsys.readouterr()


def test_subcommand_registry_matches_the_subcommands():
    assert {name: help for name, (help, _) in EXTRA_COMMANDS.items()} == {
        name: help for name, (help, _) in BUILTIN_COMMANDS.items()
    }
    assert list(TRAINER_SUBCOMMANDS) == list(LightningCLI.subcommands())
    assert all(f"  {name}" in usage() for name in [*TRAINER_SUBCOMMANDS, *BUILTIN_COMMANDS])
