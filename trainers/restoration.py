"""Training modules for image-to-image restoration: supervised pairs and blind-spot masking."""
from __future__ import annotations

import torch

from .base import ZooModule
from .losses import pixel_loss
from .masking import blind_spot


class PairedRestorationModule(ZooModule):
    """Learn ``input -> target`` from pairs of patches with an L1 or L2 loss (CARE, Noise2Noise)."""

    paired = True

    def __init__(self, spec, lr: float = 4e-4, loss: str = "l1"):
        super().__init__(spec, lr=lr)
        pixel_loss(torch.zeros(1), torch.zeros(1), loss)   # an unknown loss fails now, not mid-training
        self.loss_kind = loss

    def hparams_for_record(self) -> dict:
        return {**super().hparams_for_record(), "loss": self.loss_kind}

    def loss(self, batch, generator: torch.Generator | None = None) -> torch.Tensor:
        source, target = batch
        return pixel_loss(self(source), target, self.loss_kind)


class BlindSpotModule(ZooModule):
    """Self-supervised: predict masked pixels from their surroundings (MSE on those pixels).

    The default learning rate is 2e-3: with only ~0.2% of pixels giving a gradient, 4e-4 was too
    slow (W2S, 300 steps, CSBDeep-width U-Net: 27.8 dB at 4e-4, 30.2 at 1e-3, 30.7 at 2e-3)."""

    paired = False

    def __init__(self, spec, lr: float = 2e-3, mask_fraction: float = 0.002, radius: int = 2,
                 masking: str = "uniform"):
        super().__init__(spec, lr=lr)
        blind_spot(torch.zeros(1, 1, 8, 8), 0.1, 1, masking=masking)   # validate the options now
        self.mask_fraction, self.radius, self.masking = mask_fraction, radius, masking

    def hparams_for_record(self) -> dict:
        return {**super().hparams_for_record(), "mask_fraction": self.mask_fraction, "radius": self.radius,
                "masking": self.masking}

    def loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        masked, mask = blind_spot(batch, self.mask_fraction, self.radius, generator, self.masking)
        return pixel_loss(self(masked), batch, "l2", mask)
