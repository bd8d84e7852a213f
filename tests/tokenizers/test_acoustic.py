"""EnCodec acoustic tokenizer: layouts round trip exactly, decoded audio has the right length,
any rate / channel count reads, bad audio is named, save/load and fingerprints hold.

The codec is random-init with k-means codebooks (no network here), fitted once per session."""
from __future__ import annotations

import math

import numpy as np
import pytest

from shortcutlm.documents import Document
from shortcutlm.tokenizers import TokenizerError, load_tokenizer, tokenizer_class
from shortcutlm.tokenizers.acoustic import AcousticTokenizer
from tests.tokenizers.conftest import doc

K = 2  # 1.5 kbps


def test_registry_gives_acoustic_tokenizer():
    assert tokenizer_class("acoustic") is AcousticTokenizer


def test_rates_and_ids(acoustic_flatten, acoustic_delay):
    assert acoustic_flatten.n_codebooks == K and acoustic_flatten.frames_per_second == 75
    assert acoustic_flatten.tokens_per_second == 150 and acoustic_delay.tokens_per_second == 75
    assert acoustic_flatten.vocab_size == K * 1024 + 3 and acoustic_flatten.n_streams == 1
    assert acoustic_flatten.special_ids == {"pad": 2048, "bos": 2049, "eos": 2050}
    assert acoustic_delay.vocab_size == 1024 + 4 and acoustic_delay.n_streams == K
    assert acoustic_delay.special_ids == {"pad": 1024, "bos": 1025, "eos": 1026, "empty": 1027}


def test_codes_are_informative(acoustic_flatten, audio_files):
    """Fitted codebooks: not every frame gets the same code (as zero or random codebooks give)."""
    codes, _ = acoustic_flatten.tokens_to_codes(acoustic_flatten.encode(audio_files["mono_24k"]))
    for k in range(K):
        assert len(np.unique(codes[k])) > 5


@pytest.mark.parametrize("layout", ["flatten", "delay"])
def test_ids_codes_ids_exact_and_decode_length(layout, acoustic_flatten, acoustic_delay, audio_files, tmp_path):
    import soundfile as sf

    tok = acoustic_flatten if layout == "flatten" else acoustic_delay
    path = audio_files["stereo_44k"]
    info = sf.info(str(path))
    enc = tok.encode_document(doc(path))
    frames = math.ceil(info.frames / info.samplerate * 24000 / 320)
    assert enc.meta["seconds"] == pytest.approx(info.duration) and enc.meta["frames"] == frames
    if layout == "flatten":
        assert enc.tokens.shape == (frames * K,)
    else:
        assert enc.tokens.shape == (K, frames + K - 1)
        assert np.array_equal(enc.tokens == tok.special_ids["empty"], ~tok.valid_mask(frames))
    assert enc.tokens.min() >= 0 and enc.tokens.max() < tok.vocab_size
    codes, valid = tok.tokens_to_codes(enc.tokens)
    assert valid.all() and codes.shape == (K, frames)
    assert np.array_equal(tok.codes_to_tokens(codes), enc.tokens)
    out = tok.decode(enc.tokens, tmp_path / f"{layout}.wav")
    data, rate = sf.read(str(out))
    assert rate == 24000 and data.ndim == 1 and len(data) == frames * 320
    assert abs(len(data) / rate - info.duration) < 320 / 24000


def test_ids_do_not_depend_on_the_callers_thread_count(acoustic_flatten, audio_files):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = acoustic_flatten.encode(audio_files["stereo_44k"])
        assert torch.get_num_threads() == 2  # the caller's setting is restored
        torch.set_num_threads(1)
        b = acoustic_flatten.encode(audio_files["stereo_44k"])
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(a, b)


def test_chunked_encode_and_decode(codec_folder, audio_files, tmp_path):
    import soundfile as sf

    tok = AcousticTokenizer({"weights": str(codec_folder / "codec.pt"), "bandwidth": 1.5, "chunk_seconds": 0.4})
    info = sf.info(str(audio_files["stereo_44k"]))
    enc = tok.encode_document(doc(audio_files["stereo_44k"]))
    frames = math.ceil(info.frames / info.samplerate * 24000 / 320)
    assert enc.meta["frames"] == frames  # 0.4 s chunks are whole hops: no frame lost or added
    out = tok.decode(enc.tokens, tmp_path / "chunked.wav")
    assert sf.info(str(out)).frames == frames * 320


def test_layouts_share_codes(acoustic_flatten, acoustic_delay, audio_files):
    a, _ = acoustic_flatten.tokens_to_codes(acoustic_flatten.encode(audio_files["mono_24k"]))
    b, _ = acoustic_delay.tokens_to_codes(acoustic_delay.encode(audio_files["mono_24k"]))
    assert np.array_equal(a, b)


def test_silence_is_fine(acoustic_flatten, audio_files, tmp_path):
    enc = acoustic_flatten.encode_document(doc(audio_files["silent"]))
    assert enc.tokens.shape == (K * 38,) and enc.meta["seconds"] == 0.5
    assert acoustic_flatten.decode(enc.tokens, tmp_path / "silent.wav").is_file()


@pytest.mark.parametrize("case,match", [("empty", "empty"), ("corrupt", "cannot read audio")])
def test_bad_audio_is_an_error_naming_the_file(acoustic_flatten, audio_files, case, match):
    path = audio_files[case]
    with pytest.raises(TokenizerError, match=rf"{path.name}.*{match}"):
        acoustic_flatten.encode(path)
    with pytest.raises(TokenizerError, match="missing.wav"):
        acoustic_flatten.encode(path.parent / "missing.wav")
    with pytest.raises(TokenizerError, match="src:t"):
        acoustic_flatten.encode_document(Document(doc_id="t", split="", source="src", text="hi"))


def test_generated_ids_with_specials_decode(acoustic_flatten, acoustic_delay, audio_files, tmp_path):
    import soundfile as sf

    flat = acoustic_flatten.encode(audio_files["mono_24k"])
    sp = acoustic_flatten.special_ids
    noisy = np.concatenate([[sp["bos"]], flat[:40], [sp["pad"]], flat[40:60], [9999, 5], [sp["eos"]], flat[:10]])
    out = acoustic_flatten.decode(noisy, tmp_path / "noisy.wav")
    assert sf.info(str(out)).frames == 31 * 320  # 62 ids before EOS (after dropping BOS/PAD) = 31 frames
    delay = acoustic_delay.encode(audio_files["mono_24k"])
    bad = delay.copy()
    bad[0, 5] = acoustic_delay.special_ids["empty"]
    assert acoustic_delay.decode(bad, tmp_path / "delay_bad.wav").is_file()


def test_any_rate_and_channels(acoustic_flatten, audio_files):
    """16 kHz stereo FLAC here; 44.1 kHz stereo WAV and 24 kHz mono in the tests above."""
    assert acoustic_flatten.encode(audio_files["train_b"]).shape == (K * 75,)


def test_token_families(acoustic_flatten, acoustic_delay):
    fam = acoustic_flatten.token_families()
    assert list(fam) == ["codebook_0", "codebook_1", "special"]
    assert np.array_equal(fam["codebook_1"], np.arange(1024, 2048))
    assert acoustic_delay.token_families() == {}


def test_save_load_identical_ids(acoustic_flatten, codec_folder, audio_files, tmp_path):
    import json

    body = json.loads((codec_folder / "tokenizer.json").read_text())
    assert body["random_init"] is True and body["config"]["weights"] == "random_kmeans"
    acoustic_flatten.save(tmp_path / "again")
    again = load_tokenizer(tmp_path / "again")
    assert again.fingerprint() == acoustic_flatten.fingerprint()
    assert np.array_equal(again.encode(audio_files["mono_24k"]), acoustic_flatten.encode(audio_files["mono_24k"]))


def test_fingerprint_changes(acoustic_flatten, acoustic_delay, codec_folder):
    assert acoustic_flatten.fingerprint() != acoustic_delay.fingerprint()
    other_seed = AcousticTokenizer({"weights": "random_kmeans", "bandwidth": 1.5, "seed": 1})
    same_seed = AcousticTokenizer({"weights": "random_kmeans", "bandwidth": 1.5, "seed": 0})
    assert other_seed.model_files_digest() != same_seed.model_files_digest()
    assert same_seed.fingerprint() != acoustic_flatten.fingerprint()  # unfitted vs fitted codebooks
    assert same_seed.needs_training
    with pytest.raises(RuntimeError, match="train"):
        same_seed.encode_wave(np.zeros((1, 320), np.float32))


@pytest.mark.filterwarnings("ignore:.*weight_norm:FutureWarning")
def test_codec_equals_encodecs_own_model_bit_for_bit():
    """With fast_elu off, our patched codec (slicing reflect pad, one-thread LSTM) computes exactly
    what encodec's model computes, encoder and decoder; reflect_pad equals F.pad's."""
    import torch
    import torch.nn.functional as F
    from encodec import EncodecModel

    from shortcutlm.tokenizers.encodec_fast import reflect_pad

    x = torch.randn(2, 3, 40)
    for left in range(8):
        for right in range(8):
            assert torch.equal(reflect_pad(x, left, right), F.pad(x, (left, right), mode="reflect"))
    tok = AcousticTokenizer({"weights": "random_kmeans", "bandwidth": 1.5, "fast_elu": False, "seed": 3})
    torch.manual_seed(3)
    ref = EncodecModel.encodec_model_24khz(pretrained=False)
    wave, emb = torch.randn(1, 1, 12000) * 0.1, torch.randn(1, 128, 40)
    with torch.inference_mode():
        assert torch.equal(tok._codec.model.encoder(wave), ref.encoder(wave))
        assert torch.equal(tok._codec.model.decoder(emb), ref.decoder(emb))


def test_fast_elu_matches_torch_elu(codec_folder, audio_files):
    """The fast ELU changes the encoder's latents only at float rounding level (and the fingerprint)."""
    import torch

    from shortcutlm.tokenizers.encodec_fast import FastELU

    x = torch.linspace(-30, 30, 200001)
    assert torch.allclose(FastELU()(x), torch.nn.functional.elu(x), rtol=0, atol=1e-7)
    exact = AcousticTokenizer({"weights": str(codec_folder / "codec.pt"), "bandwidth": 1.5, "fast_elu": False})
    fast = AcousticTokenizer({"weights": str(codec_folder / "codec.pt"), "bandwidth": 1.5})
    assert exact.fingerprint() != fast.fingerprint()
    wave, _ = fast.read_audio(Document(doc_id="s", split="", source="t", path=audio_files["mono_24k"]))
    with torch.inference_mode():
        a, b = (tok._codec.model.encoder(torch.from_numpy(wave)[None]) for tok in (exact, fast))
    assert (a - b).abs().max() < 1e-5 * a.abs().max()


def test_bad_settings():
    with pytest.raises(ValueError, match="bandwith.*did you mean 'bandwidth'"):
        AcousticTokenizer({"bandwith": 6})
    with pytest.raises(ValueError, match="bandwidth 5 kbps"):
        AcousticTokenizer({"weights": "random_kmeans", "bandwidth": 5})
    with pytest.raises(ValueError, match="layout"):
        AcousticTokenizer({"weights": "random_kmeans", "layout": "interleave"})
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        AcousticTokenizer({"weights": "/nonexistent/nothing.pt"})


def test_pretrained_download_failure_is_clear(monkeypatch):
    """No network here: encodec's own download fails, and the error says what to do instead."""
    import torch.hub

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"the offline codec \(tokenizer setting weights=mel_kmeans.* a local "
                                           r"weights file \(weights=/path/to/encodec_24khz-d7cc33bc.th"):
        AcousticTokenizer({"weights": "pretrained"})


def test_48khz_option(audio_files, tmp_path):
    import soundfile as sf

    tok = AcousticTokenizer({"sample_rate": 48000, "bandwidth": 3.0, "weights": "random_kmeans"})
    assert tok.n_codebooks == 2 and tok.frames_per_second == 150
    tok.train([doc(audio_files["short_22k"])])
    enc = tok.encode_document(doc(audio_files["short_22k"]))
    assert enc.tokens.shape == (2 * 75,)
    out = tok.decode(enc.tokens, tmp_path / "48k.wav")
    info = sf.info(str(out))
    assert info.samplerate == 48000 and info.channels == 2 and info.frames == 75 * 320


# ------------------------------------------------------------------------------------- protocol

def never(*_):
    raise AssertionError("audio has a fixed frame rate: the train split's rate is never read")


def test_seconds_are_whole_frames_and_delay_adds_k_minus_1_steps(acoustic_flatten, acoustic_delay):
    assert acoustic_flatten.steps_for_seconds(0.2, never) == (15 * K, {"frames_requested": 15,
                                                                      "tokens_per_second": 150})
    assert acoustic_delay.steps_for_seconds(0.5, never) == (38 + K - 1, {"frames_requested": 38,
                                                                        "tokens_per_second": 75})
    assert acoustic_delay.steps_for_seconds(0.001, never)[0] == 1 + K - 1  # at least one frame


def test_prompt_steps_force_only_the_delay_layout(acoustic_flatten, acoustic_delay, audio_files):
    ids = acoustic_flatten.encode(audio_files["mono_24k"])
    steps, forced = acoustic_flatten.prompt_steps(ids)
    assert np.array_equal(steps, ids) and forced is None
    delayed = acoustic_delay.encode(audio_files["mono_24k"])
    codes, _ = acoustic_delay.tokens_to_codes(delayed)
    steps, forced = acoustic_delay.prompt_steps(delayed)
    frames = codes.shape[1]
    assert steps.shape == (K, frames) and np.array_equal(steps[0], codes[0])
    assert forced.tolist() == [[-1], [int(codes[1, frames - 1])]]  # stream 1's last frame comes after step F


def test_audio_samples_no_special_id_and_never_stops(acoustic_flatten, acoustic_delay):
    for tok in (acoustic_flatten, acoustic_delay):
        for stop in (False, True):
            assert set(tok.banned_ids(stop)) == set(tok.special_ids.values()) and tok.stop_ids(stop) == ()


def test_loss_groups_are_codebooks(acoustic_flatten, acoustic_delay):
    flat = acoustic_flatten.loss_groups()
    assert flat.kind == "codebook" and flat.names == ["codebook_0", "codebook_1", "special"] and not flat.by_stream
    delay = acoustic_delay.loss_groups()
    assert delay.kind == "codebook" and delay.by_stream == ("codebook_0", "codebook_1") and not delay.families
    assert acoustic_flatten.ignored_ids() == [2048]
    assert acoustic_delay.ignored_ids() == [1024, 1027]  # pad and the empty corners


def test_artifacts_describe_themselves(acoustic_delay, audio_files, tmp_path):
    assert acoustic_delay.artifact_suffix == ".wav"
    assert acoustic_delay.describe() == {"layout": "delay", "n_codebooks": K, "frames_per_second": 75,
                                         "codec": "encodec_24khz weights from codec.pt"}
    wav = acoustic_delay.decode(acoustic_delay.encode(audio_files["mono_24k"]), tmp_path / "x.wav")
    assert acoustic_delay.artifact_seconds(wav) == pytest.approx(sf_seconds(wav))
    assert acoustic_delay.render(wav, tmp_path / "y.wav") is None and not (tmp_path / "y.wav").exists()
    assert acoustic_delay.excerpt(wav) is None


def sf_seconds(path) -> float:
    import soundfile as sf

    return sf.info(str(path)).duration
