"""``shortcutlm train``: one recipe variant on prepared shards, into a self-describing checkpoint folder.

Resuming is the default: when the output folder holds ``trainer/last.ckpt`` the run goes on
from it (weights, optimiser, schedule, RNG and data position), so an interrupted run ends
where an uninterrupted one would. Ctrl-C saves that state before exiting.
"""
from __future__ import annotations

import argparse
import csv
import logging
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from shortcutlm.run import finetune

from shortcutlm.run import checks as run_checks
from shortcutlm.artifacts.checkpoint import (LOGS, TENSORBOARD, CheckpointData, CheckpointFolder, check_trainer_state,
                                             save_folder)
from shortcutlm.artifacts.files import disk_full, is_no_space
from shortcutlm.artifacts.hparams import TrainingRecord
from shortcutlm.artifacts.lock import first_process, folder_lock
from shortcutlm.artifacts.manifest import MANIFEST, ShardManifest
from shortcutlm.artifacts.remote import shard_folder
from shortcutlm.core.allocator import keep_freed_memory
from shortcutlm.core.cleanup import removed_if_failed
from shortcutlm.compat import lightning_loops
from shortcutlm.core.config_schema import ConfigError
from shortcutlm.datasets.batches import eval_batches, train_batches
from shortcutlm.core.devices import accelerator_device
from shortcutlm.models.lightning import LitGPT
from shortcutlm.core.peak import machine_peak_flops, precision_dtype
from shortcutlm.core.quiet import quiet_training_output
from shortcutlm.run.recipe import Recipe, TrainSettings, load_recipe
from shortcutlm.core.stopping import Interrupted, StopRequest

log = logging.getLogger(__name__)


def measured_peak(settings: TrainSettings, accelerator: str) -> float:
    """The matmul peak of the training device in the training precision (the MFU denominator),
    measured and cached per machine by :mod:`shortcutlm.core.peak`."""
    if settings.peak_flops:
        return settings.peak_flops
    return machine_peak_flops(accelerator_device(accelerator), precision_dtype(settings.precision))


class FromPosition:
    """An iterable that starts every iteration at the same data position.

    Lightning may call ``iter`` more than once on a resumed run (after prefetching a batch);
    a loader that advanced its own position would then skip batches.
    """

    def __init__(self, make: Callable[[], Iterable]) -> None:
        self.make = make

    def __iter__(self) -> Iterator:
        return iter(self.make())


class ShardData(L.LightningDataModule):
    """Training windows split by rank, resumed at the checkpoint's data position; exact validation."""

    def __init__(self, data_dir: Path, block_size: int, settings: TrainSettings, lit: LitGPT,
                 has_valid: bool) -> None:
        super().__init__()
        self.data_dir, self.block, self.settings = data_dir, block_size, settings
        self.lit, self.has_valid = lit, has_valid

    def train_dataloader(self) -> Any:
        s, t = self.settings, self.trainer
        assert t is not None  # Lightning attaches the trainer before it asks for data
        start = {"batches": self.lit.data_batches_done}
        return FromPosition(lambda: train_batches(self.data_dir, self.block, s.batch_size, s.seed, rank=t.global_rank,
                                                  world_size=t.world_size, num_workers=s.num_workers, state=start))

    def val_dataloader(self) -> Any:
        if not self.has_valid:
            return []
        t = self.trainer
        assert t is not None
        return eval_batches(self.data_dir, "valid", self.block, self.settings.batch_size, t.global_rank, t.world_size)


class StepBoundaryStop(Exception):
    """Raised inside the fit loop once the state is saved, to leave it without another step."""

    def __init__(self, step: int, interrupted: bool) -> None:
        super().__init__(f"stop at step {step}")
        self.step, self.interrupted = step, interrupted


class FolderWriter(L.Callback):
    """Keeps the checkpoint folder current and decides, at each optimiser-step boundary, whether to
    save (every ``every_steps`` steps, or ``every_minutes`` since the last save) and whether to stop
    (Ctrl-C, or ``stop_after``).

    Every mid-run save happens at one point, the start of a step's first micro-batch: the previous
    step, its logging and any validation after it are complete, nothing of the next step has run,
    and the data position is a whole number of steps. A run resumed from there is the run that
    would have happened. Ranks agree on the decision through one all-reduce, so they save and
    stop at the same step even when Ctrl-C or the clock reach them at different moments.
    """

    def __init__(self, out: Path, recipe: dict[str, Any], shards: ShardManifest,
                 settings: TrainSettings, csv_dir: Path, stop: StopRequest, stop_after: int | None,
                 origin: dict[str, Any] | None = None) -> None:
        self.out, self.recipe, self.shards, self.origin = out, recipe, shards, origin
        self.folder = CheckpointFolder(out)
        self.every_steps, self.every_seconds = settings.ckpt_every, settings.ckpt_minutes * 60
        self.max_steps, self.csv_dir, self.stop, self.stop_after = settings.max_steps, csv_dir, stop, stop_after
        self.saved_step, self.saved_at = -1, time.monotonic()

    def write(self, trainer: L.Trainer, lit: LitGPT) -> None:
        """The checkpoint folder first, then the trainer state: once a trainer state exists, the folder
        holds the weights and description of its step (or of a later one, if a kill came in between)."""
        try:
            for logger in trainer.loggers:  # rows logged so far reach the merged curve with this save
                logger.save()
            if trainer.is_global_zero:
                self._write_folder(trainer, lit)
            trainer.save_checkpoint(self.folder.trainer_state_path)  # Lightning writes it through a temporary file
        except (OSError, RuntimeError) as err:
            if is_no_space(err):
                raise disk_full(self.out, f"the checkpoint of step {trainer.global_step}") from err
            raise
        self.saved_step, self.saved_at = trainer.global_step, time.monotonic()

    def _write_folder(self, trainer: L.Trainer, lit: LitGPT) -> None:
        step = trainer.global_step
        hparams = TrainingRecord(train=lit.settings, step=step, finished=step >= self.max_steps,
                                 parameters=lit.model.num_params(), flops_per_token=lit.flops_per_token,
                                 peak_flops=lit.peak_flops, world_size=trainer.world_size,
                                 tokens_seen=step * lit.settings["accumulate"] * lit.settings["batch_size"]
                                 * trainer.world_size * lit.config.block_size,
                                 init_from=self.origin)  # where the weights started (train --init-from)
        save_folder(self.out, lit.model, self.recipe, hparams, self.shards.tokenizer_dir,
                    CheckpointData.from_manifest(self.shards))
        merged = merge_metrics(self.folder.sitting_logs())
        if merged is not None:
            self.folder.write_metrics(*merged)

    def on_train_start(self, trainer: L.Trainer, lit: Any) -> None:
        self.saved_step, self.saved_at = trainer.global_step, time.monotonic()

    def on_save_checkpoint(self, trainer: L.Trainer, lit: Any, checkpoint: dict[str, Any]) -> None:
        # Lightning's restart logic expects saves at the end of a batch. Ours come after the next
        # batch was fetched but before it ran; the loader fetches it again on resume. Lightning
        # forgets that fetch in its per-epoch counter on restart, but not in the total one that
        # times validation: forget it there too, or validation runs one micro-batch early.
        if trainer.global_step < self.max_steps:
            lightning_loops.forget_prefetched_batch(checkpoint)

    def _decide(self, trainer: L.Trainer) -> tuple[bool, bool, bool]:
        """(save, stop on request, stop at ``stop_after``), the same on every rank."""
        step = trainer.global_step
        due = bool(self.every_steps and step % self.every_steps == 0) or bool(
            self.every_seconds and time.monotonic() - self.saved_at >= self.every_seconds)
        flags = torch.tensor([self.stop.requested, due and trainer.is_global_zero,
                              bool(self.stop_after and step >= self.stop_after)], dtype=torch.int32)
        if trainer.world_size > 1:
            flags = flags.to(trainer.strategy.root_device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        requested, due, end = (bool(v) for v in flags.tolist())
        return requested or due or end, requested, end

    def on_train_batch_start(self, trainer: L.Trainer, lit: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx % lit.settings["accumulate"]:
            return  # inside a step
        # Lightning's logging cadence counts optimiser steps; its restart logic can leave the
        # count one ahead after a save made here, so state the invariant at every step boundary.
        lightning_loops.set_batches_that_stepped(trainer, trainer.global_step)
        if trainer.global_step == self.saved_step:
            return  # the step this sitting started from, or the one just saved
        save, requested, end = self._decide(trainer)
        if save:
            self.write(trainer, lit)
        if requested or end:
            raise StepBoundaryStop(trainer.global_step, interrupted=requested)

    def on_train_end(self, trainer: L.Trainer, lit: Any) -> None:
        self.write(trainer, lit)

    def on_exception(self, trainer: L.Trainer, lit: Any, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            # A second Ctrl-C lands mid-step, where state does not resume exactly: keep the last save.
            log.warning("stopped at once at step %d; %s keeps the state saved at step %d",
                        trainer.global_step, self.out, max(self.saved_step, 0))


def merge_metrics(parts: list[Path]) -> tuple[list[str], list[dict[str, str]]] | None:
    """One curve from the CSV logs of every sitting of a resumed run: ``(columns, rows)``, or None
    before the first row.

    A later sitting restarts from a checkpoint, so rows that an earlier sitting logged at or
    past that sitting's first ``opt_step`` were redone and are dropped. (A training row's
    ``opt_step`` is the step it takes; a validation row's is the steps completed before it.)
    """
    sittings = []
    for part in sorted(parts, key=lambda p: int(p.parent.name.split("_")[-1])):
        with part.open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("opt_step")]
        if rows:
            sittings.append(rows)
    merged: list[dict[str, str]] = []
    for rows in sittings:
        start = min(float(r["opt_step"]) for r in rows)
        merged = [r for r in merged if float(r["opt_step"]) < start
                  or (r.get("val/loss") and float(r["opt_step"]) == start)] + rows
    if not merged:
        return None
    columns = ["opt_step"] + sorted({k for r in merged for k in r if k not in ("opt_step", "step", "epoch")})
    return columns, merged


# Settings that change what a run computes; the others (logging, devices, ...) may differ on resume.
RESULT_SETTINGS = ("batch_size", "accumulate", "lr", "min_lr", "warmup_steps", "weight_decay", "beta1", "beta2",
                   "grad_clip", "precision", "seed", "max_steps")


def check_same_run(out: Path, config: dict[str, Any], settings: TrainSettings) -> None:
    """Refuse to resume or keep a checkpoint that another model or schedule produced."""
    folder = CheckpointFolder(out)
    if not folder.has_model_config:
        return
    saved_config = folder.model_config()
    saved_train = folder.train_settings()
    now_train = asdict(settings)
    diffs = [f"model.{k}: {saved_config.get(k)!r} -> {v!r}" for k, v in config.items() if saved_config.get(k) != v]
    diffs += [f"train.{k}: {saved_train.get(k)!r} -> {now_train[k]!r}" for k in RESULT_SETTINGS
              if saved_train.get(k) != now_train[k]]
    if diffs:
        raise ConfigError(f"{out} holds a run with other settings ({'; '.join(diffs)}); "
                         "use another output folder, or --fresh to start over")


def check_same_data(out: Path, shards: ShardManifest) -> None:
    """Refuse to resume on shards made with another tokenizer: the same vocabulary size would let
    training go on, on ids that mean something else."""
    folder = CheckpointFolder(out)
    if not folder.data_path.is_file():
        return
    trained = folder.data()
    if trained.fingerprint and trained.fingerprint != shards.fingerprint:
        raise ConfigError(f"{out} holds a run trained on shards of tokenizer fingerprint {trained.fingerprint} "
                          f"({trained.shard_dir}), but --data {shards.folder} was made with tokenizer fingerprint "
                          f"{shards.fingerprint}: its ids mean other things. Resume with the run's own shards, "
                          "or use another output folder (or --fresh to start over)")


def start_over_if_partial(out: Path) -> None:
    """A folder with a run's traces but no trainer state cannot resume: say so loudly, then clear
    the traces so the new run's curves do not merge with the lost one's."""
    folder = CheckpointFolder(out)
    traces = folder.run_traces()
    if not traces or folder.has_trainer_state:
        return
    missing = folder.trainer_state_path.relative_to(out)
    print(f"WARNING: {out} holds a partial run without trainer state ({missing} is missing: it "
          "stopped before its first save); starting again from step 0", file=sys.stderr, flush=True)
    for path in traces:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def train(recipe: Recipe, variant: str, data_dir: str | Path, out: str | Path, progress: bool = True,
          stop_after: int | None = None, fresh: bool = False,
          callbacks: list[L.Callback] | None = None, init_from: str | Path | None = None) -> Path:
    """Train ``variant`` of ``recipe`` on the shards in ``data_dir``; return the checkpoint folder.

    ``stop_after`` ends the run early at that step (the schedule still spans ``max_steps``), so
    a long run can be split over sittings; ``fresh`` discards an existing checkpoint. Ctrl-C saves
    at the next step boundary and raises :class:`Interrupted`; running again resumes exactly.
    ``init_from``: start from that checkpoint folder's weights (fine-tuning, see :mod:`shortcutlm.run.finetune`).
    """
    quiet_training_output()
    data_dir, out = shard_folder(data_dir), Path(out)  # a URL opens as a local view of the served folder
    # a joint model: its parts prepared and mixed into data_dir (by the first process)
    if recipe.mixture and getattr(rank_zero_only, "rank", 0) == 0:
        from shortcutlm.run.joint import ensure_mixture

        ensure_mixture(recipe, data_dir, progress=progress)
    if recipe.pairs and getattr(rank_zero_only, "rank", 0) == 0:  # paired documents (shortcutlm.pairs)
        from shortcutlm.pairs.run import ensure_pairs

        ensure_pairs(recipe, data_dir, progress=progress)
    s = recipe.train
    shards = ShardManifest.read(data_dir)
    source = finetune.check_tokenizer(init_from, shards) if init_from is not None else None
    if source is None:  # a fine-tune's shards hold the checkpoint's tokenizer's ids (same fingerprint)
        run_checks.check_tokenizer_matches(recipe, shards)
    config = recipe.model_config(variant, shards.vocab_size, shards.tokenizer.n_streams)
    start = finetune.starting_point(source, config) if source is not None else None
    if start is not None:
        s = finetune.finetune_settings(s)
    finetune.check_freeze(s.freeze, config.n_layer)
    run_checks.check_block_fits(recipe, variant, config.block_size, shards)
    run_checks.check_strategy(s.accelerator, s.strategy, torch.cuda.is_available())
    # Only once the new run is known to be valid does it touch the folder; one run at a time writes there
    # (the processes of one run, on every node, are one run: the first holds the lock for them).
    lock = folder_lock(out, "train") if first_process() else nullcontext()
    with removed_if_failed(out, lambda top: CheckpointFolder(out).has_trainer_state), lock:  # keep resumable state
        if fresh:
            removed = CheckpointFolder(out).clear_run()
            if removed:
                log.info("%s: --fresh removed the earlier run's %s", out, ", ".join(p.name for p in removed))
        finetune.check_origin(out, start, s.freeze)
        check_same_run(out, config.to_dict(), s)
        check_same_data(out, shards)
        if CheckpointFolder(out).is_finished(s.max_steps):
            log.info("%s: already trained to step %d; keeping it", out, s.max_steps)
            return out
        start_over_if_partial(out)
        return _fit(recipe, variant, data_dir, out, s, config, shards, progress, stop_after, callbacks, start)


def _fit(recipe: Recipe, variant: str, data_dir: Path, out: Path, s: TrainSettings, config: Any,
         shards: ShardManifest, progress: bool, stop_after: int | None,
         callbacks: list[L.Callback] | None, start: finetune.StartingPoint | None = None) -> Path:
    """Build the Lightning trainer for a checked run and fit (or resume) it."""
    keep_freed_memory()  # each step's activations reuse the last step's pages (core.allocator)
    peak = measured_peak(s, s.accelerator)  # before seeding: a measurement must not move the model's init
    L.seed_everything(s.seed, workers=True, verbose=False)
    spans = None
    if s.target_only:
        from shortcutlm.pairs.sequences import target_spans

        spans = target_spans(shards.special_ids)
    lit = LitGPT(config, asdict(s), shards.ignored_ids, peak, spans)
    if start is not None:  # its weights; the optimiser and step start afresh (a resume restores its own)
        lit.model.load_state_dict(start.weights)
    frozen = finetune.freeze(lit.model, s.freeze, config.n_layer)
    if frozen:
        log.info("%s: %d parameter tensors frozen (train.freeze %s)", out, len(frozen), s.freeze)
    out.mkdir(parents=True, exist_ok=True)
    sitting = CheckpointFolder(out).sittings  # each resumed sitting logs apart
    csv_logger = CSVLogger(out, name=LOGS, version=sitting)
    loggers = [csv_logger, TensorBoardLogger(out, name=TENSORBOARD, version=sitting)]
    has_valid = shards.has_split("valid")
    record = {**recipe.to_dict(), "variant": variant}
    with StopRequest() as stop:
        writer = FolderWriter(out, record, shards, s, Path(csv_logger.log_dir), stop,
                              stop_after if stop_after and stop_after < s.max_steps else None,
                              start.record() if start is not None else None)
        trainer = L.Trainer(
            max_steps=s.max_steps, max_epochs=-1,
            accelerator=s.accelerator, devices=s.devices, num_nodes=s.num_nodes, strategy=s.strategy,
            precision=cast(Any, s.precision), accumulate_grad_batches=s.accumulate,
            gradient_clip_val=s.grad_clip or None, val_check_interval=s.val_every * s.accumulate,
            check_val_every_n_epoch=None, limit_val_batches=s.val_batches if has_valid else 0,
            num_sanity_val_steps=0, log_every_n_steps=s.log_every, logger=loggers,
            callbacks=[writer, *(callbacks or [])],
            enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=progress,
            use_distributed_sampler=False, default_root_dir=out)
        last = CheckpointFolder(out).trainer_state_path
        if last.is_file():
            check_trainer_state(last)
        try:
            trainer.fit(lit, datamodule=ShardData(data_dir, config.block_size, s, lit, has_valid),
                        ckpt_path=last if last.is_file() else None, weights_only=True)
        except StepBoundaryStop as stopped:
            if stopped.interrupted:
                raise Interrupted(out, stopped.step, trainer.is_global_zero) from None
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML")
    parser.add_argument("--data", required=True,
                        help=f"prepared shard folder (with {MANIFEST}), or its URL: http(s)://…, s3://… (fsspec), "
                             "pipe:CMD with {name}; for a recipe with a mixture, the mixture folder (made when absent)")
    parser.add_argument("--out", required=True, help="checkpoint folder to write (resumed when it exists)")
    parser.add_argument("--variant", help="which of the recipe's variants (default: the first)")
    parser.add_argument("--preset", help="a preset of the recipe, e.g. tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set train.lr=3e-4 (repeatable)")
    parser.add_argument("--stop-after", type=int, help="stop at this step (resume later to finish)")
    parser.add_argument("--fresh", action="store_true",
                        help="discard an earlier run in --out: removes only the files a run writes there, and "
                             "refuses a folder that holds anything else")
    parser.add_argument("--init-from", metavar="CKPT",
                        help="fine-tune: start from this checkpoint folder's weights (not its optimiser or step); "
                             "--data must be prepared with its tokenizer (prepare --tokenizer-from CKPT)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.preset, args.overrides)
    variant = args.variant or next(iter(recipe.variants))
    out = train(recipe, variant, args.data, args.out, progress=not args.no_progress,
                stop_after=args.stop_after, fresh=args.fresh, init_from=args.init_from)
    if getattr(rank_zero_only, "rank", 0) == 0:  # under DDP every process returns here; one line is enough
        print(f"checkpoint: {out}")
    return 0
