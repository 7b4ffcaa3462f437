"""Lightning callbacks shared by every training run."""
from __future__ import annotations

import copy
import math

import pytorch_lightning as pl


class KeepBest(pl.Callback):
    """Remember the network weights with the lowest validation loss; restore them when training ends."""

    def __init__(self, monitor: str = "val_loss", best: float = math.inf, state: dict | None = None):
        """``best`` and ``state``: a starting candidate (its loss and weights), kept unless beaten."""
        self.monitor = monitor
        self.best = best
        self.best_step = 0 if state is not None else -1
        self._state = copy.deepcopy(state) if state is not None else None

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and float(value) < self.best:
            self.best, self.best_step = float(value), trainer.global_step
            self._state = copy.deepcopy({k: v.detach().cpu() for k, v in module.network.state_dict().items()})

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self._state is not None:
            module.network.load_state_dict(self._state)


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

        self._bar = tqdm(total=trainer.max_steps, desc=self.label, unit="step", dynamic_ncols=True)

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx) -> None:
        losses = {k: f"{float(v):.4f}" for k, v in trainer.callback_metrics.items() if k in ("train_loss", "val_loss")}
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

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx) -> None:
        if self.every and trainer.global_step % self.every == 0:
            self._line(trainer, ("train_loss",))

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._line(trainer, ("train_loss", "val_loss"))

    def _line(self, trainer: pl.Trainer, keys: tuple[str, ...]) -> None:
        import time

        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in keys}
        total = f"/{trainer.max_steps}" if trainer.max_steps > 0 else ""
        print(f"step {trainer.global_step}{total}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())) +
              f" ({time.perf_counter() - self._started:.0f} s)", file=self.stream, flush=True)
