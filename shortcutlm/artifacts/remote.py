"""Shard folders served from elsewhere: a web server, an object store, any command that prints a file.

Locations (anything else is a local folder)::

    http://host/data/chorales   https://…     fetched with urllib
    s3://bucket/data   gs://…   file://…      fetched with fsspec (s3 and gs need s3fs / gcsfs installed)
    pipe:aws s3 cp s3://bucket/data/{name} -  webdataset's ``pipe:`` form: the command's standard output,
                                              ``{name}`` replaced by the file's path inside the folder

A remote folder is opened as a local *view* (:func:`shard_folder`): a cache folder holding copies of
its manifest and its tokenizer's files (small; fetched again at every opening, so a folder prepared
again is noticed) and a record of its location. Whatever reads a manifest or a tokenizer works on the
view as on any folder; the shards stay on the server and :func:`shard_bytes` fetches one when the
loader needs it, which checks it against the manifest's sha256 exactly as a local one. A checkpoint
trained on a view records the remote location, so ``evaluate``, ``generate`` and a resumed ``train``
open it again.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from shortcutlm.artifacts.files import read_json, read_json_or_none, write_with
from shortcutlm.artifacts.manifest import FORMAT, MANIFEST, TOKENIZER_FOLDER, ShardError

#: The record in a view of where its shards are.
REMOTE_RECORD = "remote.json"
TIMEOUT_S = 60.0
RETRY_S = 1.0
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class RemoteMissing(ShardError):
    """The server answered that the file is not there (HTTP 404, no such key, a failing pipe command)."""


def is_remote(location: str | Path) -> bool:
    """A URL or a ``pipe:`` command rather than a local path (a Path is always local)."""
    return isinstance(location, str) and (location.startswith("pipe:") or bool(_SCHEME.match(location)))


def join(location: str, name: str) -> str:
    """The location of the file ``name`` (``tokenizer/text.model``, ``train-000000.tar``) inside a remote folder."""
    if location.startswith("pipe:"):
        if "{name}" not in location:
            raise ShardError(f"{location}: a pipe: location needs {{name}} where the file's path goes "
                             "(e.g. pipe:aws s3 cp s3://bucket/data/{name} -)")
        return location.replace("{name}", shlex.quote(name))
    return f"{location.rstrip('/')}/{name}"


def fetch(url: str, attempts: int = 3) -> bytes:
    """The bytes at ``url``; :class:`RemoteMissing` when it is not there, :class:`ShardError` once
    ``attempts`` tries failed otherwise (a dropped connection or a busy server is tried again)."""
    read = _pipe if url.startswith("pipe:") else _http if url.startswith(("http://", "https://")) else _fsspec
    for attempt in range(1, attempts + 1):
        try:
            return read(url)
        except RemoteMissing:
            raise
        except ShardError:
            if attempt == attempts:
                raise
            time.sleep(RETRY_S * attempt)
    raise AssertionError("unreachable")


def _http(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - http(s) only
            return response.read()
    except urllib.error.HTTPError as err:
        if err.code in (403, 404, 410):
            raise RemoteMissing(f"{url}: not found (HTTP {err.code})") from err
        raise ShardError(f"{url}: the server answered HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ShardError(f"{url}: cannot reach the server ({reason})") from err


def _pipe(url: str) -> bytes:
    command = url[len("pipe:"):]
    try:
        done = subprocess.run(command, shell=True, capture_output=True, timeout=TIMEOUT_S * 10)  # noqa: S602
    except subprocess.TimeoutExpired as err:
        raise ShardError(f"{url}: the command did not finish in {err.timeout:.0f} s") from err
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RemoteMissing(f"{url}: the command failed with exit status {done.returncode}"
                            + (f" ({said[-1]})" if said else ""))
    return done.stdout


def _fsspec(url: str) -> bytes:
    try:
        import fsspec
    except ImportError as err:  # pragma: no cover - fsspec comes with the training stack
        raise ShardError(f"{url}: reading this location needs fsspec (pip install fsspec)") from err
    try:
        with fsspec.open(url, "rb") as handle:
            return handle.read()
    except FileNotFoundError as err:
        raise RemoteMissing(f"{url}: not found") from err
    except (ImportError, ValueError) as err:  # an unknown protocol, or its package is missing
        raise ShardError(f"{url}: fsspec cannot open this location ({err})") from err
    except OSError as err:
        raise ShardError(f"{url}: cannot read it ({err})") from err


# ------------------------------------------------------------------------------ the local view

def _cache_root() -> Path:
    base = os.environ.get("SHORTCUTLM_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
        / "shortcutlm"
    return Path(base) / "remote"


def _save(path: Path, data: bytes) -> None:
    """Several processes (DDP ranks) may open the same view at once: each writes its own temporary file."""
    write_with(path, lambda handle: handle.write(data), shared=True)


def open_view(location: str) -> Path:
    """The local view of the remote shard folder ``location`` (see the module docstring)."""
    view = _cache_root() / hashlib.sha256(location.encode("utf-8")).hexdigest()[:20]
    where = join(location, MANIFEST)
    try:
        data = fetch(where)
    except RemoteMissing as err:
        raise FileNotFoundError(f"{err}: no manifest there; is {location} a prepared shard folder?") from err
    manifest = _manifest(data, where)
    files = (manifest.get("tokenizer") or {}).get("files")
    if not files:
        raise ShardError(f"{where} does not list its tokenizer's files (it was prepared by an older shortcutlm); "
                         "prepare it again, or copy the folder and pass its local path")
    folder = (manifest.get("tokenizer") or {}).get("folder") or TOKENIZER_FOLDER
    for name in files:
        _save(view / folder / name, fetch(join(location, f"{folder}/{name}")))
    _save(view / MANIFEST, data)  # last: a view with a manifest has its tokenizer
    if read_json_or_none(view / REMOTE_RECORD) != {"location": location}:
        _save(view / REMOTE_RECORD, json.dumps({"location": location}).encode("utf-8"))
    return view


def _manifest(data: bytes, where: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError as err:
        raise ShardError(f"{where}: this shard manifest is not valid JSON ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ShardError(f"{where}: not a shortcutlm shard manifest")
    return manifest


def remote_location(folder: str | Path) -> str | None:
    """The remote location a view stands for (None for an ordinary folder)."""
    path = Path(folder) / REMOTE_RECORD
    if not path.is_file():
        return None
    record = read_json(path, "remote shard folder record", "delete the folder; it is a cache")
    return record.get("location") if isinstance(record, dict) else None


def shard_folder(location: str | Path) -> Path:
    """The folder to read shards from: ``location`` itself, or the local view of a remote one."""
    return open_view(location) if is_remote(location) else Path(location).expanduser()


def where_is(folder: str | Path, name: str) -> str:
    """How to name the file ``name`` of a shard folder in a message: its URL, or its path."""
    location = remote_location(folder)
    return join(location, name) if location else str(Path(folder) / name)


def shard_bytes(folder: str | Path, name: str) -> bytes | None:
    """The bytes of the shard ``name`` of a folder (fetched for a view); None when it is missing."""
    location = remote_location(folder)
    if location is None:
        path = Path(folder) / name
        return path.read_bytes() if path.is_file() else None
    try:
        return fetch(join(location, name))
    except RemoteMissing:
        return None
