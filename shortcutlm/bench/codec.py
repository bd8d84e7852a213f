"""``shortcutlm bench codec``: does the offline codec carry the audio, and how fast is the audio path?

Five parts, the first four on the embedded chorales (rendered at 24 kHz with pretty_midi's soundfont):

* **identity**: both offline codecs (``mel_kmeans``, and the random-init EnCodec with k-means
  codebooks it replaced) are fitted on the same train audio; the ``valid`` split is cut into
  2 s clips, and a clip counts as identified when decode(encode(clip)) is nearer, in log-mel L1,
  to its own source than to any other clip. Clips whose source equals an earlier clip's (a
  chorale repeats a phrase exactly) are dropped first: no codec can tell those apart. Beside it,
  the round-trip log-mel L1 and the correlation of the decodes of two different token streams;
* **prepare**: ``shortcutlm prepare`` end to end (worker start-up, fitting, encoding, shards)
  on a corpus of ``--prepare-seconds`` (600) s, as seconds of audio per wall second;
* **encode / decode** of one file, and encoding on a GPU when one is present;
* **generation**: seconds of audio per wall second, batch 1 with the KV cache, delay layout with
  4 codebooks, at the audio recipe's tiny and default model sizes (weights untrained: the
  speed does not depend on them), codec decoding timed apart; eager decoding beside
  ``generate --compile``'s compiled chunks, whose default-size figure is judged (>= 5 s/s);
* **memory**: peak RSS of encoding one long file (``--memory-minutes``, 10 and 60 by default,
  synthesized 44.1 kHz stereo WAVs) side by side, each in a fresh process, for encoding and
  for the codebook-fitting sample (:mod:`shortcutlm.bench.long_audio`); the target is that
  the longest file's peak while encoding, less its larger token array, stays within 1.05
  times the shortest's.

The log-mel measure is the codec's own analysis (80 Slaney bands, hop 320, magnitude floor
1e-3), the same for both codecs.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shortcutlm.bench import long_audio
from shortcutlm.bench.common import machine, median, target, timed, write_json

#: generation: seconds of audio per second at the default size, through ``generate --compile``.
TARGETS = {"identity": 0.95, "prepare_real_time_factor": 20.0, "generation": 5.0}
PARTS = ("identity", "prepare", "codec", "generation", "memory")
CLIP_SECONDS = 2.0
RATE = 24000
GENERATION_SIZES: dict[str, dict[str, Any]] = {"tiny": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 256},
                    "default": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 750}}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="FILE", help="write the figures here as JSON")
    parser.add_argument("--limit", type=int, default=200,
                        help="chorales in the corpus (the valid split is cut into clips)")
    parser.add_argument("--bandwidth", type=float, default=1.5, help="kbps for the identity test (the audio recipe's)")
    parser.add_argument("--fit-seconds", type=float, default=600.0,
                        help="seconds of train audio both codecs are fitted on in the identity test")
    parser.add_argument("--prepare-seconds", type=float, default=600.0, help="corpus length for the prepare timing")
    parser.add_argument("--prepare-bandwidths", default="1.5,6.0", help="kbps values the prepare timing runs at")
    parser.add_argument("--workers", type=int, default=2, help="prepare's worker processes")
    parser.add_argument("--generate-seconds", type=float, default=2.0, help="seconds of audio generated per timing")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    parser.add_argument("--memory-minutes", default="10,60", help="lengths of the long files the memory part encodes")
    parser.add_argument("--memory-weights", default="mel_kmeans",
                        help="codecs the memory part measures: mel_kmeans and/or random_kmeans (EnCodec's "
                             "encoder, about 8x real time on one thread: an hour takes minutes)")
    parser.add_argument("--memory-bandwidth", type=float, default=6.0,
                        help="kbps for the memory part (6: 8 codebooks, the largest token array of the usual settings)")
    parser.add_argument("--work", default=None, help="folder for the memory part's temporary WAVs (default: the "
                                                     "system's temporary folder; an hour is 600 MB)")
    parser.add_argument("--cache", default=None,
                        help="cache folder (default: $SHORTCUTLM_CACHE or ~/.cache/shortcutlm)")


# ------------------------------------------------------------------------------------- corpus

def chorale_documents(limit: int, cache: str | None) -> list:
    """The rendered chorales as documents, with the ``bach_chorales`` splits."""
    from shortcutlm.datasets.embedded import chorales_audio
    from shortcutlm.documents import Document

    return [item for item in chorales_audio(limit, cache) if isinstance(item, Document)]


def _seconds(doc) -> float:
    import soundfile as sf

    return float(sf.info(str(doc.path)).duration)


def first_seconds(docs: list, seconds: float) -> list:
    """The first documents whose audio adds up to at least ``seconds``."""
    chosen, total = [], 0.0
    for doc in docs:
        if total >= seconds:
            break
        chosen.append(doc)
        total += _seconds(doc)
    return chosen


def valid_clips(docs: list, analysis) -> tuple[list[np.ndarray], torch.Tensor, int]:
    """2 s clips of the valid split, minus clips whose log-mel equals an earlier clip's; returns
    the clips, their log-mels ``[N, T, M]`` and how many duplicates were dropped."""
    import soundfile as sf

    size = int(CLIP_SECONDS * RATE)
    clips = []
    for doc in docs:
        if doc.split != "valid":
            continue
        wave, _ = sf.read(str(doc.path), dtype="float32")
        clips += [wave[s:s + size] for s in range(0, wave.shape[0] - size + 1, size)]
    kept: list[np.ndarray] = []
    mels: list[torch.Tensor] = []
    for clip in clips:
        mel = analysis.log_mel(clip)
        if all(float((mel - other).abs().mean()) > 1e-6 for other in mels):
            kept.append(clip)
            mels.append(mel)
    return kept, torch.stack(mels), len(clips) - len(kept)


# ----------------------------------------------------------------------------------- identity

def identity(tok, clips: list[np.ndarray], sources: torch.Tensor, analysis) -> dict[str, Any]:
    """Identification rate, round-trip and between-clip log-mel L1 (``sources``: the clips'
    log-mels), and decode correlations."""
    decoded = [tok.decode_codes(tok.encode_wave(c[None]))[0][: c.shape[0]] for c in clips]
    rebuilt = torch.stack([analysis.log_mel(d) for d in decoded])
    distance = torch.stack([(r[None] - sources).abs().mean((1, 2)) for r in rebuilt])  # [decoded, source]
    hits = (distance.argmin(1) == torch.arange(len(clips))).float()
    others = distance.masked_fill(torch.eye(len(clips), dtype=torch.bool), float("nan"))
    rng = np.random.default_rng(0)
    frames = int(CLIP_SECONDS * tok.frames_per_second)
    random_wave = tok.decode_codes(rng.integers(0, 1024, size=(tok.n_codebooks, frames)))[0]
    zero_wave = tok.decode_codes(np.zeros((tok.n_codebooks, frames), np.int64))[0]
    pair = [decoded[0], decoded[len(decoded) // 2]]
    return {"codec": tok.codec_name, "weights": tok.weights_kind, "clips": len(clips),
            "identity": float(hits.mean()),
            "round_trip_log_mel_l1": float(distance.diag().mean()),
            "other_clips_log_mel_l1": float(np.nanmean(others.numpy())),
            "decode_correlation_random_vs_zero_codes": _correlation(random_wave, zero_wave),
            "decode_correlation_two_clips": _correlation(*pair),
            "decode_rms_random_codes": float(np.sqrt(np.mean(random_wave ** 2)))}


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(a.size, b.size)
    if np.std(a[:n]) == 0 or np.std(b[:n]) == 0:
        return float("nan")
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def fitted_tokenizer(weights: str, bandwidth: float, docs: list, layout: str = "flatten"):
    from shortcutlm.tokenizers.acoustic import AcousticTokenizer

    tok = AcousticTokenizer({"weights": weights, "bandwidth": bandwidth, "layout": layout})
    return tok, timed(lambda: tok.train(docs))


def bench_identity(docs: list, bandwidth: float, fit_seconds: float) -> dict[str, Any]:
    from shortcutlm.tokenizers.mel_codec import MelCodec

    analysis = MelCodec(1)
    clips, sources, duplicates = valid_clips(docs, analysis)
    fit_docs = first_seconds([d for d in docs if d.split == "train"], fit_seconds)
    out: dict[str, Any] = {"clip_seconds": CLIP_SECONDS, "clips": len(clips), "duplicate_clips_dropped": duplicates,
                           "fit_files": len(fit_docs), "fit_seconds": sum(_seconds(d) for d in fit_docs),
                           "bandwidth_kbps": bandwidth}
    for weights in ("mel_kmeans", "random_kmeans"):
        tok, fit_s = fitted_tokenizer(weights, bandwidth, fit_docs)
        out[weights] = {**identity(tok, clips, sources, analysis), "fit_s": fit_s}
    return out


# ------------------------------------------------------------------------------------ prepare

def bench_prepare(docs: list, seconds: float, bandwidth: float, workers: int) -> dict[str, Any]:
    """One fresh ``prepare`` of a folder holding the first ``seconds`` of chorale audio."""
    from shortcutlm.datasets.prepare import prepare

    chosen = first_seconds(docs, seconds)
    audio_seconds = sum(_seconds(d) for d in chosen)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "wavs"
        folder.mkdir()
        for doc in chosen:
            os.symlink(doc.path, folder / Path(doc.path).name)
        started = time.perf_counter()  # timed by hand: the manifest prepare returns is read below
        manifest = prepare({"name": "folder", "path": str(folder)},
                           {"domain": "acoustic", "weights": "mel_kmeans", "bandwidth": bandwidth, "layout": "delay"},
                           Path(tmp) / "out", workers=workers, progress=False)
        wall = time.perf_counter() - started
    run = manifest.get("last_run", {})
    return {"files": len(chosen), "audio_seconds": audio_seconds, "bandwidth_kbps": bandwidth, "workers": workers,
            "wall_s": wall, "real_time_factor": audio_seconds / wall,
            "fit_s": run.get("tokenizer_s"), "encode_s": run.get("encode_s"),
            "documents": manifest["inputs"]["documents"], "rejected": len(manifest["rejected"])}


# -------------------------------------------------------------------------------- codec speed

def bench_codec_speed(docs: list, bandwidth: float) -> dict[str, Any]:
    """Encode and decode one train file on one thread (and encode on a GPU when there is one)."""
    from shortcutlm.tokenizers.mel_codec import MelCodec

    train = [d for d in docs if d.split == "train"]
    tok, _ = fitted_tokenizer("mel_kmeans", bandwidth, first_seconds(train, 300.0))
    doc = max(train[:20], key=_seconds)
    wave, seconds = tok.read_audio(doc)
    codes = tok.encode_wave(wave)  # also the warm-up
    encode_s = timed(lambda: tok.encode_wave(wave))
    decode_s = timed(lambda: tok.decode_codes(codes))
    out: dict[str, Any] = {"file_seconds": seconds, "encode_real_time_factor": seconds / encode_s,
                           "decode_real_time_factor": seconds / decode_s, "threads": tok.threads}
    if torch.cuda.is_available():
        gpu = MelCodec(tok.n_codebooks, codebooks=tok._codec.codebooks, device="cuda")
        gpu_codes = gpu.encode(wave)  # also the warm-up
        out["gpu"] = {"device": torch.cuda.get_device_name(),
                      "encode_real_time_factor": seconds / timed(lambda: gpu.encode(wave), "cuda"),
                      "ids_equal_to_cpu": float((gpu_codes == codes).mean())}
    else:
        out["gpu"] = "skipped: needs CUDA"
    return out


# --------------------------------------------------------------------------------- generation

def bench_generation(seconds: float, repeats: int = 3) -> dict[str, Any]:
    """Seconds of audio per wall second, batch 1 with the KV cache, delay layout, 4 codebooks: eager
    decoding and ``generate --compile``'s compiled chunks (``models.decoding``), interleaved, median of
    ``repeats``; the compile's own time and whether both decoded the same codes are beside them."""
    from shortcutlm.models import GPT, GPTConfig, SamplingSettings, generate
    from shortcutlm.models.packed import packing_pays

    k, frames_per_second, vocab = 4, 75, 1024 + 4
    steps = int(seconds * frames_per_second) + k - 1
    out: dict[str, Any] = {"layout": "delay", "n_codebooks": k, "batch": 1, "kv_cache": True,
                           "seconds_generated": seconds, "threads": torch.get_num_threads(), "repeats": repeats}
    for name, size in GENERATION_SIZES.items():
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=vocab, n_streams=k, dropout=0.0, **size)).eval()
        prompt = torch.randint(0, 1024, (1, k, frames_per_second))  # one second of prompt
        settings = SamplingSettings(temperature=1.0, top_k=50, seed=0)
        generate(model, prompt, 8, settings)  # warm-up
        compile_s = timed(lambda: generate(model, prompt, 8, settings, compile=True))
        walls: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(repeats):
            for compiled in (False, True):
                walls[compiled].append(timed(lambda: generate(model, prompt, steps, settings, compile=compiled)))
        same = torch.equal(generate(model, prompt, steps, settings, compile=True),
                           generate(model, prompt, steps, settings))
        eager, compiled_wall = median(walls[False]), median(walls[True])
        out[name] = {**size, "params": model.num_params(), "wall_s": eager, "audio_seconds_per_second": seconds / eager,
                     "steps_per_second": steps / eager, "compiled_wall_s": compiled_wall,
                     "compiled_audio_seconds_per_second": seconds / compiled_wall,
                     "compiled_over_eager": eager / compiled_wall, "compile_s": compile_s,
                     "compiled_codes_equal_eager": same, "packed_weights": packing_pays(model)}
    return out


# -------------------------------------------------------------------------------------- run

def summary(result: dict[str, Any]) -> list[str]:
    lines = []
    ident = result.get("identity")
    if ident:
        lines.append(f"identity over {ident['clips']} clips of {ident['clip_seconds']:g} s "
                     f"({ident['duplicate_clips_dropped']} duplicate clips dropped), {ident['bandwidth_kbps']:g} kbps:")
        for weights in ("mel_kmeans", "random_kmeans"):
            r = ident[weights]
            lines.append(f"  {weights:<14} identity {r['identity']:.3f}  round-trip log-mel L1 "
                         f"{r['round_trip_log_mel_l1']:.3f} (other clips {r['other_clips_log_mel_l1']:.3f})  "
                         f"corr(random, zero codes) {r['decode_correlation_random_vs_zero_codes']:.3f}  "
                         f"fit {r['fit_s']:.1f} s")
    for p in result.get("prepare", []):
        lines.append(f"prepare {p['audio_seconds']:.0f} s at {p['bandwidth_kbps']:g} kbps, {p['workers']} workers: "
                     f"{p['wall_s']:.1f} s = {p['real_time_factor']:.1f}x real time (fit {p['fit_s']:.1f} s)")
    codec = result.get("codec")
    if codec:
        lines.append(f"mel codec, one thread: encode {codec['encode_real_time_factor']:.0f}x, "
                     f"decode {codec['decode_real_time_factor']:.1f}x real time; GPU: {codec['gpu']}")
    if result.get("memory"):
        lines += long_audio.summary(result["memory"])
    gen = result.get("generation")
    if gen:
        for name in GENERATION_SIZES:
            g = gen[name]
            lines.append(f"generation {name} ({g['n_layer']}x{g['n_embd']}): {g['audio_seconds_per_second']:.2f} "
                         f"s of audio per s eager ({g['steps_per_second']:.0f} steps/s), "
                         f"{g['compiled_audio_seconds_per_second']:.2f} compiled (--compile; "
                         f"same codes: {g['compiled_codes_equal_eager']})")
    return lines


def command_line(args: argparse.Namespace) -> str:
    """The command that gave these figures: the CLI's own words, else every setting spelt out."""
    if sys.argv[1:3] == ["bench", "codec"]:
        return shlex.join(["shortcutlm", *sys.argv[1:]])
    options = [f"--{k.replace('_', '-')}={v}" for k, v in sorted(vars(args).items())
               if isinstance(v, (str, int, float)) and k not in ("command", "benchmark")]
    return shlex.join(["shortcutlm", "bench", "codec", *options])


def memory_choices(args: argparse.Namespace) -> tuple[list[float], list[str]]:
    """The memory part's file lengths and codecs, checked before anything is written."""
    try:
        minutes = [float(m) for m in args.memory_minutes.split(",") if m.strip()]
    except ValueError:
        minutes = []
    if not minutes or min(minutes) <= 0:
        raise SystemExit("bench codec: --memory-minutes must be positive numbers, e.g. 10,60 "
                         f"(got {args.memory_minutes!r})")
    weights = [w.strip() for w in args.memory_weights.split(",") if w.strip()]
    if not weights or set(weights) - {"mel_kmeans", "random_kmeans"}:
        raise SystemExit(f"bench codec: --memory-weights takes mel_kmeans and/or random_kmeans, the codecs fitted "
                         f"offline (got {args.memory_weights!r})")
    return minutes, weights


def run(args: argparse.Namespace) -> int:
    # The codec warnings (once per fit) are silenced while the benchmark runs, and only then: a caller
    # in the same process (a test, a script) gets its logger back as it was.
    logger = logging.getLogger("shortcutlm.tokenizers.acoustic")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return _run(args)
    finally:
        logger.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - set(PARTS)
    if unknown:
        raise SystemExit(f"bench codec: unknown part(s) {', '.join(sorted(unknown))}")
    memory = memory_choices(args) if "memory" in parts else None
    docs = chorale_documents(args.limit, args.cache) if parts & {"identity", "prepare", "codec"} else []
    result: dict[str, Any] = {"benchmark": "codec", "command": command_line(args), "machine": machine(),
                              "load_average": os.getloadavg()[0], "targets": {}}
    if "identity" in parts:
        result["identity"] = bench_identity(docs, args.bandwidth, args.fit_seconds)
        result["targets"]["identity"] = target(result["identity"]["mel_kmeans"]["identity"], TARGETS["identity"], ">=")
    if "prepare" in parts:
        bandwidths = [float(b) for b in args.prepare_bandwidths.split(",") if b.strip()]
        result["prepare"] = [bench_prepare(docs, args.prepare_seconds, b, args.workers) for b in bandwidths]
        for p in result["prepare"]:
            result["targets"][f"prepare_real_time_factor_{p['bandwidth_kbps']:g}kbps"] = target(
                p["real_time_factor"], TARGETS["prepare_real_time_factor"], ">=")
    if "codec" in parts:
        result["codec"] = bench_codec_speed(docs, args.bandwidth)
    if "generation" in parts:
        result["generation"] = bench_generation(args.generate_seconds)
        result["targets"]["generation_default_audio_seconds_per_second"] = target(
            result["generation"]["default"]["compiled_audio_seconds_per_second"], TARGETS["generation"], ">=")
    if memory is not None:
        minutes, weights = memory
        result["memory"] = long_audio.bench_long_audio(minutes, weights, args.memory_bandwidth, work=args.work)
        result["targets"].update(long_audio.ratios(result["memory"]))
    write_json(result, args.json, summary(result))
    return 0
