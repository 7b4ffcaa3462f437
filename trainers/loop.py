"""The training loop every trainer shares: Lightning's fit with the best weights kept, a
validation of the current weights, Lightning's info lines said once, and the shift check
calibrated on the written package."""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .callbacks import BatchTimer, KeepBest, StepProgress, ValidationLog

log = logging.getLogger("zoo.trainers")


@dataclass
class Run:
    """What a training run measured."""

    val_loss: float | None
    selected_step: int
    steps: int
    seconds: float
    patches_per_second: float
    rank: int = 0
    selection: dict | None = None          # {"by", "mode", "value", "step", "why"}
    resumed_from: int | None = None        # the step a resumed run started from
    checkpoint_seconds: float = 0.0

    def record(self) -> dict:
        return {"training_seconds": round(self.seconds, 1), "patches_per_second": round(self.patches_per_second, 1),
                "selected_step": self.selected_step, "steps_run": self.steps,
                **({"selection": self.selection} if self.selection else {}),
                **({"resumed_from_step": self.resumed_from} if self.resumed_from is not None else {})}

    def metrics(self) -> dict:
        """The selected weights' validation numbers for the package's ``training.metrics``."""
        chosen = {self.selection["by"]: self.selection["value"]} if self.selection and \
            self.selection["by"] != "val_loss" and self.selection.get("value") is not None else {}
        return {"val_loss": self.val_loss, **chosen}

    @property
    def writes(self) -> bool:
        """Whether this process writes the package (rank 0 only, after the others have finished)."""
        return self.rank == 0


LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")


@contextmanager
def quiet_lightning():
    """Lightning's info lines (hardware, tips) unsaid while inside: every Trainer prints them, and
    a run that needs a second Trainer (a parent's validation) should state them once."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def train(module, datamodule, max_steps: int, callbacks: Sequence = (), *, progress: bool | str = True,
          keep_best: KeepBest | None = None, run_dir: Path | None = None, max_time=None, val_every: int | None = None,
          plan=None, selection=None, selection_items=None, seed: int = 0, **lightning) -> Run:
    """Fit ``module`` with Lightning; the weights that score best on the validation data are kept
    (``selection``: a :class:`zoo.trainers.selection.Selection`, by default the lowest validation
    loss; ``keep_best`` may start with a candidate, e.g. a parent's weights).
    ``progress``: True a progress bar over the steps (with the time left), ``"lines"`` a line on
    stderr every tenth of the steps and at each validation (for logs, where a bar cannot draw),
    False nothing.
    ``run_dir``: the run folder (metrics CSV, TensorBoard where installed: :mod:`.runlog`).
    ``max_time``: a budget (a ``timedelta``); the run stops when it is spent, keeping its best weights.
    ``val_every``: steps between validations (default: Lightning's ``val_check_interval`` if given).
    ``plan``: checkpoints and resume (:func:`zoo.trainers.checkpoints.open_run`).
    ``seed``: the global generators are seeded from (seed, rank, step) before every step."""
    import pytorch_lightning as pl

    from .callbacks import StepSeed
    from .checkpoints import Checkpointing, trim_metrics
    from .runlog import loggers
    from .selection import Selection, TaskMetric
    from .valimages import clear as clear_images

    selection = selection or Selection()
    if keep_best is None:
        keep_best = KeepBest(selection.monitor, mode=selection.mode)
    timer = BatchTimer()
    scoring = [TaskMetric(selection, module.spec, selection_items)] if selection_items else []
    saving = [Checkpointing(plan)] if plan is not None else []
    pictures = validation_images(run_dir, module, datamodule, selection, selection_items)
    shown = [ValidationLog(every=max(1, max_steps // 10)) if progress == "lines" else StepProgress()] if progress else []
    if val_every is not None:
        lightning = {**lightning, "val_check_interval": min(val_every, max_steps), "check_val_every_n_epoch": None}
    start = plan.resume_step if plan is not None and plan.resume_from else 0
    if hasattr(datamodule, "plan"):
        datamodule.plan(max_steps, start)
    if plan is not None and plan.resume_from and local_rank() == 0:
        trim_metrics(plan.run_dir, start)
        clear_images(plan.run_dir, after=start)
    # order matters: the metric is logged before KeepBest reads it; a checkpoint at the end holds
    # the last weights, written before KeepBest puts the best ones back
    trainer = pl.Trainer(max_steps=max_steps,
                         callbacks=[StepSeed(seed), *scoring, *saving, keep_best, timer, *pictures, *callbacks, *shown],
                         enable_progress_bar=False, use_distributed_sampler=False,
                         enable_checkpointing=False,
                         logger=loggers(run_dir, keep=bool(start)) if run_dir else False,
                         enable_model_summary=False, max_time=max_time,
                         num_sanity_val_steps=0, log_every_n_steps=10, **{"deterministic": False, **lightning})
    started = time.perf_counter()
    if plan is not None and plan.resume_from:
        if progress and trainer.is_global_zero:
            import sys

            print(f"resuming {plan.run_dir} from step {start} of {max_steps}", file=sys.stderr, flush=True)
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(plan.resume_from), weights_only=True)
    else:
        trainer.fit(module, datamodule=datamodule)
    chosen = {**selection.record(), "value": keep_best.best if keep_best.best_step >= 0 else None,
              "step": keep_best.best_step}
    loss = keep_best.loss_at_best if selection.monitor != "val_loss" else keep_best.best
    loss = math.inf if loss is None else loss
    return Run(loss, keep_best.best_step, trainer.global_step, time.perf_counter() - started,
               timer.samples_per_second, rank=trainer.global_rank, selection=chosen,
               resumed_from=start if plan is not None and plan.resume_from else None,
               checkpoint_seconds=sum(s for _, s in saving[0].written) if saving else 0.0)


def validation_images(run_dir, module, datamodule, selection, selection_items) -> list:
    """The callback that draws a few validation samples into the run folder at every validation
    (:mod:`.valimages`), on rank 0 of a run with a run folder; else nothing."""
    if run_dir is None or local_rank() != 0:
        return []
    from .selection import task_kind
    from .valimages import ValidationImages, sample_items

    try:
        samples = sample_items(datamodule, selection_items)
    except Exception as e:  # noqa: BLE001 - the pictures must never stop a training
        log.warning("no validation images in the run folder: picking the samples failed (%s: %s)", type(e).__name__, e)
        return []
    kind = (selection.kind if selection is not None else None) or task_kind(module.spec)
    return [ValidationImages(run_dir, module.spec, samples, kind)]


def local_rank() -> int:
    from .checkpoints import local_rank as rank

    return rank()


def validation_scores(module, datamodule, lightning: dict, selection=None, selection_items=None) -> dict:
    """The validation loss (and the selection metric) of the module's current weights (e.g. a
    parent's): ``{"val_loss": ..., selection.monitor: ...}``."""
    import pytorch_lightning as pl

    from .selection import TaskMetric

    scoring = [TaskMetric(selection, module.spec, selection_items)] if selection is not None and selection_items else []
    with quiet_lightning():        # the fit that follows states the hardware and tips once
        trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False, callbacks=scoring, **lightning)
        result = trainer.validate(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in result[0].items()}


def validation_loss(module, datamodule, lightning: dict) -> float:
    """The loss of the module's current (e.g. a parent's) weights on the validation data."""
    return validation_scores(module, datamodule, lightning)["val_loss"]


def add_shift_check(package: Path, train_files, val_files) -> Path:
    """Record the training inputs' statistics and calibrate the dataset-shift check (issue 11) on
    the validation images. A failure is logged, never fatal: the trained package stays."""
    from zoo.trust.calibrate import calibrate

    try:
        calibrate(package, list(train_files), list(val_files))
    except Exception as e:   # noqa: BLE001 - hours of training must not be lost to a statistics step
        log.warning("the package has no dataset-shift check: calibrating it failed (%s: %s)", type(e).__name__, e)
    return Path(package)
