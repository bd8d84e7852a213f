"""The joint vocabulary: parts at offsets, a marker per domain, views that answer for one domain,
save/load with each part's fingerprint, and the one-stream rule (a delay part is refused)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from shortcutlm.tokenizers import FingerprintMismatch, TokenizerError, load_tokenizer, tokenizer_class
from shortcutlm.tokenizers.composite import CompositeTokenizer
from shortcutlm.tokenizers.midi import MidiTokenizer
from shortcutlm.tokenizers.text import TextTokenizer
from tests.tokenizers.conftest import SAMPLE, doc


@pytest.fixture(scope="module")
def text_tok(text_files) -> TextTokenizer:
    tok = TextTokenizer.from_settings({"vocab_size": 400, "model_type": "bpe"})
    tok.train([doc(text_files["corpus"])])
    return tok


@pytest.fixture(scope="module")
def joint(text_tok) -> CompositeTokenizer:
    return CompositeTokenizer({"text": text_tok, "midi": MidiTokenizer.from_settings({})})


def test_parts_sit_at_offsets_and_the_joint_ids_follow(joint, text_tok):
    midi = joint.parts["midi"]
    assert joint.offsets == {"text": 0, "midi": text_tok.vocab_size}
    base = text_tok.vocab_size + midi.vocab_size
    assert joint.special_ids == {"pad": base, "bos": base + 1, "eos": base + 2, "marker_text": base + 3,
                                 "marker_midi": base + 4}
    assert joint.vocab_size == base + 5 and joint.n_streams == 1
    assert tokenizer_class("joint") is CompositeTokenizer
    assert joint.domain == "joint" and joint.with_domain("midi").domain == "midi"
    assert joint.with_domain("midi").fingerprint() == joint.fingerprint()  # the same ids, the same mapping


def test_a_text_document_round_trips_through_the_view(joint, text_files, tmp_path):
    view = joint.with_domain("text")
    encoded = view.encode(text_files["sample"])
    own = joint.parts["text"].encode(text_files["sample"])
    assert encoded[0] == joint.markers["text"] and (encoded[1:] == own + joint.offsets["text"]).all()
    out = view.decode(encoded, tmp_path / "back.txt")
    assert out.read_bytes().decode("utf-8") == SAMPLE
    # The joint tokenizer reads the domain from the ids (their marker) and decodes alike.
    assert joint.decode(encoded, tmp_path / "again.txt").read_bytes().decode("utf-8") == SAMPLE


def test_a_midi_document_round_trips_with_offsets(joint, midi_files, tmp_path):
    view = joint.with_domain("midi")
    encoded = view.encode(midi_files["grid2"])
    low, high = joint.part_range("midi")
    assert encoded[0] == joint.markers["midi"] and ((encoded[1:] >= low) & (encoded[1:] < high)).all()
    part_ids = joint.to_part("midi", encoded)
    assert (part_ids == joint.parts["midi"].encode(midi_files["grid2"])).all()
    assert view.seconds_of(encoded) == pytest.approx(joint.parts["midi"].seconds_of(part_ids))
    with pytest.raises(TokenizerError, match="is not a midi id"):
        joint.to_part("midi", np.array([joint.markers["midi"], 3]))  # id 3 is text's


def test_sampling_in_a_domain_bans_every_other_domain(joint):
    view = joint.with_domain("midi")
    low, high = joint.part_range("midi")
    for stop in (False, True):
        banned = set(view.banned_ids(stop))
        assert set(range(0, low)) <= banned  # every text id
        assert set(joint.markers.values()) <= banned and joint.special_ids["pad"] in banned
        allowed = set(range(joint.vocab_size)) - banned
        assert allowed - {joint.eos_id} <= set(range(low, high))
    # EOS only when the sample may stop there, and then it is the stop id.
    assert joint.eos_id in view.banned_ids(False) and view.stop_ids(False) == ()
    assert joint.eos_id not in view.banned_ids(True) and view.stop_ids(True) == (joint.eos_id,)
    steps, forced = view.prompt_steps(None)  # no prompt: the marker opens the sample
    assert steps.tolist() == [joint.markers["midi"]] and forced is None


def test_loss_groups_and_labels_answer_for_the_view(joint):
    view = joint.with_domain("midi")
    part = joint.parts["midi"]
    groups = view.loss_groups()
    own = part.loss_groups()
    assert groups.kind == own.kind and groups.names == own.names
    for name in own.names:
        moved = set((np.asarray(own.families[name]) + joint.offsets["midi"]).tolist())
        assert moved <= set(groups.families[name].tolist())
    special = next(n for n in own.names if part.eos_id in own.families[n])
    assert joint.eos_id in groups.families[special]  # the joint EOS closes a MIDI document
    assert set(joint.markers.values()) <= set(view.ignored_ids())  # a marker is no target of a domain's loss
    assert joint.ignored_ids() == [joint.special_ids["pad"]]  # training predicts markers
    first = joint.offsets["midi"] + 5
    assert view.token_labels([first, joint.markers["text"]]) == [part.token_labels([5])[0], "<marker_text>"]
    assert joint.token_labels([first])[0] == "midi:" + part.token_labels([5])[0]
    assert "midi/" + own.names[0] in joint.loss_groups().names


def test_the_prompt_type_picks_the_domain_and_a_stranger_is_one_line(joint, tmp_path):
    assert joint.for_sample(tmp_path / "a.mid", None).domain == "midi"
    assert joint.for_sample(tmp_path / "a.TXT", None).domain == "text"
    assert joint.for_sample(None, "text").domain == "text"
    stranger = r"a\.wav: a prompt of the acoustic domain, but this joint model was trained on text, midi only"
    with pytest.raises(TokenizerError, match=stranger):
        joint.for_sample(tmp_path / "a.wav", None)
    with pytest.raises(TokenizerError, match="not on acoustic"):
        joint.for_sample(None, "acoustic")
    with pytest.raises(TokenizerError, match="give a prompt file or a domain"):
        joint.for_sample(None, None)
    assert set(joint.domain_views()) == {"text", "midi"}


def test_saved_like_any_tokenizer_with_each_parts_fingerprint(joint, tmp_path):
    folder = joint.save(tmp_path / "tok").parent
    body = json.loads((folder / "tokenizer.json").read_text())
    assert body["domain"] == "joint" and body["fingerprint"] == joint.fingerprint()
    assert [(p["domain"], p["fingerprint"]) for p in body["config"]["parts"]] == \
        [(name, part.fingerprint()) for name, part in joint.parts.items()]
    back = load_tokenizer(folder)
    assert isinstance(back, CompositeTokenizer) and back.fingerprint() == joint.fingerprint()
    assert back.offsets == joint.offsets and back.special_ids == joint.special_ids
    # A part's files changed after saving: its ids would mean other things.
    part_json = folder / "parts" / "midi" / "tokenizer.json"
    settings = json.loads(part_json.read_text())
    settings["fingerprint"] = "0" * 16
    part_json.write_text(json.dumps(settings))
    with pytest.raises(FingerprintMismatch):
        load_tokenizer(folder)


def test_a_delay_part_is_refused_in_one_line(text_tok):
    from shortcutlm.tokenizers.acoustic import AcousticTokenizer

    # The layouts' shapes are known before the offline codec is fitted: nothing to train here.
    delay = AcousticTokenizer({"weights": "mel_kmeans", "bandwidth": 1.5, "layout": "delay"})
    flatten = AcousticTokenizer({"weights": "mel_kmeans", "bandwidth": 1.5, "layout": "flatten"})
    with pytest.raises(TokenizerError, match=r"acoustic part has 2 streams \(acoustic layout delay\).*layout: flatten"):
        CompositeTokenizer({"acoustic": delay})
    joint = CompositeTokenizer({"acoustic": flatten, "text": text_tok})
    view = joint.with_domain("acoustic")
    # Flatten ids tell their codebook: the per-codebook loss survives in the joint vocabulary.
    assert view.loss_groups().kind == "codebook" and view.loss_groups().names[:2] == ["codebook_0", "codebook_1"]
    assert view.describe()["layout"] == "flatten" and view.artifact_is_sound
    assert joint.eos_id in view.banned_ids(True) and view.stop_ids(True) == ()  # audio never stops
