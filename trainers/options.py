"""``TrainingOptions``: how long and how a run trains, the same for every task.

Dense training (restoration, segmentation) and classifier training, from scratch or fine-tuned,
take these options alike; each trainer fills in its own defaults before building them.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TrainingOptions:
    """``max_steps`` optimiser steps of ``batch_size`` examples from seed ``seed``; a validation
    every ``val_every`` steps (dense training: the length of an epoch of patches); early stopping
    after ``patience`` validations without improvement (None: never); ``progress``: a bar (True),
    plain lines on stderr (``"lines"``) or nothing (False); ``lightning``: options passed straight
    to Lightning's Trainer (accelerator, devices, precision, strategy ...)."""

    max_steps: int
    batch_size: int | None          # None: the trainer's default (a fine-tuning: the parent's)
    seed: int = 0
    val_every: int = 100
    patience: int | None = None
    progress: bool | str = True
    lightning: dict = field(default_factory=dict)

    @property
    def validate_every(self) -> int:
        """Steps between validations, never more than the run."""
        return min(self.val_every, self.max_steps)

    def early_stopping(self, monitor: str = "val_loss", mode: str = "min") -> list:
        """Lightning's early stopping on the selection's metric (default the validation loss), or
        nothing without ``patience``."""
        if not self.patience:
            return []
        from pytorch_lightning.callbacks import EarlyStopping

        return [EarlyStopping(monitor, patience=self.patience, mode=mode)]
