"""Lightning callbacks shared by every training run."""
from __future__ import annotations

import copy
import math

import pytorch_lightning as pl


class KeepBest(pl.Callback):
    """Remember the network weights with the best value of ``monitor`` (the lowest, or the highest
    with ``mode="max"``); restore them when training ends.

    Under several processes the monitored value is averaged over the ranks first, so that every
    rank keeps the same weights (the task metrics of :mod:`.selection` are already global).
    Its state (the best value, its step, its weights and the validation loss there) travels in
    the run's checkpoints, so that a resumed run keeps what the interrupted one had chosen."""

    def __init__(self, monitor: str = "val_loss", best: float | None = None, state: dict | None = None,
                 mode: str = "min", loss: float | None = None):
        """``best`` and ``state``: a starting candidate (its value and weights), kept unless beaten;
        ``loss``: that candidate's validation loss."""
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor, self.mode = monitor, mode
        self.best = best if best is not None else (math.inf if mode == "min" else -math.inf)
        self.best_step = 0 if state is not None else -1
        self.loss_at_best = loss
        self._state = copy.deepcopy(state) if state is not None else None

    def _better(self, value: float) -> bool:
        return value < self.best if self.mode == "min" else value > self.best

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(trainer.strategy.reduce(value.detach().float().clone(), reduce_op="mean")) \
            if trainer.world_size > 1 else float(value)
        if not math.isnan(value) and self._better(value):
            self.best, self.best_step = value, trainer.global_step
            loss = trainer.callback_metrics.get("val_loss")
            self.loss_at_best = float(loss) if loss is not None else None
            self._state = copy.deepcopy({k: v.detach().cpu() for k, v in module.network.state_dict().items()})

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self._state is not None:
            module.network.load_state_dict(self._state)

    def state_dict(self) -> dict:
        return {"monitor": self.monitor, "mode": self.mode, "best": self.best, "best_step": self.best_step,
                "loss_at_best": self.loss_at_best, "weights": self._state}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step = float(state["best"]), int(state["best_step"])
        self.loss_at_best = state.get("loss_at_best")
        self._state = state.get("weights")


class StepSeed(pl.Callback):
    """Seed the global random generators before every training step from (seed, rank, step):
    the randomness of a step (Noise2Void's masks, dropout) is then a function of the step, so a
    run resumed from a checkpoint draws exactly what the uninterrupted run drew."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: pl.Trainer, module, batch, batch_idx) -> None:
        import random

        import numpy as np
        import torch

        key = np.random.SeedSequence((self.seed, trainer.global_rank, trainer.global_step)).generate_state(2)
        torch.manual_seed(int(key[0]) << 32 | int(key[1]))
        np.random.seed(int(key[0]))
        random.seed(int(key[1]))


class BatchTimer(pl.Callback):
    """Wall time spent in training batches (forward, backward, optimiser step; no validation)."""

    def __init__(self):
        self.seconds, self.batches, self.samples = 0.0, 0, 0
        self._started = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        import time

        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        import time

        self.seconds += time.perf_counter() - self._started
        self.batches += 1
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        self.samples += int(first.shape[0])

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0


class StepProgress(pl.Callback):
    """A progress bar over all the run's steps, with the latest losses (Lightning's own counts
    one epoch at a time, and a run of ``max_steps`` has no number of epochs)."""

    def __init__(self, label: str = "training"):
        self.label, self._bar = label, None

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=trainer.max_steps, initial=trainer.global_step, desc=self.label, unit="step",
                         dynamic_ncols=True)   # tqdm's ETA: the steps left at the rate of this session

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx) -> None:
        losses = {k: f"{float(v):.4f}" for k, v in trainer.callback_metrics.items() if k in ("train_loss", "val_loss")}
        left = budget_left(trainer)
        if left is not None:
            losses["budget left"] = _clock(left)
        self._bar.set_postfix(losses, refresh=False)
        self._bar.update(trainer.global_step - self._bar.n)
        if self._bar.n >= self._bar.total:
            self._bar.close()                  # before Lightning says that it stopped

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._bar.close()

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        if self._bar is not None:
            self._bar.close()


class ValidationLog(pl.Callback):
    """One line per validation (step, training and validation loss, elapsed seconds) on a stream,
    and, with ``every``, one every ``every`` training steps: a record of long runs without a
    progress bar (logs, CI)."""

    def __init__(self, stream=None, every: int | None = None):
        import sys
        import time

        self.stream = stream or sys.stderr
        self.every = every
        self._started = time.perf_counter()
        self._first_step: int | None = None

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        import time

        self._started, self._first_step = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx) -> None:
        if self.every and trainer.global_step % self.every == 0:
            self._line(trainer, ("train_loss",))

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._line(trainer, ("train_loss", *(k for k in trainer.callback_metrics if k.startswith("val_"))))

    def _line(self, trainer: pl.Trainer, keys: tuple[str, ...]) -> None:
        import time

        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in keys}
        total = f"/{trainer.max_steps}" if trainer.max_steps > 0 else ""
        elapsed = time.perf_counter() - self._started
        done = trainer.global_step - (self._first_step or 0)
        eta = ""
        if trainer.max_steps > 0 and done > 0:
            left = (trainer.max_steps - trainer.global_step) * elapsed / done
            budget = budget_left(trainer)
            eta = f", ETA {_clock(min(left, budget) if budget is not None else left)}"
        print(f"step {trainer.global_step}{total}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())) +
              f" ({elapsed:.0f} s{eta})", file=self.stream, flush=True)


def budget_left(trainer: pl.Trainer) -> float | None:
    """Seconds left of the run's ``max_time`` budget (this session's), or None without one."""
    from pytorch_lightning.callbacks import Timer

    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    return timer.time_remaining() if timer is not None and timer.time_remaining() is not None else None


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
