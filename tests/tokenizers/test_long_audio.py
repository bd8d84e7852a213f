"""Long audio is read, resampled and encoded a bounded block at a time, and the codes equal the
whole-file encoding's: per resampler block, per codec, for resampled, stereo and mono inputs,
lengths off every block grid, parts of files, and the 48 kHz model's whole-file normalisation.

Block sizes are set small (``read_seconds`` well under a second, short EnCodec chunks, small
analysis and quantization groups for the mel codec) so that a few seconds of audio cross many
seams; the peak memory itself is measured by ``shortcutlm bench codec --parts memory``."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from shortcutlm.documents import Document
from shortcutlm.tokenizers import kmeans, mel_codec
from shortcutlm.tokenizers.acoustic import AcousticTokenizer
from shortcutlm.tokenizers.audio_blocks import BlockResampler, CodecAudio, rechunk, resampled_length
from shortcutlm.tokenizers.kmeans import FrameReservoir, FrameSample, fitting_points

from .conftest import doc, tones

SMALL_READ = 0.37  # seconds: no multiple of a hop, of a filter stride or of a chunk


def whole_file_wave(path, codec_rate: int, channels: int, span: tuple[float, float] | None = None) -> np.ndarray:
    """The whole-file reference: soundfile reads everything, numpy downmixes, torchaudio resamples."""
    import soundfile as sf
    import torchaudio.functional as AF

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if span:
        data = data[round(span[0] * len(data)): round(span[1] * len(data))]
    wave = data.T
    mono = wave.mean(axis=0, keepdims=True) if (channels == 1 or wave.shape[0] > 2) else wave
    x = torch.from_numpy(np.ascontiguousarray(mono))
    return (AF.resample(x, rate, codec_rate) if rate != codec_rate else x).numpy()


@pytest.fixture(scope="module")
def long_files(files):
    """Seconds of audio whose lengths fall on no grid: 44.1 kHz stereo, 24 kHz mono, 16 kHz stereo FLAC."""
    import soundfile as sf

    specs = {"stereo_44k": (7.3, 44100, 2, "wav"), "mono_24k": (6.1, 24000, 1, "wav"),
             "stereo_16k": (4.2, 16000, 2, "flac")}
    out = {}
    for name, (seconds, rate, channels, ext) in specs.items():
        data = tones(seconds + 0.01, rate, seed=len(out) + 11, channels=channels)[: int(seconds * rate) + 17]
        out[name] = files / f"long_{name}.{ext}"
        sf.write(str(out[name]), data, rate)
    return out


@pytest.fixture(scope="module")
def small_mel(long_files):
    """A mel_kmeans tokenizer (K=2) fitted quickly on the mono file."""
    tok = AcousticTokenizer({"weights": "mel_kmeans", "bandwidth": 1.5, "kmeans_iters": 2, "kmeans_max_frames": 2000})
    tok.train([doc(long_files["mono_24k"])])
    return tok


def with_settings(tok: AcousticTokenizer, **settings) -> AcousticTokenizer:
    """The same fitted codec with other settings (a saved-and-loaded copy is what prepare's workers use)."""
    return AcousticTokenizer({**tok.config(), **settings}, state_dict=tok._inference_state())


# ------------------------------------------------------------------------------------ pieces

@pytest.mark.parametrize("orig,new", [(44100, 24000), (16000, 24000), (22050, 24000), (8000, 24000),
                                      (48000, 24000), (44100, 48000), (11025, 48000)])
def test_block_resampler_equals_torchaudio_bit_for_bit(orig, new):
    import torchaudio.functional as AF

    rng = np.random.default_rng(orig + new)
    for channels, sizes in itertools.product((1, 2), ([3 * orig + 1234], [1, 2, 3, 500, 4000], [orig // 3 + 1] * 20,
                                                      [orig // 147] * 9 + [7])):
        x = torch.from_numpy(rng.standard_normal((channels, 3 * orig + 1234)).astype(np.float32))
        whole = AF.resample(x, orig, new)
        if channels == 1 and new * 2 == orig:  # 48 -> 24 kHz: torchaudio's one-row call rounds by position
            assert torch.allclose(whole, AF.resample(x.expand(2, -1), orig, new)[:1], rtol=0, atol=1e-6)
            whole = AF.resample(x.expand(2, -1), orig, new)[:1]
        resampler, parts, start = BlockResampler(orig, new), [], 0
        while start < x.shape[1]:
            for size in sizes:
                parts.append(resampler.push(x[:, start:start + size]))
                start += size
        parts.append(resampler.finish())
        blocks = torch.cat(parts, dim=1)
        assert blocks.shape == whole.shape and torch.equal(blocks, whole), (channels, sizes)
        assert resampled_length(x.shape[1], orig, new) == whole.shape[1]


def test_resampled_length_is_exact_where_float32_is_not():
    """torchaudio computes the length through float32; the blocks count in integers."""
    samples = 160_000_001  # an hour at 44.1 kHz is 158.8 M samples
    assert resampled_length(samples, 44100, 24000) == math.ceil(samples * 80 / 147) == -(-samples * 24000 // 44100)
    torchaudios = int(torch.ceil(torch.as_tensor(80 * samples / 147)))  # _apply_sinc_resample_kernel's expression
    assert resampled_length(samples, 44100, 24000) == torchaudios - 1


def test_rechunk_cuts_the_same_pieces_however_they_came():
    stream = np.arange(2 * 1003, dtype=np.float32).reshape(2, 1003)
    expected = [stream[:, s:s + 100] for s in range(0, 1003, 100)]
    for cuts in ([1003], [1] * 1003, [99, 1, 100, 250, 553], [0, 500, 0, 503]):
        bounds = np.cumsum([0] + cuts)
        got = list(rechunk((stream[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])), 100))
        assert len(got) == len(expected) and all(np.array_equal(g, e) for g, e in zip(got, expected))
    assert list(rechunk([], 100)) == []


def test_frame_reservoir_keeps_short_streams_and_samples_long_ones_uniformly():
    rows = np.arange(50_000, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    short = FrameReservoir(1000, seed=0)
    for block in np.array_split(rows[:900], 7):
        short.add(block)
    assert np.array_equal(short.frames(), rows[:900])  # everything, in order
    kept = []
    for split in (1, 13, 400):
        reservoir = FrameReservoir(1000, seed=5)
        for block in np.array_split(rows, split):
            reservoir.add(block)
        kept.append(reservoir.frames())
    for frames in kept:
        assert frames.shape == (1000, 3) and np.all(np.diff(frames[:, 0]) > 0)  # distinct rows, in stream order
        counts = np.histogram(frames[:, 0], bins=10, range=(0, 50_000))[0]
        assert counts.min() > 60 and counts.max() < 140  # ~100 per tenth of the stream: uniform
    again = FrameReservoir(1000, seed=5)
    for block in np.array_split(rows, 13):
        again.add(block)
    assert np.array_equal(again.frames(), kept[1])  # seeded: the same subset again



def test_frame_reservoir_keeps_each_row_with_equal_chance_within_one_block():
    """Reservoir of one row, ten rows in one block: each row survives 1 time in 10 (a slot drawn
    twice in a block must end with the later row, or the second row would survive half the time)."""
    rows = np.arange(10, dtype=np.float32)[:, None]
    kept = []
    for seed in range(4000):
        reservoir = FrameReservoir(1, seed)
        reservoir.add(rows)
        kept.append(int(reservoir.frames()[0, 0]))
    counts = np.bincount(kept, minlength=10)
    assert counts.min() > 320 and counts.max() < 480, counts


# ------------------------------------------------------------------------------------ audio

def test_blocks_are_bounded_and_add_up_to_the_whole_file(small_mel, long_files):
    tok = with_settings(small_mel, read_seconds=SMALL_READ)
    audio = tok.audio(doc(long_files["stereo_44k"]))
    blocks = list(audio)
    assert len(blocks) > 15
    # a block is at most read_seconds of input (rounded to whole filter strides) at the codec's rate
    assert max(b.shape[1] for b in blocks) <= (SMALL_READ + 0.01) * 24000
    whole = whole_file_wave(long_files["stereo_44k"], 24000, 1)
    assert np.array_equal(np.concatenate(blocks, axis=1), whole)
    assert audio.frames_read == audio.span.frames == int(7.3 * 44100) + 17
    assert audio.seconds == audio.frames_read / 44100


@pytest.mark.parametrize("name", ["stereo_44k", "mono_24k", "stereo_16k"])
def test_mel_codes_read_in_blocks_equal_the_whole_file_codes(small_mel, long_files, name, monkeypatch):
    """Many reads, analysis blocks and quantization groups per file; the codes equal the codec's
    on the whole file's wave, and the frame count is exact: ceil(ceil(N·24000 / rate) / 320)."""
    import soundfile as sf

    monkeypatch.setattr(mel_codec, "FRAMES_PER_BLOCK", 37)
    monkeypatch.setattr(kmeans, "ROWS_PER_BLOCK", 16)
    monkeypatch.setattr(mel_codec, "QUANTIZE_ROWS", 48)
    path = long_files[name]
    info = sf.info(str(path))
    wave = whole_file_wave(path, 24000, 1)
    reference = small_mel.encode_wave(wave)
    frames = -(-resampled_length(info.frames, info.samplerate, 24000) // 320)
    assert reference.shape == (2, frames)
    for read_seconds in (SMALL_READ, 1.0, 600.0):
        enc = with_settings(small_mel, read_seconds=read_seconds).encode_document(doc(path))
        assert enc.meta["frames"] == frames and enc.tokens.shape == (2 * frames,)  # 150 tokens per second exactly
        assert np.array_equal(enc.tokens, small_mel.codes_to_tokens(reference)), read_seconds
        assert enc.meta["seconds"] == info.frames / info.samplerate
    delay = with_settings(small_mel, read_seconds=SMALL_READ, layout="delay").encode_document(doc(path))
    assert delay.meta["frames"] == frames and delay.tokens.shape == (2, frames + 1)  # 75 steps per second
    assert np.array_equal(delay.tokens, with_settings(small_mel, layout="delay").codes_to_tokens(reference))


def test_encodec_codes_read_in_blocks_equal_the_whole_file_codes(codec_folder, audio_files):
    """EnCodec (random-init, fitted) with 0.4 s chunks: reads that cut chunks anywhere give the
    codes of the whole file's wave, resampled stereo and plain mono alike."""
    import soundfile as sf

    base = AcousticTokenizer({"weights": str(codec_folder / "codec.pt"), "bandwidth": 1.5, "chunk_seconds": 0.4})
    small = AcousticTokenizer({**base.config(), "weights": str(codec_folder / "codec.pt"), "read_seconds": SMALL_READ})
    for path in (audio_files["stereo_44k"], audio_files["mono_24k"]):  # 1.2 and 1 s: 3 chunks, 4 reads
        info = sf.info(str(path))
        reference = base.encode_wave(whole_file_wave(path, 24000, 1))
        enc = small.encode_document(doc(path))
        frames = -(-resampled_length(info.frames, info.samplerate, 24000) // 320)
        assert reference.shape == (2, frames) and enc.meta["frames"] == frames
        assert np.array_equal(enc.tokens, base.codes_to_tokens(reference)), path.name
    assert small.fingerprint() == base.fingerprint()  # how a file is read is not part of the mapping


def test_a_saved_tokenizer_keeps_its_read_size_outside_the_fingerprint(small_mel, tmp_path):
    """prepare's workers load the saved tokenizer: they read as the settings said."""
    from shortcutlm.tokenizers import load_tokenizer

    small = with_settings(small_mel, read_seconds=SMALL_READ)
    loaded = load_tokenizer(small.save(tmp_path / "tok").parent)
    assert loaded.read_seconds == SMALL_READ and loaded.fingerprint() == small_mel.fingerprint()


def test_a_part_of_a_file_reads_in_blocks_as_whole(small_mel, long_files):
    path, span = long_files["stereo_44k"], (0.31, 0.77)
    part = Document("part", "train", "t", path=path, span=span)
    enc = with_settings(small_mel, read_seconds=SMALL_READ).encode_document(part)
    reference = small_mel.encode_wave(whole_file_wave(path, 24000, 1, span))
    assert np.array_equal(enc.tokens, small_mel.codes_to_tokens(reference))


def test_training_sample_is_bounded_and_does_not_depend_on_the_read(small_mel, long_files):
    """A file of more frames than kmeans_max_frames gives that many, the same for any read size;
    a shorter one gives all its frames, as before."""
    path = long_files["stereo_44k"]  # 548 frames
    capped = [with_settings(small_mel, kmeans_max_frames=200, read_seconds=r).training_sample(doc(path))
              for r in (SMALL_READ, 600.0)]
    assert capped[0].rows.shape == (200, 80) and capped[0].total == 548
    assert np.array_equal(capped[0].rows, capped[1].rows)
    everything = small_mel._codec.log_mel(whole_file_wave(path, 24000, 1)).numpy()
    whole = with_settings(small_mel, read_seconds=SMALL_READ).training_sample(doc(path))
    assert whole.total == 548 and np.array_equal(whole.rows, everything)
    rows = {row.tobytes(): i for i, row in enumerate(everything)}
    assert sorted(rows[r.tobytes()] for r in capped[0].rows) == [rows[r.tobytes()] for r in capped[0].rows]


def test_the_fit_draws_from_each_file_by_its_length_not_by_the_rows_it_kept():
    """A long file capped to 1,000 rows of its 90,000 still gives ~90% of a 1,000-point draw beside
    a whole 10,000-frame file; with every file whole the draw is the old one, row for row."""
    long = FrameSample(np.full((1000, 2), 1.0, np.float32), 90_000)
    short = np.zeros((10_000, 2), np.float32)
    points = fitting_points([long, short], 1000, seed=0)
    assert points.shape == (1000, 2) and 860 < (points[:, 0] == 1.0).sum() < 940
    whole = [np.arange(40, dtype=np.float32).reshape(20, 2), np.arange(40, 80, dtype=np.float32).reshape(20, 2)]
    old = np.concatenate(whole)[np.sort(np.random.default_rng(3).choice(40, 25, replace=False))]
    assert np.array_equal(fitting_points([FrameSample(whole[0], 20), whole[1]], 25, seed=3), old)
    assert np.array_equal(fitting_points(whole, 100, seed=3), np.concatenate(whole))


def test_48khz_normalisation_reads_the_file_twice_and_gives_the_same_codes(audio_files):
    """The stereo 48 kHz model scales the whole file to unit RMS: measured in a first pass, in
    fixed segments, so a block-by-block read gives the codes of one whole read."""
    path = audio_files["train_b"]  # 1 s, 16 kHz stereo: 3 reads, 4 chunks
    tok = AcousticTokenizer({"sample_rate": 48000, "bandwidth": 3.0, "weights": "random_kmeans", "chunk_seconds": 0.3})
    tok.train([doc(path)])
    small = AcousticTokenizer({**tok.config(), "read_seconds": SMALL_READ}, state_dict=tok._inference_state())
    assert small.read_seconds == SMALL_READ
    wave, _ = tok.read_audio(doc(path))
    reference = whole_file_wave(path, 48000, 2)
    rms = float(np.sqrt(np.mean(np.square(reference.mean(axis=0), dtype=np.float64))))
    assert np.allclose(wave, reference / rms, rtol=1e-6, atol=1e-7)
    assert float(np.sqrt(np.mean(wave.mean(axis=0).astype(np.float64) ** 2))) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(small.encode_document(doc(path)).tokens, tok.codes_to_tokens(tok.encode_wave(wave)))


def test_a_bad_block_late_in_a_file_is_an_error_naming_it(small_mel, files):
    import soundfile as sf

    from shortcutlm.tokenizers import TokenizerError

    data = tones(3.0, 24000, seed=9)
    data[60000] = np.nan  # in the sixth 0.37 s block
    path = files / "late_nan.wav"
    sf.write(str(path), data, 24000, subtype="FLOAT")
    with pytest.raises(TokenizerError, match=r"late_nan\.wav: audio holds NaN"):
        with_settings(small_mel, read_seconds=SMALL_READ).encode_document(doc(path))
    with pytest.raises(ValueError, match="read_seconds must be positive"):
        with_settings(small_mel, read_seconds=0)


def test_codec_audio_checks_the_header_before_reading(files):
    import soundfile as sf

    from shortcutlm.tokenizers import TokenizerError

    path = files / "odd_rate.wav"
    sf.write(str(path), np.zeros((5000, 1), np.float32), 44101)
    with pytest.raises(TokenizerError, match=r"odd_rate\.wav: sample rate 44101 Hz has no small ratio"):
        CodecAudio(doc(path), 24000, 1, 30.0)
