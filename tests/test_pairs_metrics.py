"""The pieces of paired training that need no model: the metrics against hand-made references, the
loss mask on targets only, the sequence layout, and pairs from a user's folder of shared stems."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import symusic
import torch

from shortcutlm.datasets.embedded import render_midi
from shortcutlm.models.losses import IGNORE, in_target_spans, targets_only
from shortcutlm.pairs.collect import collect_pairs
from shortcutlm.pairs.metrics import note_scores, spectral_similarity, word_errors
from shortcutlm.pairs.records import BAD_PAIR, UNPAIRED, Leftover, Pair
from shortcutlm.pairs.sequences import target_spans
from shortcutlm.pairs.tasks import PairError

#: (onset s, offset s, MIDI pitch): four notes of a C major chord, arpeggiated, then held.
NOTES = [(0.0, 0.5, 60), (0.5, 1.0, 64), (1.0, 1.5, 67), (1.5, 2.5, 72)]


def write_midi(path, notes, qpm=120.0):
    """A one-track MIDI file of ``notes`` (seconds), written through symusic at a fixed tempo."""
    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, qpm=qpm))
    track = symusic.Track(program=0)
    ticks = 480 * qpm / 60.0
    for on, off, pitch in notes:
        track.notes.append(symusic.Note(int(round(on * ticks)), int(round((off - on) * ticks)), pitch, 80))
    score.tracks.append(track)
    score.dump_midi(str(path))
    return path


def test_an_identical_transcription_scores_f1_one_and_a_shifted_one_what_mir_eval_says(tmp_path):
    mir_eval = pytest.importorskip("mir_eval")
    reference = write_midi(tmp_path / "ref.mid", NOTES)
    assert set(note_scores(reference, reference).values()) == {1.0}
    # Every onset 30 ms late: inside mir_eval's 50 ms tolerance, so onsets all match.
    late = write_midi(tmp_path / "late.mid", [(a + 0.03, b + 0.03, p) for a, b, p in NOTES])
    assert note_scores(reference, late)["onset_f1"] == pytest.approx(1.0)
    # The last two notes 100 ms late and one wrong pitch: scored as mir_eval scores the same notes by hand.
    shifted = [(0.0, 0.5, 60), (0.5, 1.0, 65), (1.1, 1.6, 67), (1.6, 2.6, 72)]
    est = write_midi(tmp_path / "shifted.mid", shifted)
    ref_i = np.array([[a, b] for a, b, _ in NOTES])
    est_i = np.array([[a, b] for a, b, _ in shifted])
    hz = mir_eval.util.midi_to_hz
    for name, ratio in (("onset", None), ("onset_offset", 0.2)):
        p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
            ref_i, hz(np.array([p for *_, p in NOTES], float)), est_i, hz(np.array([p for *_, p in shifted], float)),
            offset_ratio=ratio)
        got = note_scores(reference, est)
        mine = (got[f"{name}_precision"], got[f"{name}_recall"], got[f"{name}_f1"])
        assert mine == pytest.approx((p, r, f), abs=2e-3)
    assert note_scores(reference, est)["onset_f1"] == pytest.approx(0.25)  # only the first note survives
    # A transcription without notes scores 0; a reference without notes cannot be scored.
    empty = write_midi(tmp_path / "empty.mid", [])
    assert note_scores(reference, empty)["onset_f1"] == 0.0
    with pytest.raises(ValueError, match="holds no notes"):
        note_scores(empty, reference)


def test_word_and_character_error_rates_are_jiwers_on_normalised_text():
    pytest.importorskip("jiwer")
    assert word_errors("THE CAT SAT", "the cat sat.") == {"wer": 0.0, "cer": 0.0}
    assert word_errors("THE CAT SAT", "THE CAT SAT DOWN")["wer"] == pytest.approx(1 / 3)
    assert word_errors("ABC", "ABD")["cer"] == pytest.approx(1 / 3)
    assert word_errors("HELLO WORLD", "")["wer"] == 1.0


def test_audio_similarity_is_one_for_the_same_sound_and_lower_for_another_pitch(tmp_path):
    t = np.arange(24000) / 24000.0
    for name, hz in (("a", 440.0), ("a2", 440.0), ("bflat", 466.16)):
        sf.write(str(tmp_path / f"{name}.wav"), 0.3 * np.sin(2 * np.pi * hz * t).astype(np.float32), 24000)
    same = spectral_similarity(tmp_path / "a.wav", tmp_path / "a2.wav")
    assert same == pytest.approx({"log_mel_cosine": 1.0, "chroma_cosine": 1.0}, abs=1e-5)
    other = spectral_similarity(tmp_path / "a.wav", tmp_path / "bflat.wav")
    assert other["chroma_cosine"] < 0.2 < same["chroma_cosine"]


def test_the_loss_on_targets_only_counts_the_target_and_its_eos():
    eos, m_src, m_other, task = 0, 1, 2, 3
    # a row that starts inside a source: x, then EOS <m> s s <task> t t EOS <m'> s
    row = torch.tensor([[9, eos, m_src, 7, 7, task, 8, 8, eos, m_other, 7]])
    assert in_target_spans(row, [task], [eos, m_src, m_other]).tolist() == [
        [False, False, False, False, False, True, True, True, False, False, False]]
    targets = targets_only(row, [task], [eos, m_src, m_other])
    # counted: the two target ids and the EOS that ends them (predicted from the task marker onwards)
    assert targets.tolist() == [[IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, 8, 8, eos, IGNORE, IGNORE]]
    special = {"pad": 5, "eos": eos, "marker_midi": m_src, "marker_acoustic": m_other, "task_transcribe": task}
    assert target_spans(special) == ([task], sorted([eos, m_src, m_other]))
    with pytest.raises(PairError, match="needs paired data"):
        target_spans({"eos": 0, "marker_text": 1})


def test_a_folder_pairs_files_that_share_a_stem_and_lists_the_rest(tmp_path):
    root = tmp_path / "mine"
    (root / "test").mkdir(parents=True)
    song = write_midi(root / "song.mid", NOTES)
    render_midi(song, root / "song.wav")
    write_midi(root / "test" / "chorus.mid", NOTES)
    render_midi(root / "test" / "chorus.mid", root / "test" / "chorus.wav")
    (root / "utt.txt").write_text("HELLO THERE\n")
    sf.write(str(root / "utt.wav"), np.zeros(24000, np.float32), 24000)
    sf.write(str(root / "lone.wav"), np.zeros(2400, np.float32), 24000)
    (root / "notes.pdf").write_bytes(b"%PDF")
    # A score of ten seconds with audio of half a second: the halves disagree.
    write_midi(root / "long.mid", [(i, i + 1.0, 60 + i) for i in range(10)])
    sf.write(str(root / "long.wav"), np.zeros(12000, np.float32), 24000)
    # Forty characters said in a tenth of a second: no one speaks that fast.
    (root / "rushed.txt").write_text("A SENTENCE FAR TOO LONG FOR ITS AUDIO CLIP")
    sf.write(str(root / "rushed.wav"), np.zeros(2400, np.float32), 24000)

    items = list(collect_pairs({"name": "folder", "path": str(root)}))
    pairs = {p.pair_id: p for p in items if isinstance(p, Pair)}
    left = {(item.kind, item.pair_id or item.input): item.reason for item in items if isinstance(item, Leftover)}
    assert set(pairs) == {"song", "test__chorus", "utt"}
    assert {h.domain for h in pairs["song"].halves} == {"midi", "acoustic"}
    assert {h.domain for h in pairs["utt"].halves} == {"text", "acoustic"}
    assert pairs["test__chorus"].split == "test"  # the split its folder names
    assert left[(UNPAIRED, "lone")] == "no file of the other half shares its stem"
    assert "not a paired file type" in left[(UNPAIRED, str(root / "notes.pdf"))]
    assert "the audio lasts 0.50 s but its score 10.00 s" in left[(BAD_PAIR, "long")]
    assert "characters in 0.10 s of audio" in left[(BAD_PAIR, "rushed")]
    assert all("\n" not in reason for reason in left.values())
    with pytest.raises(PairError, match="unknown option"):
        list(collect_pairs({"name": "folder", "path": str(root), "limit": 3}))
