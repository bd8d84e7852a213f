"""miditok MIDI tokenizer: note-exact round trips (with and without BPE), multi-track, bad files,
repair of generated ids, rendering, save/load and fingerprints."""
from __future__ import annotations

import numpy as np
import pytest

from shortcutlm.compat import miditok_bpe
from shortcutlm.documents import Document
from shortcutlm.tokenizers import FingerprintMismatch, TokenizerError, load_tokenizer, tokenizer_class
from shortcutlm.tokenizers.midi import MidiTokenizer, default_soundfont
from tests.tokenizers.conftest import TPQ, doc, on_grid_notes


def notes_in_beats(path) -> list[tuple[int, float, float]]:
    """Sorted (pitch, start, duration) in beats, every track together."""
    import symusic

    score = symusic.Score(str(path))
    tpq = score.ticks_per_quarter
    return sorted((n.pitch, n.time / tpq, n.duration / tpq) for t in score.tracks if not t.is_drum for n in t.notes)


def expected(notes) -> list[tuple[int, float, float]]:
    return sorted((p, s / TPQ, d / TPQ) for p, s, d, _ in notes)


@pytest.fixture(scope="module")
def remi() -> MidiTokenizer:
    return MidiTokenizer.from_settings({})


@pytest.fixture(scope="module")
def remi_bpe(midi_files, chorale_midis) -> MidiTokenizer:
    tok = MidiTokenizer({"vocab_size": 500})
    assert tok.needs_training
    tok.train([doc(p) for p in chorale_midis] + [doc(midi_files["grid2"])])
    assert not tok.needs_training and tok.vocab_size == 500
    return tok


def test_registry_gives_midi_tokenizer():
    assert tokenizer_class("midi") is MidiTokenizer


def test_specials(remi):
    assert remi.special_ids == {"pad": 0, "bos": 1, "eos": 2, "mask": 3}
    assert remi.vocab_size == len(remi.miditok.vocab)


def test_remi_round_trip_notes(remi, midi_files, tmp_path):
    enc = remi.encode_document(doc(midi_files["grid"]))
    assert enc.tokens.dtype == np.int64 and enc.tokens.max() < remi.vocab_size
    assert enc.meta["seconds"] == pytest.approx(max(s + d for _, s, d, _ in on_grid_notes(0)) / TPQ * 0.5)
    out = remi.decode(enc.tokens, tmp_path / "grid_out.mid")
    assert out.suffix == ".mid"
    assert notes_in_beats(out) == expected(on_grid_notes(0))


def test_bpe_round_trip_notes(remi, remi_bpe, midi_files, tmp_path):
    enc = remi_bpe.encode_document(doc(midi_files["grid"]))
    base = remi.encode(midi_files["grid"])
    assert len(enc.tokens) < len(base), "BPE should shorten the sequence"
    assert enc.tokens.max() >= len(remi_bpe.miditok.vocab), "some merged ids used"
    assert remi_bpe.repair(enc.tokens) == miditok_bpe.ids_to_tokens(remi.miditok, base.tolist())
    out = remi_bpe.decode(enc.tokens, tmp_path / "bpe_out.mid")
    assert notes_in_beats(out) == expected(on_grid_notes(0))


@pytest.mark.parametrize("name", ["TSD", "MIDILike", "Structured"])
def test_other_tokenizations_round_trip(name, midi_files, tmp_path):
    tok = MidiTokenizer({"tokenization": name})
    out = tok.decode(tok.encode(midi_files["grid"]), tmp_path / f"{name}.mid")
    assert notes_in_beats(out) == expected(on_grid_notes(0))


def test_multi_vocab_tokenizations_are_refused():
    with pytest.raises(ValueError, match="CPWord is a multi-vocabulary"):
        MidiTokenizer({"tokenization": "CPWord"})
    for name in ("Nope", "MMM"):
        with pytest.raises(ValueError, match=f"tokenization '{name}' is not supported"):
            MidiTokenizer({"tokenization": name})


def test_multitrack_becomes_one_sequence(midi_files, tmp_path):
    merged = MidiTokenizer({})
    out = merged.decode(merged.encode(midi_files["multi"]), tmp_path / "merged.mid")
    pitched = on_grid_notes(2)[::2] + on_grid_notes(3)[::2]
    assert notes_in_beats(out) == expected(pitched)  # drums dropped, instruments merged

    programs = MidiTokenizer({"use_programs": True})
    enc = programs.encode(midi_files["multi"])
    assert enc.ndim == 1
    kinds = {programs.miditok[int(i)].split("_")[0] for i in enc}
    assert "Program" in kinds
    import symusic

    score = symusic.Score(str(programs.decode(enc, tmp_path / "programs.mid")))
    assert sorted({t.program for t in score.tracks if not t.is_drum}) == [0, 40]
    assert any(t.is_drum for t in score.tracks)


@pytest.mark.parametrize("case,match", [("corrupt", "not a readable MIDI"), ("empty", "not a readable MIDI"),
                                        ("truncated", "not a readable MIDI"), ("no_notes", "no notes"),
                                        ("drums_only", "only drum notes")])
def test_bad_files_are_errors_naming_the_file(remi, midi_files, case, match):
    path = midi_files[case]
    with pytest.raises(TokenizerError, match=rf"{path.name}.*{match}"):
        remi.encode(path)


def test_truncation_found_in_the_chunk_structure(midi_files):
    from shortcutlm.tokenizers.scores import midi_structure_problem

    whole = midi_files["grid"].read_bytes()
    assert midi_structure_problem(whole) is None
    for cut in (len(whole) - 1, len(whole) // 2, 30, 14):
        assert "truncated" in midi_structure_problem(whole[:cut])
    assert midi_structure_problem(b"") == "empty file"


def test_in_memory_text_is_refused(remi):
    with pytest.raises(TokenizerError, match="src:x.*files"):
        remi.encode_document(Document(doc_id="x", split="train", source="src", text="C E G"))


def test_generated_ids_are_repaired_never_crash(remi, remi_bpe, tmp_path):
    rng = np.random.default_rng(0)
    for tok in (remi, remi_bpe):
        for i in range(5):
            ids = rng.integers(-10, tok.vocab_size + 10, size=300)
            out = tok.decode(ids, tmp_path / f"gen_{i}.mid")
            assert out.is_file()
            assert tok.last_repair["dropped_ids"] > 0
        assert tok.decode(np.array([], dtype=np.int64), tmp_path / "none.mid").is_file()
        assert tok.decode([tok.eos_id, 50, 60], tmp_path / "eos_first.mid").is_file()
        assert tok.last_repair["after_eos"] == 3


def test_repair_keeps_real_sequences_intact(remi, chorale_midis):
    for path in chorale_midis[:3]:
        ids = remi.encode(path)
        assert remi.repair(ids) == miditok_bpe.ids_to_tokens(remi.miditok, ids.tolist())
        assert remi.last_repair == {"after_eos": 0, "dropped_ids": 0, "dropped_tokens": 0}


def test_token_families(remi, remi_bpe):
    fam = remi.token_families()
    assert {"Pitch", "Velocity", "Duration", "Position", "Bar", "special"} <= set(fam)
    assert sorted(np.concatenate(list(fam.values())).tolist()) == list(range(remi.vocab_size))
    assert remi.miditok[int(fam["Pitch"][0])].startswith("Pitch_")
    bpe = remi_bpe.token_families()
    assert len(bpe["BPE"]) == remi_bpe.vocab_size - len(remi_bpe.miditok.vocab)
    assert sorted(np.concatenate(list(bpe.values())).tolist()) == list(range(remi_bpe.vocab_size))


def test_render_to_wav(remi, midi_files, tmp_path):
    import soundfile as sf

    assert default_soundfont().name == "TimGM6mb.sf2" and default_soundfont().is_file()
    wav = remi.render(midi_files["grid"], tmp_path / "grid.wav", sample_rate=22050)
    data, rate = sf.read(str(wav))
    assert rate == 22050 and data.ndim == 1 and np.abs(data).max() > 0.01
    assert len(data) >= 8 * 22050  # 4 bars at 120 bpm
    wav2 = remi.render(remi.encode(midi_files["grid"]), tmp_path / "ids.wav", soundfont=default_soundfont())
    assert sf.info(str(wav2)).frames > 0
    with pytest.raises(TokenizerError, match="corrupt.mid"):
        remi.render(midi_files["corrupt"], tmp_path / "x.wav")


def test_save_load_identical_ids(remi_bpe, chorale_midis, tmp_path):
    remi_bpe.save(tmp_path / "tok")
    assert (tmp_path / "tok" / "miditok.json").is_file()
    again = load_tokenizer(tmp_path / "tok")
    assert isinstance(again, MidiTokenizer) and again.fingerprint() == remi_bpe.fingerprint()
    for path in chorale_midis[:3]:
        assert np.array_equal(again.encode(path), remi_bpe.encode(path))


def test_chorale_encodes(remi, chorale_midis):
    enc = remi.encode_document(doc(chorale_midis[0]))
    assert enc.meta["seconds"] > 10 and len(enc.tokens) > 500


def test_fingerprint_changes_with_settings(remi, remi_bpe, tmp_path):
    prints = {remi.fingerprint(), remi_bpe.fingerprint(),
              MidiTokenizer({"num_velocities": 16}).fingerprint(),
              MidiTokenizer({"beat_res": {"0_4": 4, "4_12": 2}}).fingerprint(),
              MidiTokenizer({"pitch_range": [30, 100]}).fingerprint(),
              MidiTokenizer({"use_tempos": True}).fingerprint(),
              MidiTokenizer({"tokenization": "TSD"}).fingerprint()}
    assert len(prints) == 7
    assert MidiTokenizer({}).fingerprint() == remi.fingerprint()
    remi_bpe.save(tmp_path / "t")
    text = (tmp_path / "t" / "miditok.json").read_text()
    (tmp_path / "t" / "miditok.json").write_text(text.replace('"num_velocities": 32', '"num_velocities": 8'))
    with pytest.raises(FingerprintMismatch):
        MidiTokenizer.load(tmp_path / "t")


def test_unknown_setting_is_named():
    with pytest.raises(ValueError, match="'num_velocity'.*did you mean 'num_velocities'"):
        MidiTokenizer({"num_velocity": 8})
    with pytest.raises(ValueError, match="num_velocities"):
        MidiTokenizer({"num_velocities": 500})


# ------------------------------------------------------------------------------------- protocol

def test_seconds_use_the_train_splits_rate(remi):
    steps, info = remi.steps_for_seconds(2.0, lambda: (10.5, "manifest"))
    assert steps == 21 and info == {"tokens_per_second": 10.5, "tokens_per_second_from": "manifest"}
    assert remi.steps_for_seconds(0.01, lambda: (10.0, "m"))[0] == 1


def test_token_labels_name_miditok_tokens(remi, remi_bpe, midi_files):
    ids = remi.encode(midi_files["grid"])[:6].tolist()
    labels = remi.token_labels([remi.eos_id, *ids, remi.vocab_size + 5])
    assert labels[0] == "<eos>" and labels[-1] == str(remi.vocab_size + 5)
    assert labels[1] == "Bar_None" and any(label.startswith("Pitch_") for label in labels)
    merged = remi_bpe.vocab_size - 1  # a learned id: the tokens it stands for
    assert "+" in remi_bpe.token_labels([merged])[0]


def test_midi_sampling_loss_and_artifacts(remi, midi_files, tmp_path):
    assert remi.banned_ids(False) == (remi.eos_id,) and remi.stop_ids(False) == ()
    assert remi.banned_ids(True) == () and remi.stop_ids(True) == (remi.eos_id,)
    groups = remi.loss_groups()
    assert groups.kind == "family" and "Pitch" in groups.names and not groups.by_stream
    assert remi.ignored_ids() == [remi.pad_id]
    assert remi.artifact_suffix == ".mid" and ".midi" in remi.artifact_suffixes
    out = remi.decode(remi.encode(midi_files["grid"]), tmp_path / "x.mid")
    assert remi.artifact_seconds(out) == pytest.approx(remi.seconds_of(remi.encode(midi_files["grid"])), rel=1e-3)
    wav = remi.render(out, tmp_path / "x.wav", sample_rate=22050)
    assert wav == tmp_path / "x.wav" and wav.is_file()
    # a sample's sidecar records what decoding dropped: nothing, for ids the tokenizer wrote itself
    assert remi.describe() == {"multitrack": "tracks merged",
                               "decode_dropped": {"ids": 0, "tokens": 0, "of": remi.encode(midi_files["grid"]).size}}
    assert remi.excerpt(out) is None


def test_miditoks_private_bpe_tables_are_where_the_adapter_reads_them(remi_bpe):
    """shortcutlm.compat.miditok_bpe: each learned id expands to base tokens whose bytes are that id's
    entry in the BPE model; a miditok without those tables fails loudly."""
    import json

    from shortcutlm.compat import LibraryChanged

    tok = remi_bpe.miditok
    pieces = {i: piece for piece, i in json.loads(miditok_bpe.bpe_model_text(tok))["model"]["vocab"].items()}
    base = len(tok.vocab)
    learned = range(base, remi_bpe.vocab_size)
    assert len(learned) > 0
    merges = 0
    for idx in learned:
        tokens = miditok_bpe.learned_expansion(tok, idx)
        if not tokens:  # the BPE model's word-boundary piece ("▁") stands for no token
            continue
        merges += 1
        ids = miditok_bpe.tokens_to_ids(tok, tokens)
        assert len(tokens) >= 2 and all(i < base for i in ids), idx
        assert miditok_bpe.ids_to_tokens(tok, ids) == tokens
        assert pieces[idx].removeprefix("▁") == miditok_bpe.ids_to_bytes(tok, ids)  # "▁": a word's first piece
    assert merges >= len(learned) - 1
    with pytest.raises(LibraryChanged, match=r"^miditok \S+: object._model is not where "
                                             r"miditok 3.1 keeps it"):
        miditok_bpe.learned_expansion(object(), base)
