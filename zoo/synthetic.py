"""Synthetic fluorescence images with known ground truth (the project's own data: any size,
2D or 3D, free to ship in packages and tests)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def nuclei(shape: Sequence[int] = (96, 96), n: int = 12, seed: int = 0, peak: float = 200.0,
           read_noise: float = 5.0, background: float = 10.0,
           radius: tuple[float, float] = (4.0, 9.0)) -> tuple[np.ndarray, np.ndarray]:
    """(noisy uint16 image, clean float image): Gaussian blobs with Poisson-Gaussian noise."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij", sparse=True)
    clean = np.full(tuple(shape), background)
    for _ in range(n):
        centre = [rng.uniform(0, s) for s in shape]
        r = rng.uniform(*radius)
        clean = clean + peak * np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / (2 * r**2))
    noisy = rng.poisson(clean) + rng.normal(0, read_noise, clean.shape)
    return np.clip(noisy, 0, 65535).astype(np.uint16), clean
