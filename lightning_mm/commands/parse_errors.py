"""jsonargparse's errors as one paragraph: the key, what is wrong with it, a close match and the accepted values.

jsonargparse reports a mistake in a nested class (``--model.init_args.modle``, ``component: vison`` in a callback) as
the errors of every type the value could have had, and ``lightning-mm`` printed the whole usage (50-70 lines) before
them. :func:`describe_parse_error` reads the message down to the innermost problem and says it in one sentence, with
the options, arguments or values that exist and the closest one (difflib).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
from collections.abc import Iterable
from pathlib import Path

from lightning_mm.errors import close_matches, did_you_mean

__all__ = ["class_arguments", "describe_parse_error"]

# the base class a config key instantiates: its imported subclasses are the candidates for a misspelt class name
_BASES = {
    "model": ("lightning.pytorch", "LightningModule"),
    "data": ("lightning.pytorch", "LightningDataModule"),
    "trainer.callbacks": ("lightning.pytorch.callbacks", "Callback"),
    "trainer.logger": ("lightning.pytorch.loggers", "Logger"),
    "optimizer": ("torch.optim", "Optimizer"),
    "lr_scheduler": ("torch.optim.lr_scheduler", "LRScheduler"),
}
_MAX_LISTED = 24


def _import(path: str) -> object | None:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        return None


def class_arguments(cls: object) -> list[str]:
    """The keyword arguments ``cls(...)`` accepts: its ``__init__``'s, and its bases' while one takes ``**kwargs``."""
    names: list[str] = []
    for klass in getattr(cls, "__mro__", ())[:-1]:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]
        names += [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def _subclass_names(key: str) -> list[str]:
    base = _import(".".join(_BASES[key])) if key in _BASES else None
    found, stack = set(), list(base.__subclasses__()) if isinstance(base, type) else []
    while stack:
        cls = stack.pop()
        if not cls.__name__.startswith("_"):
            found.add(cls.__name__)
        stack += cls.__subclasses__()
    return sorted(found)


def _listed(values: Iterable[str]) -> str:
    values = list(values)
    more = f", ... ({len(values)} in all)" if len(values) > _MAX_LISTED else ""
    return ", ".join(values[:_MAX_LISTED]) + more


def _block_after(lines: list[str], index: int) -> list[str]:
    """The lines indented deeper than ``lines[index]``, right after it."""
    indent = len(lines[index]) - len(lines[index].lstrip())
    block = []
    for line in lines[index + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    return block


def _innermost(text: str) -> tuple[list[str], str | None, str]:
    """(nested keys, the class whose arguments they are, the innermost problem) of a jsonargparse message."""
    keys: list[str] = []
    cls = None
    lines = text.splitlines()
    while lines:
        first = lines[0].strip()
        match = re.match(r'Parser key "([^"]+)":\s*(.*)', first)
        if match:
            keys.append(match.group(1))
            lines = ([match.group(2)] if match.group(2) else []) + lines[1:]
            continue
        problem = next((i for i, line in enumerate(lines) if "Problem with given class_path '" in line), None)
        if problem is None:
            break
        cls = re.search(r"class_path '([^']+)'", lines[problem]).group(1)
        lines = [line for line in _block_after(lines, problem) if line.strip()]
    rest = [line.strip() for line in lines if line.strip()]
    # a union's alternatives: keep the first one that is not a type mismatch with None or a generic subclass hint
    alternatives = [line[2:] for line in rest if line.startswith("- ")]
    useful = [a for a in alternatives if not a.startswith(("Expected a <class 'NoneType'>", "Not a valid subclass"))]
    return keys, cls, (useful[0] if useful else (rest[0] if rest else text.strip()))


def _show_path(path: str) -> str:
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
    except ValueError:  # another drive
        return path


def _missing_file(path: str) -> str:
    shown = _show_path(path)
    folder = Path(path).parent
    if not folder.is_dir():
        return f"file {shown} does not exist (nor does its folder {_show_path(str(folder))})."
    names = [p.name for p in folder.iterdir() if p.is_file() and p.suffix == Path(path).suffix]
    close = close_matches(Path(path).name, names)
    hint = f" Did you mean {' or '.join(_show_path(str(folder / c)) for c in close)}?" if close else ""
    return f"file {shown} does not exist.{hint}"


def describe_parse_error(message: str, options: Iterable[str] = (), subcommand: str | None = None) -> str:
    """One paragraph for a jsonargparse error message.

    Args:
        message: ``str()`` of jsonargparse's ``ArgumentError``.
        options: The keys the (sub)command accepts (``trainer.max_steps``, ...), for a misspelt option.
        subcommand: ``fit``, ``validate``, ... for the hint at the end.

    Returns:
        ``"<key>: <what is wrong>. Did you mean ...? <accepted values>."``
    """
    keys, cls_path, problem = _innermost(message)
    outer = keys[0] if keys else None
    cls = _import(cls_path) if cls_path else None
    cls_name = cls_path.rpartition(".")[2] if cls_path else None
    help_hint = f" (`lightning-mm {subcommand} --help` lists the options.)" if subcommand else ""

    if match := re.search(r"Option '([^']+)' is not accepted", problem):
        name = match.group(1)
        inner = re.search(r"Got value: Namespace\(class_path='([^']+)'", problem)
        if inner:  # an argument of a class inside the class (an optimiser of the model)
            keys.append(f"init_args.{name}")
            cls_path = inner.group(1)
            cls, cls_name = _import(cls_path), cls_path.rpartition(".")[2]
        else:
            keys.append(name)
        accepted = class_arguments(cls) if cls is not None else []
        key = _join(keys, cls_name)
        return f"{key}: {cls_name} has no argument {name!r}.{did_you_mean(name, accepted)}" + (
            f" Its arguments: {_listed(accepted)}." if accepted else ""
        )
    if match := re.search(r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)", problem):
        choices = [str(c) for c in ast.literal_eval(f"[{match.group(1)}]")]
        value = match.group(2).strip()
        return (
            f"{_join(keys, cls_name)}: {value!r} is not accepted.{did_you_mean(value, choices)}"
            f" Accepted: {', '.join(repr(c) for c in choices)}."
        )
    if match := re.search(r"Expected a <class '(\w+)'>\. Got value: (.*)", problem):
        return f"{_join(keys, cls_name)}: expected {_article(match.group(1))}, got {match.group(2).strip()!r}."
    if match := re.search(r"File does not exist: '(.*)'", problem):
        return f"--{outer or 'config'}: {_missing_file(match.group(1))}"
    if match := re.search(
        r"Expected a path but (\S+) either not accessible|Expected a dot import path string: (\S+)", problem
    ):
        name = match.group(1) or match.group(2)
        known = _subclass_names(outer or "")
        return (
            f"{outer}: no class {name!r} (a class name known here, or a full import path).{did_you_mean(name, known)}"
            + (f" Known: {_listed(known)}." if known else "")
        )
    if match := re.search(r"does not accept option '([^']+)'", problem):
        name = match.group(1)
        close = close_matches(name, options)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"{name}: {subcommand or 'the command'} has no such option.{hint}{help_hint}"
    if match := re.search(r"invalid choice: '([^']+)' \(choose from (.*)\)", problem):
        choices = re.findall(r"'([^']+)'", match.group(2))
        value = match.group(1)
        return f"unknown subcommand {value!r}.{did_you_mean(value, choices)} Subcommands: {', '.join(choices)}."
    key = _join(keys, cls_name)
    return (f"{key}: " if key else "") + problem.rstrip(".") + "." + help_hint


def _join(keys: list[str], cls_name: str | None) -> str:
    """``model.init_args.modle``; a list entry's class in parentheses: ``trainer.callbacks (LoRAComponent).r``."""
    if not keys:
        return ""
    if len(keys) == 1:
        return keys[0]
    head, rest = keys[0], ".".join(keys[1:])
    if head == "trainer.callbacks" and cls_name:
        return f"{head} ({cls_name}).{rest}"
    return f"{head}.init_args.{rest}"


def _article(type_name: str) -> str:
    names = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
    return names.get(type_name, f"a {type_name}")
