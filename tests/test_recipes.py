"""Every recipe under recipes/ describes itself, parses with the CLI (``--print_config``) and builds its model on meta.

A recipe that names a class which does not import fails, naming the recipe file and that class path.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from lightning_mm import MultimodalModule
from lightning_mm.cli import main
from lightning_mm.zoo import build_network

ROOT = Path(__file__).parents[1]
# Lightning CLI recipes; a directory with its own run.py holds an experiment whose YAML is that script's config
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if not (p.parent / "run.py").exists())
LLAVA_RECIPES = sorted((ROOT / "recipes" / "llava_v15").glob("*.yaml"))


def _rel(recipe: Path) -> str:
    return recipe.relative_to(ROOT / "recipes").as_posix()


def _class_paths(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("class_path"), str):
            yield node["class_path"]
        for value in node.values():
            yield from _class_paths(value)
    elif isinstance(node, list):
        for value in node:
            yield from _class_paths(value)


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _check_classes_import(recipe: Path) -> None:
    for path in _class_paths(yaml.safe_load(recipe.read_text())):
        try:
            _import(path)
        except (ImportError, AttributeError) as err:
            pytest.fail(f"recipes/{_rel(recipe)} names class_path {path!r}, which does not import: {err!r}")


@contextlib.contextmanager
def _in_repo_root() -> Iterator[None]:
    """Recipes name files relative to the repository root (the directory their commands run from)."""
    previous = os.getcwd()
    os.chdir(ROOT)
    try:
        yield
    finally:
        os.chdir(previous)


@functools.cache
def _printed_config(recipe: Path) -> dict[str, Any]:
    """``lightning-mm fit --config RECIPE --print_config``, run in-process from the repository root."""
    out = io.StringIO()
    argv = ["lightning-mm"]  # the CLI gets its arguments from `main`, not from pytest's command line
    with _in_repo_root(), mock.patch.object(sys, "argv", argv), contextlib.redirect_stdout(out):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(recipe), "--print_config"])
    assert exit_info.value.code == 0, f"{_rel(recipe)} does not parse"
    return yaml.safe_load(out.getvalue())


def _instantiate_model(model_config: dict[str, Any]) -> MultimodalModule:
    """The recipe's LightningModule, instantiated as the CLI does (its network is not built yet)."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(MultimodalModule, "model", required=True)
    return parser.instantiate_classes(parser.parse_object({"model": model_config}))["model"]


@pytest.mark.parametrize("recipe", RECIPES, ids=_rel)
def test_recipe_has_a_header_with_purpose_download_and_command(recipe):
    header = []
    for line in recipe.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    for field in ("Purpose:", "Download:", "Command:"):
        assert field in text, f"{_rel(recipe)}: the header comment has no {field!r}"
    assert f"lightning-mm fit --config recipes/{_rel(recipe)}" in text, f"{_rel(recipe)}: no exact command"


@pytest.mark.parametrize("recipe", RECIPES, ids=_rel)
def test_recipe_parses_and_its_model_builds_on_meta(recipe):
    _check_classes_import(recipe)
    config = _printed_config(recipe)
    module = _instantiate_model(config["model"])
    with _in_repo_root(), torch.device("meta"):
        network = build_network(module.spec, pretrained=False)
    params = list(network.parameters())
    assert params and all(p.is_meta for p in params)


def test_readme_lists_every_recipe():
    readme = (ROOT / "recipes" / "README.md").read_text()
    missing = [_rel(r) for r in RECIPES if f"`{_rel(r)}`" not in readme]
    assert not missing, f"recipes/README.md has no row for {missing}"


# ---------------------------------------------------------------- LLaVA-1.5's published settings
def _placements(config: dict[str, Any]) -> dict[str, Any]:
    """Component -> placement declared by the recipe's placement callbacks."""
    placements = {}
    for cb in config["trainer"]["callbacks"] or []:
        callback = _import(cb["class_path"])(**(cb.get("init_args") or {}))
        if hasattr(callback, "component") and hasattr(callback, "placement"):
            placements[callback.component] = callback.placement
    return placements


@pytest.mark.parametrize("recipe", LLAVA_RECIPES, ids=_rel)
def test_llava_v15_recipe_carries_the_papers_settings(recipe):
    _check_classes_import(recipe)
    config = _printed_config(recipe)
    trainer, model, data = config["trainer"], config["model"]["init_args"], config["data"]["init_args"]
    size = recipe.stem.split("_")[0]
    stage = recipe.stem.removeprefix(f"{size}_")
    assert model["model"] == f"llava-1.5-{size}-components" and model["pretrained"] is True
    global_batch = trainer["devices"] * trainer["num_nodes"] * data["batch_size"] * trainer["accumulate_grad_batches"]
    assert global_batch == (256 if stage == "pretrain" else 128)
    optim = model["optimizer"]["init_args"]
    assert math.isclose(optim["lr"], {"pretrain": 1e-3, "finetune": 2e-5, "finetune_lora": 2e-4}[stage])
    assert optim["weight_decay"] == 0.0
    assert model["schedule"] == "cosine" and math.isclose(model["warmup_ratio"], 0.03)
    assert trainer["max_epochs"] == 1
    assert trainer["precision"].startswith("bf16")
    assert model["activation_checkpointing"] is True
    assert data["max_length"] == 2048
    assert data["template"] == ("plain" if stage == "pretrain" else "vicuna_v1")
    if stage != "pretrain":
        assert model["image_aspect"] == "pad"
        assert model["model_overrides"]["projector_weights"]  # stage 2 starts from the stage-1 projector

    placements = _placements(config)
    expected = {
        "pretrain": {"vision": "frozen", "projector": "full", "llm": "frozen"},
        "finetune": {"vision": "frozen", "projector": "full", "llm": "full"},
        "finetune_lora": {"vision": "frozen", "projector": "full", "llm": "lora"},
    }[stage]
    assert {component: p.mode for component, p in placements.items()} == expected
    if stage == "finetune_lora":
        lora = placements["llm"]
        assert (lora.r, lora.alpha) == (128, 256)
        assert math.isclose(placements["projector"].lr, 2e-5)
