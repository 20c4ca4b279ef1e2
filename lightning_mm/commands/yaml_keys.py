"""YAML config files with unique keys: a key written twice in one mapping is an error naming it and both lines.

YAML itself lets the last of two equal keys win, so a recipe that sets ``max_steps`` twice, or lists ``callbacks:``
twice under ``trainer:``, silently loses the first. The ``lightning-mm`` Trainer subcommands read every config file
and every YAML value through :func:`check_unique_keys` (:func:`install_unique_keys` puts it in jsonargparse).
"""

from __future__ import annotations

import os
from typing import Any

import yaml
from jsonargparse import get_loader, set_loader

from lightning_mm.errors import ConfigError

__all__ = ["DuplicateKeyError", "YamlFileError", "check_unique_keys", "install_unique_keys"]


class YamlFileError(ConfigError):
    """A config file that is not YAML, or has a key twice in one mapping; the message starts with :attr:`path`."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}, {detail}" if path else detail)
        self.path, self.detail = path, detail


class DuplicateKeyError(YamlFileError):
    """A key written twice in one YAML mapping (the file, the key and both lines are in the message)."""


def _loader_class(path: str | os.PathLike) -> type:
    class UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.setdefault(key, line)
                except TypeError:  # an unhashable key: YAML's own error follows
                    continue
                if first != line:
                    raise DuplicateKeyError(
                        os.fspath(path),
                        f"line {line}: key {key!r} is written twice in the same mapping (first at line {first}); "
                        "YAML would keep the last value silently. Keep one.",
                    )
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def check_unique_keys(stream: str, path: str | os.PathLike = "") -> None:
    """Raise :class:`DuplicateKeyError` when a mapping of the YAML text ``stream`` has a key twice.

    Args:
        stream: The YAML text (a config file's content or a command-line value).
        path: The file it was read from, for the message.

    Raises:
        yaml.YAMLError: ``stream`` is not YAML.
    """
    yaml.load(stream, Loader=_loader_class(path))


def _describe_yaml_error(err: yaml.MarkedYAMLError) -> str:
    """``line 3, column 1: not valid YAML: did not find expected ',' or ']' (while parsing a flow sequence, line 2)``"""
    mark = err.problem_mark or err.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
    context = f" ({err.context}, line {err.context_mark.line + 1})" if err.context and err.context_mark else ""
    return f"{where}: not valid YAML: {err.problem}{context}."


def install_unique_keys() -> None:
    """From now on, jsonargparse checks the YAML it reads (``parser_mode="yaml"``) with :func:`check_unique_keys`
    before loading it as before; a config file that is not YAML is a :class:`ConfigError` naming the file, line and
    column. Idempotent; in effect for the rest of the process."""
    current = get_loader("yaml")
    if getattr(current, "checks_unique_keys", False):
        return

    def load(stream: str, path: str | os.PathLike = "") -> Any:  # jsonargparse passes `path` for config files
        try:
            check_unique_keys(stream, path)
        except yaml.MarkedYAMLError as err:
            if not path:  # a command-line value: jsonargparse takes it as a string
                raise
            raise YamlFileError(os.fspath(path), _describe_yaml_error(err)) from None
        return current(stream)

    load.checks_unique_keys = True  # type: ignore[attr-defined]
    set_loader("yaml", load, (yaml.YAMLError,))
