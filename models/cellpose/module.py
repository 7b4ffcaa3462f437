"""Cellpose training: mean squared error of the flows (scaled by 5, as Cellpose trains them) and
binary cross-entropy of the cell probability."""
from __future__ import annotations

import numpy as np
from torch.nn import functional as F

from zoo.segmentation.cellpose import flows
from zoo.trainers.segmentation import SegmentationModule

FLOW_SCALE = 5.0


class CellposeModule(SegmentationModule):
    def __init__(self, spec, lr: float = 1e-3):
        super().__init__(spec, lr=lr)

    def targets(self, labels: np.ndarray) -> np.ndarray:
        return np.concatenate([flows(labels), (labels > 0)[None].astype(np.float32)])

    def roles(self):
        return [("vector", axis) for axis in range(self.dims)] + [("scalar",)]

    def head_loss(self, heads, target):
        flow, mask = target[:, :-1], target[:, -1:]
        mse = F.mse_loss(FLOW_SCALE * heads["flows"], FLOW_SCALE * flow) / 2
        return mse + F.binary_cross_entropy_with_logits(heads["probability"], mask)
