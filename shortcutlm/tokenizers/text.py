"""Text tokens: SentencePiece (BPE or unigram), trained here or loaded from an existing ``.model``.

Models trained here give exact round trips: identity normalisation, no dummy prefix, no
whitespace squeezing, ``"\\n"`` as a piece of its own and byte fallback, so every string
(any script, control characters, even sentencepiece's own space mark U+2581, written as
byte pieces) encodes and decodes back to itself.

Files of any size are streamed: read in blocks, decoded incrementally (invalid UTF-8 is a
:class:`TokenizerError` naming the file and byte offset, or U+FFFD with ``errors: replace``),
cut at newlines (over-long lines at a space) and encoded a batch of lines per call.
``Encoded.meta["bytes"]`` is the document's UTF-8 byte count, for bits per byte.
"""
from __future__ import annotations

import codecs
import hashlib
import io
import itertools
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from shortcutlm.artifacts.files import write_bytes
from shortcutlm.documents import Document
from shortcutlm.tokenizers.base import Encoded, Tokenizer, TokenizerError, TrainingError, saved_file, write_config
from shortcutlm.tokenizers.settings import merge_settings

if TYPE_CHECKING:
    import sentencepiece as spm

log = logging.getLogger(__name__)

MODEL_FILE = "text.model"
NEWLINE = "\n"
SPACE_MARK = "\u2581"  # sentencepiece's whitespace symbol
#: Lines longer than this (characters) are cut at a space, so one-line corpora such as text8
#: stream, and sentencepiece's trainer (which drops sentences over max_sentence_length) sees them.
MAX_LINE_CHARS = 4096

DEFAULTS: dict[str, Any] = {
    "model_type": "bpe",            # bpe | unigram
    "vocab_size": 8000,             # size when training; a train split that cannot fill it is an error
    "character_coverage": 0.9995,   # rarer characters go to byte fallback
    "byte_fallback": True,          # unseen characters become UTF-8 byte pieces, never <unk>
    "model_file": None,             # an existing SentencePiece .model instead of training
    "errors": "strict",             # strict: invalid UTF-8 is an error | replace: U+FFFD
    "input_sentence_size": 200_000,  # lines sampled for training (keeps 5 MB at about a second)
    "train_max_bytes": 64 << 20,    # stop reading training documents after this many bytes
    "seed": 0,                      # sentencepiece's sampling seed
    "block_bytes": 1 << 20,         # streaming read size
    "num_threads": 2,               # sentencepiece threads for training and batch encoding
}
_RUNTIME_KEYS = ("block_bytes", "num_threads", "model_file")  # do not change the mapping


class TextTokenizer(Tokenizer):
    """SentencePiece over UTF-8 text; specials ``unk``, ``bos``, ``eos``, ``pad``."""

    domain = "text"
    extensions = (".txt", ".md", ".tokens", ".text")
    artifact_suffixes = (".txt",)
    saved_files = MODEL_FILE

    def __init__(self, settings: dict[str, Any] | None = None, *, model_proto: bytes | None = None) -> None:
        s = merge_settings(self.domain, DEFAULTS, settings)
        if s["model_type"] not in ("bpe", "unigram"):
            raise ValueError(f"text tokenizer: model_type must be 'bpe' or 'unigram', not {s['model_type']!r}")
        if s["errors"] not in ("strict", "replace"):
            raise ValueError(f"text tokenizer: errors must be 'strict' or 'replace', not {s['errors']!r}")
        self.settings = s
        self._sp: spm.SentencePieceProcessor | None = None
        self._proto: bytes | None = None  # set with _sp
        if model_proto is None and s["model_file"]:
            path = Path(s["model_file"]).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"text tokenizer: model_file {path} does not exist")
            model_proto = path.read_bytes()
        if model_proto is not None:
            self._set_model(model_proto, source=str(s["model_file"] or "bytes"))

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> TextTokenizer:
        return cls(settings)

    def _set_model(self, proto: bytes, source: str) -> None:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(proto)
        except Exception as exc:
            raise ValueError(f"text tokenizer: {source} is not a SentencePiece model: {exc}") from exc
        self._sp, self._proto = sp, proto
        n = sp.get_piece_size()
        # A model without some special gets it appended after its pieces.
        ids, extra = {}, 0
        for name, got in (("unk", sp.unk_id()), ("bos", sp.bos_id()), ("eos", sp.eos_id()), ("pad", sp.pad_id())):
            if got < 0:
                got, extra = n + extra, extra + 1
            ids[name] = got
        self._special, self._vocab = ids, n + extra
        marks = [sp.piece_to_id(f"<0x{b:02X}>") for b in SPACE_MARK.encode("utf-8")]
        self._meta_bytes = marks if all(sp.is_byte(i) for i in marks) else []
        self._strip = np.array([ids["pad"], ids["bos"]])

    # ------------------------------------------------------------------ protocol: sizes and ids
    def _need_model(self) -> spm.SentencePieceProcessor:
        if self._sp is None:
            raise RuntimeError("text tokenizer: no SentencePiece model yet; call train(documents) or set model_file")
        return self._sp

    @property
    def vocab_size(self) -> int:
        self._need_model()
        return self._vocab

    @property
    def special_ids(self) -> dict[str, int]:
        self._need_model()
        return dict(self._special)

    @property
    def needs_training(self) -> bool:
        return self._sp is None

    def token_families(self) -> dict[str, np.ndarray]:
        """"byte" (fallback byte pieces), "special" and "piece" (the rest), for per-family loss."""
        sp = self._need_model()
        n = sp.get_piece_size()
        byte = np.array([i for i in range(n) if sp.is_byte(i)], dtype=np.int64)
        special = np.array(sorted(set(self._special.values())), dtype=np.int64)
        piece = np.setdiff1d(np.arange(n), np.concatenate([byte, special]))
        return {"piece": piece, "byte": byte, "special": special}

    # ------------------------------------------------------------------ streaming text
    def iter_blocks(self, doc: Document) -> Iterator[tuple[str, int]]:
        """``(text, n_bytes)`` blocks of a document (of its span's part, if it has one)."""
        if doc.text is not None:
            text = doc.text
            if doc.span is not None:
                start, stop = doc.bounds(len(text))
                text = text[_word_start(text, start):_word_start(text, stop)]
            for start in range(0, len(text), self.settings["block_bytes"]):
                block = text[start:start + self.settings["block_bytes"]]
                yield block, len(block.encode("utf-8", errors="surrogatepass"))
            return
        decoder = codecs.getincrementaldecoder("utf-8")(errors=self.settings["errors"])
        assert doc.path is not None  # a document without text has a file (Document checks)
        try:
            with open(doc.path, "rb") as fh:
                consumed, stop = _byte_range(fh, doc)
                fh.seek(consumed)
                while True:
                    raw = fh.read(min(self.settings["block_bytes"], stop - consumed))
                    pending = len(decoder.getstate()[0])
                    try:
                        text = decoder.decode(raw, final=not raw)
                    except UnicodeDecodeError as exc:
                        offset = consumed - pending + exc.start
                        raise TokenizerError(
                            f"{doc.describe()}: not valid UTF-8 at byte offset {offset} ({exc.reason}); "
                            "set `errors: replace` to decode it with U+FFFD") from None
                    consumed += len(raw)
                    if text or raw:
                        yield text, len(raw)
                    if not raw:
                        return
        except OSError as exc:
            raise TokenizerError(f"{doc.describe()}: cannot read ({exc})") from exc

    def iter_line_batches(self, doc: Document, sizes: list[int] | None = None) -> Iterator[list[str]]:
        """Lists of lines (newline kept) of a document, one list per block read; over-long lines are
        cut at a space. Joined, they give the text back. Lists rather than single lines because
        per-line Python overhead would cost as much as sentencepiece itself.

        ``sizes``, when given, gets the byte count of every block read appended to it.
        """
        carry = ""
        for text, size in self.iter_blocks(doc):
            if sizes is not None:
                sizes.append(size)
            parts = (carry + text).split(NEWLINE)
            carry = parts.pop()
            lines = [part + NEWLINE for part in parts]
            if len(carry) > MAX_LINE_CHARS:
                pieces = list(_cut(carry))
                carry = pieces.pop()
                lines.extend(pieces)
            if lines and max(map(len, lines)) > MAX_LINE_CHARS:
                lines = [piece for line in lines for piece in _cut(line)]
            if lines:
                yield lines
        if carry:
            yield list(_cut(carry))

    # ------------------------------------------------------------------ protocol: encode / decode
    def encode_document(self, doc: Document) -> Encoded:
        """Stream the document through sentencepiece, one batch of lines (one read block) per call."""
        sizes: list[int] = []
        chunks = [np.fromiter(itertools.chain.from_iterable(self._encode_lines(lines)), dtype=np.int64)
                  for lines in self.iter_line_batches(doc, sizes)]
        n_bytes = sum(sizes)
        if n_bytes == 0:
            raise TokenizerError(f"{doc.describe()}: empty text")
        tokens = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
        return Encoded(tokens, {"bytes": n_bytes})

    def _encode_lines(self, lines: list[str]) -> list[list[int]]:
        """sentencepiece on a batch of lines; a literal U+2581 (sentencepiece's own space mark,
        which it would decode as a space) is written as its three UTF-8 byte pieces instead."""
        sp = self._need_model()
        out = sp.encode(lines, num_threads=self.settings["num_threads"])
        if self._meta_bytes and SPACE_MARK in "".join(lines):
            for i, line in enumerate(lines):
                if SPACE_MARK in line:
                    parts = sp.encode(line.split(SPACE_MARK))
                    ids = list(parts[0])
                    for part in parts[1:]:
                        ids += self._meta_bytes + part
                    out[i] = ids
        return out

    def encode_text(self, text: str) -> np.ndarray:
        """Ids of an in-memory string (prompts)."""
        return self.encode_document(Document(doc_id="text", split="", source="memory", text=text)).tokens

    def decode_text(self, tokens: np.ndarray) -> str:
        """Ids -> string: cut at the first EOS, PAD/BOS and out-of-range ids dropped."""
        sp = self._need_model()
        ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
        eos = np.nonzero(ids == self._special["eos"])[0]
        if eos.size:
            ids = ids[: eos[0]]
        ids = ids[(ids >= 0) & (ids < sp.get_piece_size()) & ~np.isin(ids, self._strip)]
        return sp.decode(ids.tolist())

    def write_prompt(self, tokens: np.ndarray, n: int, out_path: str | Path,
                     source_meta: dict[str, Any] | None = None) -> Path:
        """The first ``n`` tokens' text, cut where a reader would: it starts at the document's start, or,
        when the source says the document begins mid-word (a text8 split boundary), after that partial
        word; it ends at the last line end (when that keeps at least half) or word end before the
        ``n``-th token, unless the ``n``-th token already ends a word."""
        ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
        head, longer = self.decode_text(ids[:n]), self.decode_text(ids[: n + 16])
        start = _word_start(head, 1) if (source_meta or {}).get("begins_mid_word") else 0
        end = len(head)
        ends_a_word = head[-1:].isspace() or end >= len(longer) or longer[end].isspace()
        if not ends_a_word:
            line, space = head.rfind(NEWLINE, start), max(head.rfind(" ", start), head.rfind(NEWLINE, start))
            if line > start and line + 1 - start >= (end - start) // 2:
                end = line + 1
            elif space > start:
                end = space + 1
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(out_path, "w", encoding="utf-8", newline="") as fh:
            fh.write(head[start:end] if end > start else head)
        return out_path

    def decode(self, tokens: np.ndarray, out_path: str | Path, context: dict[str, Any] | None = None) -> Path:
        """Write the decoded text as UTF-8 (no newline translation)."""
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(out_path, "w", encoding="utf-8", newline="") as fh:
            fh.write(self.decode_text(tokens))
        return out_path

    def token_labels(self, ids: Sequence[int]) -> list[str]:
        """Each id's text piece, quoted (``'the'``, ``'\\n'``); specials as ``<eos>``."""
        special = {v: f"<{k}>" for k, v in self.special_ids.items()}
        labels = []
        for i in ids:
            i = int(i)
            try:
                labels.append(special.get(i) or repr(self.decode_text(np.array([i]))))
            except Exception:  # noqa: BLE001 - a label is a nicety, never an error
                labels.append(str(i))
        return labels

    @classmethod
    def read_artifact(cls, path: str | Path) -> str:
        """The written text."""
        return Path(path).read_text(encoding="utf-8")

    @classmethod
    def excerpt(cls, artifact: str | Path, chars: int = 600) -> str | None:
        """The first ``chars`` characters of a written text."""
        with open(artifact, encoding="utf-8", errors="replace", newline="") as fh:
            return fh.read(chars)

    # ------------------------------------------------------------------ training
    @classmethod
    def text_parts(cls, artifact: str | Path, prompt: str | Path | None = None,
                   chars: int = 4000) -> tuple[str, str] | None:
        """The written text split where its prompt ends. Decoding may lay out the prompt's
        whitespace differently from its file, so the prompt is matched ignoring whitespace, and up to
        the first character that differs (the prompt part is then what matched)."""
        text = Path(artifact).read_text(encoding="utf-8", errors="replace")
        given = Path(prompt).read_text(encoding="utf-8", errors="replace") if prompt is not None else ""
        end = _prompt_end(text, given)
        rest = text[end:]
        return text[:end], rest[:chars] + ("…" if len(rest) > chars else "")

    def train(self, documents: Iterable[Document]) -> dict[str, str]:
        """Train SentencePiece on the documents' lines through its iterator API.

        Reading stops after ``train_max_bytes``; sentencepiece samples ``input_sentence_size``
        lines of what it read. A document that cannot be read is skipped with a warning and
        returned in ``{doc_id: reason}`` (lines read before its error stay in the sample). A
        vocabulary the text cannot fill, or too small for its characters, is a one-line TrainingError.
        """
        import sentencepiece as spm

        s = self.settings
        sizes: list[int] = []  # bytes read, for messages
        skipped: dict[str, str] = {}

        def sentences() -> Iterator[str]:
            characters = 0  # the budget counts characters of the lines handed over
            for doc in documents:
                try:
                    for lines in self.iter_line_batches(doc, sizes):
                        for line in lines:
                            characters += len(line)
                            yield line
                        if characters >= s["train_max_bytes"]:
                            return
                except TokenizerError as exc:
                    log.info("text tokenizer: skipping a training document: %s", exc)
                    skipped[doc.doc_id] = str(exc)

        lines = sentences()
        first = next(lines, None)
        if first is None:
            raise TrainingError(f"text tokenizer: the train split has no readable text "
                             f"({len(skipped)} train document(s) unreadable, the others empty)")
        buf = io.BytesIO()
        spm.set_random_generator_seed(int(s["seed"]))
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=itertools.chain([first], lines), model_writer=buf, model_type=s["model_type"],
                vocab_size=int(s["vocab_size"]), character_coverage=float(s["character_coverage"]),
                byte_fallback=bool(s["byte_fallback"]), input_sentence_size=int(s["input_sentence_size"]),
                shuffle_input_sentence=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
                add_dummy_prefix=False, allow_whitespace_only_pieces=True, user_defined_symbols=[NEWLINE],
                unk_id=0, bos_id=1, eos_id=2, pad_id=3, hard_vocab_limit=False,
                max_sentence_length=4 * MAX_LINE_CHARS + 16, num_threads=int(s["num_threads"]), minloglevel=2)
        except RuntimeError as exc:
            raise TrainingError(_training_failure(str(exc), int(s["vocab_size"]), sum(sizes))) from None
        self._set_model(buf.getvalue(), source="training")
        got = self._need_model().get_piece_size()
        if got < int(s["vocab_size"]):
            raise TrainingError(f"text tokenizer: the train split ({sum(sizes):,} bytes) supports at most "
                                f"{got} pieces, asked for {s['vocab_size']}; lower vocab_size")
        return skipped

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        return {k: v for k, v in self.settings.items() if k not in _RUNTIME_KEYS}

    @property
    def headline(self) -> str:
        return f"SentencePiece {self.settings.get('model_type', '')} text tokens, vocabulary {self.vocab_size:,}"

    def model_files_digest(self) -> str:
        return hashlib.sha256(self._proto).hexdigest() if self._proto is not None else ""

    def save(self, folder: str | Path) -> Path:
        """``tokenizer.json`` plus ``text.model`` (the SentencePiece model proto)."""
        self._need_model()
        assert self._proto is not None  # set with the model
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes(folder / MODEL_FILE, self._proto)
        return write_config(folder, self, {"model_file": MODEL_FILE, "model_source": self.settings["model_file"],
                                           "runtime": {k: self.settings[k] for k in ("block_bytes", "num_threads")}})

    @classmethod
    def from_saved(cls, folder: Path, body: dict[str, Any]) -> TextTokenizer:
        path = saved_file(folder, MODEL_FILE, "SentencePiece model")
        return cls({**body["config"], **body.get("runtime", {})}, model_proto=path.read_bytes())


def _training_failure(message: str, vocab_size: int, n_bytes: int) -> str:
    """sentencepiece's trainer error (``INTERNAL: src/….cc(638) [check] text``) as one line of ours."""
    needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if needed:
        return (f"text tokenizer: vocab_size {vocab_size} is too small for the train split ({n_bytes:,} bytes), "
                f"which needs at least {needed.group(1)} pieces (its characters, byte pieces and specials); "
                "raise vocab_size")
    text = re.sub(r"^\w+: \S+\(\d+\) \[.*?\]\s*", "", message.strip()).splitlines()
    why = text[0] if text else message
    return f"text tokenizer: sentencepiece could not train on the train split ({n_bytes:,} bytes): {why}"


def _prompt_end(text: str, prompt: str) -> int:
    """Where ``prompt`` ends at the start of ``text``, whitespace ignored (just after its last matching character)."""
    i = end = 0
    for ch in prompt:
        if ch.isspace():
            continue
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text) or text[i] != ch:
            break
        i += 1
        end = i
    return end


def _word_start(text: str, position: int) -> int:
    """Where a cut at ``position`` lands in text: just after the next space or newline (or the end)."""
    if position <= 0 or position >= len(text):
        return min(max(position, 0), len(text))
    found = [i for i in (text.find(" ", position), text.find(NEWLINE, position)) if i >= 0]
    return min(found) + 1 if found else len(text)


def _byte_range(fh: Any, doc: Document) -> tuple[int, int]:
    """``[start, stop)`` bytes of a file document's span; each cut lands just after the next space
    or newline byte, which in UTF-8 is always a character boundary."""
    size = os.fstat(fh.fileno()).st_size
    if doc.span is None:
        return 0, size
    start, stop = doc.bounds(size)
    return _byte_word_start(fh, start, size), _byte_word_start(fh, stop, size)


def _byte_word_start(fh: Any, position: int, size: int, block: int = 1 << 16) -> int:
    if position <= 0 or position >= size:
        return min(max(position, 0), size)
    fh.seek(position)
    while chunk := fh.read(block):
        found = [i for i in (chunk.find(b" "), chunk.find(b"\n")) if i >= 0]
        if found:
            return position + min(found) + 1
        position += len(chunk)
    return size


def _cut(line: str) -> Iterator[str]:
    """Split a line longer than MAX_LINE_CHARS just before a space (or hard, if it has none)."""
    while len(line) > MAX_LINE_CHARS:
        at = line.rfind(" ", MAX_LINE_CHARS // 2, MAX_LINE_CHARS)
        at = at if at > 0 else MAX_LINE_CHARS
        yield line[:at]
        line = line[at:]
    if line:
        yield line
