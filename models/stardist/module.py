"""StarDist training: binary cross-entropy on the object probability plus the mean absolute
error of the ray distances, weighted by the probability target (as in the paper)."""
from __future__ import annotations

import numpy as np
from torch.nn import functional as F

from zoo.segmentation.stardist import object_probability, star_distances
from zoo.trainers.segmentation import SegmentationModule


class StarDistModule(SegmentationModule):
    def __init__(self, spec, lr: float = 1e-3, distance_weight: float = 0.2):
        super().__init__(spec, lr=lr)
        self.distance_weight = distance_weight
        self.n_rays = int(spec.architecture_params.get("n_rays", 32))

    def hparams_for_record(self) -> dict:
        return {**super().hparams_for_record(), "distance_weight": self.distance_weight}

    def targets(self, labels: np.ndarray) -> np.ndarray:
        distances = np.moveaxis(star_distances(labels, self.n_rays), -1, 0)
        return np.concatenate([object_probability(labels)[None], distances])

    def roles(self):
        return [("scalar",)] + [("ray", k, self.n_rays) for k in range(self.n_rays)]

    def head_loss(self, heads, target):
        probability, distances = target[:, :1], target[:, 1:]
        bce = F.binary_cross_entropy_with_logits(heads["probability"], probability)
        weight = probability
        mae = ((heads["distances"] - distances).abs() * weight).mean() / weight.mean().clamp(min=1e-6)
        return bce + self.distance_weight * mae
