"""Flow fields (Stringer et al., Nature Methods 2021), 2D and 3D: the training targets from a
label image, and instances recovered from predicted flows by following them.

Targets: heat diffuses from each object's most central pixel inside the object; the flows are
the normalised gradient of ``log(1 + heat)``, unit vectors pointing towards the centre.
Instances: every foreground pixel moves along the (interpolated) flows for ``n_steps`` steps;
pixels that end at the same sink belong to the same object. Sinks are local maxima of the
histogram of end points, grown over the histogram's support by a seeded watershed.

Vectorised over pixels (numpy for targets, torch ``grid_sample`` for following); the loops run
over diffusion iterations and integration steps only.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..errors import InputError
from .labels import relabel_small


def _centres(labels: np.ndarray) -> np.ndarray:
    """Per object, the flat index of its most central pixel: the largest distance to the
    boundary, ties going to the pixel nearest the centroid (so the choice turns with the image)."""
    from scipy import ndimage as ndi

    ids = np.arange(1, int(labels.max()) + 1)
    ids = ids[np.bincount(labels.ravel(), minlength=len(ids) + 1)[1:] > 0]
    centroids = np.array(ndi.center_of_mass(np.ones(labels.shape), labels, ids)).reshape(len(ids), labels.ndim)
    table = np.zeros((int(labels.max()) + 1, labels.ndim))
    table[ids] = centroids
    grids = np.indices(labels.shape, dtype=np.float64)
    offset = sum((g - table[labels][..., i]) ** 2 for i, g in enumerate(grids))
    score = ndi.distance_transform_edt(labels > 0) - 1e-3 * np.sqrt(offset)
    positions = ndi.maximum_position(score, labels, ids)
    return np.ravel_multi_index(np.array(positions).T, labels.shape)


def _shift(a: np.ndarray, offset: tuple[int, ...], fill) -> np.ndarray:
    """``a`` moved so that ``out[p] = a[p + offset]`` (``fill`` where that falls outside)."""
    out = np.full_like(a, fill)
    src = tuple(slice(max(o, 0), a.shape[i] + min(o, 0)) for i, o in enumerate(offset))
    dst = tuple(slice(max(-o, 0), a.shape[i] + min(-o, 0)) for i, o in enumerate(offset))
    out[dst] = a[src]
    return out


def diffusion(labels: np.ndarray, n_iter: int | None = None) -> np.ndarray:
    """Heat diffused from every object's centre, within the object (float32, 0 on background).

    Each iteration adds one unit at the centres and replaces every pixel by the mean over its
    3x3(x3) neighbours of the same object. ``n_iter`` defaults to twice the largest object
    extent, enough for the heat to reach every pixel."""
    labels = np.asarray(labels)
    if labels.max() == 0:
        return np.zeros(labels.shape, np.float32)
    if n_iter is None:
        from scipy import ndimage as ndi

        boxes = [b for b in ndi.find_objects(labels) if b is not None]
        n_iter = 2 * max(max(s.stop - s.start for s in box) for box in boxes)
    offsets = list(itertools.product((-1, 0, 1), repeat=labels.ndim))
    same = [(_shift(labels, o, 0) == labels) & (labels > 0) for o in offsets]
    count = np.maximum(sum(s.astype(np.float32) for s in same), 1)
    centres = _centres(labels)
    heat = np.zeros(labels.shape, np.float32)
    flat = heat.reshape(-1)
    for _ in range(n_iter):
        flat[centres] += 1.0
        total = np.zeros_like(heat)
        for o, s in zip(offsets, same):
            total += np.where(s, _shift(heat, o, 0.0), 0.0)
        heat = total / count
        flat = heat.reshape(-1)
    return heat * (labels > 0)


def flows(labels: np.ndarray, n_iter: int | None = None) -> np.ndarray:
    """Unit flow vectors towards each object's centre (``D, *spatial`` float32; 0 on
    background), one component per spatial axis in axis order (``y, x`` or ``z, y, x``)."""
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise InputError(f"flows need a 2D or 3D label image, got shape {labels.shape}")
    heat = np.log1p(diffusion(labels, n_iter))
    inside = labels > 0
    components = []
    for axis in range(labels.ndim):
        step = tuple(1 if i == axis else 0 for i in range(labels.ndim))
        back = tuple(-s for s in step)
        # central differences within the object; outside pixels count as zero heat
        ahead = np.where(_shift(labels, step, 0) == labels, _shift(heat, step, 0.0), 0.0)
        behind = np.where(_shift(labels, back, 0) == labels, _shift(heat, back, 0.0), 0.0)
        components.append((ahead - behind) * inside)
    vectors = np.stack(components).astype(np.float32)
    norm = np.sqrt((vectors**2).sum(axis=0, keepdims=True))
    return np.where(norm > 0, vectors / np.maximum(norm, 1e-20), 0.0).astype(np.float32)


FOLLOW_CHUNK = 16384
"""Pixels followed at a time. Each one's path is its own, so the ends are the same bit for bit;
every pixel at once held torch temporaries for all of them and ran out of cache
(``scripts/bench_follow.py``, 540k foreground pixels, one thread, a busy machine: 22.3 s and
+294 MB peak at once, 1.8 s and +0 MB in chunks of 16384; chunks of 2^20 are as slow as none)."""


def follow(flow: np.ndarray, mask: np.ndarray, n_steps: int = 200) -> np.ndarray:
    """End points (``n_pixels, D`` float, in pixel coordinates) of the pixels in ``mask`` after
    ``n_steps`` unit steps along the linearly interpolated flow field (``D, *spatial``), followed
    :data:`FOLLOW_CHUNK` pixels at a time."""
    import torch

    shape = torch.tensor(mask.shape, dtype=torch.float32)
    start = np.argwhere(mask)                                                    # (n, D)
    if len(start) == 0:
        return start.astype(np.float32)
    field = torch.from_numpy(np.ascontiguousarray(flow[::-1], dtype=np.float32))[None]  # x, y(, z) order
    ends = np.empty(start.shape, np.float32)
    for lo in range(0, len(start), FOLLOW_CHUNK):
        chunk = torch.from_numpy(start[lo:lo + FOLLOW_CHUNK].astype(np.float32))
        ends[lo:lo + len(chunk)] = _follow_points(field, chunk, shape, n_steps).numpy()
    return ends


def _follow_points(field, p, shape, n_steps: int):
    """Points ``p`` (``n, D``) moved ``n_steps`` times along ``field`` (``1, D, *spatial``)."""
    import torch
    from torch.nn import functional as F

    dims = p.shape[1]
    scale = 2.0 / torch.clamp(shape - 1, min=1)
    view = (1, len(p)) + (1,) * (dims - 1) + (dims,)
    with torch.inference_mode():
        for _ in range(n_steps):
            grid = (p * scale - 1).flip(-1).reshape(view)                       # normalised, x first
            step = F.grid_sample(field, grid, mode="bilinear", align_corners=True)
            p = p + step.reshape(dims, -1).T.flip(-1)
            p = torch.minimum(torch.clamp(p, min=0), shape - 1)
    return p


def sinks(ends: np.ndarray, shape: tuple[int, ...], min_count: int = 10) -> np.ndarray:
    """Label image of the sinks: local maxima of the end-point histogram holding at least
    ``min_count`` end points, each grown over the histogram's support."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    idx = np.ravel_multi_index(np.rint(ends).astype(np.int64).T, shape)
    hist = np.bincount(idx, minlength=int(np.prod(shape))).reshape(shape).astype(np.float32)
    smooth = ndi.uniform_filter(hist, size=3) * 3 ** len(shape)     # counts over 3x3(x3) windows
    peaks = (smooth == ndi.maximum_filter(smooth, size=5)) & (smooth >= min_count)
    markers, _ = ndi.label(peaks)
    support = ndi.binary_dilation(hist > 0, iterations=2)
    return watershed(-smooth, markers, mask=support)


def instances(flow: np.ndarray, probability: np.ndarray, prob_threshold: float = 0.5, n_steps: int = 200,
              min_size: int = 15, min_count: int = 10) -> np.ndarray:
    """Label image from flows (``D, *spatial``) and cell probability (``*spatial``): pixels above
    ``prob_threshold`` follow the flows; those ending in the same sink form one object. Objects
    smaller than ``min_size`` pixels are dropped; labels are consecutive from 1."""
    if flow.shape[1:] != probability.shape or flow.shape[0] != probability.ndim:
        raise InputError(f"flows {flow.shape} and probability {probability.shape} do not match: expected "
                         f"({probability.ndim}, *{probability.shape})")
    mask = probability > prob_threshold
    labels = np.zeros(probability.shape, np.int32)
    if not mask.any():
        return labels
    ends = follow(flow, mask, n_steps)
    basins = sinks(ends, probability.shape, min_count)
    idx = tuple(np.rint(ends).astype(np.int64).T)
    labels[mask] = basins[idx]
    return relabel_small(labels, min_size)
