"""Noise2Noise training: a second, independent noisy image of the same scene is the target."""
from __future__ import annotations

from zoo.trainers.restoration import PairedRestorationModule


class N2NModule(PairedRestorationModule):
    """Noise2Noise: with zero-mean noise the L2 minimiser of noisy targets is the clean image."""

    def __init__(self, spec, lr: float = 4e-4, loss: str = "l2"):
        super().__init__(spec, lr=lr, loss=loss)
