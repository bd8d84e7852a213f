"""generate never writes over its prompt, replaces an existing file only when asked, says where its
output went, shows progress on long runs, and refuses a nonsense temperature in one line."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pretty_midi
import pytest
import soundfile as sf

from shortcutlm.cli import main as cli_main
from tests.cli_lines import one_line
from shortcutlm.run.generation import GenerationError, generate_from_checkpoint
from tests.fixtures_eval import AUDIO_RATE, tone

pytestmark = pytest.mark.usefixtures("one_thread")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fourteen_tracks(path: Path) -> Path:
    """A General MIDI file of 13 pitched instruments and a drum kit, as a band's arrangement would be."""
    song = pretty_midi.PrettyMIDI(initial_tempo=100)
    for index in range(14):
        drums = index == 13
        track = pretty_midi.Instrument(program=0 if drums else index * 8, is_drum=drums, name=f"track {index}")
        for beat in range(16):
            pitch = 36 + (beat % 2) * 2 if drums else 48 + (index * 3 + beat * 5) % 24
            track.notes.append(pretty_midi.Note(velocity=90, pitch=pitch, start=beat * 0.3, end=beat * 0.3 + 0.25))
        song.instruments.append(track)
    song.write(str(path))
    return path


def test_a_midi_prompt_is_never_overwritten(midi_ckpt, tmp_path, capsys):
    song = fourteen_tracks(tmp_path / "song.mid")
    before = digest(song)
    for extra in ([], ["--overwrite"]):
        line = one_line(capsys, ["generate", str(midi_ckpt), "--prompt", str(song), "--tokens", "8",
                                 "--out", str(song), *extra])
        assert "is the prompt file" in line and "never writes over its prompt" in line
    # nor through another name for the same file
    (tmp_path / "alias.mid").symlink_to(song)
    with pytest.raises(GenerationError, match="is the prompt file"):
        generate_from_checkpoint(midi_ckpt, tmp_path / "alias.mid", prompt=song, max_new_tokens=8, overwrite=True)
    assert digest(song) == before and len(pretty_midi.PrettyMIDI(str(song)).instruments) == 14
    # a folder beside the prompt is fine: the sample takes the prompt's name with its seed
    [out] = generate_from_checkpoint(midi_ckpt, tmp_path, prompt=song, max_new_tokens=8)
    assert out.name.startswith("song-seed") and digest(song) == before


def test_an_audio_prompt_is_never_overwritten(audio_flatten_ckpt, tmp_path, capsys):
    voice = tmp_path / "voice.wav"
    sf.write(str(voice), tone(1.0, seed=5), AUDIO_RATE, subtype="PCM_24")
    before = digest(voice)
    line = one_line(capsys, ["generate", str(audio_flatten_ckpt), "--prompt", str(voice), "--tokens", "8",
                             "--out", str(voice), "--overwrite"])
    assert "is the prompt file" in line
    assert digest(voice) == before and sf.info(str(voice)).subtype == "PCM_24"


def test_existing_files_are_replaced_only_when_asked(midi_ckpt, tmp_path, capsys):
    out = tmp_path / "take.mid"
    kept = {out: b"the user's own take", out.with_suffix(".wav"): b"its rendering", out.with_suffix(".json"): b"{}"}
    for path, data in kept.items():  # the sample, its rendering or its sidecar: each alone is enough to refuse
        path.write_bytes(data)
        line = one_line(capsys, ["generate", str(midi_ckpt), "--tokens", "8", "--seed", "1", "--out", str(out)])
        assert f"{path} already exists" in line and "--overwrite" in line
        assert path.read_bytes() == data
        path.unlink()
    for path, data in kept.items():
        path.write_bytes(data)
    assert cli_main(["generate", str(midi_ckpt), "--tokens", "8", "--seed", "1", "--out", str(out), "--overwrite",
                     "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out)]
    assert f"beside it: {out.with_suffix('.json')}, {out.with_suffix('.wav')}" in captured.err
    pretty_midi.PrettyMIDI(str(out))  # a real MIDI file (8 steps may hold no note) and its rendering replaced them
    assert sf.info(str(out.with_suffix(".wav"))).duration > 0
    assert all(p.read_bytes() != d for p, d in kept.items())


def test_long_generation_shows_progress_unless_quiet(text_ckpt, tmp_path, capsys):
    assert cli_main(["generate", str(text_ckpt), "--tokens", "40", "--seed", "2", "--out", str(tmp_path / "a")]) == 0
    shown = capsys.readouterr().err
    assert "generating 1 sample" in shown and "/40" in shown and "step/s" in shown
    assert cli_main(["generate", str(text_ckpt), "--tokens", "40", "--seed", "2", "--quiet",
                     "--out", str(tmp_path / "b")]) == 0
    assert "generating" not in capsys.readouterr().err
    assert ((tmp_path / "a" / "unconditional-seed2.txt").read_text()
            == (tmp_path / "b" / "unconditional-seed2.txt").read_text())


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_nonsense_temperature_is_one_line(text_ckpt, tmp_path, capsys, value):
    line = one_line(capsys, ["generate", str(text_ckpt), "--temperature", value, "--out", str(tmp_path)])
    assert "temperature must be a finite number >= 0" in line
    assert not list(tmp_path.iterdir())
