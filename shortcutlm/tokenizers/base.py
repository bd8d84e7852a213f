"""The protocol every domain tokenizer follows, so everything downstream is domain-blind.

A tokenizer turns one document into an integer array and back into an artifact
(.wav, .mid, .txt). Shapes:

* one stream (``n_streams == 1``): ``tokens`` is ``int64[T]``;
* several streams (acoustic ``delay`` layout, ``n_streams == K``): ``int64[K, T]``.

Every id of every stream is in ``[0, vocab_size)``. ``special_ids`` always holds
``pad``, ``bos`` and ``eos``; a domain may add more (e.g. ``empty`` for the delay
layout's unfilled positions).
"""
from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np

from shortcutlm.documents import Document
from shortcutlm.errors import UserError

log = logging.getLogger(__name__)

CONFIG_FILE = "tokenizer.json"


class TokenizerError(UserError, ValueError):
    """Bad input to a tokenizer. The message names the file and what is wrong."""


class TrainingError(UserError, ValueError):
    """The train split cannot give what the settings ask: a vocabulary it cannot fill, or no readable file."""


class FingerprintMismatch(UserError, ValueError):
    """Shards or a checkpoint were made with a different tokenizer mapping."""


@dataclass
class Encoded:
    """Tokens of one document plus what the domain knows about its size.

    ``meta`` holds e.g. ``{"bytes": 1234}`` for text (for bits per byte) or
    ``{"seconds": 5.0}`` for audio and MIDI.
    """

    tokens: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


class Tokenizer(ABC):
    """One domain's mapping between files and ids."""

    domain: ClassVar[str]
    #: file suffixes (lower case, with dot) this tokenizer reads.
    extensions: ClassVar[tuple[str, ...]] = ()

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    def n_streams(self) -> int:
        return 1

    @property
    @abstractmethod
    def special_ids(self) -> dict[str, int]: ...

    @property
    def pad_id(self) -> int:
        return self.special_ids["pad"]

    @property
    def bos_id(self) -> int:
        return self.special_ids["bos"]

    @property
    def eos_id(self) -> int:
        return self.special_ids["eos"]

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: dict[str, Any]) -> "Tokenizer":
        """Build from a recipe's tokenizer settings (unknown keys are an error naming them)."""

    @property
    def needs_training(self) -> bool:
        """True until ``train`` has fitted what this tokenizer learns from data (if anything)."""
        return False

    #: True when an artifact's length in seconds follows from what its ids say (MIDI: the notes'
    #: timing) rather than from how many there are; :meth:`seconds_of` then measures it.
    time_from_content: ClassVar[bool] = False

    #: True when training is :meth:`training_sample` per document, then :meth:`fit` on the
    #: samples: prepare then reads the train files in worker processes (a reader that crashes
    #: costs one file, not the run) and fits in its own.
    trains_on_samples: ClassVar[bool] = False

    @property
    def max_training_documents(self) -> int | None:
        """Training reads at most this many (readable) train documents; None: all of them."""
        return None

    def training_sample(self, doc: Document) -> Any:
        """What fitting learns from one train document (picklable); TokenizerError on bad input."""
        raise NotImplementedError(f"{self.domain} tokenizer: training does not go document by document")

    def fit(self, samples: Sequence[Any]) -> None:
        """Fit the learned parts on the samples of the readable train documents."""
        raise NotImplementedError(f"{self.domain} tokenizer: training does not go document by document")

    def train(self, documents: "Iterable[Document]") -> dict[str, str]:
        """Fit learned parts (SentencePiece model, MIDI BPE, offline codec codebooks) on train documents.

        A document that cannot be read is skipped, not fatal: returns ``{doc_id: reason}`` of
        those skipped (each reason names the file), so a caller can record them.
        """
        if not self.trains_on_samples:
            return {}
        samples: list[Any] = []
        skipped: dict[str, str] = {}
        limit = self.max_training_documents
        for doc in documents:
            if limit is not None and len(samples) >= limit:
                break
            try:
                samples.append(self.training_sample(doc))
            except TokenizerError as exc:
                log.info("%s tokenizer: skipping a training document: %s", self.domain, exc)
                skipped[doc.doc_id] = str(exc)
        self.fit(samples)
        return skipped

    def token_families(self) -> dict[str, np.ndarray]:
        """Name -> ids of each token family, for per-family loss (MIDI: Pitch, Velocity, ...;
        acoustic flatten: one family per codebook). Empty when the domain has none."""
        return {}

    @abstractmethod
    def encode_document(self, doc: Document) -> Encoded:
        """Encode one document; raise TokenizerError naming ``doc.describe()`` on bad input."""

    def encode(self, path: str | Path) -> np.ndarray:
        path = Path(path)
        return self.encode_document(Document(doc_id=path.stem.replace(".", "_"), split="", source="file", path=path)).tokens

    @abstractmethod
    def decode(self, tokens: np.ndarray, out_path: str | Path, context: dict[str, Any] | None = None) -> Path:
        """Write the artifact for ``tokens`` to ``out_path`` and return the path written.

        ``context`` is what :meth:`prompt_context` read from a prompt file whose continuation
        these tokens are (e.g. a MIDI prompt's tempo, which the ids may not carry)."""

    def prompt_context(self, path: str | Path) -> dict[str, Any]:
        """What a continuation of the prompt file at ``path`` must keep that its ids do not hold
        (JSON-able; given back to :meth:`decode` and :meth:`seconds_of`). None by default."""
        return {}

    def seconds_of(self, tokens: np.ndarray, context: dict[str, Any] | None = None) -> float | None:
        """How long the artifact decoded from ``tokens`` lasts, when that is not a fixed number of
        ids per second (MIDI: it depends on the notes); None when it is fixed or there is no time."""
        return None

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able settings that, with the model files, fully define the mapping."""

    @abstractmethod
    def save(self, folder: str | Path) -> Path:
        """Write ``tokenizer.json`` (with ``domain``, ``config`` and ``fingerprint``) and model files."""

    @classmethod
    @abstractmethod
    def load(cls, folder: str | Path) -> "Tokenizer": ...

    def model_files_digest(self) -> str:
        """Digest of any learned model files (SentencePiece model, BPE merges, codec weights)."""
        return ""

    def fingerprint(self) -> str:
        """Changes whenever the mapping from input to ids changes."""
        payload = json.dumps({"domain": self.domain, "config": self.config(), "files": self.model_files_digest()},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def check_fingerprint(self, expected: str, what: str) -> None:
        """Refuse data or checkpoints made with another mapping."""
        if expected != self.fingerprint():
            raise FingerprintMismatch(
                f"{what} was made with tokenizer fingerprint {expected}, but this tokenizer's is "
                f"{self.fingerprint()}: the ids would mean different things. Re-run prepare, or use the matching tokenizer.")


def write_config(folder: str | Path, tokenizer: Tokenizer, extra: dict[str, Any] | None = None) -> Path:
    """Write the human-readable ``tokenizer.json`` shared by every domain."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    body = {"domain": tokenizer.domain, "fingerprint": tokenizer.fingerprint(), "vocab_size": tokenizer.vocab_size,
            "n_streams": tokenizer.n_streams, "special_ids": tokenizer.special_ids, "config": tokenizer.config()}
    body.update(extra or {})
    out = folder / CONFIG_FILE
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True, default=str))
    tmp.replace(out)
    return out


def read_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no tokenizer config here (expected {CONFIG_FILE} written by save())")
    return json.loads(path.read_text())
