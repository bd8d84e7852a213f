"""The offline log-mel codec: its tokens carry the audio, and its decodes render them."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from shortcutlm.tokenizers import mel_codec
from shortcutlm.tokenizers.acoustic import AcousticTokenizer, resolve_device
from shortcutlm.tokenizers.kmeans import fit_codebook, nearest, residual_kmeans
from shortcutlm.tokenizers.mel_codec import HOP, MelCodec

from .conftest import doc, tones

RATE = 24000


def chord_clip(root: float, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A decaying three-note chord on ``root`` Hz with a little noise: distinct clips for distinct roots."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    wave = sum(np.sin(2 * np.pi * root * ratio * t) for ratio in (1.0, 1.25, 1.5)) * np.exp(-1.5 * t)
    return (0.1 * wave + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


ROOTS = (110.0, 147.0, 196.0, 262.0, 349.0, 466.0, 622.0, 830.0)


@pytest.fixture(scope="module")
def mel_tokenizer(files):
    """A mel_kmeans tokenizer (K=4, delay) fitted on the chord clips and the gliding tones."""
    import soundfile as sf

    paths = []
    for i, root in enumerate(ROOTS):
        path = files / f"chord_{i}.wav"
        sf.write(str(path), np.concatenate([chord_clip(root, 2.0, seed=i), chord_clip(root * 1.12, 2.0, seed=i)]), RATE)
        paths.append(path)
    tones_path = files / "mel_tones.wav"
    sf.write(str(tones_path), tones(6.0, RATE, seed=7), RATE)
    tok = AcousticTokenizer({"weights": "mel_kmeans", "bandwidth": 3.0, "layout": "delay", "kmeans_iters": 10})
    assert tok.needs_training and tok.n_codebooks == 4 and tok.frames_per_second == 75
    tok.train([doc(p) for p in paths + [tones_path]])
    assert not tok.needs_training
    return tok


def log_mel_l1(a: np.ndarray, b: np.ndarray, codec: MelCodec) -> float:
    return float((codec.log_mel(a) - codec.log_mel(b)).abs().mean())


def test_analysis_in_blocks_equals_one_centred_stft(monkeypatch):
    """Long files are analysed a block at a time; the frames equal one whole-file centred STFT's
    (to float rounding: the filterbank product's kernel depends on the block's size), and a wave
    of N samples has ceil(N / 320) frames as EnCodec gives."""
    codec = MelCodec(2)
    wave = np.random.default_rng(0).standard_normal(50 * HOP + 77).astype(np.float32) * 0.1
    whole = codec.log_mel(wave)
    monkeypatch.setattr(mel_codec, "FRAMES_PER_BLOCK", 7)
    assert torch.allclose(codec.log_mel(wave), whole, atol=1e-5)
    spec = torch.stft(torch.from_numpy(wave), 1024, HOP, window=codec.window, center=True, return_complex=True)
    reference = (spec.abs().T @ codec.filterbank).clamp_min(mel_codec.LOG_FLOOR).log()
    assert torch.allclose(whole, reference[: whole.shape[0]], atol=1e-5)
    for n in (1, HOP - 1, HOP, HOP + 1, 10 * HOP):
        assert codec.log_mel(np.zeros(n, np.float32)).shape == (-(-n // HOP), 80)


def test_round_trip_keeps_each_clip_identifiable(mel_tokenizer):
    """decode(encode(clip)) is nearer in log-mel L1 to its own source than to any other clip
    (the random-init EnCodec's decodes are the same buzz for every clip)."""
    codec = mel_tokenizer._codec
    clips = [chord_clip(root * 1.06, 1.0, seed=40 + i) for i, root in enumerate(ROOTS)]  # unseen in training
    decoded = [mel_tokenizer.decode_codes(mel_tokenizer.encode_wave(c[None]))[0] for c in clips]
    for i, out in enumerate(decoded):
        assert out.shape == clips[i].shape
        distances = [log_mel_l1(out, source, codec) for source in clips]
        assert int(np.argmin(distances)) == i, distances


def test_different_codes_decode_to_different_audio_repeatably(mel_tokenizer):
    rng = np.random.default_rng(0)
    random_codes = rng.integers(0, 1024, size=(4, 150))
    a = mel_tokenizer.decode_codes(random_codes)[0]
    b = mel_tokenizer.decode_codes(np.zeros((4, 150), np.int64))[0]
    assert a.shape == b.shape == (150 * HOP,)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.5
    assert np.array_equal(mel_tokenizer.decode_codes(random_codes)[0], a)  # Griffin-Lim's start is seeded


def test_decodes_keep_the_level_of_the_source(mel_tokenizer):
    clip = chord_clip(220.0, 1.0, seed=3)
    for gain in (1.0, 0.1):
        out = mel_tokenizer.decode_codes(mel_tokenizer.encode_wave(clip[None] * gain))[0]
        ratio = float(np.sqrt(np.mean(out ** 2)) / np.sqrt(np.mean((clip * gain) ** 2)))
        assert 0.5 < ratio < 2.0, (gain, ratio)


def test_saved_tokenizer_says_what_it_is_and_encodes_the_same(mel_tokenizer, files, tmp_path):
    folder = tmp_path / "tok"
    mel_tokenizer.save(folder)
    body = json.loads((folder / "tokenizer.json").read_text())
    assert body["config"]["weights"] == "mel_kmeans" and body["published_codec"] is False
    assert "not EnCodec" in body["codec"]
    loaded = AcousticTokenizer.load(folder)
    assert loaded.fingerprint() == mel_tokenizer.fingerprint()
    path = files / "chord_0.wav"
    assert np.array_equal(loaded.encode(path), mel_tokenizer.encode(path))
    out = loaded.decode(mel_tokenizer.encode(path), tmp_path / "out.wav")
    assert loaded.artifact_seconds(out) == pytest.approx(4.0, abs=1 / 75)
    flatten = AcousticTokenizer({"weights": str(folder / "codec.pt"), "bandwidth": 3.0, "layout": "flatten"})
    assert flatten.weights_kind == "mel_kmeans" and not flatten.needs_training
    codes_delay, _ = loaded.tokens_to_codes(loaded.encode(path))
    codes_flatten, _ = flatten.tokens_to_codes(flatten.encode(path))
    assert np.array_equal(codes_delay, codes_flatten)
    fewer_bands = AcousticTokenizer({"weights": "mel_kmeans", "bandwidth": 3.0, "layout": "delay", "n_mels": 64})
    assert fewer_bands.fingerprint() != AcousticTokenizer(
        {"weights": "mel_kmeans", "bandwidth": 3.0, "layout": "delay"}).fingerprint()


def test_unfitted_and_unsupported_settings_are_clear_errors():
    tok = AcousticTokenizer({"weights": "mel_kmeans", "bandwidth": 1.5})
    with pytest.raises(RuntimeError, match="not fitted"):
        tok.encode_wave(np.zeros((1, 640), np.float32))
    with pytest.raises(ValueError, match="24 kHz mono codec"):
        AcousticTokenizer({"weights": "mel_kmeans", "sample_rate": 48000, "bandwidth": 3.0})
    with pytest.raises(ValueError, match="device must be"):
        AcousticTokenizer({"weights": "mel_kmeans", "device": "tpu"})
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_encoding_gives_the_cpu_ids(mel_tokenizer, files, tmp_path):
    mel_tokenizer.save(tmp_path / "tok")
    gpu = AcousticTokenizer.load(tmp_path / "tok")
    gpu._codec = MelCodec(4, codebooks=mel_tokenizer._codec.codebooks, device="cuda")
    path = files / "chord_3.wav"
    assert (gpu.encode(path) == mel_tokenizer.encode(path)).mean() > 0.99


# ------------------------------------------------------------------------------------ k-means

def test_kmeans_finds_separated_clusters_and_pads_small_sets():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], np.float32)
    points = torch.from_numpy(np.concatenate([c + 0.1 * rng.standard_normal((50, 2))
                                              for c in centres]).astype(np.float32))
    book = fit_codebook(points, 3, 20, seed=0)
    found = sorted(map(tuple, book.round().numpy().tolist()))
    assert found == sorted(map(tuple, centres.tolist()))
    small = fit_codebook(points[:5], 8, 5, seed=0)
    assert small.shape == (8, 2) and torch.equal(small[5:], small[:3])
    assert torch.equal(nearest(small[:5], small), torch.arange(5))  # repeats are never chosen
    books, used = residual_kmeans([points[:60].numpy(), points[60:].numpy()], 2, 3, 10, seed=0, max_points=100)
    assert books.shape == (2, 3, 2) and used == 100
