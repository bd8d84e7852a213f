"""One vocabulary over several domains: each part's ids at an offset, a marker per domain.

A joint model reads several prepared folders as one mixture (:mod:`shortcutlm.datasets.mixture`).
This tokenizer is what makes that mixture one vocabulary, as AnyGPT adds modalities "at the data
level" and leaves the decoder as it is (PAPERS.md):

* part ``i`` (a text, MIDI or acoustic tokenizer) keeps its own ids, moved to
  ``[offset_i, offset_i + vocab_i)``, offsets in the parts' order;
* after the parts come the joint specials ``pad``, ``bos``, ``eos`` and one marker per domain
  (``marker_<domain>``). Documents are packed ``EOS <marker_d> d-ids EOS <marker_e> e-ids ...``:
  the joint EOS separates documents of any domain, the marker opens each with its domain;
* every protocol question is answered by the domain the ids belong to. :meth:`with_domain` gives
  the same mapping (same ids, same fingerprint) answering for one domain: its prompts carry the
  marker, every other domain's ids and markers are banned while sampling, its loss groups are the
  part's (shifted; the joint EOS counts where the part's own EOS would), and its marker is not a
  target of evaluation, so a domain's loss is measured over the targets its single-domain model
  has. Generation, evaluation and reports hold the view like any tokenizer and stay domain-blind.

How the acoustic ``delay`` layout meets one-stream text and MIDI: it does not. A joint model takes
audio in the ``flatten`` layout (frame-major, id = k·1024 + code), as AnyGPT flattens EnCodec's
codebooks per frame. Carrying K streams for all would give text and MIDI K-1 streams of ``empty``
and a decoder with K heads for every domain — the decoder would change with the data, which is
what adding domains at the data level avoids — while flatten keeps one stream and an exact
factorisation at K times the positions per second. The per-codebook loss survives: a flatten
id tells its codebook (its family ``codebook_k``), and the view reports it as the part does.
A ``delay`` part is refused in one line.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np

from shortcutlm.artifacts.files import write_json
from shortcutlm.documents import Document
from shortcutlm.tokenizers.base import (CONFIG_FILE, Encoded, FingerprintMismatch, LossGroups, Tokenizer,
                                        TokenizerError, TrainRate)
from shortcutlm.tokenizers.domains import DOMAINS, domain_class, load_domain_tokenizer

DOMAIN = "joint"
PARTS_FOLDER = "parts"
JOINT_SPECIALS = ("pad", "bos", "eos")


def marker_name(domain: str) -> str:
    return f"marker_{domain}"


def task_marker_name(task: str) -> str:
    return f"task_{task}"


class CompositeTokenizer(Tokenizer):
    """Several domain tokenizers as one vocabulary (see the module docstring).

    ``active`` None: the joint tokenizer (training, checkpoints). ``active`` a domain: the view
    that answers for that domain (generation, per-domain evaluation); its ids mean what the
    joint tokenizer's mean, so both have one fingerprint.
    """

    domain = DOMAIN  # an instance with an active domain names that domain (see __init__)
    saved_files = "the parts' saved tokenizers (tokenizer/parts/*)"

    def __init__(self, parts: dict[str, Tokenizer], active: str | None = None,
                 rates: dict[str, float] | None = None, tasks: Sequence[str] = ()) -> None:
        if not parts:
            raise TokenizerError("a joint tokenizer needs at least one part")
        for name, part in parts.items():
            if part.n_streams != 1:
                raise TokenizerError(f"the {name} part has {part.n_streams} streams (acoustic layout "
                                     f"{part.describe().get('layout', '?')}); a joint vocabulary is one stream: "
                                     "prepare the audio with layout: flatten")
            if name != part.domain:
                raise TokenizerError(f"part {name!r} holds a {part.domain} tokenizer")
        if active is not None and active not in parts:
            raise TokenizerError(f"no {active} part in this joint tokenizer (parts: {', '.join(parts)})")
        self.parts = dict(parts)
        self.active = active
        self.rates = dict(rates or {})
        self.offsets: dict[str, int] = {}
        at = 0
        for name, part in self.parts.items():
            self.offsets[name] = at
            at += part.vocab_size
        self._joint = {name: at + i for i, name in enumerate(JOINT_SPECIALS)}
        self.markers = {name: at + len(JOINT_SPECIALS) + i for i, name in enumerate(self.parts)}
        # Paired documents (shortcutlm.pairs): one marker per task, after the domain markers, saying
        # that a source has ended and which target follows (``<marker_src> src <task_t> tgt``).
        self.tasks = tuple(tasks)
        first_task = at + len(JOINT_SPECIALS) + len(self.parts)
        self.task_markers = {name: first_task + i for i, name in enumerate(self.tasks)}
        self._vocab = first_task + len(self.tasks)
        # The class-level facts of the protocol, answered per instance: a view takes its part's, the
        # whole joint tokenizer reads every part's files.
        if active is not None:
            part = self.parts[active]
            facts = {"domain": part.domain, "extensions": part.extensions, "artifact_suffixes": part.artifact_suffixes,
                     "rendering_suffix": part.rendering_suffix, "time_from_content": part.time_from_content,
                     "artifact_is_sound": part.artifact_is_sound}
        else:
            facts = {"extensions": tuple(s for p in self.parts.values() for s in p.extensions),
                     "artifact_suffixes": tuple(s for p in self.parts.values() for s in p.artifact_suffixes)}
        vars(self).update(facts)

    # ------------------------------------------------------------------ the mapping
    @property
    def vocab_size(self) -> int:
        return self._vocab

    @property
    def special_ids(self) -> dict[str, int]:
        ids = dict(self._joint)
        ids.update({marker_name(name): i for name, i in self.markers.items()})
        ids.update({task_marker_name(name): i for name, i in self.task_markers.items()})
        if self.active is not None:
            own = self.parts[self.active].special_ids
            if "empty" in own:  # not reached for one-stream parts, kept for what the protocol says
                ids["empty"] = own["empty"] + self.offsets[self.active]
        return ids

    @property
    def domains(self) -> list[str]:
        return list(self.parts)

    def with_domain(self, domain: str) -> CompositeTokenizer:
        """The same mapping answering for ``domain`` (a TokenizerError naming the parts if absent)."""
        if domain not in self.parts:
            raise TokenizerError(f"this joint model was trained on {', '.join(self.parts)}, not on {domain}")
        return CompositeTokenizer(self.parts, domain, self.rates, self.tasks)

    def domain_views(self) -> dict[str, Tokenizer]:
        if self.active is not None:
            return {self.active: self}
        return {name: self.with_domain(name) for name in self.parts}

    def domain_of_suffix(self, suffix: str) -> str | None:
        """The part that reads files with ``suffix`` (lower case, with dot), or None."""
        for name, part in self.parts.items():
            if suffix in part.extensions:
                return name
        return None

    def for_sample(self, prompt: str | Path | None, domain: str | None) -> Tokenizer:
        """The view a sample of ``prompt`` (its file type picks the domain) or of ``domain`` answers to."""
        if prompt is not None:
            suffix = Path(prompt).suffix.lower()
            found = self.domain_of_suffix(suffix)
            if found is None:
                known = self._known_domain_of(suffix)
                what = f"a prompt of the {known} domain" if known else f"a {suffix or 'suffix-less'} file"
                raise TokenizerError(f"prompt file {prompt}: {what}, but this joint model was trained on "
                                     f"{', '.join(self.parts)} only")
            if domain is not None and domain != found:
                raise TokenizerError(f"prompt file {prompt} is {found}, but --domain {domain} was asked")
            return self.with_domain(found)
        if domain is not None:
            return self.with_domain(domain)
        if self.active is not None:
            return self
        raise TokenizerError(f"a joint model over {', '.join(self.parts)}: give a prompt file or a domain "
                             "(--domain) to sample in")

    @staticmethod
    def _known_domain_of(suffix: str) -> str | None:
        for name in DOMAINS:
            if suffix in domain_class(name).extensions:
                return name
        return None

    def part_range(self, domain: str) -> tuple[int, int]:
        start = self.offsets[domain]
        return start, start + self.parts[domain].vocab_size

    def domain_of_ids(self, tokens: np.ndarray) -> str:
        """The domain ids belong to: the view's, else the first marker's, else the first part id's."""
        if self.active is not None:
            return self.active
        flat = np.asarray(tokens, dtype=np.int64).reshape(-1)
        by_marker = {i: name for name, i in self.markers.items()}
        for value in flat.tolist():
            if value in by_marker:
                return by_marker[value]
            for name in self.parts:
                low, high = self.part_range(name)
                if low <= value < high:
                    return name
        raise TokenizerError("these ids hold no marker and no domain's id: cannot tell their domain")

    def to_joint(self, domain: str, tokens: np.ndarray) -> np.ndarray:
        """A part's document ids as joint ids, opened with the domain's marker."""
        body = np.asarray(tokens, dtype=np.int64).reshape(-1) + self.offsets[domain]
        return np.concatenate([[self.markers[domain]], body]).astype(np.int64)

    def to_part(self, domain: str, tokens: np.ndarray) -> np.ndarray:
        """Joint ids back to the part's: markers dropped, joint pad/bos/eos as the part's own;
        an id of another domain is a TokenizerError naming it."""
        part = self.parts[domain]
        flat = np.asarray(tokens, dtype=np.int64).reshape(-1)
        flat = flat[~np.isin(flat, [*self.markers.values(), *self.task_markers.values()])]
        out = flat - self.offsets[domain]
        for name, joint_id in self._joint.items():
            out[flat == joint_id] = part.special_ids[name]
        low, high = self.part_range(domain)
        foreign = ~((flat >= low) & (flat < high)) & ~np.isin(flat, list(self._joint.values()))
        if foreign.any():
            raise TokenizerError(f"id {int(flat[foreign][0])} is not a {domain} id (the {domain} part holds "
                                 f"{low}..{high - 1})")
        return out

    # ------------------------------------------------------------------ building
    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> CompositeTokenizer:
        raise TokenizerError("a joint tokenizer is made from prepared folders (a recipe's data.mixture), "
                             "not from tokenizer settings")

    def encode_document(self, doc: Document) -> Encoded:
        domain = self.active
        if domain is None and doc.path is not None:
            domain = self.domain_of_suffix(Path(doc.path).suffix.lower())
        if domain is None:
            raise TokenizerError(f"{doc.describe()}: no part of this joint tokenizer ({', '.join(self.parts)}) "
                                 "reads it")
        encoded = self.parts[domain].encode_document(doc)
        return Encoded(self.to_joint(domain, encoded.tokens), dict(encoded.meta))

    def decode(self, tokens: np.ndarray, out_path: str | Path, context: dict[str, Any] | None = None) -> Path:
        domain = self.domain_of_ids(tokens)
        return self.parts[domain].decode(self.to_part(domain, tokens), out_path, context)

    def prompt_context(self, path: str | Path) -> dict[str, Any]:
        domain = self.active or self.domain_of_suffix(Path(path).suffix.lower())
        return self.parts[domain].prompt_context(path) if domain else {}

    def seconds_of(self, tokens: np.ndarray, context: dict[str, Any] | None = None) -> float | None:
        domain = self.domain_of_ids(tokens)
        return self.parts[domain].seconds_of(self.to_part(domain, tokens), context)

    # ------------------------------------------------------------------ generation
    def _view_part(self, what: str) -> tuple[str, Tokenizer]:
        if self.active is None:
            raise TokenizerError(f"{what} of a joint model depends on the domain: ask its with_domain() view")
        return self.active, self.parts[self.active]

    def steps_for_seconds(self, seconds: float, train_rate: TrainRate) -> tuple[int, dict[str, Any]]:
        """The part's answer; a data-dependent rate is the part's own train split's (recorded when
        the mixture was built), not the mixture's, which sums other domains' tokens."""
        name, part = self._view_part("seconds")
        rate = self.rates.get(name)

        def own_rate() -> tuple[float, str]:
            if not rate:
                raise TokenizerError(f"no train tokens per second recorded for the {name} part; give tokens")
            return float(rate), f"the {name} part's train split (recorded in the joint tokenizer)"

        return part.steps_for_seconds(seconds, own_rate)

    def prompt_steps(self, tokens: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """The prompt with its marker in front; no prompt: the marker alone, so the model samples
        in the view's domain from its first position."""
        name, _ = self._view_part("a prompt")
        if tokens is None:
            return np.array([self.markers[name]], dtype=np.int64), None
        return np.asarray(tokens, dtype=np.int64).reshape(-1), None

    def banned_ids(self, stop_at_eos: bool) -> tuple[int, ...]:
        """Every id outside the view's part, every marker, the joint pad and bos, the part's own
        banned ids (moved), and the joint EOS unless the part may stop there."""
        name, part = self._view_part("banned ids")
        low, high = self.part_range(name)
        ids = set(range(0, low)) | set(range(high, self._vocab))
        ids |= {i + low for i in part.banned_ids(stop_at_eos)}
        ids.add(part.eos_id + low)  # the joint EOS ends documents in the joint stream
        ids.discard(self.eos_id)
        if not part.stop_ids(stop_at_eos) or part.eos_id in part.banned_ids(stop_at_eos):
            ids.add(self.eos_id)
        return tuple(sorted(ids))

    def stop_ids(self, stop_at_eos: bool) -> tuple[int, ...]:
        _, part = self._view_part("stop ids")
        return (self.eos_id,) if part.stop_ids(stop_at_eos) else ()

    # ------------------------------------------------------------------ loss
    def ignored_ids(self) -> list[int]:
        """Padding always; a view also leaves out every marker (the part's single-domain model
        has no such target, so a domain's loss counts the same targets either way)."""
        ignored = {self._joint["pad"]}
        if self.active is not None:
            ignored |= set(self.markers.values()) | set(self.task_markers.values())
            own = self.parts[self.active]
            ignored |= {i + self.offsets[self.active] for i in own.ignored_ids() if i != own.pad_id}
        return sorted(ignored)

    def _part_groups(self, name: str) -> dict[str, np.ndarray]:
        part, offset = self.parts[name], self.offsets[name]
        groups = part.loss_groups()
        families = {}
        for family, ids in groups.families.items():
            ids = np.asarray(ids, dtype=np.int64)
            moved = ids + offset
            if part.eos_id in ids.tolist():  # the joint EOS closes the part's documents
                moved = np.concatenate([moved, [self.eos_id]])
            families[family] = moved
        return families

    def loss_groups(self) -> LossGroups:
        if self.active is not None:
            kind = self.parts[self.active].loss_groups().kind
            return LossGroups(kind, self._part_groups(self.active))
        families: dict[str, np.ndarray] = {}
        for name in self.parts:
            families.update({f"{name}/{family}": ids for family, ids in self._part_groups(name).items()})
        families["joint/special"] = np.array(sorted(self.special_ids.values()), dtype=np.int64)
        return LossGroups("family", families)

    def token_labels(self, ids: Sequence[int]) -> list[str]:
        special = {v: f"<{k}>" for k, v in self.special_ids.items()}
        labels = []
        for i in (int(v) for v in ids):
            if i in special:
                labels.append(special[i])
                continue
            for name, part in self.parts.items():
                low, high = self.part_range(name)
                if low <= i < high:
                    label = part.token_labels([i - low])[0]
                    labels.append(label if name == self.active else f"{name}:{label}")
                    break
            else:
                labels.append(str(i))
        return labels

    # ------------------------------------------------------------------ artifacts
    def artifact_seconds(self, path: str | Path) -> float | None:
        domain = self.active or self.domain_of_suffix(Path(path).suffix.lower())
        return self.parts[domain].artifact_seconds(path) if domain else None

    def render(self, artifact: str | Path, wav_path: str | Path, soundfont: str | Path | None = None) -> Path | None:
        domain = self.active or self.domain_of_suffix(Path(artifact).suffix.lower())
        return self.parts[domain].render(artifact, wav_path, soundfont) if domain else None

    @classmethod
    def read_artifact(cls, path: str | Path) -> Any:
        """A written artifact as its domain's object (the file's suffix says which domain wrote it)."""
        found = cls.class_for_artifact(path)
        return found.read_artifact(path) if found is not None else Path(path).read_bytes()

    @classmethod
    def class_for_artifact(cls, artifact: str | Path) -> type[Tokenizer] | None:
        """The domain class whose artifacts end like ``artifact`` (a written file says its domain)."""
        suffix = Path(artifact).suffix.lower()
        for name in DOMAINS:
            if suffix in domain_class(name).artifact_suffixes:
                return domain_class(name)
        return None

    @classmethod
    def excerpt(cls, artifact: str | Path, chars: int = 600) -> str | None:
        found = cls.class_for_artifact(artifact)
        return found.excerpt(artifact, chars) if found else None

    @classmethod
    def picture(cls, artifact: str | Path, out_png: str | Path, prompt_seconds: float | None = None,
                title: str = "") -> Path | None:
        found = cls.class_for_artifact(artifact)
        return found.picture(artifact, out_png, prompt_seconds, title) if found else None

    @classmethod
    def text_parts(cls, artifact: str | Path, prompt: str | Path | None = None,
                   chars: int = 4000) -> tuple[str, str] | None:
        found = cls.class_for_artifact(artifact)
        return found.text_parts(artifact, prompt, chars) if found else None

    def describe(self) -> dict[str, Any]:
        joint = {"joint_domains": list(self.parts), "joint_fingerprint": self.fingerprint(),
                 "joint_vocab_size": self._vocab, **({"joint_tasks": list(self.tasks)} if self.tasks else {})}
        if self.active is None:
            return joint
        return {**self.parts[self.active].describe(), **joint, "marker_id": self.markers[self.active],
                "id_offset": self.offsets[self.active]}

    # ------------------------------------------------------------------ saving
    def config(self) -> dict[str, Any]:
        body: dict[str, Any] = {"parts": [{"domain": name, "fingerprint": part.fingerprint(),
                                           "vocab_size": part.vocab_size, "offset": self.offsets[name]}
                                          for name, part in self.parts.items()]}
        if self.tasks:  # only paired vocabularies carry tasks (a mixture's fingerprint stays as it was)
            body["tasks"] = list(self.tasks)
        return body

    def fingerprint(self) -> str:
        """Of the mapping alone: the parts' fingerprints in order (a view shares it)."""
        payload = json.dumps({"domain": DOMAIN, "config": self.config()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def save(self, folder: str | Path) -> Path:
        """``tokenizer.json`` (domain ``joint``, the parts with their fingerprints and offsets, the
        parts' train rates) and each part's own saved folder under ``parts/<domain>``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, part in self.parts.items():
            part.save(folder / PARTS_FOLDER / name)
        body = {"domain": DOMAIN, "fingerprint": self.fingerprint(), "vocab_size": self._vocab, "n_streams": 1,
                "special_ids": {k: v for k, v in self.special_ids.items() if k != "empty"},
                "config": self.config(), "rates": self.rates, "active": self.active}
        return write_json(folder / CONFIG_FILE, body)

    @classmethod
    def from_saved(cls, folder: Path, body: dict[str, Any]) -> CompositeTokenizer:
        parts: dict[str, Tokenizer] = {}
        for entry in (body.get("config") or {}).get("parts") or []:
            name = str(entry.get("domain"))
            if not name.isidentifier():
                raise TokenizerError(f"{folder / CONFIG_FILE}: part name {name!r} is not a plain domain name")
            part = load_domain_tokenizer(folder / PARTS_FOLDER / name)
            if part.fingerprint() != entry.get("fingerprint"):
                raise FingerprintMismatch(f"{folder / PARTS_FOLDER / name}: gives fingerprint {part.fingerprint()}, "
                                          f"but the joint tokenizer was made with {entry.get('fingerprint')}")
            parts[name] = part
        rates = {str(k): float(v) for k, v in (body.get("rates") or {}).items() if v}
        tasks = [str(t) for t in (body.get("config") or {}).get("tasks") or []]
        return cls(parts, body.get("active"), rates, tasks)
