"""``shortcutlm generate CKPT --task T --prompt FILE``: the target of a source file, from a paired model.

The source file is encoded by its domain's part of the joint vocabulary, opened with its domain's
marker and closed with the task's marker; the model writes the target from there, sampling only the
target domain's ids, until the joint EOS ends it or the context is full. When the target is sound and
the source says how long it lasts (a score), exactly that many seconds are written, so a synthesis
can be laid against its reference. The artifact is the target's kind (``.wav``, ``.mid`` with its
rendering, ``.txt``) with the usual sidecar, which also records the task and the source file.

A task the checkpoint was not trained on, or a prompt of a type the task does not read, is one line.
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from shortcutlm.artifacts.checkpoint import Checkpoint, load_folder
from shortcutlm.artifacts.sidecar import SampleRecord, sidecar_path, write_sidecar
from shortcutlm.models import SamplingSettings, generate, trim_at_stop
from shortcutlm.pairs.tasks import PairError, task_named
from shortcutlm.tokenizers import Tokenizer, TokenizerError
from shortcutlm.tokenizers.paired import encode_source, prompt_for, source_seconds, target_view, tasks_of


def output_path(out: str | Path, view: Tokenizer, base: str, prompt: str | Path, render: bool,
                overwrite: bool) -> Path:
    """Where the target goes: ``out`` itself when it ends like the target's kind, else ``out/<base><ext>``;
    never the prompt, and an existing file (or its sidecar or rendering) only with ``overwrite``."""
    out = Path(out)
    path = out if out.suffix.lower() in view.artifact_suffixes else out / f"{base}{view.artifact_suffix}"
    beside = [path, sidecar_path(path)]
    if render and view.rendering_suffix:
        beside.append(path.with_suffix(view.rendering_suffix))
    if any(p.resolve() == Path(prompt).resolve() for p in beside):
        raise PairError(f"--out {path} is the prompt file {prompt}: generate never writes over its prompt")
    taken = [p for p in beside if p.exists() or p.is_symlink()]
    if taken and not overwrite:
        raise PairError(f"{taken[0]} already exists; generate replaces a file only when asked: pass --overwrite, "
                        "or give another --out")
    return path


def generate_task(checkpoint: str | Path | Checkpoint, task: str, prompt: str | Path, out: str | Path,
                  settings: SamplingSettings | None = None, max_new_tokens: int | None = None,
                  device: str = "cpu", render: bool = True, overwrite: bool = False) -> Path:
    """Write the target of ``prompt`` for ``task`` to ``out`` (a file of the target's kind, or a folder:
    ``<prompt stem>-<task>-seed<seed>.<ext>``); returns its path."""
    job = task_named(task)
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_folder(checkpoint, torch.device(device))
    joint = ckpt.tokenizer
    if task not in tasks_of(joint):
        known = ", ".join(tasks_of(joint)) or "none: it was not trained on pairs"
        raise PairError(f"checkpoint {ckpt.folder} was not trained on the task {task} (its tasks: {known})")
    try:
        source = encode_source(joint, task, job.source, prompt)
        view = target_view(joint, job.target)
    except TokenizerError as exc:
        raise PairError(str(exc)) from exc
    settings = settings or SamplingSettings()
    seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31)
    settings = SamplingSettings(settings.temperature, settings.top_k, settings.top_p, seed)
    path = output_path(out, view, f"{Path(prompt).stem}-{task}-seed{seed}", prompt, render, overwrite)

    model = ckpt.model.to(device).eval()
    block = model.config.block_size
    ids = np.concatenate([[joint.eos_id], prompt_for(joint, task, job.source, source)])
    room = block - len(ids)
    if room < 1:
        raise PairError(f"prompt file {prompt}: {len(ids)} ids with its markers, more than the model's context "
                          f"({block}); give a shorter source")
    seconds = source_seconds(joint, job.source, prompt) if view.artifact_is_sound else None
    steps = None
    if seconds:
        try:
            steps = view.steps_for_seconds(float(seconds), lambda: (0.0, ""))[0]
        except TokenizerError:
            steps = None
    banned = set(view.banned_ids(True)) - {joint.eos_id}
    stops: tuple[int, ...] = (joint.eos_id,)
    if steps is not None:  # as long as the source lasts: no early end
        banned.add(joint.eos_id)
        stops = ()
    n_new = min(max_new_tokens or steps or room, room)

    clock = time.perf_counter()
    x = torch.as_tensor(ids, dtype=torch.long, device=device)[None]
    row = generate(model, x, n_new, settings, stop_tokens=stops, banned=sorted(banned))[0].cpu()
    elapsed = time.perf_counter() - clock
    full = trim_at_stop(row, stops, start=len(ids)) if stops else row
    target = full[len(ids):].numpy()
    stopped = len(full) < len(row)
    if len(target) == 0:
        raise PairError(f"the model ended the {task} target of {prompt} before writing any of it (seed {seed}); "
                        "try another seed")
    path.parent.mkdir(parents=True, exist_ok=True)
    view.decode(target, path)
    rendering = view.render(path, path.with_suffix(view.rendering_suffix)) if render and view.rendering_suffix \
        else None
    record = SampleRecord(
        checkpoint=str(ckpt.folder), checkpoint_name=ckpt.name, domain=view.domain, prompt=str(prompt),
        prompt_tokens=int(len(ids) - 1), prompt_seconds=seconds, prompt_file_seconds=seconds, prompt_context={},
        prompt_kept_in_context=int(len(ids)), settings=asdict(settings), seed=seed, samples=1, sample_index=0,
        length={"tokens_requested": n_new, "source_seconds": seconds}, max_new_tokens=n_new,
        tokens_generated=int(len(target)), stopped_at_eos=bool(stopped),
        stop_reason="end of the target (EOS)" if stopped else "requested length",
        seconds=view.artifact_seconds(path), elapsed_s=elapsed,
        tokens_per_s=len(target) / elapsed if elapsed > 0 else None, context=block, slid_window=False,
        device=str(device), artifact=str(path),
        tokenizer={**view.describe(), "task": task, "task_source": str(prompt), "source_domain": job.source,
                   "source_tokens": int(len(source))},
        rendering=str(rendering) if rendering is not None else None)
    write_sidecar(path, record)
    return path
