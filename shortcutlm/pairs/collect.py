"""Pairs from three places: the embedded chorales, LibriSpeech's transcripts, a user's folder.

* ``chorales``: each chorale of music21's Bach corpus cut into windows of ``segment_quarters``
  quarter notes (tick ranges, the chorale's tempo and metre carried over), each window written as
  MIDI and rendered with pretty_midi's soundfont (the same renderer ``chorales_audio`` uses), so a
  pair is a score and exactly its sound, short enough for source and target to share a context.
  Windows of a chorale stay in the chorale's split.
* ``librispeech``: the transcript line and its FLAC (the published layout, read by
  :mod:`shortcutlm.datasets.librispeech`); the subset gives the split.
* ``folder``: files that share a stem in one folder (``song.mid`` + ``song.wav``, ``utt.txt`` +
  ``utt.flac``); splits from names (``train/``, ``test/``) or a hash of the stem.

Every input ends in a pair or in a :class:`~shortcutlm.pairs.records.Leftover`: one with no partner
(unpaired) or a pair whose halves disagree (a transcript line without its audio, audio whose length
is absurd for its score or its words), which is skipped.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

from shortcutlm.datasets.embedded import bach_chorales, cache_root, render_midi
from shortcutlm.datasets.librispeech import librispeech
from shortcutlm.datasets.sources import AUDIO_EXTENSIONS, MIDI_EXTENSIONS, TEXT_EXTENSIONS, named_split
from shortcutlm.datasets.splits import assign_splits
from shortcutlm.documents import Document, Found, Rejected, safe_id
from shortcutlm.pairs.records import BAD_PAIR, UNPAIRED, Half, Leftover, Pair
from shortcutlm.pairs.tasks import PairError

PairItem = Pair | Leftover
SUFFIX_DOMAINS = {**{s: "acoustic" for s in AUDIO_EXTENSIONS}, **{s: "midi" for s in MIDI_EXTENSIONS},
                  **{s: "text" for s in TEXT_EXTENSIONS}}
#: A rendering lasts its score's notes plus the instruments' release; speech says a few to ~25 characters a second.
SCORE_SLACK_S = 4.0
CHARS_PER_SECOND = (0.5, 40.0)


# ------------------------------------------------------------------------------ agreement of halves

def midi_seconds(path: Path) -> float:
    import symusic

    score: Any = symusic.Score(str(path))
    return float(score.to("second").end())


def audio_seconds(path: Path) -> float:
    import soundfile

    return float(soundfile.info(str(path)).duration)


def disagreement(pair: Pair) -> str:
    """Why the halves of ``pair`` cannot be one recording ("" when they can): audio far shorter or
    longer than its score, or than its words could take to say."""
    audio = pair.half("acoustic")
    if audio is None or audio.path is None:
        return ""
    seconds = audio_seconds(audio.path)
    score, words = pair.half("midi"), pair.half("text")
    if score is not None and score.path is not None:
        notes = midi_seconds(score.path)
        if not 0.5 * notes - 0.5 <= seconds <= 1.5 * notes + SCORE_SLACK_S:
            return f"the audio lasts {seconds:.2f} s but its score {notes:.2f} s"
    if words is not None:
        text = words.text if words.text is not None else words.path.read_text(encoding="utf-8") if words.path else ""
        rate = len(text.strip()) / seconds if seconds > 0 else float("inf")
        low, high = CHARS_PER_SECOND
        if not low <= rate <= high:
            return (f"{len(text.strip())} characters in {seconds:.2f} s of audio ({rate:.1f} a second; speech "
                    f"says {low:g} to {high:g})")
    return ""


def checked(pairs: Iterator[PairItem]) -> Iterator[PairItem]:
    """The pairs whose halves agree; the others as bad pairs, with the reason."""
    for item in pairs:
        if isinstance(item, Pair):
            why = disagreement(item)
            if why:
                where = " + ".join(h.describe() for h in item.halves)
                yield Leftover(where, why, BAD_PAIR, item.split, item.pair_id)
                continue
        yield item


# ------------------------------------------------------------------------------ chorales

def _window(score: Any, start: int, end: int) -> Any:
    """Ticks [start, end) of ``score`` as a score starting at 0, with the tempo and metre in force at ``start``."""
    import symusic

    part = score.clip(start, end, clip_end=False).shift_time(-start)
    for events, kind in ((score.tempos, symusic.Tempo), (score.time_signatures, symusic.TimeSignature)):
        before = [e for e in events if e.time <= start]
        if before and not any(e.time == 0 for e in (part.tempos if kind is symusic.Tempo else part.time_signatures)):
            copy = before[-1].copy()
            copy.time = 0
            (part.tempos if kind is symusic.Tempo else part.time_signatures).append(copy)
    part.tempos.sort()
    part.time_signatures.sort()
    return part


def chorale_pairs(limit: int | None = None, cache: str | Path | None = None, workers: int = 2,
                  segment_quarters: int = 4, segments: int | None = None,
                  sample_rate: int = 24000) -> Iterator[PairItem]:
    """Windows of the chorales as (MIDI, rendering) pairs, cached under ``<cache>/chorale_pairs_*``.

    ``segments``: at most this many windows per chorale (the first ones); ``limit``: the first N chorales.
    """
    import symusic

    if int(segment_quarters) < 1:
        raise PairError(f"chorales: segment_quarters must be a positive number of quarter notes, "
                        f"not {segment_quarters}")
    folder = cache_root(cache) / f"chorale_pairs_{int(sample_rate)}_q{int(segment_quarters)}"
    folder.mkdir(parents=True, exist_ok=True)
    for item in bach_chorales(limit, cache, workers):
        if isinstance(item, Rejected):
            yield Leftover(item.input, f"no score, so neither half: {item.reason}", UNPAIRED, item.split, item.doc_id)
            continue
        if not isinstance(item, Document) or item.path is None:
            continue
        score: Any = symusic.Score(str(item.path))
        step = int(segment_quarters) * score.ticks_per_quarter
        end = score.end()
        starts = list(range(0, max(end, 1), step))[: segments]
        for index, start in enumerate(starts):
            pair_id = f"{item.doc_id}-s{index:02d}"
            midi, wav = folder / f"{pair_id}.mid", folder / f"{pair_id}.wav"
            window = _window(score, start, start + step)
            if window.note_num() == 0:
                yield Leftover(f"{item.path} (window {index})", "a window without notes has no score to pair",
                               UNPAIRED, item.split, pair_id)
                continue
            try:
                if not midi.is_file():
                    tmp = midi.with_suffix(".tmp.mid")
                    window.dump_midi(str(tmp))
                    tmp.replace(midi)
                if not wav.is_file():
                    render_midi(midi, wav, int(sample_rate))
            except Exception as exc:  # one window's failure is that pair's, recorded
                yield Leftover(str(midi), f"rendering failed: {type(exc).__name__}: {exc}", UNPAIRED, item.split,
                               pair_id)
                continue
            yield Pair(pair_id, item.split, (Half("midi", midi), Half("acoustic", wav)),
                       {"chorale": item.doc_id, "window": index, "quarters": int(segment_quarters),
                        **{k: v for k, v in item.meta.items() if k in ("riemenschneider", "work")}})


# ------------------------------------------------------------------------------ LibriSpeech

def librispeech_pairs(path: str | Path | None = None, subsets: list[str] | str | None = None,
                      limit: int | None = None, found: list[str] | None = None) -> Iterator[PairItem]:
    """Each utterance's transcript line and FLAC; a FLAC without a line is unpaired, a line without
    its FLAC a bad pair."""
    for item in librispeech(path, subsets, limit):
        if isinstance(item, Found):
            if found is not None:
                found.append(item.line())
        elif isinstance(item, Rejected):
            yield Leftover(item.input, item.reason, BAD_PAIR, item.split, item.doc_id)
        elif item.meta.get("transcript") is None:
            yield Leftover(str(item.path), "no transcript line for this utterance", UNPAIRED, item.split, item.doc_id)
        else:
            yield Pair(item.doc_id, item.split, (Half("text", text=str(item.meta["transcript"])),
                                                 Half("acoustic", item.path)),
                       {k: item.meta[k] for k in ("subset", "speaker", "chapter")})


# ------------------------------------------------------------------------------ a user's folder

def folder_pairs(path: str | Path | None = None) -> Iterator[PairItem]:
    """Files sharing a stem in one folder: a score and its audio, or a text and its audio."""
    if path is None:
        raise PairError("folder pairs: give the folder (source.path)")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise PairError(f"folder pairs: {root} is not a folder")
    groups: dict[str, list[Path]] = defaultdict(list)
    for file in sorted(p for p in root.rglob("*") if p.is_file() and not any(s.startswith(".") for s in
                                                                            p.relative_to(root).parts)):
        if file.suffix.lower() not in SUFFIX_DOMAINS:
            yield Leftover(str(file), f"not a paired file type ({file.suffix or 'no suffix'})", UNPAIRED)
            continue
        groups[file.relative_to(root).with_suffix("").as_posix()].append(file)
    named = {key: named_split(key) for key in groups}
    by_hash = assign_splits([key for key, (split, _) in named.items() if split is None])
    for key, files in groups.items():
        split, problem = named[key]
        pair_id = safe_id(key.replace("/", "__"))
        if problem:
            for file in files:
                yield Leftover(str(file), problem, UNPAIRED, "", pair_id)
            continue
        split = split or by_hash[key]
        by_domain: dict[str, list[Path]] = defaultdict(list)
        for file in files:
            by_domain[SUFFIX_DOMAINS[file.suffix.lower()]].append(file)
        audio = by_domain.get("acoustic", [])
        partner = next((by_domain[d] for d in ("midi", "text") if by_domain.get(d)), [])
        if not audio or not partner:
            for file in files:
                yield Leftover(str(file), "no file of the other half shares its stem", UNPAIRED, split, pair_id)
            continue
        kept = (partner[0], audio[0])
        for file in files:
            if file not in kept:
                yield Leftover(str(file), f"its stem is paired already ({kept[0].name} + {kept[1].name})",
                               UNPAIRED, split, pair_id)
        yield Pair(pair_id, split, (Half(SUFFIX_DOMAINS[kept[0].suffix.lower()], kept[0]), Half("acoustic", kept[1])),
                   {"relative_stem": key})


Collector = Callable[..., Iterator[PairItem]]
COLLECTORS: dict[str, tuple[Collector, tuple[str, ...]]] = {
    "chorales": (chorale_pairs, ("limit", "cache", "workers", "segment_quarters", "segments", "sample_rate")),
    "librispeech": (librispeech_pairs, ("path", "subsets", "limit")),
    "folder": (folder_pairs, ("path",)),
}


def collect_pairs(spec: dict[str, Any], found: list[str] | None = None) -> Iterator[PairItem]:
    """Pairs and leftovers of a pair source ``{"name": chorales|librispeech|folder, **options}``, halves checked."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in COLLECTORS:
        raise PairError(f"unknown pair source {name!r}; expected one of {', '.join(COLLECTORS)}")
    collector, allowed = COLLECTORS[name]
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise PairError(f"pair source {name!r}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    if name == "librispeech":
        spec["found"] = found
    return checked(collector(**spec))
