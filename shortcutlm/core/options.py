"""Command-line options made from the settings dataclasses, and ``--config FILE`` for any command.

A setting that both a recipe and a command take (sampling temperature, top-k, seed, evaluation
batch size ...) is a field of one dataclass with one default; :func:`add_fields` turns fields into
``--option``s with that default, the field's type and its docstring as help, so the command line and
the recipe cannot drift apart. :func:`apply_config` reads ``--config FILE`` (YAML: option names to
values) into a command's defaults, so the command line still overrides the file.

Why argparse rather than jsonargparse (which litgpt uses): every mistake on our command line is one
line naming the option or file (``tests/test_cli_errors.py``); jsonargparse prints its own usage
blocks, and the suite would trade its error policy for what these two functions give.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from shortcutlm.core.errors import UserError

CONFIG_OPTION = "--config"


class OptionsFileError(UserError, ValueError):
    """A ``--config`` file that cannot be read or names an option the command does not have."""


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (the convention of the recipe schema)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _scalar_type(hint: Any) -> type:
    """``int`` for ``int`` or ``int | None``; the one non-None type a command-line value converts to."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(kinds) == 1:
            return kinds[0]
    if isinstance(hint, type):
        return hint
    raise TypeError(f"no command-line type for {hint!r}")


def add_fields(parser: Any, cls: type, names: list[str], flags: dict[str, str] | None = None,
               helps: dict[str, str] | None = None) -> None:
    """Add ``--name`` (underscores as hyphens, or ``flags[name]``) for each field of ``cls`` in
    ``names``, with the field's default, type and docstring (``helps[name]`` overrides the text).
    ``parser`` may be an argument group."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    docs = field_docs(cls)
    for name in names:
        field = fields[name]
        if field.default is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{name} has no default to offer the command line")
        kind = _scalar_type(hints[name])
        optional = typing.get_origin(hints[name]) in (typing.Union, types.UnionType)
        text = (helps or {}).get(name) or docs.get(name, "")
        shown = "none" if field.default is None else field.default
        flag = (flags or {}).get(name, "--" + name.replace("_", "-"))
        parser.add_argument(flag, dest=name, type=_or_none(kind) if optional else kind, default=field.default,
                            metavar=kind.__name__.upper(), help=f"{text} (default: {shown})".lstrip())


def _or_none(kind: type) -> Any:
    """A converter for an optional setting: ``none`` gives None (e.g. ``--top-k none``), else ``kind``."""
    def convert(text: str) -> Any:
        return None if text.strip().lower() in ("none", "null") else kind(text)
    convert.__name__ = kind.__name__  # argparse names the type in its error: "invalid int value"
    return convert


def _option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options by every name a file may give them: ``top-k``, ``top_k`` and the dest."""
    named = {}
    for action in parser._actions:  # argparse keeps no public list of a parser's actions
        if not action.option_strings or action.dest in ("help", "config"):
            continue
        for flag in action.option_strings:
            if flag.startswith("--"):
                named[flag[2:]] = named[flag[2:].replace("-", "_")] = action
        named[action.dest] = action
    return named


def _value_for(action: argparse.Action, value: Any, where: str) -> Any:
    """``value`` from a file, checked and converted as the command line would convert its text."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise OptionsFileError(f"{where}: give true or false, not {value!r}")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if isinstance(action, argparse._AppendAction):
        return [_converted(action, item, where) for item in (value if isinstance(value, list) else [value])]
    return _converted(action, value, where)


def _converted(action: argparse.Action, value: Any, where: str) -> Any:
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise OptionsFileError(f"{where}: give one value, not a {type(value).__name__}")
    converter = action.type if callable(action.type) else str
    try:
        converted = converter(value if isinstance(value, str) else str(value))
    except (TypeError, ValueError) as exc:
        raise OptionsFileError(f"{where}: {value!r} is not a valid value ({exc})") from exc
    if action.choices is not None and converted not in action.choices:
        raise OptionsFileError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return converted


def config_path(argv: list[str]) -> str | None:
    """The file given to ``--config`` on ``argv`` (``--config F`` or ``--config=F``), or None."""
    for index, arg in enumerate(argv):
        if arg == CONFIG_OPTION and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(CONFIG_OPTION + "="):
            return arg.split("=", 1)[1]
    return None


def apply_config(parser: argparse.ArgumentParser, path: str | Path) -> None:
    """Make the options in the YAML file ``path`` the command's defaults (the command line still wins).

    Keys are option names (``top-k`` or ``top_k``); an option required on the command line is
    satisfied by the file. A missing or unreadable file, a key the command lacks, or a value of the
    wrong kind is one line naming the file and the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OptionsFileError(f"{CONFIG_OPTION} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionsFileError(f"{CONFIG_OPTION} {path}: cannot be read ({exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise OptionsFileError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if data is None:
        return
    if not isinstance(data, dict):
        raise OptionsFileError(f"{path}: should map option names to values, not hold a {type(data).__name__}")
    actions = _option_actions(parser)
    values = {}
    for key, value in data.items():
        action = actions.get(str(key))
        if action is None:
            known = sorted({a.option_strings[-1].lstrip("-") for a in actions.values()})
            raise OptionsFileError(f"{path}: {key!r} is not an option of this command (it has: {', '.join(known)})")
        values[action.dest] = _value_for(action, value, f"{path}: {key}")
        action.required = False
    parser.set_defaults(**values)
