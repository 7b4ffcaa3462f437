"""Image-quality metrics for restoration, normalised as in CSBDeep (Weigert et al. 2018)."""
from __future__ import annotations

import numpy as np


def normalize_percentile(x: np.ndarray, low: float = 0.1, high: float = 99.9) -> np.ndarray:
    lo, hi = np.percentile(x, [low, high])
    return ((x - lo) / max(hi - lo, 1e-12)).astype(np.float64)


def fit_affine(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``a * prediction + b`` with a, b minimising the squared error to ``target`` (CSBDeep's
    normalize_minmse), so that metrics ignore the intensity scale of each image."""
    p = prediction.astype(np.float64).ravel()
    t = target.astype(np.float64).ravel()
    p_centered = p - p.mean()
    a = float(np.dot(p_centered, t - t.mean()) / max(np.dot(p_centered, p_centered), 1e-12))
    b = t.mean() - a * p.mean()
    return a * prediction.astype(np.float64) + b


def psnr(prediction: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> float:
    mse = float(np.mean((prediction.astype(np.float64) - target.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)


def normalized_psnr(prediction: np.ndarray, target: np.ndarray) -> float:
    """PSNR after normalising the target to its 0.1-99.9 percentiles and fitting the prediction to it."""
    t = normalize_percentile(target)
    return psnr(fit_affine(prediction, t), t, data_range=1.0)


def ssim(prediction: np.ndarray, target: np.ndarray, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """Mean structural similarity (Wang et al. 2004) with a Gaussian window, 2D or 3D."""
    from scipy.ndimage import gaussian_filter

    x, y = prediction.astype(np.float64), target.astype(np.float64)
    blur = lambda a: gaussian_filter(a, sigma, truncate=3.5)  # noqa: E731  the 11-pixel window of the paper
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def normalized_ssim(prediction: np.ndarray, target: np.ndarray) -> float:
    """SSIM after the same normalisation as :func:`normalized_psnr`."""
    t = normalize_percentile(target)
    return ssim(fit_affine(prediction, t), t, data_range=1.0)
