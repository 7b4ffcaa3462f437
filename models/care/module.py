"""CARE training: the residual U-Net learns low-SNR -> high-SNR from registered pairs."""
from __future__ import annotations

from zoo.trainers.restoration import PairedRestorationModule


class CAREModule(PairedRestorationModule):
    """CARE: mean absolute error against the high-SNR target (CSBDeep's default loss)."""

    def __init__(self, spec, lr: float = 4e-4, loss: str = "l1"):
        super().__init__(spec, lr=lr, loss=loss)
