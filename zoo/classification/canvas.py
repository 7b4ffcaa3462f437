"""Crops onto a fixed canvas, at a fixed pixel scale.

A classifier sees every image at the same scale (``scale`` times its pixel size) centred on a
square canvas of ``size`` pixels: larger images are cropped, smaller ones padded with zeros (the
normalised background). Scale is kept rather than stretched to fit, so an object's size, which
tells platelets from red cells, reaches the network.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def centre_fit(x: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Centre-crop or zero-pad the last two axes of ``x`` to ``size``."""
    out = np.zeros(x.shape[:-2] + tuple(size), dtype=x.dtype)
    src, dst = [], []
    for have, want in zip(x.shape[-2:], size):
        if have >= want:
            start = (have - want) // 2
            src.append(slice(start, start + want))
            dst.append(slice(0, want))
        else:
            start = (want - have) // 2
            src.append(slice(0, have))
            dst.append(slice(start, start + have))
    out[(..., *dst)] = x[(..., *src)]
    return out


def rescale(x: np.ndarray, scale: float) -> np.ndarray:
    """Resample the last two axes by ``scale`` (linear interpolation, area-averaged first when shrinking)."""
    if scale == 1.0:
        return x
    from scipy import ndimage

    if scale < 1.0:        # average before subsampling, or small objects alias away
        sigma = [0.0] * (x.ndim - 2) + [0.5 / scale - 0.5] * 2
        x = ndimage.gaussian_filter(x, sigma, mode="nearest")
    factors = [1.0] * (x.ndim - 2) + [scale, scale]
    return ndimage.zoom(x, factors, order=1, mode="nearest", grid_mode=True).astype(x.dtype, copy=False)


def geometry(params: dict) -> tuple[float, list[int]]:
    """``(scale, [height, width])`` of a ``fit_canvas`` op's parameters (``size`` may be one number)."""
    size = params["size"]
    return float(params.get("scale", 1.0)), [int(size)] * 2 if np.isscalar(size) else [int(s) for s in size]


def fit_canvas(x: np.ndarray, params: dict, context: dict, tensor: str) -> np.ndarray:
    """The preprocessing op: ``b, c, y, x`` -> ``b, c, size, size`` at ``scale``."""
    scale, size = geometry(params)
    return np.ascontiguousarray(centre_fit(rescale(x, scale), size), dtype=np.float32)


def object_boxes(labels: np.ndarray, margin: float = 0.0) -> list[tuple[int, tuple[slice, ...]]]:
    """``(label, region)`` of every object: its bounding box grown by ``margin`` of its size on
    each side, clipped to the image."""
    from scipy import ndimage

    out = []
    for index, box in enumerate(ndimage.find_objects(np.asarray(labels)), start=1):
        if box is None:
            continue
        grown = []
        for s, n in zip(box, labels.shape):
            extra = int(round(margin * (s.stop - s.start)))
            grown.append(slice(max(0, s.start - extra), min(n, s.stop + extra)))
        out.append((index, tuple(grown)))
    return out
