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


def touching_objects(shape: Sequence[int] = (128, 128), n: int = 12, seed: int = 0,
                     radius: tuple[float, float] = (4.0, 10.0), margin: float = 0.0) -> np.ndarray:
    """A label image (int32, 0 = background) of ``n`` random ellipses (2D) or ellipsoids (3D)
    that may touch but never overlap; centres at least ``margin`` from the border."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij", sparse=True)
    labels = np.zeros(tuple(shape), np.int32)
    placed, tries = 0, 0
    while placed < n and tries < 100 * n:
        tries += 1
        centre = [rng.uniform(margin, s - margin) for s in shape]
        axes = rng.uniform(*radius, size=len(shape))
        rotation = np.linalg.qr(rng.normal(size=(len(shape), len(shape))))[0]
        offsets = [g - c for g, c in zip(grids, centre)]
        inside = sum((sum(rotation[i, j] * offsets[j] for j in range(len(shape))) / axes[i]) ** 2
                     for i in range(len(shape))) <= 1
        if inside.any() and (labels[inside] == 0).all():
            placed += 1
            labels[inside] = placed
    return labels


def labelled_nuclei(shape: Sequence[int] = (32, 96, 96), n: int = 30, seed: int = 0, peak: float = 120.0,
                    read_noise: float = 5.0, background: float = 15.0, blur: float = 1.0,
                    radius: tuple[float, float] = (4.0, 8.0)) -> tuple[np.ndarray, np.ndarray]:
    """(noisy uint16 image, labels): touching nuclei of varying brightness, blurred by the optics
    and imaged with Poisson-Gaussian noise; dimmer where they touch, as real nuclei are."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(seed)
    labels = touching_objects(shape, n, seed, radius)
    brightness = np.concatenate([[0.0], rng.uniform(0.5, 1.0, labels.max())])
    edges = find_boundaries(labels, mode="inner")
    clean = background + peak * ndi.gaussian_filter(brightness[labels] * np.where(edges, 0.5, 1.0), blur)
    noisy = rng.poisson(clean) + rng.normal(0, read_noise, clean.shape)
    return np.clip(noisy, 0, 65535).astype(np.uint16), labels
