"""The protocol every domain tokenizer follows, so everything downstream is domain-blind.

A tokenizer turns one document into an integer array and back into an artifact
(.wav, .mid, .txt). Shapes:

* one stream (``n_streams == 1``): ``tokens`` is ``int64[T]``;
* several streams (acoustic ``delay`` layout, ``n_streams == K``): ``int64[K, T]``.

Every id of every stream is in ``[0, vocab_size)``. ``special_ids`` always holds
``pad``, ``bos`` and ``eos``; a domain may add more (e.g. ``empty`` for the delay
layout's unfilled positions).

Everything that differs between domains downstream of the ids is asked of the tokenizer, never
decided by looking at ``domain`` (generation, evaluation, diagnostics and reports are
domain-blind; ``tests/test_protocol.py`` holds them to it):

* length: :meth:`Tokenizer.steps_for_seconds` (seconds -> positions to generate),
  :meth:`Tokenizer.seconds_of` and ``time_from_content`` (duration read from the ids);
* domains: :meth:`Tokenizer.domain_views` and :meth:`Tokenizer.for_sample` (a joint vocabulary
  answers through one view per domain);
* prompting: :meth:`Tokenizer.prompt_steps` (the prompt as model positions, plus ids to force
  while a multi-stream layout catches up), :meth:`Tokenizer.prompt_context`;
* sampling: :meth:`Tokenizer.banned_ids` and :meth:`Tokenizer.stop_ids`;
* loss: :meth:`Tokenizer.loss_groups` (per codebook / per token family),
  :meth:`Tokenizer.ignored_ids` (targets that carry no prediction);
* reading ids: :meth:`Tokenizer.token_labels`;
* artifacts: ``artifact_suffixes``, ``rendering_suffix``, :meth:`Tokenizer.decode`, :meth:`Tokenizer.artifact_seconds`,
  :meth:`Tokenizer.render`, :meth:`Tokenizer.excerpt`, and :meth:`Tokenizer.describe` (the
  facts a sidecar or result records to be read on its own);
* showing artifacts in reports: ``artifact_is_sound``, :meth:`Tokenizer.picture` (piano roll,
  spectrogram) and :meth:`Tokenizer.text_parts` (a text with its prompt set apart).
"""
from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from shortcutlm.artifacts.files import write_json
from shortcutlm.documents import Document
from shortcutlm.core.errors import UserError

log = logging.getLogger(__name__)

CONFIG_FILE = "tokenizer.json"


#: Special ids whose targets carry no prediction: padding, and the positions a multi-stream layout
#: leaves ``empty``.
NO_PREDICTION = ("pad", "empty")


def ignored_ids(special_ids: Mapping[str, int]) -> list[int]:
    """Target ids left out of every loss, from a special-id map (a tokenizer's, or the one a shard
    manifest records): training, validation, evaluation and the benchmarks all take them from here."""
    return sorted({special_ids[name] for name in NO_PREDICTION if name in special_ids})


class Waveform(NamedTuple):
    """Audio as the Python API hands it out: ``samples`` [channels, n] float32 and its rate."""

    samples: np.ndarray
    sample_rate: int


class TokenizerError(UserError, ValueError):
    """Bad input to a tokenizer. The message names the file and what is wrong."""


class TrainingError(UserError, ValueError):
    """The train split cannot give what the settings ask: a vocabulary it cannot fill, or no readable file."""


class FingerprintMismatch(UserError, ValueError):
    """Shards or a checkpoint were made with a different tokenizer mapping."""


#: A zero-argument function that gives the train split's ``(tokens per second, where that came
#: from)``. Passed to :meth:`Tokenizer.steps_for_seconds` unevaluated: only a domain whose rate
#: depends on the data calls it, so the others never need the shards.
TrainRate = Callable[[], "tuple[float, str]"]


@dataclass(frozen=True)
class LossGroups:
    """How evaluation splits the loss of the targets into groups (``per_<kind>`` in its results).

    Either ``by_stream`` (group k is stream k of a multi-stream layout, named ``names[k]``), or
    by target id: ``families`` maps each group's name to its ids. Empty ``families`` and no
    ``by_stream``: no per-group table.
    """

    kind: str = "family"
    families: dict[str, np.ndarray] = field(default_factory=dict)
    by_stream: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return list(self.by_stream) if self.by_stream else list(self.families)

    def __bool__(self) -> bool:
        return bool(self.by_stream or self.families)


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
    #: suffixes :meth:`decode` may write, the default first (e.g. ``(".mid", ".midi")``).
    artifact_suffixes: ClassVar[tuple[str, ...]] = ()
    #: the suffix of what :meth:`render` writes beside an artifact (None: it renders nothing).
    rendering_suffix: ClassVar[str | None] = None
    #: what :meth:`load` reads beside ``tokenizer.json`` (named when it no longer matches).
    saved_files: ClassVar[str] = "the saved files"

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
    def from_settings(cls, settings: dict[str, Any]) -> Tokenizer:
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

    def train(self, documents: Iterable[Document]) -> dict[str, str]:
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
        return self.encode_document(Document(doc_id=path.stem.replace(".", "_"), split="", source="file",
                                             path=path)).tokens

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

    # ------------------------------------------------------------------ domains
    def domain_views(self) -> dict[str, Tokenizer]:
        """Domain -> the tokenizer that answers for it. One domain: itself. A joint vocabulary
        (:mod:`shortcutlm.tokenizers.composite`): one view per domain, so evaluation reports each."""
        return {self.domain: self}

    def for_sample(self, prompt: str | Path | None, domain: str | None) -> Tokenizer:
        """The tokenizer a sample of ``prompt`` (or, without one, of ``domain``) answers to: itself
        for one domain (a ``domain`` other than its own is a TokenizerError); a joint vocabulary
        picks its view by the prompt file's type."""
        if domain is not None and domain != self.domain:
            raise TokenizerError(f"a {self.domain} checkpoint samples {self.domain}, not {domain}")
        return self

    # ------------------------------------------------------------------ generation
    def steps_for_seconds(self, seconds: float, train_rate: TrainRate) -> tuple[int, dict[str, Any]]:
        """Positions to generate for ``seconds`` of output, and how they were derived (for the
        sample's sidecar). ``train_rate`` gives the train split's tokens per second; call it only
        when the rate is not fixed by the mapping (it reads the shards' manifest).

        Default: a :class:`TokenizerError`, since ids without time (text) have no seconds."""
        raise TokenizerError(f"seconds mean nothing for {self.domain} ids; give a number of tokens")

    def prompt_steps(self, tokens: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """A prompt's ids (``None``: no prompt) as the model's positions, and the ids to force.

        Returns ``(steps, forced)``: ``steps`` is ``[T]`` (or ``[K, T]``), without the packing EOS
        that generation puts in front; ``forced`` is ``[K, n]`` ids that generated steps 0..n-1
        must take (-1: sample freely), or None. A layout whose streams lag each other (delay)
        cannot be cut after a whole frame, so its known-but-late codes are forced rather than
        sampled. Default: the ids as they are, nothing forced."""
        if tokens is None:
            return np.zeros(0, dtype=np.int64), None
        return np.asarray(tokens, dtype=np.int64).reshape(-1), None

    def banned_ids(self, stop_at_eos: bool) -> tuple[int, ...]:
        """Ids never sampled. Default: EOS unless the sample may stop there, so a sample lasts
        the length asked for (a model that ends documents early would otherwise stop after a few
        ids)."""
        return () if stop_at_eos else (self.eos_id,)

    def stop_ids(self, stop_at_eos: bool) -> tuple[int, ...]:
        """Ids that end a sample early (it is cut before the first). Default: EOS when asked."""
        return (self.eos_id,) if stop_at_eos else ()

    # ------------------------------------------------------------------ loss
    def ignored_ids(self) -> list[int]:
        """Target ids that carry no prediction and are left out of every loss (see :func:`ignored_ids`)."""
        return ignored_ids(self.special_ids)

    def loss_groups(self) -> LossGroups:
        """How evaluation reports the loss by group. Default: by :meth:`token_families`."""
        return LossGroups("family", self.token_families())

    def token_labels(self, ids: Sequence[int]) -> list[str]:
        """A short readable name per id, for plots (``<eos>`` for specials). Default: the number."""
        special = {v: f"<{k}>" for k, v in self.special_ids.items()}
        return [special.get(int(i), str(int(i))) for i in ids]

    # ------------------------------------------------------------------ artifacts
    @property
    def artifact_suffix(self) -> str:
        """The suffix :meth:`decode` writes by default."""
        return self.artifact_suffixes[0]

    def artifact_seconds(self, path: str | Path) -> float | None:
        """How long a written artifact lasts, read from the file; None when it has no time."""
        return None

    @classmethod
    def read_artifact(cls, path: str | Path) -> Any:
        """A written artifact as the Python object a user works with (text: ``str``; MIDI: a
        ``symusic.Score``; audio: a :class:`Waveform`), for the Python API's samples."""
        return Path(path).read_bytes()

    def render(self, artifact: str | Path, wav_path: str | Path, soundfont: str | Path | None = None) -> Path | None:
        """Write an audible ``.wav`` of an artifact that is not sound itself (MIDI through a
        soundfont) and return its path; None when there is nothing to render (audio already is
        sound, text has none)."""
        return None

    @classmethod
    def excerpt(cls, artifact: str | Path, chars: int = 600) -> str | None:
        """The start of a written artifact as text, for reports to quote; None when it is not text.
        A class method: reading a file back needs no model (``tokenizer_class(domain).excerpt``)."""
        return None

    #: True when a written artifact is itself sound a person can play (audio); MIDI is heard
    #: through its :meth:`render`, text not at all.
    artifact_is_sound: ClassVar[bool] = False

    @classmethod
    def picture(cls, artifact: str | Path, out_png: str | Path, prompt_seconds: float | None = None,
                title: str = "") -> Path | None:
        """Write a PNG that shows a written artifact to the eye (MIDI: a piano roll; audio: a
        spectrogram), its first ``prompt_seconds`` (the prompt it continues) set apart on the same time
        axis, and return its path; None when the domain has no picture (text is read, see
        :meth:`text_parts`). A class method, like :meth:`excerpt`: reports need no model to draw."""
        return None

    @classmethod
    def text_parts(cls, artifact: str | Path, prompt: str | Path | None = None,
                   chars: int = 4000) -> tuple[str, str] | None:
        """A written text as ``(the prompt it starts with, what follows)``, the second cut after
        ``chars`` characters, so that a report can set the prompt apart; None when the artifact is
        not text."""
        return None

    def write_prompt(self, tokens: np.ndarray, n: int, out_path: str | Path,
                     source_meta: dict[str, Any] | None = None) -> Path:
        """The head of a document (about ``n`` tokens of it) written as a prompt file, cut where a reader
        would cut it (text: at word or line boundaries; MIDI ids already end at a bar line when decoded).
        ``source_meta``: what the source said of the document (e.g. ``begins_mid_word``)."""
        return self.decode(tokens[..., :n], out_path)

    def prepare_notes(self, splits: dict[str, dict[str, Any]]) -> list[str]:
        """Lines ``prepare`` prints (and keeps in the manifest's ``notes``) about what this tokenizer did
        to the data as a whole, from the per-split sums of its encoded metadata. None by default."""
        return []

    @property
    def headline(self) -> str:
        """What the ids are, in one phrase a report's header can print (from this saved tokenizer,
        so the header describes the run made, not a recipe's defaults)."""
        return f"{self.domain} tokens, vocabulary {self.vocab_size:,}"

    def describe(self) -> dict[str, Any]:
        """JSON-able facts a sample sidecar or an evaluation result records so that it reads on its
        own (audio: layout, codebooks, frames per second). Empty by default."""
        return {}

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able settings that, with the model files, fully define the mapping."""

    @abstractmethod
    def save(self, folder: str | Path) -> Path:
        """Write ``tokenizer.json`` (with ``domain``, ``config`` and ``fingerprint``) and model files."""

    @classmethod
    def load(cls, folder: str | Path) -> Tokenizer:
        """Rebuild what :meth:`save` wrote (:meth:`from_saved`) and refuse it when its fingerprint is
        not the one saved: the files beside ``tokenizer.json`` changed, so ids would mean other things."""
        folder = Path(folder)
        body = read_config(folder)
        tok = cls.from_saved(folder, body)
        if tok.fingerprint() != body["fingerprint"]:
            raise FingerprintMismatch(f"{folder}: {cls.saved_files} gives fingerprint {tok.fingerprint()}, but "
                                      f"{body['fingerprint']} was saved; {cls.saved_files} changed after the "
                                      "tokenizer was saved")
        return tok

    @classmethod
    @abstractmethod
    def from_saved(cls, folder: Path, body: dict[str, Any]) -> Tokenizer:
        """The tokenizer :meth:`save` wrote to ``folder``; ``body`` is its ``tokenizer.json``."""

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
                f"{self.fingerprint()}: the ids would mean different things. "
                "Re-run prepare, or use the matching tokenizer.")


def write_config(folder: str | Path, tokenizer: Tokenizer, extra: dict[str, Any] | None = None) -> Path:
    """Write the human-readable ``tokenizer.json`` shared by every domain."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    body = {"domain": tokenizer.domain, "fingerprint": tokenizer.fingerprint(), "vocab_size": tokenizer.vocab_size,
            "n_streams": tokenizer.n_streams, "special_ids": tokenizer.special_ids, "config": tokenizer.config()}
    body.update(extra or {})
    return write_json(folder / CONFIG_FILE, body)


def saved_file(folder: Path, name: str, what: str) -> Path:
    """``folder / name``, which :meth:`Tokenizer.save` wrote; FileNotFoundError naming it if absent."""
    path = Path(folder) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} missing (the tokenizer was saved with {name})")
    return path


def read_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no tokenizer config here (expected {CONFIG_FILE} written by save())")
    return json.loads(path.read_text())
