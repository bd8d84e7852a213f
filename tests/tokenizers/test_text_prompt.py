"""A text prompt taken from a test document is cut where a reader would cut it: at a word or line end,
and, when the document begins inside a word (text8's split boundaries), after that partial word."""
from __future__ import annotations

import numpy as np
import pytest

from shortcutlm.documents import Document
from shortcutlm.tokenizers.text import TextTokenizer
from tests.datasets.published import shakespeare_lines


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> TextTokenizer:
    corpus = tmp_path_factory.mktemp("corpus") / "plays.txt"
    corpus.write_text("\n".join(shakespeare_lines(3000)) + "\n", encoding="utf-8")
    tokenizer = TextTokenizer.from_settings({"vocab_size": 800, "model_type": "bpe"})
    tokenizer.train([Document("plays", "train", "t", path=corpus)])
    return tokenizer


def words_of(text: str) -> set[str]:
    return set(text.split())


def test_prompt_ends_at_a_word_or_line_end(tok, tmp_path):
    text = " ".join(shakespeare_lines(3200)[3000:3040])  # lines the tokenizer never saw, one paragraph
    ids = tok.encode_document(Document("d", "test", "t", text=text)).tokens
    known = words_of(text)
    cut_somewhere = 0
    for n in range(5, 60):
        head = tok.decode_text(ids[:n])
        prompt = tok.write_prompt(ids, n, tmp_path / f"p{n}.txt").read_text(encoding="utf-8")
        assert text.startswith(prompt) and prompt  # a prefix of the document, nothing invented
        assert all(word in known for word in prompt.split())  # no word cut in half
        cut_somewhere += prompt != head
        if text[len(head):len(head) + 1] in (" ", "\n") or head.endswith(" "):
            assert prompt == head  # the n-th token already ends a word: nothing is cut
    assert cut_somewhere  # some n-th tokens fell inside a word, and those prompts were cut back
    lined = "\n".join(shakespeare_lines(3300)[3200:3230]) + "\n"
    lined_ids = tok.encode_document(Document("l", "test", "t", text=lined)).tokens
    cut = [tok.write_prompt(lined_ids, n, tmp_path / "l.txt").read_text(encoding="utf-8") for n in range(20, 80, 7)]
    assert sum(c.endswith("\n") for c in cut) >= len(cut) // 2  # long enough prompts end at a line end


def test_prompt_of_a_document_that_begins_mid_word(tok, tmp_path):
    text = "anslated us into the tongue of the people and they spoke of it"
    ids = tok.encode_document(Document("d", "test", "t", text=text)).tokens
    prompt = tok.write_prompt(ids, 10, tmp_path / "p.txt", {"begins_mid_word": True}).read_text(encoding="utf-8")
    assert prompt.startswith("us into") and text.find(prompt) == len("anslated ")
    assert tok.write_prompt(ids, 10, tmp_path / "q.txt").read_text(encoding="utf-8").startswith("anslated")
    assert np.array_equal(ids, tok.encode_document(Document("d", "test", "t", text=text)).tokens)
