"""The training loop every trainer shares: Lightning's fit with the best weights kept, a
validation of the current weights, Lightning's info lines said once, and the shift check
calibrated on the written package."""
from __future__ import annotations

import logging
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

    val_loss: float
    selected_step: int
    steps: int
    seconds: float
    patches_per_second: float

    def record(self) -> dict:
        return {"training_seconds": round(self.seconds, 1), "patches_per_second": round(self.patches_per_second, 1),
                "selected_step": self.selected_step, "steps_run": self.steps}


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
          keep_best: KeepBest | None = None, run_dir: Path | None = None, max_time=None, **lightning) -> Run:
    """Fit ``module`` with Lightning; the weights with the lowest validation loss are kept
    (``keep_best`` may start with a candidate, e.g. a parent's weights).
    ``progress``: True a progress bar over the steps, ``"lines"`` a line on stderr every tenth of
    the steps and at each validation (for logs, where a bar cannot draw), False nothing.
    ``run_dir``: the run folder (metrics CSV, TensorBoard where installed: :mod:`.runlog`).
    ``max_time``: a budget (a ``timedelta``); the run stops when it is spent, keeping its best weights."""
    import pytorch_lightning as pl

    from .runlog import loggers

    keep_best, timer = keep_best or KeepBest("val_loss"), BatchTimer()
    shown = [ValidationLog(every=max(1, max_steps // 10)) if progress == "lines" else StepProgress()] if progress else []
    trainer = pl.Trainer(max_steps=max_steps, callbacks=[keep_best, timer, *callbacks, *shown],
                         enable_progress_bar=False,
                         enable_checkpointing=False, logger=loggers(run_dir) if run_dir else False,
                         enable_model_summary=False, max_time=max_time,
                         num_sanity_val_steps=0, log_every_n_steps=10, deterministic=False, **lightning)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    return Run(keep_best.best, keep_best.best_step, trainer.global_step, time.perf_counter() - started,
               timer.samples_per_second)


def validation_loss(module, datamodule, lightning: dict) -> float:
    """The loss of the module's current (e.g. a parent's) weights on the validation data."""
    import pytorch_lightning as pl

    with quiet_lightning():        # the fit that follows states the hardware and tips once
        trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False, **lightning)
        result = trainer.validate(module, datamodule=datamodule, verbose=False)
    return float(result[0]["val_loss"])


def add_shift_check(package: Path, train_files, val_files) -> Path:
    """Record the training inputs' statistics and calibrate the dataset-shift check (issue 11) on
    the validation images. A failure is logged, never fatal: the trained package stays."""
    from zoo.trust.calibrate import calibrate

    try:
        calibrate(package, list(train_files), list(val_files))
    except Exception as e:   # noqa: BLE001 - hours of training must not be lost to a statistics step
        log.warning("the package has no dataset-shift check: calibrating it failed (%s: %s)", type(e).__name__, e)
    return Path(package)
