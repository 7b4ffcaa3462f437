"""Noise2Void training: blind-spot masking and a loss on the masked pixels only."""
from __future__ import annotations

import itertools

import torch

from zoo.trainers.base import ZooModule


def blind_spot(x: torch.Tensor, fraction: float, radius: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a random ``fraction`` of pixels by a random neighbour within ``radius`` (N-D).

    Returns the masked batch and a ``b, 1, *spatial`` mask of the replaced pixels.
    """
    b, c, *spatial = x.shape
    n_pixels = int(torch.tensor(spatial).prod())
    n = max(1, round(fraction * n_pixels))
    dev = x.device
    kw = {"device": dev, "generator": generator}
    coords = torch.stack([torch.randint(0, s, (b, n), **kw) for s in spatial], dim=-1)   # b, n, d
    offsets = torch.tensor([o for o in itertools.product(range(-radius, radius + 1), repeat=len(spatial))
                            if any(o)], device=dev)
    pick = torch.randint(0, len(offsets), (b, n), **kw)
    limits = torch.tensor([s - 1 for s in spatial], device=dev)
    offset = offsets[pick]
    forward = coords + offset
    outside = (forward < 0) | (forward > limits)
    source = torch.where(outside, coords - offset, forward)   # mirror at borders, never onto itself
    source = source.clamp(min=torch.zeros_like(limits), max=limits)
    strides = torch.tensor([int(torch.tensor(spatial[i + 1:]).prod()) for i in range(len(spatial))], device=dev)
    target_idx = (coords * strides).sum(-1)
    source_idx = (source * strides).sum(-1)
    flat = x.reshape(b, c, n_pixels)
    values = flat.gather(2, source_idx[:, None, :].expand(b, c, n))
    masked = flat.clone().scatter_(2, target_idx[:, None, :].expand(b, c, n), values)
    mask = torch.zeros(b, 1, n_pixels, device=dev, dtype=x.dtype).scatter_(2, target_idx[:, None, :], 1.0)
    return masked.reshape(x.shape), mask.reshape(b, 1, *spatial)


class N2VModule(ZooModule):
    """Noise2Void: predict each masked pixel from its surroundings (MSE on masked pixels)."""

    def __init__(self, spec, lr: float = 4e-4, mask_fraction: float = 0.002, radius: int = 2):
        super().__init__(spec, lr=lr)
        self.mask_fraction, self.radius = mask_fraction, radius

    def hparams_for_record(self) -> dict:
        return {**super().hparams_for_record(), "mask_fraction": self.mask_fraction, "radius": self.radius}

    def loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        masked, mask = blind_spot(batch, self.mask_fraction, self.radius, generator)
        prediction = self(masked)
        return ((prediction - batch) ** 2 * mask).sum() / (mask.sum() * batch.shape[1])
