"""Inputs that must not stop a batch: a file name that is not UTF-8 is prepared with its name kept,
and files a tokenizer does not read (another type, a link to nothing) are listed as skipped, with
their reason, and counted, instead of vanishing."""
from __future__ import annotations

import json
import os
import shutil
import tarfile

import numpy as np
import soundfile as sf

from shortcutlm.cli import main as cli_main
from shortcutlm.datasets.prepare import prepare

LATIN1_NAME = os.fsdecode(b"caf\xe9.mid")  # as Python reads a Latin-1 name on a UTF-8 system: 'caf\udce9.mid'


def shard_metas(out) -> dict[str, dict]:
    metas = {}
    for shard in out.glob("*.tar"):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".meta.json"):
                    meta = json.loads(tar.extractfile(member).read())
                    metas[meta["doc_id"]] = meta
    return metas


def test_a_name_that_is_not_utf8_is_prepared_and_kept_whole(tmp_path, midi_files, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for i, path in enumerate(midi_files[:5]):
        shutil.copy(path, src / f"chorale{i}.mid")
    shutil.copy(midi_files[5], os.path.join(src, LATIN1_NAME))
    out = tmp_path / "out"
    assert cli_main(["prepare", "--source", "folder", "--path", str(src), "--tokenizer", "midi", "--out", str(out),
                     "--workers", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "0 rejected of 6 inputs" in printed
    manifest = json.loads((out / "manifest.json").read_text(encoding="ascii"))  # JSON escapes the odd byte
    assert manifest["inputs"]["documents"] == 6
    metas = shard_metas(out)
    assert "caf%E9_mid" in metas
    kept = metas["caf%E9_mid"]["info"]["relative_path"]
    assert os.fsencode(kept) == b"caf\xe9.mid"  # the name on disk, byte for byte


def test_files_the_tokenizer_does_not_read_are_listed_as_skipped(tmp_path, capsys):
    src = tmp_path / "voices"
    src.mkdir()
    rate = 24_000
    for i in range(4):
        t = np.arange(rate) / rate
        sf.write(str(src / f"take{i}.flac"), 0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t), rate)
    (src / "interview.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A ")  # an MPEG-4 audio header: not read here
    (src / "song.opus").write_bytes(b"OggS\x00\x02")
    (src / "lost.flac").symlink_to(tmp_path / "moved-away.flac")
    out = tmp_path / "out"
    assert cli_main(["prepare", "--source", "folder", "--path", str(src), "--tokenizer", "acoustic",
                     "--set", "weights=mel_kmeans", "--set", "bandwidth=1.5", "--set", "kmeans_iters=2",
                     "--out", str(out), "--workers", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "0 rejected of 4 inputs, 3 file(s) skipped" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    skipped = {os.path.basename(r["input"]): r["reason"] for r in manifest["rejected"] if r.get("skipped")}
    assert skipped == {
        "interview.m4a": skipped["interview.m4a"], "song.opus": skipped["song.opus"],
        "lost.flac": f"skipped: a symbolic link to {tmp_path / 'moved-away.flac'}, which does not exist"}
    assert skipped["interview.m4a"].startswith("skipped: a .m4a file; only .wav .flac")
    assert skipped["song.opus"].startswith("skipped: a .opus file")
    assert manifest["inputs"] == {"total": 4, "documents": 4, "rejected": 0, "skipped": 3}


def test_the_python_api_keeps_going_too(tmp_path, midi_files):
    src = tmp_path / "src"
    src.mkdir()
    for i, path in enumerate(midi_files[:6]):
        shutil.copy(path, os.path.join(src, os.fsdecode(f"st\xfcck{i}.mid".encode("latin-1"))))
    manifest = prepare({"name": "folder", "path": str(src)}, {"domain": "midi"}, tmp_path / "out", workers=0,
                       progress=False)
    assert manifest["inputs"]["documents"] == 6
    assert sorted(shard_metas(tmp_path / "out")) == [f"st%FCck{i}_mid" for i in range(6)]
