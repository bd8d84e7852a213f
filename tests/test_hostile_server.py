"""A served folder is a stranger: a hostile server on 127.0.0.1 tries every name field of the manifest
with ``..`` and absolute paths, oversized lists and files, and wrong checksums. Each case must end in
one line naming the field or file, and nothing may be written outside the client's cache."""
from __future__ import annotations

import functools
import json
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from shortcutlm.artifacts import remote
from shortcutlm.artifacts.manifest import MANIFEST, ShardError, read_manifest
from shortcutlm.artifacts.remote import open_view
from tests.cli_lines import one_line
from shortcutlm.datasets.batches import eval_batches
from tests.conftest import tiny_recipe_dict


class HostileHandler(SimpleHTTPRequestHandler):
    """Serves the folder, except the paths in ``raw``: those bytes, with no Content-Length (read to the
    end of the connection) or with the false one in ``claims``."""

    raw: dict[str, bytes] = {}
    claims: dict[str, int] = {}

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path not in self.raw:
            return super().do_GET()
        self.send_response(200)
        if self.path in self.claims:
            self.send_header("Content-Length", str(self.claims[self.path]))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.wfile.write(self.raw[self.path])


@pytest.fixture
def hostile(tmp_path, text8_shards, monkeypatch):
    """``(folder, url, cache)``: a copy of a prepared folder served on 127.0.0.1, its URL, the client cache."""
    cache = tmp_path / "home" / ".cache" / "shortcutlm"
    monkeypatch.setenv("SHORTCUTLM_CACHE", str(cache))
    folder = tmp_path / "www" / "data"
    shutil.copytree(text8_shards, folder)
    handler = type("Handler", (HostileHandler,), {"raw": {}, "claims": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(tmp_path / "www")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/data", cache, handler
    server.shutdown()
    server.server_close()


def everything(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def rewrite(folder: Path, change) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    change(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture
def recipe_file(tmp_path) -> Path:
    import yaml

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict({"name": "text8", "path": "unused"}, {"domain": "text"})))
    return path


NAME_ATTACKS = {
    "tokenizer.files[]": lambda m, evil: m["tokenizer"].update(files=[evil]),
    "tokenizer.folder": lambda m, evil: m["tokenizer"].update(folder=evil),
    "shards[].name": lambda m, evil: m["shards"][0].update(name=evil),
    "splits.train.shards[]": lambda m, evil: m["splits"]["train"]["shards"].append(evil),
}
EVIL_NAMES = ["../../../../x", "tokenizer/../../../escape", "/etc/shortcutlm-evil/text.model", "C:/evil",
              "http://elsewhere/x", "a\\..\\..\\b", "", "x\x00y"]


@pytest.mark.parametrize("field", list(NAME_ATTACKS))
def test_every_name_field_refuses_paths_that_leave_the_folder(hostile, recipe_file, tmp_path, capsys, field):
    folder, url, cache, _ = hostile
    pristine = (folder / MANIFEST).read_text()
    before = everything(tmp_path)
    for evil in EVIL_NAMES:
        rewrite(folder, lambda m: NAME_ATTACKS[field](m, evil))
        line = one_line(capsys, ["train", str(recipe_file), "--data", url, "--out", str(tmp_path / "run"),
                                 "--no-progress"])
        assert field in line and "not a plain relative path" in line and repr(evil) in line, line
        (folder / MANIFEST).write_text(pristine)
    grown = {p for p in everything(tmp_path) - before if p != cache and cache not in p.parents}
    assert not grown, sorted(grown)[:5]
    assert not Path("/etc/shortcutlm-evil").exists() and not (tmp_path / "run").exists()


def test_a_local_manifest_is_held_to_the_same_rule(tmp_path, text8_shards):
    folder = tmp_path / "data"
    shutil.copytree(text8_shards, folder)
    secret = tmp_path / "secret.tar"
    shutil.copy(next(folder.glob("valid-*.tar")), secret)
    rewrite(folder, lambda m: [r.update(name=str(secret)) for r in m["shards"] if r["split"] == "valid"])
    with pytest.raises(ShardError, match=r"shards\[\]\.name .*not a plain relative path inside the folder "
                                         r"\(an absolute path\)"):
        read_manifest(folder)
    # a symbolic link that leads out of the folder is not followed either
    rewrite(folder, lambda m: [r.update(name="link.tar") for r in m["shards"] if r["split"] == "valid"])
    (folder / "link.tar").symlink_to(secret)
    with pytest.raises(ShardError, match="leads outside"):
        list(eval_batches(folder, "valid", 16, 2))


def test_oversized_lists_are_refused_before_they_are_allocated(hostile, capsys, tmp_path, recipe_file):
    folder, url, _, _ = hostile
    rewrite(folder, lambda m: m.update(shards=[{"name": f"s{i}.tar", "split": "train"} for i in range(200_000)]))
    line = one_line(capsys, ["train", str(recipe_file), "--data", url, "--out", str(tmp_path / "run")])
    assert "shards lists 200,000 entries, more than the 100,000 allowed" in line


def test_a_manifest_or_file_larger_than_allowed_is_not_downloaded(hostile, monkeypatch):
    folder, url, cache, handler = hostile
    handler.raw["/data/" + MANIFEST] = b"{" + b" " * 5000 + b"}"
    monkeypatch.setattr(remote, "MAX_MANIFEST_BYTES", 4096)
    with pytest.raises(ShardError, match="sent more than the 4,096 bytes expected"):
        open_view(url)
    handler.claims["/data/" + MANIFEST] = 10 << 30  # announced, not sent
    with pytest.raises(ShardError, match="announces 10,737,418,240 bytes, more than the 4,096 expected"):
        open_view(url)


def test_tokenizer_files_and_shards_must_match_their_checksums(hostile):
    folder, url, cache, handler = hostile
    handler.raw["/data/tokenizer/text.model"] = b"not the model the manifest describes"
    with pytest.raises(ShardError, match=r"tokenizer/text\.model fails its checksum against"):
        open_view(url)
    assert not list(cache.rglob("text.model"))  # never put in place
    del handler.raw["/data/tokenizer/text.model"]
    view = open_view(url)
    assert (view / "tokenizer" / "text.model").read_bytes() == (folder / "tokenizer" / "text.model").read_bytes()
    assert not list(view.glob(".incoming-*"))
    # a shard longer than the manifest's record of it is cut off, not held
    name = next(p.name for p in folder.glob("valid-*.tar"))
    handler.raw[f"/data/{name}"] = (folder / name).read_bytes() + b"\0" * 4096
    with pytest.raises(ShardError, match="sent more than the .* bytes expected"):
        list(eval_batches(view, "valid", 16, 2))


def test_an_older_manifest_without_digests_is_checked_by_the_tokenizer_fingerprint(hostile):
    folder, url, cache, handler = hostile
    rewrite(folder, lambda m: m["tokenizer"].pop("sha256", None))
    other = bytearray((folder / "tokenizer" / "text.model").read_bytes())
    handler.raw["/data/tokenizer/text.model"] = bytes(other[:-8]) + b"garbage!"
    with pytest.raises(Exception) as caught:
        open_view(url)
    assert "\n" not in str(caught.value) and not list(cache.rglob("text.model"))
    del handler.raw["/data/tokenizer/text.model"]
    assert (open_view(url) / "tokenizer" / "text.model").is_file()
    assert os.listdir(cache)  # the cache holds the view, and nothing else was written
