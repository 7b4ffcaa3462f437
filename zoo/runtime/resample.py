"""Resampling between an image's grid and a model's: images by interpolation, labels by nearest
neighbour (ids kept), and back to the exact input shape.

Every function resamples the *trailing* axes (as many as there are factors, or entries in
``shape``); leading axes (batch, channel, time) are looped over, one image and channel at a time,
in float32: a linear zoom (the default) needs the output and about two channels of float32 working
space (``order > 1``: scipy's spline prefilter holds one channel in float64). Pixel areas are
aligned (a pixel's centre ``i`` maps to ``(i + 0.5) * in / out - 0.5``), so an image and its labels
resampled with the same factors stay registered, and rescaling by ``f`` and restoring the shape is
a round trip. Output sizes are ``floor(size * f + 0.5)`` (at least 1). Factors come from
:mod:`zoo.runtime.scale`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from zoo.errors import InputError


def output_shape(shape: Sequence[int], factors: Sequence[float]) -> tuple[int, ...]:
    """The spatial shape that ``factors`` give ``shape`` (``floor(size * f + 0.5)``, at least 1)."""
    factors = _check_factors(factors)
    if len(factors) != len(shape):
        raise InputError(f"{len(factors)} zoom factors given for {len(shape)} spatial axes {tuple(shape)}")
    return tuple(max(1, int(math.floor(s * f + 0.5))) for s, f in zip(shape, factors))


def rescale_image(x: np.ndarray, factors: Sequence[float], order: int = 1, *,
                  anti_alias: bool = True) -> np.ndarray:
    """Zoom the trailing ``len(factors)`` axes of ``x`` by ``factors`` (one per axis, e.g. ``(fy,
    fx)`` for ``bcyx``, ``(fz, fy, fx)`` for ``zyx``); spline ``order`` 1 is linear. Axes that
    shrink are Gaussian-filtered first (sigma ``(1/f - 1) / 2``, as ``skimage.transform.rescale``
    does) so that fine detail does not alias. Returns float32."""
    x = np.asarray(x)
    n = len(_check_factors(factors))
    if x.ndim < n:
        raise InputError(f"{n} zoom factors given for an array of {x.ndim} axes {x.shape}")
    return _resize(x, output_shape(x.shape[x.ndim - n:], factors), order, anti_alias)


def restore_size(y: np.ndarray, shape: Sequence[int], order: int = 1, *,
                 anti_alias: bool = True) -> np.ndarray:
    """Resample the trailing ``len(shape)`` axes of ``y`` to exactly ``shape`` (the input's
    spatial shape, after predicting at the model's scale). Images and maps only, float32 out; for
    labels use :func:`rescale_labels` with ``shape=``."""
    y = np.asarray(y)
    shape = _check_shape(shape, y)
    return _resize(y, shape, order, anti_alias)


def rescale_labels(labels: np.ndarray, factors: Sequence[float] | None = None, *,
                   shape: Sequence[int] | None = None) -> np.ndarray:
    """Resample a label image by nearest neighbour, either by ``factors`` or to exactly ``shape``
    (one of the two), over its trailing axes. Ids are copied, never interpolated: no new id
    appears, the dtype is kept, and every object survives enlargement. Shrinking can only lose
    objects: one smaller than about a pixel of the new grid (under ``1/f`` pixels across) may fall
    between the sampled pixels and vanish; other objects keep their id."""
    labels = np.asarray(labels)
    if (factors is None) == (shape is None):
        raise InputError("rescale_labels takes either zoom factors or a target shape, not both or neither")
    if factors is not None:
        n = len(_check_factors(factors))
        if labels.ndim < n:
            raise InputError(f"{n} zoom factors given for labels of {labels.ndim} axes {labels.shape}")
        shape = output_shape(labels.shape[labels.ndim - n:], factors)
    else:
        shape = _check_shape(shape, labels)
    n = len(shape)
    src = labels.shape[labels.ndim - n:]
    if tuple(src) == tuple(shape):
        return labels.copy()
    index = [np.minimum(((np.arange(o) + 0.5) * (i / o)).astype(np.intp), i - 1) for i, o in zip(src, shape)]
    return labels[(Ellipsis, *np.ix_(*index))]


def _resize(x: np.ndarray, shape: tuple[int, ...], order: int, anti_alias: bool) -> np.ndarray:
    """Resample the trailing axes of ``x`` to ``shape``, one leading index at a time, float32."""
    from scipy import ndimage

    if not isinstance(order, (int, np.integer)) or not 0 <= order <= 5:
        raise InputError(f"the interpolation order must be an integer from 0 to 5, got {order!r}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise InputError(f"an image of real numbers is expected, got dtype {x.dtype}")
    n = len(shape)
    lead, src = x.shape[:x.ndim - n], x.shape[x.ndim - n:]
    if 0 in src:
        raise InputError(f"cannot resample an empty image of shape {x.shape}")
    sigma = [max(0.0, (i / o - 1) / 2) if anti_alias else 0.0 for i, o in zip(src, shape)]
    zoom = [o / i for i, o in zip(src, shape)]
    out = np.empty(lead + tuple(shape), np.float32)
    for idx in np.ndindex(*lead):
        a = np.asarray(x[idx], dtype=np.float32)
        if order == 1:                                # separable: axis by axis, the most shrunk first
            owned = not np.may_share_memory(a, x)     # then filtered in place
            for axis in sorted(range(n), key=lambda k: zoom[k]):
                if sigma[axis]:
                    a = ndimage.gaussian_filter1d(a, sigma[axis], axis, mode="mirror", output=a if owned else None)
                if src[axis] != shape[axis]:
                    a = _linear_axis(a, axis, shape[axis])
                owned = owned or bool(sigma[axis]) or src[axis] != shape[axis]
            out[idx] = a
            continue
        if any(sigma):
            a = ndimage.gaussian_filter(a, sigma, mode="mirror")
        if tuple(src) == tuple(shape):
            out[idx] = a
        else:
            out[idx] = ndimage.zoom(a, zoom, output=np.float32, order=order, mode="reflect", grid_mode=True)
    return out


def _linear_axis(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear interpolation of ``a`` along ``axis`` to ``size`` samples, pixel areas aligned (the
    same values as ``scipy.ndimage.zoom(order=1, mode="reflect", grid_mode=True)``), float32."""
    n = a.shape[axis]
    c = np.clip((np.arange(size) + 0.5) * (n / size) - 0.5, 0, n - 1)
    i0 = c.astype(np.intp)
    w = (c - i0).astype(np.float32).reshape((-1,) + (1,) * (a.ndim - axis - 1))
    out = a.take(i0, axis)
    out *= 1 - w
    upper = a.take(np.minimum(i0 + 1, n - 1), axis)
    upper *= w
    out += upper
    return out


def _check_factors(factors) -> tuple[float, ...]:
    if np.ndim(factors) != 1 or len(factors) == 0:
        raise InputError(f"zoom factors are one positive number per spatial axis, got {factors!r}")
    try:
        values = tuple(float(f) for f in factors)
    except (TypeError, ValueError):
        raise InputError(f"zoom factors must be numbers, got {factors!r}") from None
    bad = [f for f in values if not (math.isfinite(f) and f > 0)]
    if bad:
        raise InputError(f"zoom factors must be positive finite numbers, got {factors!r}")
    return values


def _check_shape(shape, x: np.ndarray) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"a target shape is a sequence of positive integers, got {shape!r}") from None
    if not shape or any(s < 1 for s in shape) or len(shape) > x.ndim:
        raise InputError(f"a target shape of positive sizes, one per trailing axis of an array of "
                         f"shape {x.shape}, is expected, got {shape}")
    return shape
