"""Star-convex polygons (Schmidt et al., MICCAI 2018), 2D: the training targets from a label
image, and instances from the network's outputs (object probability + radial distances) by
greedy non-maximum suppression.

Vectorised over pixels with numpy; the loops run over rays and ray steps (or over the kept
candidates in NMS), never over pixels.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError


def ray_angles(n_rays: int) -> np.ndarray:
    return np.arange(n_rays) * (2 * np.pi / n_rays)


def star_distances(labels: np.ndarray, n_rays: int = 32) -> np.ndarray:
    """For every object pixel, the distance along each ray to its object's boundary: the last
    pixel of its own object plus half a pixel (``H, W, n_rays`` float32; 0 on background)."""
    if labels.ndim != 2:
        raise InputError(f"star distances need a 2D label image, got shape {labels.shape}")
    h, w = labels.shape
    yy, xx = np.nonzero(labels)
    own = labels[yy, xx]
    out = np.zeros((h, w, n_rays), np.float32)
    for k, angle in enumerate(ray_angles(n_rays)):
        dy, dx = np.sin(angle), np.cos(angle)
        distance = np.zeros(len(yy), np.float32)
        alive = np.ones(len(yy), bool)
        step = 0
        while alive.any():
            step += 1
            y = np.rint(yy[alive] + step * dy).astype(np.int64)
            x = np.rint(xx[alive] + step * dx).astype(np.int64)
            inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            same = np.zeros(len(y), bool)
            same[inside] = labels[y[inside], x[inside]] == own[alive][inside]
            idx = np.flatnonzero(alive)
            distance[idx[same]] = step
            alive[idx[~same]] = False
        out[yy, xx, k] = distance + 0.5
    return out


def object_probability(labels: np.ndarray) -> np.ndarray:
    """The StarDist probability target: each object's distance transform, scaled to 1 at its
    most central pixel."""
    from scipy import ndimage as ndi

    edt = ndi.distance_transform_edt(labels > 0) * (labels > 0)
    peak = ndi.maximum(edt, labels, index=np.arange(labels.max() + 1))
    return (edt / np.maximum(peak[labels], 1e-6)).astype(np.float32) * (labels > 0)


COARSE, COARSE_MARGIN = 3, 0.2     # the coarse coverage test of large candidates (see ``instances``)


def polygon_mask(centre: tuple[float, float], distances: np.ndarray, shape: tuple[int, int]):
    """Pixel coordinates (rows, cols) inside the star-convex polygon."""
    from skimage.draw import polygon

    angles = ray_angles(len(distances))
    rows = centre[0] + distances * np.sin(angles)
    cols = centre[1] + distances * np.cos(angles)
    return polygon(rows, cols, shape)


def instances(probability: np.ndarray, distances: np.ndarray, prob_threshold: float = 0.5,
              nms_threshold: float = 0.4) -> np.ndarray:
    """Label image from per-pixel object probability (``H, W``) and ray distances (``H, W, R``).

    Candidates above ``prob_threshold`` are taken best first; a candidate whose polygon is
    covered by already accepted objects for more than ``nms_threshold`` of its area is dropped,
    otherwise it is painted on the pixels still free.
    """
    if probability.shape != distances.shape[:2]:
        raise InputError(f"probability {probability.shape} and distances {distances.shape} do not match")
    labels = np.zeros(probability.shape, np.int32)
    ys, xs = np.nonzero(probability > prob_threshold)
    order = np.argsort(-probability[ys, xs], kind="stable")
    next_id = 1
    coarse = labels[::COARSE, ::COARSE]        # a view: painting labels paints it
    for i in order:
        y, x = ys[i], xs[i]
        if labels[y, x]:                       # its centre is already someone's: not a new object
            continue
        rays = distances[y, x]
        if next_id > 1 and float(np.max(rays)) > 2 * COARSE * 4:
            # a large polygon: first count its taken pixels on every COARSE-th row and column
            # (COARSE**2 times fewer); clearly covered ones (typical of a model shown data
            # unlike its training data) are dropped without drawing them in full
            rr, cc = polygon_mask((y / COARSE, x / COARSE), rays / COARSE, coarse.shape)
            if len(rr) >= 16 and (coarse[rr, cc] > 0).mean() > nms_threshold + COARSE_MARGIN:
                continue
        rr, cc = polygon_mask((y, x), rays, probability.shape)
        if len(rr) == 0:
            continue
        taken = labels[rr, cc] > 0
        if taken.mean() > nms_threshold:
            continue
        labels[rr[~taken], cc[~taken]] = next_id
        next_id += 1
    return labels
