"""Blind-spot masking for Noise2Void (Krull et al. 2019) and N2V2 (Hoeck et al. 2022), N-D."""
from __future__ import annotations

import itertools

import torch

MASKINGS = ("uniform", "median")


def blind_spot(x: torch.Tensor, fraction: float, radius: int, generator: torch.Generator | None = None,
               masking: str = "uniform") -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a random ``fraction`` of pixels by a value from their neighbourhood (never their own).

    ``uniform`` (N2V): a random neighbour within ``radius``; ``median`` (N2V2): the median of the
    neighbourhood without the centre. Neighbours outside the patch are mirrored back inside.
    Returns the masked batch and a ``b, 1, *spatial`` mask of the replaced pixels.
    """
    if masking not in MASKINGS:
        raise ValueError(f"masking must be one of {MASKINGS}, got {masking!r}")
    b, c, *spatial = x.shape
    n_pixels = int(torch.tensor(spatial).prod())
    n = max(1, round(fraction * n_pixels))
    dev = x.device
    kw = {"device": dev, "generator": generator}
    coords = torch.stack([torch.randint(0, s, (b, n), **kw) for s in spatial], dim=-1)   # b, n, d
    offsets = torch.tensor([o for o in itertools.product(range(-radius, radius + 1), repeat=len(spatial))
                            if any(o)], device=dev)                                      # k, d
    limits = torch.tensor([s - 1 for s in spatial], device=dev)
    strides = torch.tensor([int(torch.tensor(spatial[i + 1:]).prod()) for i in range(len(spatial))], device=dev)
    flat = x.reshape(b, c, n_pixels)
    if masking == "uniform":
        offsets = offsets[torch.randint(0, len(offsets), (b, n), **kw)][:, :, None]    # b, n, 1, d
    else:
        offsets = offsets[None, None].expand(b, n, -1, -1)                              # b, n, k, d
    forward = coords[:, :, None] + offsets
    outside = (forward < 0) | (forward > limits)
    source = torch.where(outside, coords[:, :, None] - offsets, forward)   # mirror at borders
    source = source.clamp(min=torch.zeros_like(limits), max=limits)
    source_idx = (source * strides).sum(-1)                                # b, n, k
    k = source_idx.shape[-1]
    values = flat.gather(2, source_idx.reshape(b, 1, n * k).expand(b, c, n * k)).reshape(b, c, n, k)
    values = values[..., 0] if masking == "uniform" else values.median(dim=-1).values
    target_idx = (coords * strides).sum(-1)
    masked = flat.clone().scatter_(2, target_idx[:, None, :].expand(b, c, n), values)
    mask = torch.zeros(b, 1, n_pixels, device=dev, dtype=x.dtype).scatter_(2, target_idx[:, None, :], 1.0)
    return masked.reshape(x.shape), mask.reshape(b, 1, *spatial)
