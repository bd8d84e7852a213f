"""``shortcutlm generate``: continue a prompt file, or sample unconditionally, from a checkpoint folder.

Python API::

    paths = generate_from_checkpoint("runs/chorales", "out/", prompt="bwv66.6.mid", seconds=10,
                                     settings=SamplingSettings(temperature=0.9, top_k=50, seed=1), samples=2)

CLI::

    shortcutlm generate CKPT [--prompt FILE | --domain D] [--tokens N | --seconds S] [--temperature T] [--top-k K]
        [--top-p P] [--seed S] [--samples N] [--device auto] --out PATH_OR_DIR

Prompts, by the checkpoint's domain (a file of another type is refused, naming it). Everything
that differs between domains is asked of the tokenizer (``shortcutlm.tokenizers.base``); this
module never looks at the domain:

* audio (``.wav``, ``.flac``, ...) → EnCodec codes → continue → ``.wav`` (prompt + continuation);
* MIDI (``.mid``) → REMI ids → continue → ``.mid`` plus a ``.wav`` rendering through the MIDI
  tokenizer's ``render`` (General MIDI soundfont);
* text (``.txt``, ``.md``) → SentencePiece ids → continue → ``.txt`` (prompt + continuation).

Without a prompt the model samples from the start of a document. Either way the ids given to
the model start with the EOS id, as training packs ``EOS d1 EOS d2 ...``. A prompt longer than
the model's context keeps its tail as the model's context (the artifact still holds the whole
prompt), and generation slides its window past the context by itself.

Length: ``max_new_tokens`` counts positions (time steps of the sequence, as the model does), or
``seconds`` is converted by the tokenizer's ``steps_for_seconds``: for audio whole frames
(``flatten`` K ids per frame; ``delay`` one step per frame plus K-1 steps so that every stream
completes the last frame). For MIDI the **train split's tokens per second** (manifest
``splits.train.tokens / splits.train.seconds`` of the checkpoint's shards, falling back to the
same figures in its ``data.json``) only sizes the first round: the decoded music is measured,
more is generated while a sample is short, and each sample is cut after the note that reaches
the prompt's length plus the requested seconds, at the next bar line (or, when the model wrote a
rest across that point, at the bar line after the next note). So the file lasts the prompt plus
at least the requested seconds, to within a bar. A MIDI prompt keeps its tempo map (the ids do
not carry tempo) and its metre (they do), through the tokenizer's ``prompt_context``. Seconds
make no sense for text (an error). Default length: one context (``block_size`` positions).

Stopping (the tokenizer's ``banned_ids`` and ``stop_ids``): the requested length is what the
user gets: by default the end-of-sequence id is never sampled, so a sample cannot end after a
few tokens with nothing to hear. With ``stop_at_eos`` (``--stop-at-eos``) text and MIDI samples
may end at EOS before the requested length (each is cut before its first EOS), and the sidecar
and the terminal say so. Audio never stops, and its special ids (pad, bos, eos, empty) are never
sampled: an EOS would cut the decoded audio short, and the others carry no sound.

Acoustic ``delay`` layout (the tokenizer's ``prompt_steps``): the prompt's codes ``[K, F]`` are
delayed and cut after step F, where stream 0 has all F frames but stream k only F-k; the missing
known frames of the lagging streams are passed as ``forced`` ids so that during the first K-1
generated steps stream k reproduces the prompt's frames F-k .. F-1 instead of sampling them.
Unconditional delay generation forces ``empty`` in those corners, as in training data. The
generated delayed sequence is reverted by the tokenizer's ``decode`` (incomplete trailing frames
dropped).

Each artifact gets a JSON sidecar (``<artifact>.json``, :mod:`shortcutlm.artifacts.sidecar`) with
the checkpoint, prompt, sampling settings (the seed actually used: a random one is drawn and
recorded when none is given), the tokens generated, requested and written seconds, elapsed time
and tokens per second, and the tokenizer's ``describe()`` (audio: layout, codebooks, frame rate).
Several samples are drawn as one batch; the same seed gives the same samples.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import numpy as np
import torch

from shortcutlm.artifacts.checkpoint import Checkpoint, load_folder
from shortcutlm.artifacts.files import ArtifactError
from shortcutlm.artifacts.manifest import ShardManifest
from shortcutlm.artifacts.sidecar import SampleRecord, read_sidecar, sidecar_path, write_sidecar
from shortcutlm.core.allocator import keep_freed_memory
from shortcutlm.core.devices import resolve_device
from shortcutlm.documents import Document
from shortcutlm.core.errors import UserError
from shortcutlm.core.options import add_fields
from shortcutlm.models import SamplingSettings, generate, trim_at_stop
from shortcutlm.run.recipe import GenerateSettings
from shortcutlm.run.sample_length import extend_to, shortest_lasting
from shortcutlm.tokenizers import Tokenizer, TokenizerError

__all__ = ["GenerationError", "PromptError", "generate_from_checkpoint", "configure", "run"]

#: Suffixes that make ``--out`` a file path rather than a folder (any domain's artifact or a sidecar).
FILE_SUFFIXES = {".txt", ".mid", ".midi", ".wav", ".flac", ".mp3", ".ogg", ".json"}


class GenerationError(UserError, ValueError):
    """Generation cannot run as asked (bad length, output path, settings); the message says why."""


class PromptError(GenerationError):
    """A prompt file is missing, of the wrong type for the checkpoint, or cannot be decoded; names the file."""


# ------------------------------------------------------------------------------------ prompt

def _read_prompt(tok: Tokenizer, path: str | Path, folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Encode a prompt file with the checkpoint's tokenizer: ``(tokens, meta)``."""
    path = Path(path)
    if not path.exists():
        raise PromptError(f"prompt file {path} does not exist")
    if not path.is_file():
        raise PromptError(f"prompt {path} is not a file")
    suffix = path.suffix.lower()
    if suffix not in tok.extensions:
        raise PromptError(f"prompt file {path}: a {suffix or 'suffix-less'} file cannot prompt the {tok.domain} "
                          f"checkpoint {folder}; give one of {', '.join(tok.extensions)}")
    doc = Document(doc_id="prompt", split="", source="prompt", path=path)
    try:
        encoded = tok.encode_document(doc)
    except (TokenizerError, OSError, ValueError, RuntimeError) as exc:
        raise PromptError(f"prompt file {path} cannot be read as {tok.domain}: {exc}") from exc
    tokens = np.asarray(encoded.tokens, dtype=np.int64)
    if tokens.shape[-1] == 0:
        raise PromptError(f"prompt file {path} gives no tokens")
    return tokens, dict(encoded.meta)


def _train_tokens_per_second(ckpt: Checkpoint) -> tuple[float, str]:
    """Train-split tokens per second, from the shards' manifest (or, without the shards, the same
    figures the checkpoint's data.json kept): what a tokenizer whose rate depends on the data
    (MIDI) converts seconds with."""
    try:
        manifest = ShardManifest.read(ckpt.shard_folder(check=False))
    except (ArtifactError, FileNotFoundError) as exc:  # no shards here, an unreadable or unfinished manifest
        tried = f"the shards ({exc})"
    else:
        if manifest.train_tokens_per_second:
            return manifest.train_tokens_per_second, f"{manifest.path} splits.train"
        tried = f"{manifest.path} (no train seconds)"
    rate = ckpt.trained_on.tokens_per_second("train")
    if rate:
        return rate, f"{ckpt.files.data_path} splits.train"
    raise GenerationError(f"checkpoint {ckpt.folder}: cannot convert seconds to {ckpt.tokenizer.domain} tokens: no "
                          f"train-split tokens and seconds found (tried {tried} and {ckpt.files.data_path}); "
                          "give --tokens instead")


def _budget(ckpt: Checkpoint, tok: Tokenizer, max_new_tokens: int | None,
            seconds: float | None) -> tuple[int, dict[str, Any]]:
    """Positions to generate, and how they were derived."""
    cfg = ckpt.model.config
    if max_new_tokens is not None and seconds is not None:
        raise GenerationError("give either a number of tokens or of seconds, not both")
    if max_new_tokens is not None:
        if max_new_tokens < 1:
            raise GenerationError(f"tokens must be >= 1, got {max_new_tokens}")
        return int(max_new_tokens), {"tokens_requested": int(max_new_tokens)}
    if seconds is None:
        return cfg.block_size, {"tokens_requested": cfg.block_size, "default_length": "one context"}
    if not seconds > 0 or not math.isfinite(seconds):
        raise GenerationError(f"seconds must be a positive number, got {seconds}")
    try:
        steps, info = tok.steps_for_seconds(float(seconds), lambda: _train_tokens_per_second(ckpt))
    except TokenizerError as exc:
        raise GenerationError(f"checkpoint {ckpt.folder}: {exc}") from exc
    return int(steps), {"seconds_requested": float(seconds), **info}


# ------------------------------------------------------------------------------------ output

def _out_paths(out: str | Path, tok: Tokenizer, base: str, samples: int) -> list[Path]:
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix in FILE_SUFFIXES and not out.is_dir():  # a file path; anything else (e.g. runs/v1.2) is a folder
        if suffix not in tok.artifact_suffixes:
            raise GenerationError(f"--out {out}: a {tok.domain} checkpoint writes {tok.artifact_suffix} files; "
                                  f"give a path ending in {' or '.join(tok.artifact_suffixes)}, or a folder")
        if samples == 1:
            return [out]
        return [out.with_name(f"{out.stem}-{i:02d}{out.suffix}") for i in range(samples)]
    ext = tok.artifact_suffix
    if samples == 1:
        return [out / f"{base}{ext}"]
    return [out / f"{base}-{i:02d}{ext}" for i in range(samples)]


def _claim_outputs(paths: list[Path], prompt: str | Path | None, tok: Tokenizer, render: bool,
                   overwrite: bool) -> None:
    """Refuse before generating: a sample, sidecar or rendering that would land on the prompt (never,
    even with ``overwrite``), or on any existing file unless ``overwrite`` is given."""
    targets = [t for p in paths for t in (p, sidecar_path(p),
                                          p.with_suffix(tok.rendering_suffix) if render and tok.rendering_suffix
                                          else None) if t is not None]
    if prompt is not None:
        source = Path(prompt)
        for target in targets:
            if target.resolve() == source.resolve() or (target.exists() and os.path.samefile(target, source)):
                raise GenerationError(f"--out {target} is the prompt file {prompt}: generate never writes over its "
                                      "prompt; give another --out (a folder keeps the prompt's name with the seed)")
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise GenerationError(f"{existing[0]} already exists{more}; generate replaces a file only when asked: "
                              "pass --overwrite, or give another --out")


def _seconds(measure: Any, path: Path) -> float | None:
    """How long a written file lasts, by ``measure``; None if it cannot tell (a duration is a
    nicety: never fail a finished generation over it)."""
    try:
        value = measure(path)
    except Exception:  # noqa: BLE001
        return None
    return None if value is None else float(value)


def _wav_seconds(path: Path) -> float:
    import soundfile as sf

    return float(sf.info(str(path)).duration)


@contextmanager
def _progress(steps: int, samples: int, shown: bool) -> Iterator[Callable[[int], None] | None]:
    """A progress line on stderr (steps done, tokens/s, time left) while sampling, or nothing."""
    if not shown:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=steps, desc=f"generating {samples} sample{'s' if samples > 1 else ''}", unit="step",
              mininterval=1.0, file=sys.stderr, leave=False) as bar:
        yield lambda done: bar.update(done - bar.n)


@dataclass(frozen=True)
class _Prompt:
    """A prompt as the model's positions. ``full`` [(K,) 1 + T] starts with the packing EOS, as
    training packs documents; ``head`` is what falls outside the context, ``tail`` what the model
    sees first; ``forced`` holds the ids the first steps must take (the delay layout's corners)."""
    path: Path | None
    tokens: np.ndarray | None
    meta: dict[str, Any]
    context: dict[str, Any]
    full: np.ndarray
    head: np.ndarray
    tail: np.ndarray
    forced: np.ndarray | None

    @property
    def length(self) -> int:
        return int(self.full.shape[-1])

    def seconds(self, tok: Tokenizer) -> float | None:
        """How long the prompt lasts as written (its own tempo kept), else what its source measured."""
        if self.tokens is not None and tok.time_from_content:
            return tok.seconds_of(self.full[1:], self.context)
        return self.meta.get("seconds")


def _prompt_positions(tok: Tokenizer, prompt: str | Path | None, folder: Path, block_size: int) -> _Prompt:
    tokens, meta = (None, {}) if prompt is None else _read_prompt(tok, prompt, folder)
    context = tok.prompt_context(prompt) if prompt is not None else {}
    steps, forced = tok.prompt_steps(tokens)  # [(K,) T] and the ids the first steps must take
    packing = np.full((*steps.shape[:-1], 1), tok.eos_id, dtype=np.int64)
    full = np.concatenate([packing, steps], axis=-1).astype(np.int64)  # [(K,) 1 + T]
    head, tail = full[..., : max(0, full.shape[-1] - block_size)], full[..., -block_size:]
    return _Prompt(None if prompt is None else Path(prompt), tokens, meta, context, full, head, tail, forced)


@dataclass(frozen=True)
class _Job:
    """One call's fixed facts: what every sample's file and sidecar are made from."""
    ckpt: Checkpoint
    tok: Tokenizer
    prompt: _Prompt
    settings: SamplingSettings
    samples: int
    n_new: int
    budget: dict[str, Any]
    device: torch.device
    stop_at_eos: bool
    clock: float


@dataclass(frozen=True)
class _Sampled:
    seq: torch.Tensor  # [samples, (K,) positions] on the CPU, the prompt's tail included
    elapsed: float
    steps: int  # positions computed for each sample
    timed: bool  # MIDI asked for in seconds: each sample is cut where it lasts the target


def _sample(job: _Job, compile: bool, progress: bool, seconds: float | None) -> _Sampled:
    """Sample every row at once; MIDI asked for in seconds goes on until each row lasts them."""
    keep_freed_memory()  # a prefill's (and an uncached step's) activations reuse freed pages (core.allocator)
    model, tok, start, device = job.ckpt.model, job.tok, job.prompt, job.device
    x = torch.from_numpy(np.ascontiguousarray(start.tail)).to(device).unsqueeze(0)
    x = x.expand(job.samples, *x.shape[1:]).contiguous()
    forced = None
    if start.forced is not None:
        forced = torch.from_numpy(start.forced)[None].expand(job.samples, -1, -1).to(device)
    # Samples reach the requested length unless asked to stop at EOS (audio never stops, and
    # samples no special id at all): the tokenizer says which ids.
    banned, stops = tok.banned_ids(job.stop_at_eos), tok.stop_ids(job.stop_at_eos)
    timed = seconds is not None and tok.time_from_content and not job.stop_at_eos
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    clock = time.perf_counter()
    with _progress(job.n_new, job.samples, progress) as shown:
        seq = generate(model, x, job.n_new, job.settings, stop_tokens=stops, forced=forced, banned=banned,
                       compile=compile, on_step=shown)
        if timed:  # MIDI: go on until every sample lasts the prompt plus the requested seconds
            assert seconds is not None  # timed implies seconds
            prompt_lasts = (tok.seconds_of(start.full[1:], start.context) or 0.0) if start.tokens is not None else 0.0
            target = prompt_lasts + float(seconds)
            seq, rounds = extend_to(model, seq, start.head, target, job.n_new, job.settings, banned, tok,
                                     start.context)
            job.budget.update(target_seconds=target, generation_rounds=rounds)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return _Sampled(seq.cpu(), time.perf_counter() - clock, seq.shape[-1] - x.shape[-1], timed)


def _write_sample(job: _Job, sampled: _Sampled, index: int, path: Path, soundfont: str | Path | None,
                  render: bool) -> Path:
    """Decode row ``index`` into ``path`` (and its rendering), with the sidecar that describes it."""
    tok, start, cfg = job.tok, job.prompt, job.ckpt.model.config
    head = torch.from_numpy(start.head)
    row = torch.cat([head, sampled.seq[index]], dim=-1) if head.shape[-1] else sampled.seq[index]
    stops = tok.stop_ids(job.stop_at_eos)
    stopped = False
    if stops:
        trimmed = trim_at_stop(row, stops, start=start.length)
        stopped = trimmed.shape[-1] < row.shape[-1]
        row = trimmed
    ending = start.context
    if sampled.timed:  # the notes that reach the requested length, then the rest of their bar
        target = job.budget["target_seconds"]
        row = row[: shortest_lasting(row.numpy(), start.length, target, tok, start.context)]
        ending = {**start.context, "end_at_seconds": target}
    ids = row[..., 1:].numpy()  # the leading EOS is packing, not content (decode would cut there)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.decode(ids, path, ending)
    rendering = tok.render(path, path.with_suffix(".wav"), soundfont=soundfont) if render else None
    prompt_seconds = start.seconds(tok)
    written_seconds = _seconds(tok.artifact_seconds, path)
    continuation = (written_seconds - prompt_seconds
                    if isinstance(written_seconds, float) and isinstance(prompt_seconds, float) else None)
    elapsed = sampled.elapsed
    write_sidecar(path, SampleRecord(
        checkpoint=str(job.ckpt.folder), checkpoint_name=job.ckpt.name, domain=tok.domain,
        prompt=str(start.path) if start.path is not None else None, prompt_tokens=start.length - 1,
        prompt_seconds=prompt_seconds, prompt_file_seconds=start.meta.get("seconds"), prompt_context=start.context,
        prompt_kept_in_context=int(start.tail.shape[-1]),
        settings=asdict(job.settings), seed=job.settings.seed, samples=job.samples, sample_index=index,
        length=dict(job.budget), max_new_tokens=job.n_new,
        tokens_generated=int(row.shape[-1] - start.length), stopped_at_eos=stopped,
        stop_reason="end-of-sequence (--stop-at-eos)" if stopped else "requested length",
        seconds=written_seconds,
        elapsed_s=elapsed, tokens_per_s=(sampled.steps * job.samples / elapsed) if elapsed > 0 else None,
        context=cfg.block_size, slid_window=bool(start.tail.shape[-1] + job.n_new > cfg.block_size),
        device=str(job.device), artifact=str(path), tokenizer=dict(tok.describe()),
        prompt_frames=start.meta.get("frames"),  # what the prompt's encoding measured (audio: EnCodec frames)
        continuation_seconds=continuation,
        rendering=str(rendering) if rendering is not None else None,
        rendering_seconds=_seconds(_wav_seconds, Path(rendering)) if rendering is not None else None,
        total_s=time.perf_counter() - job.clock,
    ))
    return path


@torch.no_grad()
def generate_from_checkpoint(folder: str | Path, out: str | Path, prompt: str | Path | None = None,
                             max_new_tokens: int | None = None, seconds: float | None = None,
                             settings: SamplingSettings | None = None, samples: int = 1,
                             device: str | torch.device = "cpu", soundfont: str | Path | None = None,
                             render: bool = True, checkpoint: Checkpoint | None = None,
                             stop_at_eos: bool = False, compile: bool = False, overwrite: bool = False,
                             progress: bool = False, domain: str | None = None) -> list[Path]:
    """Continue ``prompt`` (or sample unconditionally) and write ``samples`` artifacts; returns their paths.

    ``out`` is a file path (with the domain's suffix; ``-00``, ``-01`` ... are added for several
    samples) or a folder (``<prompt stem or unconditional>-seed<seed>[-NN].<ext>``). Every
    artifact gets a ``.json`` sidecar beside it; MIDI also gets a ``.wav`` rendering unless
    ``render`` is false. ``compile`` decodes through compiled chunks of steps (``models.decoding``: a first
    call compiles for about a minute on a CPU; the same tokens, faster when many are generated). Nothing is
    written over the prompt, nor over an existing file unless ``overwrite``. ``progress`` shows
    tokens/s and the time left on the terminal while sampling. ``domain``: what a checkpoint
    of several domains samples without a prompt (with one, the prompt's file type decides).
    """
    if samples < 1:
        raise GenerationError(f"samples must be >= 1, got {samples}")
    settings = settings or SamplingSettings()
    seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31)
    settings = SamplingSettings(settings.temperature, settings.top_k, settings.top_p, seed)
    clock = time.perf_counter()
    device = torch.device(device)
    ckpt = checkpoint or load_folder(folder, device)
    ckpt.model.to(device).eval()
    tok, cfg = ckpt.tokenizer, ckpt.model.config
    if cfg.n_streams != tok.n_streams:
        raise GenerationError(f"checkpoint {ckpt.folder}: the model has {cfg.n_streams} stream(s) but its "
                              f"tokenizer {tok.n_streams}")
    try:  # a joint checkpoint samples in the prompt's domain (its file type), or in ``domain``
        tok = tok.for_sample(prompt, domain)
    except TokenizerError as exc:
        raise PromptError(f"checkpoint {ckpt.folder}: {exc}") from exc
    start = _prompt_positions(tok, prompt, ckpt.folder, cfg.block_size)
    n_new, budget = _budget(ckpt, tok, max_new_tokens, seconds)
    base = (Path(prompt).stem if prompt is not None else "unconditional") + f"-seed{seed}"
    paths = _out_paths(out, tok, base, samples)
    _claim_outputs(paths, prompt, tok, render, overwrite)
    job = _Job(ckpt, tok, start, settings, samples, n_new, budget, device, stop_at_eos, clock)
    sampled = _sample(job, compile, progress, seconds)
    return [_write_sample(job, sampled, index, path, soundfont, render) for index, path in enumerate(paths)]


# ------------------------------------------------------------------------------------ CLI

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint folder")
    parser.add_argument("--prompt", default=None, metavar="FILE",
                        help="prompt file to continue (.wav/.flac, .mid, .txt); default: sample unconditionally")
    # The length and sampling settings, with a recipe's generate stage's own defaults (one source).
    add_fields(parser.add_mutually_exclusive_group(), GenerateSettings, ["max_new_tokens", "seconds"],
               flags={"max_new_tokens": "--tokens"},
               helps={"max_new_tokens": "Positions to generate (time steps); with --task, unset, as long as the "
                                        "source asks."})
    # Unset, the length is the settings' max_new_tokens, or with --task as long as the source asks.
    parser.set_defaults(max_new_tokens=None)
    add_fields(parser, GenerateSettings, ["temperature", "top_k", "top_p", "seed", "samples"])
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, ...")
    parser.add_argument("--soundfont", default=None, help="soundfont for MIDI renderings (default: General MIDI)")
    parser.add_argument("--no-render", action="store_true", help="MIDI: skip the .wav rendering")
    parser.add_argument("--stop-at-eos", action="store_true",
                        help="let a text or MIDI sample end at its end-of-sequence token before the requested "
                             "length (default: the requested length is always generated)")
    parser.add_argument("--compile", action="store_true",
                        help="decode through torch.compile (compiles first: worth it for long generations)")
    parser.add_argument("--domain", default=None,
                        help="a joint checkpoint (several domains): the domain to sample in without a prompt "
                             "(with --prompt, the prompt's file type picks it)")
    parser.add_argument("--task", default=None, choices=("synthesize", "transcribe", "speak", "transcribe-speech"),
                        help="a paired checkpoint (shortcutlm.pairs): write the target of --prompt for this task "
                             "(.wav from a score or a text, .mid from audio, .txt from speech)")
    parser.add_argument("--out", required=True, metavar="PATH_OR_DIR", help="artifact path or folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing files at the output paths (never the prompt; default: refuse)")
    parser.add_argument("--quiet", action="store_true", help="no progress line while sampling")


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    try:
        settings = SamplingSettings(args.temperature, args.top_k, args.top_p, args.seed)
    except ValueError as exc:  # the model package validates its own fields (it raises no UserError)
        raise GenerationError(str(exc)) from exc
    if args.task:  # across domains: the target of the prompt file (shortcutlm.pairs.generate)
        from shortcutlm.pairs.generate import generate_task

        if not args.prompt:
            raise PromptError(f"--task {args.task} writes the target of a source file: give it with --prompt")
        path = generate_task(args.checkpoint, args.task, args.prompt, args.out, settings, args.max_new_tokens,
                             str(device), not args.no_render, args.overwrite)
        print(path)
        print(f"  beside it: {sidecar_path(path)}", file=sys.stderr)
        return 0
    # Other mistakes (checkpoint, prompt, length) are UserErrors: the command line prints them in one line.
    tokens = args.max_new_tokens
    if tokens is None and args.seconds is None:
        tokens = GenerateSettings().max_new_tokens
    paths = generate_from_checkpoint(args.checkpoint, args.out, args.prompt, tokens, args.seconds,
                                     settings, args.samples, device, args.soundfont, not args.no_render,
                                     stop_at_eos=args.stop_at_eos, compile=args.compile, overwrite=args.overwrite,
                                     progress=not args.quiet, domain=args.domain)
    for path in paths:
        sidecar = read_sidecar(path)
        beside = [str(sidecar_path(path))] + ([sidecar.rendering] if sidecar.rendering else [])
        print(path)
        print(f"  beside it: {', '.join(beside)}", file=sys.stderr)
        if sidecar.stopped_at_eos:
            print(f"  stopped at end-of-sequence after {sidecar.tokens_generated} of {sidecar.max_new_tokens} "
                  "tokens; run without --stop-at-eos for the full length")
    return 0
