"""Noise2Void training: uniform blind-spot masking, MSE on the masked pixels."""
from __future__ import annotations

from zoo.trainers.restoration import BlindSpotModule


class N2VModule(BlindSpotModule):
    """Noise2Void (Krull et al. 2019): each masked pixel takes a random neighbour's value."""

    def __init__(self, spec, lr: float = 2e-3, mask_fraction: float = 0.002, radius: int = 2,
                 masking: str = "uniform"):
        super().__init__(spec, lr=lr, mask_fraction=mask_fraction, radius=radius, masking=masking)
