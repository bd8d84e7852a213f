"""The tokenizer of a prepare: fitted on the train split (in worker processes when it fits on
per-file samples), saved to ``<out>/tokenizer/``, or reused from there on resume and by the jobs of
a prepare across machines, once its fingerprint is the one the shards were made with."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

from shortcutlm.artifacts.manifest import TOKENIZER_FOLDER, manifest_path
from shortcutlm.datasets import prepare_common
from shortcutlm.datasets.encode import rejection_reason, sample_task, setup_worker, worker_threads
from shortcutlm.datasets.isolation import Crashed, IsolatedPool
from shortcutlm.datasets.prepare_common import PrepareError
from shortcutlm.datasets.sources import Rejected
from shortcutlm.documents import Document
from shortcutlm.core.heartbeat import Heartbeat
from shortcutlm.tokenizers import Tokenizer, load_tokenizer, tokenizer_class


def _training_samples(tokenizer: Tokenizer, train: list[Document], pool: IsolatedPool, settings: dict[str, Any],
                      timeout_s: float | None) -> tuple[list[Any], dict[str, Rejected]]:
    """Each train document read in a worker (in order, up to the tokenizer's limit): samples and rejections."""
    pool.setup(setup_worker, tokenizer.domain, settings, None, worker_threads(pool.workers))
    samples: list[Any] = []
    rejected: dict[str, Rejected] = {}
    limit = tokenizer.max_training_documents
    stream = pool.imap(sample_task, train, timeout_s)
    try:
        for doc, answer in stream:
            ok, value = (False, answer.reason()) if isinstance(answer, Crashed) else answer
            if ok:
                samples.append(value)
                if limit is not None and len(samples) >= limit:
                    break
            else:
                rejected[doc.doc_id] = Rejected(doc.describe(), rejection_reason(doc, value), doc.split, doc.doc_id)
    finally:
        stream.close()
    return samples, rejected


def train_tokenizer(tokenizer: Tokenizer, docs: list[Document], pool: IsolatedPool, settings: dict[str, Any],
           timeout_s: float | None, progress: bool) -> dict[str, Rejected]:
    """Fit the tokenizer on the train split; returns the train documents rejected while reading them."""
    train = [d for d in docs if d.split == "train"]
    if not train:
        given = ", ".join(f"{n} {split}" for split, n in Counter(d.split for d in docs).items()) or "none"
        raise PrepareError(f"the {tokenizer.domain} tokenizer needs training but the source has no train documents "
                           f"(it gave {given}); give it a train split too")
    if progress:
        print(f"training the {tokenizer.domain} tokenizer on {len(train)} train documents …", file=sys.stderr)
    if not tokenizer.trains_on_samples:  # text: read in this process by Python code, no native parser
        by_id = {d.doc_id: d for d in train}
        skipped = tokenizer.train(train)
        return {k: Rejected(by_id[k].describe(), rejection_reason(by_id[k], why), "train", k)
                for k, why in skipped.items()}
    samples, rejected = _training_samples(tokenizer, train, pool, settings, timeout_s)
    if not samples:
        example = next(iter(rejected.values()))
        raise PrepareError(f"the {tokenizer.domain} tokenizer needs training but none of the {len(train)} train "
                         f"documents could be read (e.g. {example.input}: {example.reason})")
    tokenizer.fit(samples)
    return rejected


#: The tokenizer spec key of ``--tokenizer-from``: encode with a saved tokenizer (a checkpoint's), no training.
TOKENIZER_FROM = "from"


def saved_tokenizer_folder(path: str | Path) -> Path:
    """The saved tokenizer ``--tokenizer-from PATH`` names: PATH itself, or the ``tokenizer/`` folder of a
    checkpoint or shard folder at PATH."""
    path = Path(path).expanduser()
    for folder in (path, path / TOKENIZER_FOLDER):
        if (folder / "tokenizer.json").is_file():
            return folder
    raise PrepareError(f"--tokenizer-from {path}: no saved tokenizer there (no tokenizer.json in it or in its "
                       f"{TOKENIZER_FOLDER}/); give a checkpoint folder, a prepared shard folder or a tokenizer folder")


def tokenizer_from(path: str | Path) -> dict[str, Any]:
    """The tokenizer spec of ``prepare --tokenizer-from PATH``: the saved tokenizer's domain and where it is."""
    folder = saved_tokenizer_folder(path)
    return {"domain": saved_tokenizer(folder, None).domain, TOKENIZER_FROM: str(folder.resolve())}


def saved_tokenizer(path: str | Path, domain: str | None) -> Tokenizer:
    """The tokenizer saved at ``path`` (a checkpoint's, a shard folder's), refused when of another domain."""
    folder = saved_tokenizer_folder(path)
    try:
        tokenizer = load_tokenizer(folder)
    except (OSError, ValueError, KeyError) as err:
        raise PrepareError(f"--tokenizer-from {folder}: unreadable saved tokenizer ({err})") from err
    if domain is not None and tokenizer.domain != domain:
        raise PrepareError(f"--tokenizer-from {folder} holds a {tokenizer.domain} tokenizer, not {domain}")
    return tokenizer


def tokenizer_for(out: Path, domain: str, settings: dict[str, Any], docs: list[Document],
                   previous: dict[str, Any] | None, pool: IsolatedPool, timeout_s: float | None,
                   progress: bool) -> tuple[Tokenizer, dict[str, Rejected]]:
    """Reuse the saved tokenizer on resume (checking its fingerprint), else build, train and save one.
    Also returns the train documents that could not be read while training (they are rejected)."""
    folder = out / TOKENIZER_FOLDER
    if previous is not None and (folder / "tokenizer.json").is_file():
        tokenizer = load_tokenizer(folder)
        tokenizer.check_fingerprint(previous["tokenizer"]["fingerprint"], f"the partial shards in {out}")
        if tokenizer.domain != domain:
            raise PrepareError(f"{folder} holds a {tokenizer.domain} tokenizer, not {domain}")
        return tokenizer, {}
    if TOKENIZER_FROM in settings:  # prepare --tokenizer-from: a saved tokenizer, used as it is (no training)
        tokenizer = saved_tokenizer(settings[TOKENIZER_FROM], domain)
    else:
        tokenizer = tokenizer_class(domain).from_settings(dict(settings))
    rejected: dict[str, Rejected] = {}
    # A saved tokenizer is used as it is, even one that still reports it could learn more (a MIDI
    # vocabulary whose BPE target is below its base vocabulary never trains): training it again would
    # change the ids its checkpoint was trained on.
    if tokenizer.needs_training and TOKENIZER_FROM not in settings:
        # a fit is silent for minutes on a large train split: a line every minute (every few with the
        # bars off, as in a batch log) says it goes on
        every_s = 60.0 if progress else prepare_common.PLAIN_EVERY_S
        with Heartbeat(f"training the {domain} tokenizer", every_s=every_s, closing_line=progress):
            rejected = train_tokenizer(tokenizer, docs, pool, settings, timeout_s, progress)
    if previous is not None and previous.get("shards"):
        # The saved tokenizer is gone but shards exist: only an identical mapping may add to them.
        tokenizer.check_fingerprint(previous["tokenizer"]["fingerprint"], f"the partial shards in {out}")
    tokenizer.save(folder)
    return tokenizer, rejected


def job_tokenizer(out: Path, domain: str, plan: dict[str, Any]) -> Tokenizer:
    """The tokenizer the tokenizer step saved, once its fingerprint is the plan's."""
    folder = out / TOKENIZER_FOLDER
    if not (folder / "tokenizer.json").is_file():
        raise PrepareError(f"{folder}: no saved tokenizer; run `shortcutlm prepare … --tokenizer-only --out {out}` "
                           "first")
    tok = load_tokenizer(folder)
    if tok.domain != domain:
        raise PrepareError(f"{folder} holds a {tok.domain} tokenizer, not {domain}")
    tok.check_fingerprint(plan["fingerprint"], f"the tokenizer step's plan in {manifest_path(out)}")
    return tok


def tokenizer_files(folder: Path) -> list[str]:
    """The saved tokenizer's files, listed so a copy served by a web server can be fetched file by file."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.suffix != ".tmp")
