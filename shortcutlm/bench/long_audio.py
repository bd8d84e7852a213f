"""Peak memory of encoding long audio files: does it stay flat as a file grows?

For each file length (10 and 60 minutes by default) a 44.1 kHz stereo 16-bit WAV is synthesized
into a temporary folder (gliding tones, a chord and noise under a slow loudness swell, written a
block at a time), so reading, downmixing and resampling are all exercised. A codec fitted on a
20 s clip of the same signal is saved once; then each (codec, phase, length) runs in a fresh
interpreter that loads the saved tokenizer and does what a prepare worker does with one file:

* ``encode``: ``encode_document`` (what ``prepare`` calls per document), tokens in hand;
* ``sample``: ``training_sample`` (what ``prepare`` collects per train document to fit the
  offline codecs' codebooks).

Two figures per run: the child's peak resident set over its whole life (``ru_maxrss`` of that
child, from ``os.wait4``), and the peak while the phase ran (``VmHWM`` reset through
``/proc/self/clear_refs`` once the tokenizer was loaded, Linux). The first also holds what
importing torch and loading the codec peaked at (about 1 GB here, more than a mel encode
adds), so the target is judged on the second. Beside them: the resident set once loaded, and
the size of the token array (16.5 MB for an hour at 6 kbps ``flatten``), the one thing that
may grow with the file. The target: the longest file's phase peak, less the growth of its
token array (or training sample), within 1.05 times the shortest file's.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RATE = 44100
CHANNELS = 2
BLOCK_SECONDS = 10
FIT_SECONDS = 20
PHASES = ("encode", "sample")
# The longest file's peak, less its larger ids, over the shortest file's: only the ids may grow
RATIO_TARGET = 1.05


def write_long_wav(path: Path, seconds: float, seed: int = 0) -> Path:
    """A 44.1 kHz stereo PCM_16 WAV of ``seconds``: gliding tones, a chord and noise whose loudness
    swells over a minute, generated and written ``BLOCK_SECONDS`` at a time."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total = int(round(seconds * RATE))
    step = BLOCK_SECONDS * RATE
    with sf.SoundFile(str(path), "w", RATE, CHANNELS, subtype="PCM_16", format="WAV") as fh:
        for start in range(0, total, step):
            t = np.arange(start, min(total, start + step)) / RATE
            glide = 0.25 * np.sin(2 * np.pi * 220 * t + 40 * np.sin(2 * np.pi * 0.05 * t))  # 220 Hz, vibrato over 20 s
            chord = 0.1 * sum(np.sin(2 * np.pi * f * t) for f in (330.0, 415.3, 494.0))
            swell = 0.6 + 0.4 * np.sin(2 * np.pi * t / 60.0)
            mono = swell * (glide + chord)
            noise = 0.02 * rng.standard_normal((t.size, CHANNELS))
            block = np.stack([mono, 0.8 * mono], axis=1) + noise
            fh.write(np.clip(block, -1.0, 1.0).astype(np.float32))
    return path


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def probe(folder: str, wav: str, phase: str) -> dict[str, Any]:
    """In a fresh interpreter: load the saved tokenizer, run one phase on one file, say what it held."""
    from shortcutlm.documents import Document
    from shortcutlm.tokenizers import load_tokenizer

    tok = load_tokenizer(folder)
    doc = Document(doc_id="long", split="train", source="bench", path=Path(wav))
    loaded = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS, so the phase's own peak shows
    started = time.perf_counter()
    if phase == "encode":
        encoded = tok.encode_document(doc)
        tokens = np.asarray(encoded.tokens)
        out = {"tokens": int(tokens.size), "token_mb": tokens.nbytes / 2**20, "frames": encoded.meta["frames"],
               "audio_seconds": encoded.meta["seconds"]}
    else:
        sample = tok.training_sample(doc)
        out = {"sample_rows": int(sample.rows.shape[0]), "sample_of_frames": sample.total,
               "sample_mb": sample.rows.nbytes / 2**20}
    peak = _status_kib("VmHWM")
    out.update(wall_s=time.perf_counter() - started, loaded_rss_mb=loaded / 1024, phase_peak_rss_mb=peak / 1024,
               phase_peak_growth_mb=(peak - loaded) / 1024)
    return out


def run_probe(folder: Path, wav: Path, phase: str) -> dict[str, Any]:
    """:func:`probe` in a fresh interpreter on one torch thread; adds its peak RSS (``ru_maxrss``)."""
    code = ("import json, sys; from shortcutlm.bench.long_audio import probe; "
            "print(json.dumps(probe(*sys.argv[1:4])))")
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-c", code, str(folder), str(wav), phase],
                                 stdout=out, stderr=err, env=env, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not the children's maximum
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise RuntimeError(f"memory probe ({phase} {wav.name}) exited {child.returncode}: {err.read()[-2000:]}")
        result = json.loads(out.read().strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    return result


def bench_long_audio(minutes: list[float], weights: list[str], bandwidth: float, layout: str = "flatten",
                     phases: tuple[str, ...] = PHASES, work: str | None = None) -> dict[str, Any]:
    """Peak RSS per codec, phase and file length, each in a fresh process; ``work`` keeps the files."""
    from shortcutlm.documents import Document
    from shortcutlm.tokenizers.acoustic import DEFAULTS, AcousticTokenizer

    with tempfile.TemporaryDirectory(prefix="shortcutlm-bench-long-audio-", dir=work) as tmp:
        folder = Path(tmp)
        clip = write_long_wav(folder / "fit.wav", FIT_SECONDS, seed=1)
        tokenizers = {}
        for name in weights:
            tok = AcousticTokenizer({"weights": name, "bandwidth": bandwidth, "layout": layout})
            tok.train([Document("fit", "train", "bench", path=clip)])
            tokenizers[name] = tok.save(folder / f"tokenizer_{name}").parent
        runs = []
        for length in minutes:
            wav = write_long_wav(folder / f"long_{length:g}min.wav", 60.0 * length, seed=2)
            wav_mb = wav.stat().st_size / 2**20
            for name in weights:
                for phase in phases:
                    runs.append({"weights": name, "phase": phase, "minutes": length, "wav_mb": wav_mb,
                                 **run_probe(tokenizers[name], wav, phase)})
            wav.unlink()  # an hour is 600 MB: one file on disk at a time
    return {"method": ("a fresh interpreter per codec, phase and file loads the saved tokenizer and runs "
                       "encode_document (prepare's encode path) or training_sample on the file; peak_rss_mb is its "
                       "ru_maxrss (os.wait4), loaded_rss_mb its VmRSS once loaded, phase_peak_rss_mb its VmHWM "
                       "after the phase, reset through /proc/self/clear_refs once loaded"),
            "file": f"{RATE} Hz, {CHANNELS} channels, PCM_16 WAV, synthesized (tones, chord, noise)",
            "bandwidth_kbps": bandwidth, "layout": layout, "read_seconds": DEFAULTS["read_seconds"],
            "threads": 1, "runs": runs}


def ratios(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per codec and phase: the longest file's phase peak, less what its ids (or sample) hold beyond
    the shortest file's, over the shortest file's phase peak; the raw ratio beside it."""
    from shortcutlm.bench.common import target

    out: dict[str, Any] = {}
    lengths = sorted({r["minutes"] for r in result["runs"]})
    if len(lengths) < 2:
        return out
    for long in (r for r in result["runs"] if r["minutes"] == lengths[-1]):
        short = next(r for r in result["runs"] if r["minutes"] == lengths[0] and r["weights"] == long["weights"]
                     and r["phase"] == long["phase"])
        held = "token_mb" if long["phase"] == "encode" else "sample_mb"
        beyond = long["phase_peak_rss_mb"] - (long[held] - short[held])
        verdict = target(beyond / short["phase_peak_rss_mb"], RATIO_TARGET, "<=")
        verdict["raw_ratio"] = long["phase_peak_rss_mb"] / short["phase_peak_rss_mb"]
        out[f"peak_rss_{long['weights']}_{long['phase']}_{lengths[-1]:g}min_over_{lengths[0]:g}min"] = verdict
    return out


def summary(result: dict[str, Any]) -> list[str]:
    """One row per codec and phase, the file lengths side by side."""
    runs = result["runs"]
    lengths = sorted({r["minutes"] for r in runs})
    keys = list(dict.fromkeys((r["weights"], r["phase"]) for r in runs))
    head = "".join(f"{f'{length:g} min':>22}" for length in lengths)
    lines = [f"peak RSS of one long file ({result['file']}; {result['bandwidth_kbps']:g} kbps {result['layout']}, "
             f"read {result['read_seconds']:g} s at a time, one thread, a fresh process each), "
             "while the phase ran / over the process's life:",
             f"  {'codec':<14}{'phase':<8}{head}   loaded; tokens or sample at the longest"]
    for weights, phase in keys:
        row = {r["minutes"]: r for r in runs if (r["weights"], r["phase"]) == (weights, phase)}
        cells = "".join(f"{row[n]['phase_peak_rss_mb']:>10.0f} / {row[n]['peak_rss_mb']:>5.0f} MB" for n in lengths)
        last = row[lengths[-1]]
        extra = f"{last['token_mb']:.1f} MB tokens" if "token_mb" in last else f"{last['sample_mb']:.1f} MB sample"
        lines.append(f"  {weights:<14}{phase:<8}{cells}   {last['loaded_rss_mb']:.0f} MB; {extra}")
    return lines

