"""``shortcutlm bench codec --parts memory``: synthesized long files, one fresh process per
measurement, the lengths side by side on the terminal and every figure (with the command) in
the JSON."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from shortcutlm.bench import codec, long_audio


def test_long_wav_is_44k_stereo_of_the_asked_length_written_in_blocks(tmp_path):
    import soundfile as sf

    path = long_audio.write_long_wav(tmp_path / "a.wav", 23.5)  # two whole blocks and a part
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 2, int(23.5 * 44100), "PCM_16")
    data, _ = sf.read(str(path))
    assert 0.05 < np.sqrt(np.mean(data ** 2)) < 0.5 and not np.array_equal(data[:, 0], data[:, 1])
    seam = 10 * 44100  # the tones run on across the blocks' seam: no jump there beyond the noise's
    assert abs(data[seam, 0] - data[seam - 1, 0]) < 0.2


@pytest.mark.slow
def test_memory_part_measures_each_length_in_a_fresh_process(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    codec.configure(parser)
    out = tmp_path / "codec.json"
    args = parser.parse_args(["--parts", "memory", "--memory-minutes", "0.1,0.3", "--memory-bandwidth", "1.5",
                              "--work", str(tmp_path), "--json", str(out)])
    assert codec.run(args) == 0
    printed = capsys.readouterr().out
    assert "0.1 min" in printed and "0.3 min" in printed and "peak_rss_mel_kmeans_encode_0.3min_over_0.1min" in printed
    result = json.loads(out.read_text())
    assert result["command"].startswith("shortcutlm bench codec") and "--memory-minutes=0.1,0.3" in result["command"]
    runs = result["memory"]["runs"]
    assert [(r["minutes"], r["phase"]) for r in runs] == [(0.1, "encode"), (0.1, "sample"), (0.3, "encode"),
                                                         (0.3, "sample")]
    for r in runs:
        assert r["loaded_rss_mb"] < r["phase_peak_rss_mb"] <= r["peak_rss_mb"] + 1
        if r["phase"] == "encode":  # 1.5 kbps flatten: 150 ids a second, exactly
            assert r["audio_seconds"] == pytest.approx(60 * r["minutes"]) and r["tokens"] == 150 * 60 * r["minutes"]
    assert list(tmp_path.iterdir()) == [out]  # the WAVs and tokenizers were temporary


@pytest.mark.parametrize("option,value,message", [("--memory-minutes", "10,x", "must be positive numbers"),
                                                  ("--memory-minutes", "0", "must be positive numbers"),
                                                  ("--memory-weights", "pretrained",
                                                   "mel_kmeans and/or random_kmeans")])
def test_bad_memory_choices_are_one_line_before_any_work(option, value, message, tmp_path):
    parser = argparse.ArgumentParser()
    codec.configure(parser)
    args = parser.parse_args(["--parts", "identity,memory", option, value, "--work", str(tmp_path)])
    with pytest.raises(SystemExit, match=message):
        codec.run(args)
    assert list(tmp_path.iterdir()) == []
