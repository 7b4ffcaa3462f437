"""unet-seg training: cross-entropy over background / interior / boundary."""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from zoo.segmentation.semantic import classes
from zoo.trainers.segmentation import SegmentationModule


class UNetSegModule(SegmentationModule):
    """Cross-entropy with the boundary class weighted up (``boundary_weight``): boundaries are
    thin but they are what separates touching objects."""

    def __init__(self, spec, lr: float = 1e-3, boundary_weight: float = 2.0):
        super().__init__(spec, lr=lr)
        self.boundary_weight = boundary_weight

    def hparams_for_record(self) -> dict:
        return {**super().hparams_for_record(), "boundary_weight": self.boundary_weight}

    def targets(self, labels: np.ndarray) -> np.ndarray:
        return classes(labels)[None].astype(np.float32)

    def roles(self):
        return [("scalar",)]

    def head_loss(self, heads, target):
        weight = torch.tensor([1.0, 1.0, self.boundary_weight], device=target.device)
        return F.cross_entropy(heads["classes"], target[:, 0].long(), weight=weight)
