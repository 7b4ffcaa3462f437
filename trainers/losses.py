"""Pixel losses shared by the restoration architectures."""
from __future__ import annotations

import torch

LOSSES = ("l1", "l2")


def pixel_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute (``l1``) or squared (``l2``) error, over ``mask`` (``b, 1, ...``) when given."""
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    error = (prediction - target).abs() if kind == "l1" else (prediction - target) ** 2
    if mask is None:
        return error.mean()
    return (error * mask).sum() / (mask.sum() * prediction.shape[1]).clamp(min=1)
