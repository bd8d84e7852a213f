"""Symbolic-music tokens: miditok (REMI by default), optionally compressed by miditok's BPE.

Settings are this module's keys (``tokenization``, ``vocab_size``, ``max_train_files``) plus any
parameter of miditok's ``TokenizerConfig`` (``pitch_range``, ``beat_res``, ``num_velocities``,
``use_tempos``, ``num_tempos``, ``tempo_range``, ``use_programs``, ``programs``, ...); a key that is
neither is refused.

Multi-track files become one sequence. The choice, by ``use_programs``:

* ``false`` (default): every non-drum track is merged into one piano track before tokenizing.
  Compact (no Program token per note), right for piano (MAESTRO) and SATB chorales; instrument
  identity and drum tracks are dropped.
* ``true``: miditok's own single stream (``one_token_stream_for_programs``): a Program token
  before each note keeps every instrument, drums included.

``token_families()`` groups base ids by miditok token type (Pitch, Velocity, Duration, Position,
Bar, TimeSig, Tempo, Program, ...), specials under "special" and every learned BPE id under "BPE"
(a merged id spans several types, so it gets a family of its own rather than its first token's).

Generated ids are repaired before decoding: cut at the first EOS, specials and out-of-range ids
dropped, BPE ids expanded, and tokens whose type may not follow the previous kept token (by
miditok's token-type graph) dropped. ``last_repair`` says what was removed.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import os
from pathlib import Path
from typing import Any, cast
from collections.abc import Iterable, Sequence

import numpy as np

from shortcutlm.compat import miditok_bpe
from shortcutlm.documents import Document
from shortcutlm.tokenizers.base import (Encoded, Tokenizer, TokenizerError, TrainingError, TrainRate, saved_file,
                                        write_config)
from shortcutlm.tokenizers.scores import clip_to_bars, end_at_bar, merge_tracks, read_midi, timing_problem
from shortcutlm.tokenizers.settings import merge_settings

log = logging.getLogger(__name__)

MIDITOK_FILE = "miditok.json"
SOUNDFONT = "TimGM6mb.sf2"
SPECIALS = {"pad": "PAD_None", "bos": "BOS_None", "eos": "EOS_None", "mask": "MASK_None"}
#: miditok tokenizations this adapter offers (each round-trip tested). MMM and PerTok need extra
#: configuration (a base tokenizer, ticks per quarter) that the settings do not carry.
SUPPORTED = ("REMI", "TSD", "MIDILike", "Structured")
#: Tokenizations whose tokens are tuples (one id per family per step): a single-stream GPT cannot model them.
MULTI_VOCAB = ("CPWord", "Octuple", "MuMIDI")

DEFAULTS: dict[str, Any] = {
    "tokenization": "REMI",   # REMI, TSD, MIDILike or Structured
    "vocab_size": None,       # BPE target vocabulary; None: no BPE
    "max_train_files": 2000,  # BPE is learned on at most this many training files
    "use_programs": False,    # false: merge tracks into one; true: Program tokens in one stream
}
# Tuple-valued TokenizerConfig fields (YAML/JSON give lists).
_TUPLE_FIELDS = ("pitch_range", "tempo_range", "drums_pitch_range", "pitch_bend_range", "chord_unknown")


def _config_params() -> list[str]:
    from miditok import TokenizerConfig

    return [name for name, p in inspect.signature(TokenizerConfig.__init__).parameters.items()
            if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]


def _beat_res(value: Any) -> dict[tuple[int, int], int]:
    """``{"0_4": 8}``, ``{(0, 4): 8}`` or ``[[0, 4, 8], ...]`` -> miditok's ``{(0, 4): 8}``."""
    if isinstance(value, dict):
        out = {}
        for key, res in value.items():
            start, end = (map(int, key.split("_")) if isinstance(key, str) else key)
            out[(int(start), int(end))] = int(res)
        return out
    return {(int(a), int(b)): int(r) for a, b, r in value}


def default_soundfont() -> Path:
    """The General MIDI soundfont that pretty_midi's wheel ships (``TimGM6mb.sf2``)."""
    import pretty_midi

    return Path(os.path.dirname(pretty_midi.__file__)) / SOUNDFONT


_SAID_MERGED: set[str] = set()


def _note_merged_tracks(score: Any, doc: Document) -> int:
    """How many tracks with notes ``merge_tracks`` is about to fold into one (0 for a single track); said
    in one line once per process (a prompt at generate time), never in prepare's worker processes,
    whose count ``prepare_notes`` sums up instead."""
    import multiprocessing

    tracks = [t for t in score.tracks if t.note_num() > 0]
    if len(tracks) < 2:
        return 0
    if not multiprocessing.parent_process() and "merged" not in _SAID_MERGED:
        _SAID_MERGED.add("merged")
        drums = " (drums included)" if any(t.is_drum for t in tracks) else ""
        log.warning("midi tokenizer: %s has %d tracks%s; merged into one piano track as use_programs is false "
                    "(right for solo piano; prepare with the tokenizer setting use_programs: true to keep programs "
                    "and drums)", doc.describe(), len(tracks), drums)
    return len(tracks)


class MidiTokenizer(Tokenizer):
    """miditok behind the protocol; one token stream per file."""

    domain = "midi"
    extensions = (".mid", ".midi")
    artifact_suffixes = (".mid", ".midi")
    rendering_suffix = ".wav"
    saved_files = MIDITOK_FILE

    def __init__(self, settings: dict[str, Any] | None = None, *, miditok_params: Path | None = None) -> None:
        import miditok

        s = merge_settings(self.domain, DEFAULTS, settings, extra_known=_config_params())
        name = str(s["tokenization"])
        if name in MULTI_VOCAB:
            raise ValueError(f"midi tokenizer: {name} is a multi-vocabulary tokenization (one id per token family "
                             "per step), which a single-stream GPT cannot model; use REMI, TSD, MIDILike or Structured")
        if name not in SUPPORTED:
            raise ValueError(f"midi tokenizer: tokenization {name!r} is not supported here; choose one of "
                             f"{', '.join(SUPPORTED)} (single-vocabulary miditok tokenizations, round-trip tested)")
        cls = getattr(miditok, name)
        self.tokenization = name
        self.vocab_target = None if s["vocab_size"] in (None, 0) else int(s["vocab_size"])
        self.max_train_files = int(s["max_train_files"])
        if miditok_params is not None:
            self._tok = cls(params=miditok_params)
        else:
            self._tok = cls(self._make_config(s))
        if self._tok.is_multi_voc:
            raise ValueError(f"midi tokenizer: {name} uses several vocabularies; "
                             "choose a single-vocabulary tokenization")
        self.use_programs = bool(self._tok.config.use_programs)
        if self.use_programs and not self._tok.one_token_stream:
            raise ValueError("midi tokenizer: use_programs needs one_token_stream_for_programs=true "
                             "(one sequence per file)")
        missing = [tok for tok in SPECIALS.values() if tok not in self._tok.vocab]
        if missing:
            raise ValueError(f"midi tokenizer: special tokens {missing} missing "
                             "(keep PAD, BOS, EOS, MASK in special_tokens)")
        self.last_repair: dict[str, int] = {}
        self.last_merged_tracks = 0  # tracks (or drum parts) merged into one by the last load_score
        self.decode_dropped: dict[str, int] | None = None
        self._refresh()

    @staticmethod
    def _make_config(s: dict[str, Any]):
        from miditok import TokenizerConfig

        params = {k: v for k, v in s.items() if k in set(_config_params())}
        for key in ("beat_res", "beat_res_rest"):
            if key in params:
                params[key] = _beat_res(params[key])
        for key in _TUPLE_FIELDS:
            if params.get(key) is not None:
                params[key] = tuple(params[key])
        if "time_signature_range" in params:
            params["time_signature_range"] = {int(k): v for k, v in params["time_signature_range"].items()}
        special = list(params.get("special_tokens", ["PAD", "BOS", "EOS", "MASK"]))
        for name in ("PAD", "BOS", "EOS", "MASK"):
            if name not in special and f"{name}_None" not in special:
                special.append(name)
        params["special_tokens"] = special
        try:
            return TokenizerConfig(**params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"midi tokenizer: bad miditok TokenizerConfig setting: {exc}") from exc

    def _refresh(self) -> None:
        """Cache ids that decode and repair need (after construction or BPE training)."""
        vocab = self._tok.vocab
        self._special = {name: int(vocab[tok]) for name, tok in SPECIALS.items()}
        specials = {int(i) for i in self._tok.special_tokens_ids} | set(self._special.values())
        self._special_set = np.array(sorted(specials))
        self._base_size = len(vocab)
        self._expansions: dict[int, list[str] | None] = {}
        self._digest: str | None = None

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> MidiTokenizer:
        return cls(settings)

    @property
    def miditok(self):
        """The wrapped miditok tokenizer."""
        return self._tok

    # ------------------------------------------------------------------ protocol: sizes and ids
    @property
    def vocab_size(self) -> int:
        return int(self._tok.vocab_size)

    @property
    def special_ids(self) -> dict[str, int]:
        return dict(self._special)

    @property
    def needs_training(self) -> bool:
        return self.vocab_target is not None and not self._tok.is_trained

    def token_families(self) -> dict[str, np.ndarray]:
        """miditok token type -> base ids; specials under "special"; learned BPE ids under "BPE"."""
        families: dict[str, list[int]] = {}
        special = set(self._special_set.tolist())
        for token, idx in self._tok.vocab.items():
            kind = "special" if idx in special else token.split("_")[0]
            families.setdefault(kind, []).append(int(idx))
        if self.vocab_size > self._base_size:
            families["BPE"] = list(range(self._base_size, self.vocab_size))
        return {name: np.array(sorted(ids), dtype=np.int64) for name, ids in families.items()}

    # ------------------------------------------------------------------ reading
    def load_score(self, doc: Document):
        """Read a MIDI file as a symusic Score (tracks merged unless ``use_programs``); returns (score, seconds)."""
        if doc.path is None:
            raise TokenizerError(f"{doc.describe()}: MIDI documents must be files, not in-memory text")
        score = read_midi(doc.path, doc.describe())
        problem = timing_problem(score)
        if problem:
            raise TokenizerError(f"{doc.describe()}: {problem}")
        if doc.span is not None:
            score = clip_to_bars(score, doc.span)
        if score.note_num() == 0:
            raise TokenizerError(f"{doc.describe()}: MIDI file has no notes")
        seconds = float(score.to("second").end())
        self.last_merged_tracks = 0
        if not self.use_programs:
            self.last_merged_tracks = _note_merged_tracks(score, doc)
            score = merge_tracks(score)
            if score.note_num() == 0:
                raise TokenizerError(f"{doc.describe()}: MIDI file has only drum notes "
                                     "(dropped when use_programs is false)")
        return score, seconds

    def _encode_score(self, score, encode_ids: bool = True):
        seq = self._tok.encode(score, encode_ids=encode_ids)
        return seq[0] if isinstance(seq, list) else seq

    # ------------------------------------------------------------------ protocol: encode / decode
    def encode_document(self, doc: Document) -> Encoded:
        score, seconds = self.load_score(doc)
        try:
            seq = self._encode_score(score)
        except Exception as exc:  # miditok's preprocessing can trip on odd content
            raise TokenizerError(f"{doc.describe()}: miditok could not tokenize it "
                                 f"({type(exc).__name__}: {exc})") from exc
        tokens = np.asarray(seq.ids, dtype=np.int64)
        if tokens.size == 0:
            raise TokenizerError(f"{doc.describe()}: no tokens (every note fell outside the tokenizer's pitch range?)")
        meta: dict[str, Any] = {"seconds": seconds}
        if self.last_merged_tracks:
            meta["merged_files"] = 1  # summed per split by prepare; see prepare_notes
        return Encoded(tokens, meta)

    def prepare_notes(self, splits: dict[str, dict[str, Any]]) -> list[str]:
        """One line when prepare merged multi-track files into one piano track (right for solo piano
        such as MAESTRO; a loss for band arrangements), naming the setting that keeps programs and drums."""
        merged = sum(int(entry.get("merged_files", 0)) for entry in splits.values())
        if not merged:
            return []
        return [f"midi tokenizer: {merged} file(s) had several tracks or drums; each was merged into one piano track "
                "(use_programs false, the default: right for solo piano); set the tokenizer's use_programs: true to "
                "keep programs and drums"]

    def repair(self, tokens: np.ndarray | Sequence[int]) -> list[str]:
        """Generated ids -> well-formed base tokens (strings). Sets ``last_repair`` with what was dropped."""
        ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
        eos = np.nonzero(ids == self._special["eos"])[0]
        cut = int(ids.size - eos[0]) if eos.size else 0
        if eos.size:
            ids = ids[: eos[0]]
        ok = (ids >= 0) & (ids < self.vocab_size) & ~np.isin(ids, self._special_set)
        expansions = [self._expansion(i) for i in ids[ok].tolist()]
        dropped_ids = int((~ok).sum()) + sum(e is None for e in expansions)
        tokens_str = [token for e in expansions if e for token in e]
        graph = self._tok.tokens_types_graph
        kept: list[str] = []
        previous = None
        for token in tokens_str:
            kind = token.split("_")[0]
            if previous is None or kind in graph.get(previous, ()):
                kept.append(token)
                previous = kind
        self.last_repair = {"after_eos": cut, "dropped_ids": dropped_ids, "dropped_tokens": len(tokens_str) - len(kept)}
        return kept  # said once per written sample, by decode (seconds_of repairs on every call)

    def _expansion(self, idx: int) -> list[str] | None:
        """The base tokens an id stands for (one, or several for a BPE id); None if it has none."""
        if idx not in self._expansions:
            try:
                if idx < self._base_size:
                    self._expansions[idx] = [self._tok[idx]]
                else:  # a learned id: its byte string, then the base tokens of those bytes (miditok's tables)
                    self._expansions[idx] = miditok_bpe.learned_expansion(self._tok, idx)
            except (KeyError, IndexError, TypeError):
                self._expansions[idx] = None
        return self._expansions[idx]

    def tokens_to_score(self, tokens: np.ndarray | Sequence[int]):
        """Ids (possibly generated) -> symusic Score, after :meth:`repair`. Never raises on bad ids."""
        import symusic
        from miditok import TokSequence

        kept = self.repair(tokens)
        if not kept:
            log.warning("midi decode: no usable tokens; writing an empty MIDI file")
            return symusic.Score(self._tok.time_division)
        seq = TokSequence(tokens=kept, ids=miditok_bpe.tokens_to_ids(self._tok, kept))
        return self._tok.decode(seq if self._tok.one_token_stream else [seq])

    time_from_content = True

    def prompt_context(self, path: str | Path) -> dict[str, Any]:
        """The prompt's tempo map (quarter position, bpm) when the ids carry no tempo (the default
        REMI config has no Tempo tokens): without it a continuation plays at miditok's 120 bpm."""
        if self._tok.config.use_tempos:
            return {}
        score = read_midi(Path(path), str(path))
        quarter = score.ticks_per_quarter
        tempos = [[t.time / quarter, 60e6 / t.mspq] for t in score.tempos if t.mspq > 0]
        return {"tempos": tempos} if tempos else {}

    def _score(self, tokens: np.ndarray, context: dict[str, Any] | None):
        """Decoded score with the prompt's tempo map put back (see :meth:`prompt_context`) and, when
        ``context["end_at_seconds"]`` is given, ended at the first bar line at or after that time."""
        import symusic

        context = context or {}
        score = self.tokens_to_score(tokens)
        tempos = context.get("tempos")
        if tempos:
            quarter = score.ticks_per_quarter
            # symusic.Tempo's stub answers any of its time units; a tick time makes a TempoTick.
            ticks = cast("list[symusic.core.TempoTick]",
                         [symusic.Tempo(int(round(q * quarter)), qpm=float(bpm)) for q, bpm in tempos])
            score.tempos = symusic.core.TempoTickList(ticks)
        if context.get("end_at_seconds") is not None:
            score = end_at_bar(score, float(context["end_at_seconds"]))
        return score

    def seconds_of(self, tokens: np.ndarray, context: dict[str, Any] | None = None) -> float | None:
        """Seconds until the last note of the decoded ids ends, at the prompt's tempo."""
        return float(self._score(tokens, context).to("second").end())

    def steps_for_seconds(self, seconds: float, train_rate: TrainRate) -> tuple[int, dict[str, Any]]:
        """Seconds of music at the train split's tokens per second: a first estimate only, since
        the ids per second vary with the notes (generation then measures with :meth:`seconds_of`)."""
        rate, source = train_rate()
        return max(1, round(seconds * rate)), {"tokens_per_second": rate, "tokens_per_second_from": source}

    def token_labels(self, ids: Sequence[int]) -> list[str]:
        """miditok's token names (``Pitch_60``; a BPE id as its tokens joined by ``+``); specials as ``<eos>``."""
        special = {v: f"<{k}>" for k, v in self._special.items()}
        labels = []
        for i in ids:
            i = int(i)
            tokens = None if i in special or not 0 <= i < self.vocab_size else self._expansion(i)
            labels.append(special.get(i) or ("+".join(tokens) if tokens else str(i)))
        return labels

    @classmethod
    def read_artifact(cls, path: str | Path) -> Any:
        """The written ``.mid`` as a ``symusic.Score`` (every track as written)."""
        return read_midi(Path(path))

    def artifact_seconds(self, path: str | Path) -> float | None:
        """Seconds until the last note of a ``.mid`` ends (at its own tempo map)."""
        import symusic

        score = cast("symusic.core.ScoreTick", symusic.Score(str(path)))  # a file reads in ticks
        return float(cast("symusic.core.ScoreSecond", score.to("second")).end())  # the stub's to() says object

    def decode(self, tokens: np.ndarray, out_path: str | Path, context: dict[str, Any] | None = None) -> Path:
        """Write a ``.mid``; ill-formed generated ids are repaired (see :meth:`repair`); a prompt's
        tempo map from ``context`` is restored."""
        out_path = Path(out_path)
        try:
            score = self._score(tokens, context)
        except Exception as exc:  # repair makes this unexpected; report it rather than crash a sampling run
            raise TokenizerError(f"{out_path}: ids did not decode to MIDI even after repair "
                                 f"({type(exc).__name__}: {exc})") from exc
        repair = dict(self.last_repair)
        self.decode_dropped = {"ids": repair["dropped_ids"], "tokens": repair["dropped_tokens"],
                               "of": int(np.asarray(tokens).size) - repair["after_eos"]}
        if repair["dropped_ids"] or repair["dropped_tokens"]:
            log.warning("midi decode: %s: repaired %d ids: dropped %d that stand for no token and %d tokens out of "
                        "order", "/".join(out_path.parts[-2:]), self.decode_dropped["of"], repair["dropped_ids"],
                        repair["dropped_tokens"])
        out_path.parent.mkdir(parents=True, exist_ok=True)
        score.dump_midi(str(out_path))
        return out_path

    def describe(self) -> dict[str, Any]:
        """What the last :meth:`decode` dropped while repairing (a sample's sidecar records it, and the
        report says it), and how tracks were treated."""
        facts: dict[str, Any] = {"multitrack": "program tokens" if self.use_programs else "tracks merged"}
        if self.decode_dropped is not None:
            facts["decode_dropped"] = dict(self.decode_dropped)
        return facts

    def render(self, mid_or_tokens: str | Path | np.ndarray | Sequence[int], wav_path: str | Path,
               soundfont: str | Path | None = None, sample_rate: int = 44100) -> Path:
        """Render a ``.mid`` file (or ids) to a mono ``.wav`` with symusic's synthesizer (the
        rendering a MIDI sample gets beside it).

        ``soundfont`` defaults to the General MIDI ``TimGM6mb.sf2`` in pretty_midi's package folder.
        """
        import soundfile as sf
        import symusic

        font = Path(soundfont) if soundfont else default_soundfont()
        if not font.is_file():
            raise FileNotFoundError(f"soundfont {font} does not exist")
        if isinstance(mid_or_tokens, (str, Path)):
            score = read_midi(Path(mid_or_tokens))  # every track as written, not merged
        else:
            score = self.tokens_to_score(mid_or_tokens)
        if any(track.notes for track in score.tracks):
            audio = symusic.Synthesizer(sf_path=str(font), sample_rate=int(sample_rate)).render(score, stereo=False)
            audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        else:  # a sample that wrote no note (the synthesizer refuses an empty score): its rendering is silence
            audio = np.zeros(int(sample_rate * max(float(score.to("second").end()), 0.1)), dtype=np.float32)
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        if peak > 1.0:
            audio = audio / peak
        wav_path = Path(wav_path)
        wav_path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(wav_path), audio, int(sample_rate), subtype="PCM_16")
        return wav_path

    @classmethod
    def picture(cls, artifact: str | Path, out_png: str | Path, prompt_seconds: float | None = None,
                title: str = "") -> Path | None:
        """A piano roll of every note of the ``.mid`` (seconds at its own tempo map), the prompt shaded."""
        from shortcutlm.drawing.sample_pictures import plot_piano_roll

        score = read_midi(Path(artifact)).to("second")
        notes = [(n.start, n.duration, n.pitch) for track in score.tracks for n in track.notes]
        starts, durations, pitches = (np.array(column, dtype=float) for column in zip(*notes)) if notes else \
            (np.zeros(0),) * 3
        return plot_piano_roll(starts, durations, pitches, Path(out_png), prompt_seconds, title)

    # ------------------------------------------------------------------ training (BPE)
    trains_on_samples = True

    @property
    def max_training_documents(self) -> int | None:
        return self.max_train_files

    def train(self, documents: Iterable[Document]) -> dict[str, str]:
        """Learn BPE merges up to ``vocab_size`` (no-op without ``vocab_size``); unreadable files
        are skipped and returned."""
        if self.vocab_target is None:
            return {}
        return super().train(documents)

    def training_sample(self, doc: Document) -> list[str]:
        """One file's base tokens as miditok's byte strings, split per bar/beat as miditok's own
        TokTrainingIterator does. Our reading, not miditok's, which would skip the track merge."""
        score, _ = self.load_score(doc)
        try:
            seq = self._encode_score(score, encode_ids=False)
        except Exception as exc:  # miditok's preprocessing can trip on odd content
            raise TokenizerError(f"{doc.describe()}: miditok could not tokenize it "
                                 f"({type(exc).__name__}: {exc})") from exc
        split = self._tok.config.encode_ids_split
        parts = seq.split_per_bars() if split == "bar" else seq.split_per_beats() if split == "beat" else [seq]
        return [miditok_bpe.ids_to_bytes(self._tok, part.ids) for part in parts if len(part) > 0]

    def fit(self, samples: Sequence[list[str]]) -> None:
        """miditok's BPE trainer on the samples; refuses a vocabulary the samples cannot reach."""
        if self.vocab_target is None:
            return
        if not samples:
            raise TrainingError("midi tokenizer: no readable train MIDI file to learn BPE from")
        if self.vocab_target <= self._base_size:  # BPE only adds ids above the base vocabulary
            log.warning("midi tokenizer: vocab_size %d is not above the base vocabulary of %d ids (%s with these "
                        "settings), so BPE learns nothing and the base tokens are used; give a larger vocab_size",
                        self.vocab_target, self._base_size, self.tokenization)
        self._tok.train(vocab_size=self.vocab_target, model="BPE", iterator=_Sequences(samples))
        self._refresh()
        if self.vocab_size < self.vocab_target:
            raise TrainingError(f"midi tokenizer: the train split ({len(samples)} files) supports at most "
                             f"{self.vocab_size} BPE tokens, asked for {self.vocab_target}; lower vocab_size")

    @property
    def headline(self) -> str:
        bpe = f" with BPE to {self.vocab_size:,} ids" if self.vocab_target else f", vocabulary {self.vocab_size:,}"
        tracks = "programs and drums kept" if self.use_programs else "each file's tracks merged into one"
        return f"{self.tokenization} MIDI tokens{bpe} ({tracks})"

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        return {"tokenization": self.tokenization, "vocab_size": self.vocab_target,
                "miditok_config": self._tok.config.to_dict(serialize=True)}

    def model_files_digest(self) -> str:
        """Digest of the learned BPE model (empty without BPE: the config defines the mapping)."""
        if self._digest is None:
            if self._tok.is_trained:
                self._digest = hashlib.sha256(miditok_bpe.bpe_model_text(self._tok).encode()).hexdigest()
            else:
                self._digest = ""
        return self._digest

    def save(self, folder: str | Path) -> Path:
        """``tokenizer.json`` plus ``miditok.json`` (miditok's own save: config, vocab, BPE model)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._tok.save(folder / MIDITOK_FILE)
        return write_config(folder, self, {"miditok_file": MIDITOK_FILE, "max_train_files": self.max_train_files,
                                           "multitrack": "program tokens" if self.use_programs else "tracks merged"})

    @classmethod
    def from_saved(cls, folder: Path, body: dict[str, Any]) -> MidiTokenizer:
        params = saved_file(folder, MIDITOK_FILE, "miditok config")
        cfg = body["config"]
        return cls({"tokenization": cfg["tokenization"], "vocab_size": cfg["vocab_size"],
                    "max_train_files": body.get("max_train_files", DEFAULTS["max_train_files"])}, miditok_params=params)


class _Sequences:
    """The byte strings of every training sample, with the ``__len__`` miditok's trainer asks for."""

    def __init__(self, samples: Sequence[list[str]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return sum(map(len, self.samples))

    def __iter__(self):
        for sample in self.samples:
            yield from sample
