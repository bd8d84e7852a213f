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
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from shortcutlm.artifacts.files import read_json, read_json_or_none, write_with
from shortcutlm.artifacts.manifest import FORMAT, MANIFEST, TOKENIZER_FOLDER, ShardError, check_names
from shortcutlm.core.cache_dir import cache_root
from shortcutlm.artifacts.names import (MAX_MANIFEST_BYTES, MAX_SHARD_BYTES, MAX_TOKENIZER_FILE_BYTES, UnsafeName,
                                        inside, plain_name)

#: The record in a view of where its shards are.
REMOTE_RECORD = "remote.json"
TIMEOUT_S = 60.0
RETRY_S = 1.0
CHUNK = 1 << 20
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


def fetch(url: str, limit: int, attempts: int = 3) -> bytes:
    """The bytes at ``url``, at most ``limit`` of them (a longer answer is refused before it is held);
    :class:`RemoteMissing` when it is not there, :class:`ShardError` once ``attempts`` tries failed
    otherwise (a dropped connection or a busy server is tried again)."""
    sink = io.BytesIO()
    fetch_into(url, sink, limit, attempts)
    return sink.getvalue()


def fetch_into(url: str, sink: IO[bytes], limit: int, attempts: int = 3) -> int:
    """Stream the file at ``url`` into ``sink`` in chunks, refusing more than ``limit`` bytes; the
    byte count. A retry starts ``sink`` over (it must be seekable)."""
    read = _pipe if url.startswith("pipe:") else _http if url.startswith(("http://", "https://")) else _fsspec
    for attempt in range(1, attempts + 1):
        sink.seek(0)
        sink.truncate()
        try:
            return read(url, sink, limit)
        except RemoteMissing:
            raise
        except ShardError as err:
            if attempt == attempts or isinstance(err, TooLarge):
                raise
            time.sleep(RETRY_S * attempt)
    raise AssertionError("unreachable")


class TooLarge(ShardError):
    """The server sent (or announced) more bytes than the manifest or the bounds allow."""


def _copy(url: str, stream: IO[bytes], sink: IO[bytes], limit: int) -> int:
    copied = 0
    while chunk := stream.read(CHUNK):
        copied += len(chunk)
        if copied > limit:
            raise TooLarge(f"{url}: it sent more than the {limit:,} bytes expected; refusing the rest")
        sink.write(chunk)
    return copied


def _http(url: str, sink: IO[bytes], limit: int) -> int:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - http(s) only
            announced = response.headers.get("Content-Length")
            if announced and announced.isdigit() and int(announced) > limit:
                raise TooLarge(f"{url}: the server announces {int(announced):,} bytes, more than the {limit:,} "
                               "expected; not downloading it")
            return _copy(url, response, sink, limit)
    except urllib.error.HTTPError as err:
        if err.code in (403, 404, 410):
            raise RemoteMissing(f"{url}: not found (HTTP {err.code})") from err
        raise ShardError(f"{url}: the server answered HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ShardError(f"{url}: cannot reach the server ({reason})") from err


def _pipe(url: str, sink: IO[bytes], limit: int) -> int:
    command = url[len("pipe:"):]
    timed_out = threading.Event()
    # stderr goes to a file, not a pipe: a chatty command must not block on a full pipe while its
    # standard output is being read.
    with tempfile.TemporaryFile() as said_file, subprocess.Popen(  # noqa: S602 - the user's own command
            command, shell=True, stdout=subprocess.PIPE, stderr=said_file) as proc:
        def stop() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(TIMEOUT_S * 10, stop)
        timer.start()
        try:
            assert proc.stdout is not None
            try:
                copied = _copy(url, proc.stdout, sink, limit)
            except TooLarge:
                proc.kill()
                raise
            code = proc.wait()
        finally:
            timer.cancel()
        said_file.seek(0)
        said = said_file.read(1 << 16).decode("utf-8", "replace").strip().splitlines()
    if timed_out.is_set():
        raise ShardError(f"{url}: the command did not finish in {TIMEOUT_S * 10:.0f} s")
    if code != 0:
        raise RemoteMissing(f"{url}: the command failed with exit status {code}" + (f" ({said[-1]})" if said else ""))
    return copied


def _fsspec(url: str, sink: IO[bytes], limit: int) -> int:
    try:
        import fsspec
    except ImportError as err:  # pragma: no cover - fsspec comes with the training stack
        raise ShardError(f"{url}: reading this location needs fsspec (pip install fsspec)") from err
    try:
        with fsspec.open(url, "rb") as handle:
            return _copy(url, handle, sink, limit)
    except FileNotFoundError as err:
        raise RemoteMissing(f"{url}: not found") from err
    except (ImportError, ValueError) as err:  # an unknown protocol, or its package is missing
        raise ShardError(f"{url}: fsspec cannot open this location ({err})") from err
    except OSError as err:
        raise ShardError(f"{url}: cannot read it ({err})") from err


# ------------------------------------------------------------------------------ the local view

def _cache_root() -> Path:
    return cache_root() / "remote"


def open_view(location: str) -> Path:
    """The local view of the remote shard folder ``location`` (see the module docstring).

    The served folder is a stranger: its manifest is size-bounded and every name in it must be a
    plain relative path (:func:`~shortcutlm.artifacts.manifest.check_names`); the tokenizer's
    files are streamed into a staging folder inside the view, checked (their sha256 where the
    manifest lists them, else the tokenizer's fingerprint) and only then renamed into place.
    """
    view = _cache_root() / hashlib.sha256(location.encode("utf-8")).hexdigest()[:20]
    where = join(location, MANIFEST)
    try:
        data = fetch(where, MAX_MANIFEST_BYTES)
    except RemoteMissing as err:
        raise FileNotFoundError(f"{err}: no manifest there; is {location} a prepared shard folder?") from err
    manifest = _manifest(data, where)
    tokenizer = manifest.get("tokenizer") or {}
    if not tokenizer.get("files"):
        raise ShardError(f"{where} does not list its tokenizer's files (it was prepared by an older shortcutlm); "
                         "prepare it again, or copy the folder and pass its local path")
    view.mkdir(parents=True, exist_ok=True)
    _fetch_tokenizer(location, where, tokenizer, view)
    # last: a view with a manifest has its tokenizer
    write_with(view / MANIFEST, lambda fh: fh.write(data), shared=True)
    if read_json_or_none(view / REMOTE_RECORD) != {"location": location}:
        record = json.dumps({"location": location}).encode("utf-8")
        write_with(view / REMOTE_RECORD, lambda fh: fh.write(record), shared=True)
    return view


def _fetch_tokenizer(location: str, where: str, tokenizer: dict[str, Any], view: Path) -> None:
    """Bring the served tokenizer's files into ``view``, each checked before it is put in place.

    Several processes (DDP ranks) may do this at once: each stages into a folder of its own and
    renames file by file, so the last rename wins whole. A file whose cached copy already has the
    manifest's sha256 is not fetched again."""
    folder = tokenizer.get("folder") or TOKENIZER_FOLDER
    listed = tokenizer.get("sha256")
    digests: dict[str, str] = listed if isinstance(listed, dict) else {}

    def cached(name: str) -> bool:
        expected = digests.get(name)
        there = inside(view, f"{folder}/{name}", "tokenizer.files[]", where)
        return bool(expected) and _sha256_or_none(there) == expected

    wanted = [name for name in tokenizer["files"] if not cached(name)]
    if not wanted:
        return
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=view))
    try:
        for name in wanted:
            path = inside(staging, f"{folder}/{name}", "tokenizer.files[]", where)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as sink:
                fetch_into(join(location, f"{folder}/{name}"), sink, MAX_TOKENIZER_FILE_BYTES)
            if digests.get(name) and _sha256_or_none(path) != digests[name]:
                raise ShardError(f"{join(location, f'{folder}/{name}')} fails its checksum against {where}; "
                                 "not using it")
        if not digests:  # a manifest from before the digests: the tokenizer's own fingerprint checks its files
            from shortcutlm.tokenizers import load_tokenizer

            load_tokenizer(staging / folder).check_fingerprint(str(tokenizer.get("fingerprint")), where)
        for name in wanted:
            target = inside(view, f"{folder}/{name}", "tokenizer.files[]", where)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / folder / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sha256_or_none(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest(data: bytes, where: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError as err:
        raise ShardError(f"{where}: this shard manifest is not valid JSON ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ShardError(f"{where}: not a shortcutlm shard manifest")
    check_names(manifest, where)
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
    return open_view(str(location)) if is_remote(location) else Path(location).expanduser()


def where_is(folder: str | Path, name: str) -> str:
    """How to name the file ``name`` of a shard folder in a message: its URL, or its path."""
    location = remote_location(folder)
    return join(location, name) if location else str(Path(folder) / name)


def shard_bytes(folder: str | Path, name: str, size: int | None = None) -> bytes | None:
    """The bytes of the shard ``name`` of a folder (fetched for a view, at most ``size`` bytes: the
    manifest's record of it); None when it is missing. ``name`` must stay inside the folder."""
    location = remote_location(folder)
    try:
        if location is None:
            path = inside(folder, name, "shard name", Path(folder) / MANIFEST)
            return path.read_bytes() if path.is_file() else None
        plain_name(name, "shard name", join(location, MANIFEST))
    except UnsafeName as err:
        raise ShardError(str(err)) from err
    try:
        return fetch(join(location, name), MAX_SHARD_BYTES if size is None else size)
    except RemoteMissing:
        return None
