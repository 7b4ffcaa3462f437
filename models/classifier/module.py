"""Classifier training: cross-entropy weighted by inverse class frequency (rare classes count
as much as common ones), accuracy logged beside the validation loss."""
from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F

from zoo.trainers.base import ZooModule


class ClassifierModule(ZooModule):
    def __init__(self, spec, lr: float = 1e-3, class_weights: Sequence[float] | None = None,
                 label_smoothing: float = 0.05):
        super().__init__(spec, lr=lr)
        n = int(spec.architecture_params.get("n_classes", 2))
        self.register_buffer("class_weights", torch.tensor(list(class_weights or [1.0] * n), dtype=torch.float32))
        self.label_smoothing = label_smoothing

    def hparams_for_record(self) -> dict:
        return {**super().hparams_for_record(), "class_weights": [round(float(w), 4) for w in self.class_weights],
                "label_smoothing": self.label_smoothing, "loss": "weighted cross-entropy"}

    def loss(self, batch, generator: torch.Generator | None = None) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y, weight=self.class_weights, label_smoothing=self.label_smoothing)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y, weight=self.class_weights), prog_bar=True, on_epoch=True)
        self.log("val_accuracy", (logits.argmax(1) == y).float().mean(), prog_bar=True, on_epoch=True)
