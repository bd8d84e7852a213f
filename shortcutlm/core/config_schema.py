"""Build documented dataclasses from nested dicts (YAML), refusing unknown keys and wrong types.

Hand-written because the needs are small (nested dataclasses, ``--set a.b=c`` overrides, errors
that name the full key path) and a schema library would add a dependency for little gain.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import yaml

from shortcutlm.core.errors import UserError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class ConfigError(UserError, ValueError):
    """A recipe or config value is wrong; the message names the key path."""


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads numbers as people write them.

    PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent, so ``3e-4``,
    ``1e3`` and ``2E+5`` load as strings; YAML 1.2 (and every other parser users know) reads
    them as numbers. One extra implicit resolver adds those forms; ``6.0e-4``, ``.5`` and
    ``1_000`` already load as numbers.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """Parse YAML text (safe: plain data only) with numbers in every form people write."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def yaml_text(text: str, where: str) -> Any:
    """:func:`load_yaml`, or one :class:`ConfigError` line naming ``where`` (a file, a ``--set``) for text
    that is not YAML or asks for a Python object (``!!python/...`` tags are refused, never built)."""
    try:
        return load_yaml(text)
    except yaml.YAMLError as err:
        detail = " ".join(str(err).split())
        if "python/" in detail:
            detail = "a !!python tag asks to build a Python object, which is never done from a file or option"
        raise ConfigError(f"{where}: not valid YAML ({detail})") from err


def closest(word: str, options: typing.Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the option nearest a mistyped word, or ``""``."""
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any or hint is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} does not fit {hint}")
    if dataclasses.is_dataclass(hint):  # a type hint, so the class (is_dataclass also says yes to instances)
        return from_dict(cast("type[DataclassInstance]", hint), value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Instantiate dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        hint = closest(unknown[0], known) if len(unknown) == 1 else ""
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}{hint} (known keys: {sorted(known)})")
    kwargs = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        kwargs[name] = _check_type(value, hints[name], path)
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{where or cls.__name__}: {err}") from err


def deep_merge(base: dict, update: dict) -> dict:
    """``update`` over ``base``, merging nested mappings (a preset over the recipe)."""
    out = dict(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML: numbers, booleans, lists)."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.max_steps=100")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = yaml_text(raw, f"--set {item}")
    return data


def yaml_file(path: str | Path, what: str) -> Any:
    """The YAML in ``path`` (``{}`` when empty); one line naming the file when it cannot be read or parsed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read this {what} ({err})") from err
    return yaml_text(text, str(path)) or {}


def read_file_yaml(path: str | Path, preset: str | None, what: str) -> dict:
    """A YAML config file with its preset merged in (recorded as ``preset``).

    ``what`` names the kind of file in errors ("recipe file", "ablation file"), which also name the path.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such {what}")
    raw = yaml_file(path, what)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a {what} is a mapping of keys, got {type(raw).__name__}")
    presets = raw.pop("presets", {}) or {}
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"{path}: no preset {preset!r}{closest(preset, presets)} "
                              f"(presets: {', '.join(sorted(presets)) or 'none'})")
        raw = deep_merge(raw, presets[preset])
        raw["preset"] = preset
    return raw


def load_config(path: str | Path, preset: str | None, overrides: list[str] | None, what: str,
                build: typing.Callable[[dict], T]) -> T:
    """Build a validated config from a YAML file, its preset and ``--set`` overrides.

    The file (with its preset) is validated first, so its errors name the file; then each
    override is applied and validated in turn, so a bad one is blamed on that ``--set``, not on
    the file it never came from.
    """
    raw = read_file_yaml(path, preset, what)
    try:
        built = build(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    for item in overrides or []:
        raw = apply_overrides(raw, [item])
        try:
            built = build(raw)
        except ConfigError as err:
            raise ConfigError(f"--set {item}: {err}") from err
    return built
