"""Image statistics a dataset-shift check compares, each one a user can read: intensities before
and after the model's normalisation, the noise level, the object scale."""
from __future__ import annotations

import numpy as np

RAW_PERCENTILES = (1, 50, 99)


def noise_sigma(image: np.ndarray) -> float:
    """Gaussian noise standard deviation of a 2D image (Immerkaer 1996): the mean absolute
    response to a kernel that cancels smooth structure, scaled to sigma."""
    from scipy.ndimage import convolve

    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
    image = np.asarray(image, np.float64)
    if min(image.shape) < 3:
        return 0.0
    response = convolve(image, kernel, mode="reflect")[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(response).mean() / 6)


def planes(x: np.ndarray) -> list[np.ndarray]:
    """The 2D planes of a ``c, *spatial`` image: every channel, the middle slice of a volume."""
    x = np.asarray(x)
    if x.ndim == 4:
        x = x[:, x.shape[1] // 2]
    return [x[c] for c in range(x.shape[0])]


def image_statistics(raw: np.ndarray, normalised: np.ndarray) -> dict:
    """``raw`` and ``normalised``: one image as ``c, *spatial`` before and after preprocessing."""
    raw_p = np.percentile(raw, RAW_PERCENTILES)
    norm_p = np.percentile(normalised, RAW_PERCENTILES)
    noise = float(np.mean([noise_sigma(p) for p in planes(normalised)]))
    return {**{f"raw_p{q}": float(v) for q, v in zip(RAW_PERCENTILES, raw_p)},
            **{f"norm_p{q}": float(v) for q, v in zip(RAW_PERCENTILES, norm_p)},
            "noise": noise}


def object_scale(labels: np.ndarray) -> float | None:
    """Median equivalent diameter of the objects of a label image (None without objects)."""
    labels = np.asarray(labels)
    sizes = np.bincount(labels.ravel().astype(np.int64))[1:]
    sizes = sizes[sizes > 0]
    if not sizes.size:
        return None
    ndim = labels.ndim
    area = float(np.median(sizes))
    return float(2 * np.sqrt(area / np.pi)) if ndim == 2 else float((6 * area / np.pi) ** (1 / 3))
