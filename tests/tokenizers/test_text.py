"""SentencePiece text tokenizer: exact round trips, streaming, UTF-8 errors, save/load, fingerprints."""
from __future__ import annotations

import numpy as np
import pytest

from shortcutlm.documents import Document
from shortcutlm.tokenizers import FingerprintMismatch, TokenizerError, load_tokenizer, tokenizer_class
from shortcutlm.tokenizers.text import TextTokenizer
from tests.tokenizers.conftest import SAMPLE, doc

SETTINGS = {"vocab_size": 600, "model_type": "bpe"}


@pytest.fixture(scope="module")
def text_tok(text_files) -> TextTokenizer:
    tok = TextTokenizer.from_settings(SETTINGS)
    assert tok.needs_training
    tok.train([doc(text_files["corpus"])])
    assert not tok.needs_training
    return tok


def test_registry_gives_text_tokenizer():
    assert tokenizer_class("text") is TextTokenizer


def test_specials_and_vocab(text_tok):
    sp = text_tok.special_ids
    assert {"pad", "bos", "eos", "unk"} <= set(sp)
    assert len(set(sp.values())) == len(sp) and max(sp.values()) < text_tok.vocab_size
    families = text_tok.token_families()
    assert len(families["byte"]) == 256
    assert sum(map(len, families.values())) == text_tok.vocab_size


@pytest.mark.parametrize("model_type, vocab_size", [("bpe", 600), ("unigram", 370)])  # unigram tops out at 381 here
def test_exact_round_trip_non_ascii(text_files, tmp_path, model_type, vocab_size):
    tok = TextTokenizer({"vocab_size": vocab_size, "model_type": model_type})
    tok.train([doc(text_files["corpus"])])
    enc = tok.encode_document(doc(text_files["sample"]))
    assert enc.meta["bytes"] == len(SAMPLE.encode("utf-8"))
    assert enc.tokens.dtype == np.int64 and enc.tokens.max() < tok.vocab_size
    out = tok.decode(enc.tokens, tmp_path / "out.txt")
    assert out.read_bytes() == text_files["sample"].read_bytes()
    unseen = "Ünïcödé never seen: ☃ ∮ 𝄞 \x00\x07 ﬁ ＡＢＣ\n"  # byte fallback, no normalisation
    unseen += "sentencepiece's own space mark \u2581 kept\u2581as is\n"
    assert tok.decode_text(tok.encode_text(unseen)) == unseen


def test_big_file_streams_in_blocks(text_files, text_tok, tmp_path):
    streamed = TextTokenizer.load(_saved(text_tok, tmp_path / "tok"))
    streamed.settings["block_bytes"] = 1 << 16  # many blocks, multi-byte chars split across them
    path = text_files["big"]
    blocks = list(streamed.iter_blocks(doc(path)))
    assert len(blocks) > 20
    enc = streamed.encode_document(doc(path))
    assert enc.meta["bytes"] == path.stat().st_size
    out = streamed.decode(enc.tokens, tmp_path / "big_out.txt")
    assert out.read_bytes() == path.read_bytes()
    # Block size is a runtime choice: it must not change the ids.
    assert np.array_equal(enc.tokens, text_tok.encode_document(doc(path)).tokens)


def test_in_memory_documents(text_tok):
    text = "An article held in memory, ä ö ü.\n" * 3
    enc = text_tok.encode_document(Document(doc_id="wiki_1", split="train", source="wikitext", text=text))
    assert enc.meta["bytes"] == len(text.encode())
    assert text_tok.decode_text(enc.tokens) == text


def test_invalid_utf8_is_an_error_naming_file_and_offset(text_files, text_tok):
    path = text_files["bad"]
    offset = path.read_bytes().index(b"\xff")
    with pytest.raises(TokenizerError, match=rf"{path.name}.*byte offset {offset}"):
        text_tok.encode(path)
    tail = text_files["bad_tail"]
    with pytest.raises(TokenizerError, match=rf"{tail.name}.*byte offset {tail.stat().st_size - 2}"):
        text_tok.encode(tail)


def test_invalid_utf8_replaced_when_asked(text_files, text_tok, tmp_path):
    tok = TextTokenizer.load(_saved(text_tok, tmp_path / "t"))
    tok.settings["errors"] = "replace"
    enc = tok.encode_document(doc(text_files["bad"]))
    assert enc.meta["bytes"] == text_files["bad"].stat().st_size
    assert "\ufffd" in tok.decode_text(enc.tokens)
    assert tok.fingerprint() != text_tok.fingerprint()  # a different mapping of invalid input


def test_empty_text_is_an_error(text_files, text_tok):
    with pytest.raises(TokenizerError, match="empty.txt"):
        text_tok.encode(text_files["empty"])


def test_missing_file_is_an_error(text_tok, tmp_path):
    with pytest.raises(TokenizerError, match="nowhere.txt"):
        text_tok.encode(tmp_path / "nowhere.txt")


def _saved(tok, folder):
    tok.save(folder)
    return folder


def test_save_load_identical_ids(text_files, text_tok, tmp_path):
    folder = _saved(text_tok, tmp_path / "tok")
    assert (folder / "tokenizer.json").is_file() and (folder / "text.model").is_file()
    again = load_tokenizer(folder)
    assert isinstance(again, TextTokenizer)
    assert again.fingerprint() == text_tok.fingerprint()
    assert again.special_ids == text_tok.special_ids and again.vocab_size == text_tok.vocab_size
    assert np.array_equal(again.encode(text_files["corpus"]), text_tok.encode(text_files["corpus"]))
    again.check_fingerprint(text_tok.fingerprint(), "shards")
    with pytest.raises(FingerprintMismatch, match="shards"):
        again.check_fingerprint("0" * 16, "shards")


def test_existing_model_file(text_files, text_tok, tmp_path):
    folder = _saved(text_tok, tmp_path / "tok")
    loaded = TextTokenizer({"model_file": str(folder / "text.model")})
    assert not loaded.needs_training
    assert np.array_equal(loaded.encode(text_files["sample"]), text_tok.encode(text_files["sample"]))


def test_tampered_model_is_refused(text_tok, tmp_path):
    folder = _saved(text_tok, tmp_path / "tok")
    other = TextTokenizer({"vocab_size": 300})
    other.train([Document(doc_id="x", split="train", source="t", text="different text entirely\n" * 50)])
    (folder / "text.model").write_bytes(other._proto)
    with pytest.raises(FingerprintMismatch, match="text.model"):
        TextTokenizer.load(folder)


def test_fingerprint_changes_with_settings_and_model(text_files, text_tok):
    a = TextTokenizer({"vocab_size": 600})
    a.train([doc(text_files["corpus"])])
    b = TextTokenizer({"vocab_size": 700})
    b.train([doc(text_files["corpus"])])
    assert a.fingerprint() == text_tok.fingerprint()  # same settings, same data: same model
    assert a.fingerprint() != b.fingerprint()
    assert (TextTokenizer({"vocab_size": 600, "errors": "replace"}).fingerprint()
            != TextTokenizer(SETTINGS).fingerprint())


def test_unknown_setting_is_named():
    with pytest.raises(ValueError, match="vocab_sise.*did you mean 'vocab_size'"):
        TextTokenizer.from_settings({"vocab_sise": 100})
    with pytest.raises(ValueError, match="model_type"):
        TextTokenizer({"model_type": "wordpiece"})


def test_decode_of_generated_ids(text_tok, tmp_path):
    sp = text_tok.special_ids
    ids = np.concatenate([[sp["bos"]], text_tok.encode_text("hear me speak\n"), [sp["pad"], 10 ** 6, -3],
                          [sp["eos"]], text_tok.encode_text("after the end")])
    assert text_tok.decode_text(ids) == "hear me speak\n"
    assert text_tok.decode(ids, tmp_path / "g.txt").read_text(encoding="utf-8") == "hear me speak\n"


# ------------------------------------------------------------------------------------- protocol

def test_text_has_no_seconds(text_tok):
    with pytest.raises(TokenizerError, match="seconds mean nothing for text"):
        text_tok.steps_for_seconds(1.0, lambda: pytest.fail("text never reads a train rate"))


def test_text_labels_excerpt_and_no_rendering(text_tok, tmp_path):
    ids = text_tok.encode_text("hear me")
    labels = text_tok.token_labels([text_tok.eos_id, *ids.tolist()])
    assert labels[0] == "<eos>" and "".join(eval(label) for label in labels[1:]) == "hear me"  # noqa: S307
    out = text_tok.decode(ids, tmp_path / "x.txt")
    assert TextTokenizer.excerpt(out) == "hear me" and TextTokenizer.excerpt(out, chars=4) == "hear"
    assert text_tok.render(out, tmp_path / "x.wav") is None and text_tok.artifact_seconds(out) is None
    assert text_tok.loss_groups().names == ["piece", "byte", "special"] and text_tok.ignored_ids() == [text_tok.pad_id]
    assert text_tok.artifact_suffix == ".txt" and text_tok.describe() == {}
