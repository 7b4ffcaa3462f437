"""Checkpoints and resume (issue 27.2): a run that is stopped (a closed lid, a SIGKILL, a spent
``--max-time``) continues where it was with ``--resume RUN_DIR``.

The run folder holds ``checkpoints/step-NNNNNNN.ckpt`` (Lightning's checkpoint: the network,
the optimiser and learning-rate schedule, the loop counters, the callbacks' state such as the
best weights so far) and ``checkpoints/latest.json``, the pointer to the newest one with its
sha256 and the run's identity. A checkpoint is written under a temporary name, renamed, and
only then named by the pointer (itself replaced atomically), so a run killed at any moment
leaves the previous checkpoint intact and named. The older file is deleted after.

What the rest of a run draws at random is a function of its step, so it needs no saved state:
the data sampler reads sample positions by step (:class:`zoo.trainers.data.StepSampler`) and
the global generators are seeded from (seed, rank, step) before every step
(:class:`zoo.trainers.callbacks.StepSeed`). A resumed run therefore ends with the weights of
the uninterrupted run (bitwise on CPU: ``tests/test_resume.py``).

A resume is checked before anything is written: the folder must hold a checkpoint whose
sha256 matches the pointer and that loads as plain tensors (``torch.load(weights_only=True)``;
never unpickled), of the same architecture, data (fingerprint) and schedule; anything else
is a clear error and the folder is left as it was.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl

from zoo.errors import InputError
from zoo.hashing import sha256_file

log = logging.getLogger("zoo.trainers")

FOLDER = "checkpoints"
POINTER = "latest.json"
# what must match between a run and its resume, in the order a difference is reported
IDENTITY_ORDER = ("architecture", "architecture_params", "trainer", "parent", "data")


def local_rank() -> int:
    """This process's rank on its machine (Lightning's DDP children carry LOCAL_RANK)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


@dataclass
class RunPlan:
    """Where a run checkpoints, how often, what it is, and the checkpoint it resumes from."""

    run_dir: Path
    identity: dict
    every: int
    resume_from: Path | None = None
    resume_step: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.run_dir / FOLDER


def read_pointer(run_dir: Path) -> dict | None:
    path = Path(run_dir) / FOLDER / POINTER
    if not path.is_file():
        return None
    try:
        pointer = json.loads(path.read_text())
        if not isinstance(pointer, dict) or not {"file", "step", "sha256", "identity"} <= pointer.keys():
            raise ValueError("missing keys")
        return pointer
    except (ValueError, OSError) as e:
        raise InputError(f"{path} is damaged ({e}); the run folder cannot be resumed. Start a new run with "
                         "another --run-dir (or --overwrite)") from None


def open_run(run_dir: str | Path, identity: dict, every: int, resume: bool = False, overwrite: bool = False) -> RunPlan:
    """Check a run folder before anything is written into it, and say where the run starts.

    A new run refuses a folder that holds another run's checkpoints (resume it, or pass
    ``overwrite`` to start over, which deletes them); a resume verifies its checkpoint."""
    run_dir = Path(run_dir)
    if every < 1:
        raise InputError(f"checkpoints every {every} steps: give a positive number of steps (--checkpoint-every)")
    plan = RunPlan(run_dir, identity, int(every))
    if not resume:
        if local_rank() != 0:            # DDP children start after rank 0 has prepared the folder
            return plan
        pointer = read_pointer(run_dir) if (run_dir / FOLDER).exists() else None
        if pointer is not None and not overwrite:
            raise InputError(f"{run_dir} holds a run stopped at step {pointer['step']}: continue it with "
                             f"--resume {run_dir}, or start over with --overwrite (or another --run-dir)")
        shutil.rmtree(run_dir / FOLDER, ignore_errors=True)
        for name in ("metrics.csv", "hparams.yaml"):
            (run_dir / name).unlink(missing_ok=True)
        from .valimages import clear

        clear(run_dir)
        return plan
    if not run_dir.is_dir():
        raise InputError(f"cannot resume: {run_dir} is not a run folder (a run writes OUT.run beside its package, "
                         "or the folder given with --run-dir)")
    pointer = read_pointer(run_dir)
    if pointer is None:
        raise InputError(f"cannot resume: {run_dir} holds no checkpoint ({FOLDER}/{POINTER} is missing); a run writes "
                         "one every --checkpoint-every steps")
    check_identity(pointer["identity"], identity, run_dir)
    path = run_dir / FOLDER / Path(str(pointer["file"])).name
    if not path.is_file():
        raise InputError(f"cannot resume: the checkpoint {path} named by {FOLDER}/{POINTER} is missing")
    if sha256_file(path) != pointer["sha256"]:
        raise InputError(f"cannot resume: the checkpoint {path} is corrupted (its sha256 is not the one recorded "
                         f"when it was written). Start a new run (--overwrite, or another --run-dir)")
    load_checkpoint(path)
    plan.resume_from, plan.resume_step = path, int(pointer["step"])
    return plan


def load_checkpoint(path: Path) -> dict:
    """A checkpoint as plain tensors and containers: never unpickled (``weights_only=True``)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated zip, a foreign pickle: all say the same
        raise InputError(f"cannot resume: the checkpoint {path} cannot be read as plain tensors "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}). "
                         "Start a new run (--overwrite, or another --run-dir)") from None


def check_identity(saved: dict, now: dict, run_dir: Path) -> None:
    """Refuse a resume whose model, data or schedule differ from the run's."""
    if saved.get("architecture") != now.get("architecture"):
        raise InputError(f"cannot resume: {run_dir} is a run of the architecture '{saved.get('architecture')}', "
                         f"but this command trains '{now.get('architecture')}'. Resume it with its own blueprint, or "
                         "start a new run (another --run-dir)")
    if saved.get("data") != now.get("data"):
        raise InputError(f"cannot resume: {run_dir} was trained on other data (fingerprint "
                         f"{str(saved.get('data'))[:12]}, {saved.get('n_images')} images) than this command's "
                         f"({str(now.get('data'))[:12]}, {now.get('n_images')} images). Give the same --data "
                         "(and --target, validation split), or start a new run (another --run-dir)")
    keys = [*IDENTITY_ORDER, *sorted(set(saved) | set(now))]
    differ = [k for k in dict.fromkeys(keys) if k not in ("data", "n_images") and saved.get(k) != now.get(k)]
    if differ:
        detail = "; ".join(f"{k}: run {saved.get(k)!r}, now {now.get(k)!r}" for k in differ)
        raise InputError(f"cannot resume: {run_dir} was started with other settings ({detail}). Resume with the "
                         "command that started it (its settings are in checkpoints/latest.json)")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class Checkpointing(pl.Callback):
    """Write a checkpoint every ``plan.every`` steps (once the step's validation is done: at the
    start of the next step) and when training ends; drop the older one. On load, the
    checkpoint's time budget is dropped (``--max-time`` is per session) and a different number
    of processes is refused (each rank's data depend on it)."""

    def __init__(self, plan: RunPlan):
        self.plan = plan
        self.written: list[tuple[int, float]] = []       # (step, seconds) of each write (the benchmark)
        self._last = plan.resume_step if plan.resume_from else -1
        self._logger_step: int | None = None              # the loggers' step a resumed run restores

    def on_train_batch_start(self, trainer: pl.Trainer, module, batch, batch_idx) -> None:
        if self._logger_step is not None:
            # a checkpoint written after a validation (its step a multiple of --val-every) restarts
            # with Lightning skipping that validation in a first pass of its loop that trains
            # nothing but still advances the loggers' step: every row after a resume was labelled
            # one step later than in the uninterrupted run (and the training loss was logged one
            # batch early). Put the loggers' step back where the checkpoint had it.
            trainer.fit_loop.epoch_loop._batches_that_stepped = self._logger_step
            self._logger_step = None
        step = trainer.global_step
        if step > 0 and step % self.plan.every == 0 and step != self._last:
            self.save(trainer, finished=False)

    def on_train_end(self, trainer: pl.Trainer, module) -> None:
        if trainer.global_step != self._last:
            self.save(trainer, finished=trainer.global_step >= trainer.max_steps > 0)

    def save(self, trainer: pl.Trainer, finished: bool) -> None:
        import time

        started = time.perf_counter()
        step = trainer.global_step
        folder = self.plan.folder
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
        name = f"step-{step:07d}.ckpt"
        tmp = folder / f".{name}.tmp"
        trainer.save_checkpoint(tmp, weights_only=False)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, folder / name)
            previous = read_pointer(self.plan.run_dir) if (folder / POINTER).exists() else None
            _write_json(folder / POINTER, {"file": name, "step": step, "sha256": sha256_file(folder / name),
                                           "finished": bool(finished), "world_size": trainer.world_size,
                                           "identity": self.plan.identity})
            if previous and previous["file"] != name:
                (folder / Path(previous["file"]).name).unlink(missing_ok=True)
            for logger in trainer.loggers:                # the curves up to here survive a kill
                logger.save()
        self._last = step
        self.written.append((step, time.perf_counter() - started))

    def on_save_checkpoint(self, trainer: pl.Trainer, module, checkpoint: dict) -> None:
        checkpoint["zoo"] = {"step": trainer.global_step, "world_size": trainer.world_size}
        # written at the start of a step, after Lightning has counted the step's batch as fetched:
        # count it as not yet fetched, or a resumed run validates one step early (Lightning places
        # step-interval validations by the total batch count, which a restart does not rewind)
        # (with every count equal, Lightning restarts as after a finished step: no validation rerun,
        # its loggers' step not advanced)
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        progress = fit_loop.get("epoch_loop.batch_progress")
        if progress:
            for part in ("total", "current"):
                counts = progress.get(part, {})
                for key in ("ready", "started", "processed"):
                    if key in counts and "completed" in counts:
                        counts[key] = counts["completed"]

    def on_load_checkpoint(self, trainer: pl.Trainer, module, checkpoint: dict) -> None:
        saved = checkpoint.get("zoo", {})
        if saved.get("world_size", trainer.world_size) != trainer.world_size:
            raise InputError(f"cannot resume: the run trained on {saved['world_size']} process(es), this command "
                             f"starts {trainer.world_size}; each process's data depend on their number. Resume "
                             f"with --devices {saved['world_size']}")
        for key in [k for k in checkpoint.get("callbacks", {}) if k.startswith("Timer")]:
            del checkpoint["callbacks"][key]              # a time budget is per session
        stepped = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {}) \
            .get("_batches_that_stepped")
        self._logger_step = int(stepped) if stepped is not None else None


def trim_metrics(run_dir: Path, step: int) -> None:
    """Drop the rows that a resumed run logs again (those after its checkpoint's step)."""
    import csv

    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "step" not in rows[0]:
        return
    index = rows[0].index("step")
    kept = [rows[0]] + [r for r in rows[1:] if r[index] == "" or int(float(r[index])) < step]
    if len(kept) != len(rows):
        tmp = path.with_name(".metrics.csv.tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(kept)
        os.replace(tmp, path)
