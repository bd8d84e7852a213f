"""Fixtures made here, once per session: synthetic audio, on-grid MIDI, a converted chorale,
text files, and one k-means-fitted acoustic codec (the slow part, so it is built once)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shortcutlm.documents import Document

TPQ = 480  # ticks per quarter of the MIDI fixtures


def doc(path: Path, split: str = "train") -> Document:
    """A file document whose id is the file's stem."""
    return Document(doc_id=Path(path).stem.replace(".", "_"), split=split, source="test", path=Path(path))


def tones(seconds: float, rate: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A mixture of gliding tones and noise, ``[N, channels]`` float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.3 * t)) + 0.2 * np.sin(2 * np.pi * 660 * t)
            + 0.05 * rng.standard_normal(t.size))
    wave *= np.minimum(1.0, 4 * t)  # a fade-in, so the latents vary over time
    return np.stack([wave * (0.6 + 0.4 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokenizer_files")


# ------------------------------------------------------------------------------------ audio

@pytest.fixture(scope="session")
def audio_files(files) -> dict[str, Path]:
    """WAV/FLAC at several rates and channel counts, silence, and broken files."""
    import soundfile as sf

    out = {
        "train_a": (tones(15.0, 24000, seed=1), 24000, "wav"),  # > 1024 frames: every codebook has residual left
        "train_b": (tones(1.0, 16000, seed=2, channels=2), 16000, "flac"),
        "stereo_44k": (tones(1.2, 44100, seed=3, channels=2), 44100, "wav"),
        "mono_24k": (tones(1.0, 24000, seed=4), 24000, "wav"),
        "short_22k": (tones(0.5, 22050, seed=5), 22050, "wav"),
        "silent": (np.zeros((12000, 1), np.float32), 24000, "wav"),
    }
    paths = {}
    for name, (data, rate, ext) in out.items():
        paths[name] = files / f"{name}.{ext}"
        sf.write(str(paths[name]), data, rate)
    paths["empty"] = files / "empty.wav"
    sf.write(str(paths["empty"]), np.zeros((0, 1), np.float32), 24000)
    paths["corrupt"] = files / "corrupt.wav"
    paths["corrupt"].write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    return paths


@pytest.fixture(scope="session")
def acoustic_flatten(audio_files):
    """One random-init EnCodec (K=2) with k-means codebooks, fitted once per session."""
    from shortcutlm.tokenizers.acoustic import AcousticTokenizer

    tok = AcousticTokenizer({"weights": "random_kmeans", "bandwidth": 1.5, "kmeans_iters": 5, "seed": 0})
    assert tok.needs_training
    tok.train([doc(audio_files["train_a"]), doc(audio_files["train_b"])])
    assert not tok.needs_training
    return tok


@pytest.fixture(scope="session")
def codec_folder(acoustic_flatten, tmp_path_factory) -> Path:
    """The fitted tokenizer saved (tokenizer.json + codec.pt)."""
    folder = tmp_path_factory.mktemp("acoustic_tok")
    acoustic_flatten.save(folder)
    return folder


@pytest.fixture(scope="session")
def acoustic_delay(codec_folder):
    """The same codec, delay layout (weights passed as a checkpoint path)."""
    from shortcutlm.tokenizers.acoustic import AcousticTokenizer

    return AcousticTokenizer({"weights": str(codec_folder / "codec.pt"), "bandwidth": 1.5, "layout": "delay"})


# ------------------------------------------------------------------------------------- MIDI

def on_grid_notes(seed: int, n_bars: int = 4) -> list[tuple[int, int, int, int]]:
    """``(pitch, start, duration, velocity)`` in ticks at TPQ, on REMI's default grid
    (onsets on 1/8 beat, durations of 1/2, 1, 1.5 or 2 beats), no duplicate (pitch, onset)."""
    rng = np.random.default_rng(seed)
    notes, seen = [], set()
    for beat in range(4 * n_bars):
        for _ in range(int(rng.integers(1, 4))):
            start = beat * TPQ + int(rng.integers(0, 8)) * TPQ // 8
            pitch = int(rng.integers(40, 90))
            if (pitch, start) in seen:
                continue
            seen.add((pitch, start))
            duration = int(rng.choice([TPQ // 2, TPQ, 3 * TPQ // 2, 2 * TPQ]))
            notes.append((pitch, start, duration, int(rng.integers(40, 120))))
    return notes


def write_midi(path: Path, tracks: list[tuple[int, bool, list[tuple[int, int, int, int]]]]) -> Path:
    """Write ``[(program, is_drum, notes)]`` with symusic at TPQ, 4/4, 120 bpm."""
    import symusic

    score = symusic.Score(TPQ)
    score.tempos.append(symusic.Tempo(0, 120.0))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    for program, is_drum, notes in tracks:
        track = symusic.Track(name=f"p{program}", program=program, is_drum=is_drum)
        for pitch, start, duration, velocity in notes:
            track.notes.append(symusic.Note(start, duration, pitch, velocity))
        score.tracks.append(track)
    score.dump_midi(str(path))
    return path


@pytest.fixture(scope="session")
def midi_files(files) -> dict[str, Path]:
    """On-grid single- and multi-track files, and corrupt / empty / truncated / note-less ones."""
    paths = {
        "grid": write_midi(files / "grid.mid", [(0, False, on_grid_notes(0))]),
        "grid2": write_midi(files / "grid2.mid", [(0, False, on_grid_notes(1))]),
        "multi": write_midi(files / "multi.mid", [(0, False, on_grid_notes(2)[::2]), (40, False, on_grid_notes(3)[::2]),
                                                  (0, True, [(36, 0, TPQ // 2, 100), (38, TPQ, TPQ // 2, 100)])]),
        "drums_only": write_midi(files / "drums_only.mid", [(0, True, [(36, 0, TPQ, 100)])]),
        "no_notes": write_midi(files / "no_notes.mid", []),
    }
    whole = paths["grid"].read_bytes()
    paths["truncated"] = files / "truncated.mid"
    paths["truncated"].write_bytes(whole[: len(whole) // 2])
    paths["empty"] = files / "empty.mid"
    paths["empty"].write_bytes(b"")
    paths["corrupt"] = files / "corrupt.mid"
    paths["corrupt"].write_bytes(b"this is not a MIDI file at all")
    return paths


@pytest.fixture(scope="session")
def chorale_midis(files) -> list[Path]:
    """A few Bach chorales from music21's corpus as MIDI, converted once per session."""
    from music21 import corpus

    out = []
    for i, source in enumerate(sorted(corpus.getComposer("bach"))[:6]):
        target = files / f"chorale_{i}.mid"
        if not target.exists():
            corpus.parse(source).write("midi", fp=str(target))
        out.append(target)
    return out


# ------------------------------------------------------------------------------------- text

SAMPLE = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
          "Crème brûlée, naïve façade — Ærøskøbing; Ελληνικά; русский; 日本語のテキスト; emoji 🎼🎻.\n"
          "\ttabs\tand  double  spaces  \r\nand trailing space \n")


@pytest.fixture(scope="session")
def text_files(files) -> dict[str, Path]:
    """Small corpus, a big file (streamed in many blocks), invalid UTF-8 and an empty file."""
    rng = np.random.default_rng(0)
    words = ["thou", "art", "the", "king", "of", "Denmark", "speak", "hear", "me", "lord", "sweet", "night",
             "être", "naïve", "über", "ça", "señor", "日本", "музыка"]
    lines = [" ".join(rng.choice(words, size=int(rng.integers(0, 14)))) for _ in range(4000)]
    corpus = "\n".join(lines) + "\n" + SAMPLE * 20
    paths = {"corpus": files / "corpus.txt", "sample": files / "sample.txt", "big": files / "big.txt",
             "bad": files / "bad.txt", "empty": files / "empty.txt", "bad_tail": files / "bad_tail.txt"}
    paths["corpus"].write_text(corpus, encoding="utf-8", newline="")
    paths["sample"].write_text(SAMPLE, encoding="utf-8", newline="")
    # ~3 MB with one 200 kB line (text8-like) in the middle; read in 64 kB blocks by the tests.
    big = corpus * 6 + "word " * 40000 + "\n" + corpus * 6 + "no newline at the end"
    paths["big"].write_text(big, encoding="utf-8", newline="")
    paths["bad"].write_bytes("good text\nmore é\n".encode() + b"\xff\xfe broken" + b" tail\n")
    paths["bad_tail"].write_bytes("ends in half a character é".encode() + "€".encode()[:2])
    paths["empty"].write_bytes(b"")
    return paths
