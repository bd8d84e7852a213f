"""generate: continuations and unconditional samples from tiny checkpoints with real tokenizers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from shortcutlm.artifacts.sidecar import read_sidecar
from shortcutlm.artifacts.checkpoint import load_folder
from shortcutlm.cli import main as cli_main
from shortcutlm.datasets.loader import read_manifest
from shortcutlm.run.generation import GenerationError, PromptError, generate_from_checkpoint
from shortcutlm.models import SamplingSettings, generate
from tests.fixtures_eval import AUDIO_RATE, BLOCK, WORDS, tone

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "the quick brown fox jumps over the lazy dog\nand seven wizards"


@pytest.fixture
def text_prompt(tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text(PROMPT, encoding="utf-8")
    return path


def sidecar(path):
    return json.loads(path.with_suffix(".json").read_text())


def test_text_continuation_starts_with_prompt(text_ckpt, text_prompt, tmp_path):
    settings = SamplingSettings(temperature=0.8, top_k=40, top_p=0.95, seed=3)
    [out] = generate_from_checkpoint(text_ckpt, tmp_path / "out.txt", prompt=text_prompt, max_new_tokens=20,
                                     settings=settings)
    assert out == tmp_path / "out.txt"
    text = out.read_text(encoding="utf-8")
    assert text.startswith(PROMPT)
    meta = sidecar(out)
    assert meta["checkpoint"] == str(text_ckpt) and meta["prompt"] == str(text_prompt)
    assert meta["settings"] == {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 3}
    assert meta["seed"] == 3 and meta["max_new_tokens"] == 20
    # Without --stop-at-eos a sample always reaches the requested length.
    assert meta["tokens_generated"] == 20 and meta["stopped_at_eos"] is False
    assert meta["stop_reason"] == "requested length"
    assert meta["elapsed_s"] > 0 and meta["tokens_per_s"] > 0
    for key in ("tokens_per_s", "elapsed_s", "prompt_tokens", "domain", "samples"):
        assert key in meta


def test_same_seed_same_samples(text_ckpt, text_prompt, tmp_path):
    def run(folder, seed):
        paths = generate_from_checkpoint(text_ckpt, folder, prompt=text_prompt, max_new_tokens=24, samples=2,
                                         settings=SamplingSettings(seed=seed))
        return [p.read_text(encoding="utf-8") for p in paths], paths

    first, paths = run(tmp_path / "a", 7)
    again, _ = run(tmp_path / "b", 7)
    other, _ = run(tmp_path / "c", 8)
    assert [p.name for p in paths] == ["prompt-seed7-00.txt", "prompt-seed7-01.txt"]
    assert first == again
    assert first != other
    assert first[0] != first[1]  # the samples of a batch differ


def test_unconditional_text_and_random_seed_recorded(text_ckpt, tmp_path):
    [out] = generate_from_checkpoint(text_ckpt, tmp_path, max_new_tokens=10)
    meta = sidecar(out)
    assert meta["prompt"] is None and meta["prompt_tokens"] == 0
    assert isinstance(meta["seed"], int) and out.name == f"unconditional-seed{meta['seed']}.txt"


def test_long_prompt_keeps_its_tail(text_ckpt, tmp_path):
    long_text = "\n".join(" ".join(WORDS[i:] + WORDS[:i]) for i in range(12)) + "\n"
    prompt = tmp_path / "long.txt"
    prompt.write_text(long_text)
    [out] = generate_from_checkpoint(text_ckpt, tmp_path / "long_out.txt", prompt=prompt, max_new_tokens=80,
                                     settings=SamplingSettings(seed=0))
    meta = sidecar(out)
    assert meta["prompt_tokens"] + 1 > BLOCK  # the prompt (after the leading EOS) overflows the context
    assert meta["prompt_kept_in_context"] == BLOCK and meta["slid_window"]
    assert out.read_text().startswith(long_text)


def test_midi_writes_loadable_mid_and_wav(midi_ckpt, midi_files, tmp_path):
    import symusic

    prompt = midi_files[0]
    paths = generate_from_checkpoint(midi_ckpt, tmp_path / "cont.mid", prompt=prompt, max_new_tokens=40, samples=2,
                                     settings=SamplingSettings(seed=1))
    assert [p.name for p in paths] == ["cont-00.mid", "cont-01.mid"]
    for path in paths:
        score = symusic.Score(str(path))
        assert score.note_num() > 0  # the prompt's notes at least
        wav = path.with_suffix(".wav")
        info = sf.info(str(wav))
        assert info.frames > 0
        meta = sidecar(path)
        assert meta["rendering"] == str(wav) and meta["seconds"] > 0 and meta["prompt_seconds"] > 0


def test_midi_seconds_use_train_tokens_per_second(midi_ckpt, midi_data, tmp_path):
    train = read_manifest(midi_data)["splits"]["train"]
    rate = train["tokens"] / train["seconds"]
    [out] = generate_from_checkpoint(midi_ckpt, tmp_path, seconds=2.0, settings=SamplingSettings(seed=0),
                                     render=False)
    meta = sidecar(out)
    assert meta["max_new_tokens"] == round(2.0 * rate)
    assert meta["tokens_per_second"] == pytest.approx(rate)
    assert meta["seconds_requested"] == 2.0
    assert not out.with_suffix(".wav").exists()


def test_delay_audio_continuation_length(audio_delay_ckpt, tmp_path):
    prompt = tmp_path / "prompt.wav"
    sf.write(str(prompt), tone(1.0, seed=5), AUDIO_RATE)
    [out] = generate_from_checkpoint(audio_delay_ckpt, tmp_path / "cont.wav", prompt=prompt, seconds=0.5,
                                     settings=SamplingSettings(seed=2))
    info = sf.info(str(out))
    assert info.samplerate == AUDIO_RATE
    assert info.duration == pytest.approx(1.5, abs=2 / 75)  # prompt + requested, to a frame or two
    meta = sidecar(out)
    assert meta["prompt_frames"] == 75 and meta["frames_requested"] == 38
    assert meta["max_new_tokens"] == 38 + 1  # K - 1 extra steps complete the last frame of every stream
    assert meta["tokens_generated"] == 39 and not meta["stopped_at_eos"]
    assert meta["prompt_kept_in_context"] == BLOCK  # 1 s of frames overflows the tiny context


def test_delay_prompt_forces_known_codes(audio_delay_ckpt, tmp_path):
    """The lagging streams reproduce the prompt's known frames; the revert keeps every prompt frame."""
    ckpt = load_folder(audio_delay_ckpt)
    tok = ckpt.tokenizer
    prompt = tmp_path / "p.wav"
    sf.write(str(prompt), tone(0.3, seed=6), AUDIO_RATE)
    tokens = tok.encode(prompt)
    codes, _ = tok.tokens_to_codes(tokens)
    steps, forced = tok.prompt_steps(tokens)
    frames = codes.shape[1]
    assert steps.shape == (2, frames) and forced.shape == (2, 1)
    eos = np.full((2, 1), tok.eos_id)
    x = torch.from_numpy(np.concatenate([eos, steps], axis=1))[None]
    seq = generate(ckpt.model, x, 5, SamplingSettings(seed=0), forced=torch.from_numpy(forced)[None])
    out_codes, _ = tok.tokens_to_codes(seq[0, :, 1:].numpy())
    assert out_codes.shape[1] == frames + 5 - 1
    np.testing.assert_array_equal(out_codes[:, :frames], codes)
    # Unconditional: the lagging stream starts with `empty`, as in training data.
    steps_u, forced_u = tok.prompt_steps(None)
    assert steps_u.shape == (2, 0) and forced_u.tolist() == [[-1], [tok.special_ids["empty"]]]


def test_unconditional_flatten_audio_length(audio_flatten_ckpt, tmp_path):
    [out] = generate_from_checkpoint(audio_flatten_ckpt, tmp_path, seconds=0.2, settings=SamplingSettings(seed=0))
    meta = sidecar(out)
    assert meta["max_new_tokens"] == 15 * 2 and meta["tokens_generated"] == 30
    assert sf.info(str(out)).duration == pytest.approx(15 / 75)


def test_bad_prompts_are_clear_errors(text_ckpt, audio_delay_ckpt, midi_files, tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(PromptError, match="nope.txt"):
        generate_from_checkpoint(text_ckpt, tmp_path, prompt=missing, max_new_tokens=4)
    with pytest.raises(PromptError, match=r"\.mid file cannot prompt the text checkpoint"):
        generate_from_checkpoint(text_ckpt, tmp_path, prompt=midi_files[0], max_new_tokens=4)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(PromptError, match="broken.wav"):
        generate_from_checkpoint(audio_delay_ckpt, tmp_path, prompt=broken, max_new_tokens=4)
    bad_text = tmp_path / "bad.txt"
    bad_text.write_bytes(b"caf\xff\xfe")
    with pytest.raises(PromptError, match="bad.txt"):
        generate_from_checkpoint(text_ckpt, tmp_path, prompt=bad_text, max_new_tokens=4)
    with pytest.raises(GenerationError, match="seconds"):
        generate_from_checkpoint(text_ckpt, tmp_path, seconds=1.0)
    with pytest.raises(GenerationError, match=r"\.txt"):
        generate_from_checkpoint(text_ckpt, tmp_path / "out.wav", max_new_tokens=4)


def test_cli(text_ckpt, text_prompt, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["generate", str(text_ckpt), "--prompt", str(text_prompt), "--tokens", "8", "--seed", "4",
                     "--temperature", "0.9", "--top-k", "20", "--samples", "2", "--device", "cpu",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2 and all(p.endswith(".txt") for p in printed)
    assert sidecar(out / "prompt-seed4-00.txt")["settings"]["top_k"] == 20
    assert cli_main(["generate", str(text_ckpt), "--prompt", str(tmp_path / "missing.txt"), "--out", str(out)]) == 2
    assert "missing.txt" in capsys.readouterr().err
    assert cli_main(["generate", str(text_ckpt), "--top-p", "1.5", "--out", str(out)]) == 2
    assert "top_p" in capsys.readouterr().err


@pytest.fixture(scope="module")
def short_docs_ckpt(tmp_path_factory):
    """A model trained on documents of three to five words: it learns to end documents soon."""
    from shortcutlm.datasets.prepare import prepare
    from tests.fixtures_eval import make_checkpoint

    root = tmp_path_factory.mktemp("short_docs")
    rng = np.random.default_rng(1)
    (root / "texts").mkdir()
    for i in range(300):
        (root / "texts" / f"d{i:03d}.txt").write_text(" ".join(rng.choice(WORDS, size=3 + i % 3)) + "\n")
    prepare({"name": "folder", "path": str(root / "texts")}, {"domain": "text", "vocab_size": 320},
            root / "shards", workers=1, progress=False)
    return make_checkpoint(root / "ckpt", root / "shards", steps=60, seed=0)


def test_the_requested_length_is_generated_unless_asked_to_stop_at_eos(short_docs_ckpt, text_prompt, tmp_path,
                                                                         capsys):
    """A model that ends documents early still gives the requested length by default."""
    text_ckpt = short_docs_ckpt
    early = []
    for seed in range(12):
        [out] = generate_from_checkpoint(text_ckpt, tmp_path / f"eos{seed}.txt", prompt=text_prompt,
                                         max_new_tokens=60, settings=SamplingSettings(seed=seed), stop_at_eos=True)
        if sidecar(out)["stopped_at_eos"]:
            early.append(seed)
            assert sidecar(out)["tokens_generated"] < 60
            assert sidecar(out)["stop_reason"].startswith("end-of-sequence")
    assert early, "the fixture model never emitted EOS; the test needs one that does"
    seed = early[0]
    [full] = generate_from_checkpoint(text_ckpt, tmp_path / "full.txt", prompt=text_prompt, max_new_tokens=60,
                                      settings=SamplingSettings(seed=seed))
    meta = sidecar(full)
    assert meta["tokens_generated"] == 60 and not meta["stopped_at_eos"] and meta["stop_reason"] == "requested length"
    capsys.readouterr()
    assert cli_main(["generate", str(text_ckpt), "--prompt", str(text_prompt), "--tokens", "60", "--seed", str(seed),
                     "--stop-at-eos", "--out", str(tmp_path / "cli.txt")]) == 0
    assert "stopped at end-of-sequence" in capsys.readouterr().out


@pytest.mark.parametrize("qpm,signature", [(96.0, (4, 4)), (72.0, (3, 4))])
def test_a_midi_continuation_keeps_the_prompts_tempo_and_lasts_the_requested_seconds(midi_ckpt, midi_files, tmp_path,
                                                                                   qpm, signature):
    """The prompt plays at its own tempo and metre, and the file is the prompt plus the requested
    seconds: at least that long, ending at the bar line after the note that reaches them."""
    import symusic

    score = symusic.Score(str(midi_files[0]))
    score.tempos = symusic.core.TempoTickList([symusic.Tempo(0, qpm=qpm)])
    score.time_signatures = symusic.core.TimeSignatureTickList([symusic.TimeSignature(0, *signature)])
    prompt = tmp_path / "prompt.mid"
    score.clip(0, 8 * score.ticks_per_quarter * signature[0], clip_end=False).dump_midi(str(prompt))
    prompt_seconds = symusic.Score(str(prompt)).to("second").end()
    bar = signature[0] * 4 / signature[1] * 60 / qpm
    for requested in (3.0, 10.0):
        [out] = generate_from_checkpoint(midi_ckpt, tmp_path / f"cont{requested:g}.mid", prompt=prompt,
                                         seconds=requested, settings=SamplingSettings(seed=2), render=False)
        written = symusic.Score(str(out))
        assert [round(t.qpm, 3) for t in written.tempos] == [qpm]
        assert (written.time_signatures[0].numerator, written.time_signatures[0].denominator) == signature
        meta = sidecar(out)
        lasts = written.to("second").end()
        assert meta["seconds"] == pytest.approx(lasts)  # the sidecar describes the file
        assert meta["prompt_seconds"] == pytest.approx(prompt_seconds, abs=bar / 4)  # the prompt kept its tempo
        continuation = lasts - meta["prompt_seconds"]
        assert meta["continuation_seconds"] == pytest.approx(continuation)
        assert requested - 1e-3 <= continuation <= requested + 2 * bar, (requested, continuation, bar)
        record = read_sidecar(out)  # the typed record is the file, key for key and in order
        assert list(record.to_dict().items()) == list(meta.items())
        assert record.length["seconds_requested"] == requested and record.length["target_seconds"] > requested
        assert record.tokenizer["multitrack"] and record.continuation_seconds == meta["continuation_seconds"]


def test_sidecars_find_the_samples_of_a_folder(midi_ckpt, midi_files, tmp_path):
    """Samples are found by their sidecars (artifact, then its rendering), not by file type."""
    from shortcutlm.artifacts.files import ArtifactError
    from shortcutlm.artifacts.sidecar import read_sidecar, samples_in, sidecar_path

    paths = generate_from_checkpoint(midi_ckpt, tmp_path / "s", prompt=midi_files[0], max_new_tokens=8, samples=2,
                                     settings=SamplingSettings(seed=1))
    (tmp_path / "s" / "notes.json").write_text("{}")  # not a sidecar
    (tmp_path / "s" / "stray.wav").write_bytes(b"")  # no sidecar: not a sample
    found = samples_in(tmp_path / "s")
    assert [s.artifact for s in found] == paths
    assert [s.files for s in found] == [[p, p.with_suffix(".wav")] for p in paths]
    assert sidecar_path(paths[0]) == paths[0].with_suffix(".json")
    assert read_sidecar(paths[0]).sample_index == 0 and found[1].sidecar.sample_index == 1
    assert samples_in(tmp_path / "absent") == []
    broken = json.loads(sidecar_path(paths[1]).read_text())
    sidecar_path(paths[1]).write_text(json.dumps({**broken, "sample_index": "second"}))
    with pytest.raises(ArtifactError, match=r"-01.json: field 'sample_index' should be an integer, not str"):
        read_sidecar(paths[1])
    assert [s.artifact for s in samples_in(tmp_path / "s")] == paths[:1]  # a malformed sidecar: not a sample


@pytest.mark.slow
def test_cli_compile_writes_the_samples_eager_decoding_writes(text_ckpt, text_prompt, tmp_path):
    """``generate --compile`` (compiled chunks of steps) is a speed option only: the same
    seed gives the same files as eager decoding."""
    common = ["generate", str(text_ckpt), "--prompt", str(text_prompt), "--tokens", "12", "--seed", "5",
              "--top-k", "20", "--samples", "2", "--device", "cpu"]
    assert cli_main(common + ["--out", str(tmp_path / "eager")]) == 0
    assert cli_main(common + ["--compile", "--out", str(tmp_path / "compiled")]) == 0
    for name in ("prompt-seed5-00.txt", "prompt-seed5-01.txt"):
        assert (tmp_path / "compiled" / name).read_text() == (tmp_path / "eager" / name).read_text()
