"""Reading typed records from JSON: one helper that names the file and the field when a value is wrong.

Each record a run writes (``results.json``'s rows, ``hparams.json``, a sample sidecar) is a frozen
dataclass with ``to_dict`` (the exact dictionary written, keys in the order written) and
``from_dict(data, source)``. ``from_dict`` checks each field's type through :func:`field` and
raises one :class:`~shortcutlm.artifacts.files.ArtifactError` line naming ``source`` (the file) and
the field; a field an older folder lacks takes its old default.

``SCHEMA`` on each record is the version of its layout. The files do not carry it yet (every file
stays byte-identical to what earlier versions wrote); a reader that meets a file with a ``schema``
newer than it knows refuses it by name rather than misreading it.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Mapping

from shortcutlm.artifacts.files import ArtifactError

_MISSING = object()
NUMBER = (int, float)


def _type_names(types: type | tuple[type, ...]) -> str:
    kinds = types if isinstance(types, tuple) else (types,)
    shown = [t for t in kinds if t is not int or float not in kinds]  # int and float: "a number"
    names = {bool: "true or false", dict: "an object", list: "a list", str: "a string", int: "an integer",
             float: "a number"}
    return " or ".join(names.get(t, f"a {t.__name__}") for t in shown)


def field(data: Mapping[str, Any], name: str, types: type | tuple[type, ...], source: str,
          default: Any = _MISSING, optional: bool = False) -> Any:
    """``data[name]`` checked to be one of ``types`` (``None`` too when ``optional``); ``default``
    when the key is absent (an older file); an ArtifactError naming ``source`` and the field otherwise."""
    if name not in data:
        if default is _MISSING:
            raise ArtifactError(f"{source}: field {name!r} is missing")
        return default
    value = data[name]
    if value is None and optional:
        return None
    kinds = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in kinds:  # JSON true is not a count
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        raise ArtifactError(f"{source}: field {name!r} should be {_type_names(types)}"
                            f"{' or null' if optional else ''}, not {type(value).__name__} {value!r:.40}")
    return value


def mapping(data: Any, source: str, what: str) -> Mapping[str, Any]:
    """``data`` when it is a JSON object; an ArtifactError naming ``source`` otherwise."""
    if not isinstance(data, Mapping):
        raise ArtifactError(f"{source}: {what} should be a JSON object, not {type(data).__name__}")
    return data


def check_schema(data: Mapping[str, Any], known: int, source: str) -> None:
    """Refuse a record written by a newer layout than this reader knows (absent: the first layout)."""
    version = data.get("schema", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version > known:
        raise ArtifactError(f"{source}: field 'schema' is {version!r}, newer than this version of shortcutlm reads "
                            f"(up to {known}); upgrade shortcutlm")
