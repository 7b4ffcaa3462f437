"""Physical scale: zoom factors that bring an image to a model's sampling, and the typical object
size of a label image.

A factor is new pixels per old pixel along an axis (``> 1`` enlarges), in the order of the
spatial axes (``yx`` or ``zyx``), ready for :mod:`zoo.runtime.resample`. Each helper returns
``None`` when every factor is within 1% of 1: then nothing needs rescaling.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from zoo.errors import InputError

TOLERANCE = 0.01          # factors within 1% of 1 are no rescale


def scale_factors(image_pixel_size: float | Sequence[float | None] | None,
                  model_pixel_size: float | Sequence[float | None] | None,
                  ndim: int = 2) -> tuple[float, ...] | None:
    """Factors ``image / model`` per axis from pixel sizes in µm (an image at 0.5 µm/px for a
    model trained at 1 µm/px is shrunk by 0.5). Each side is one size per spatial axis or one
    number for all (then ``ndim`` axes, when both are single numbers). An axis whose size is
    ``None`` on either side is left as it is; a size of 0, below 0, NaN or inf is an InputError."""
    image = _sizes(image_pixel_size, "the image's pixel size")
    model = _sizes(model_pixel_size, "the model's pixel size")
    if len(image) > 1 and len(model) > 1 and len(image) != len(model):
        raise InputError(f"the image's pixel size has {len(image)} axes and the model's has "
                         f"{len(model)}: give one size per spatial axis (µm, e.g. z, y, x)")
    n = max(len(image), len(model)) if max(len(image), len(model)) > 1 else ndim
    image, model = image * n if len(image) == 1 else image, model * n if len(model) == 1 else model
    return _or_none(1.0 if i is None or m is None else i / m for i, m in zip(image, model))


def diameter_factors(image_diameter_px: float, model_diameter_px: float,
                     ndim: int = 2) -> tuple[float, ...] | None:
    """Factors ``model / image`` on all ``ndim`` axes from typical object diameters in pixels
    (objects of 30 px for a model trained on 15 px objects are shrunk by 0.5)."""
    image = _positive(image_diameter_px, "the objects' diameter in the image (pixels)")
    model = _positive(model_diameter_px, "the model's object diameter (pixels)")
    return _or_none([model / image] * ndim)


def anisotropy_factors(anisotropy: float, model_anisotropy: float = 1.0) -> tuple[float, float, float] | None:
    """Factors ``(z, y, x)`` that resample a volume with z spacing ``anisotropy`` times its xy
    spacing to the model's (1: isotropic): z is zoomed by ``anisotropy / model_anisotropy``."""
    a = _positive(anisotropy, "the anisotropy (z spacing over xy spacing)")
    m = _positive(model_anisotropy, "the model's anisotropy (z spacing over xy spacing)")
    return _or_none((a / m, 1.0, 1.0))


def estimate_diameter(labels: np.ndarray | Iterable[np.ndarray], ndim: int | None = None) -> float | None:
    """The median equivalent diameter, in pixels, of the objects of a label image or of a list of
    them (a training set): ``2 sqrt(area / pi)`` in 2D, ``(6 volume / pi) ** (1/3)`` in 3D. The
    trailing ``ndim`` axes are spatial (default: all of a 2D or 3D array); leading axes are
    separate images. Assumes square (cubic) pixels. None when there is no object."""
    images = [labels] if isinstance(labels, np.ndarray) else list(labels)
    diameters = []
    for image in images:
        image = np.asarray(image)
        d = ndim or image.ndim
        if d not in (2, 3) or image.ndim < d:
            raise InputError(f"label images of 2 or 3 spatial axes are expected, got shape {image.shape}"
                             + (f" with ndim={ndim}" if ndim else ""))
        if not np.issubdtype(image.dtype, np.integer):
            raise InputError(f"a label image of integer ids is expected, got dtype {image.dtype}")
        for idx in np.ndindex(*image.shape[:image.ndim - d]):
            sizes = _object_sizes(image[idx])
            diameters.append(2 * np.sqrt(sizes / np.pi) if d == 2 else np.cbrt(6 * sizes / np.pi))
    diameters = np.concatenate(diameters) if diameters else np.zeros(0)
    return float(np.median(diameters)) if diameters.size else None


def _object_sizes(image: np.ndarray) -> np.ndarray:
    """Pixel counts of the objects (ids > 0) of one label image."""
    flat = image.ravel()
    top = int(flat.max()) if flat.size else 0
    if top <= 0:
        return np.zeros(0, np.int64)
    if top <= 4 * flat.size:                     # small ids: a table is faster than sorting
        counts = np.bincount(flat[flat > 0].astype(np.intp, copy=False), minlength=top + 1)[1:]
        return counts[counts > 0]
    return np.unique(flat[flat > 0], return_counts=True)[1]


def _sizes(value, what: str) -> list[float | None]:
    """One number or one per axis; each None or positive and finite."""
    if value is None:
        return [None]
    values = list(value) if np.ndim(value) == 1 else [value]
    if not values or np.ndim(value) > 1:
        raise InputError(f"{what} must be one number or one per spatial axis (µm per pixel), got {value!r}")
    return [None if v is None else _positive(v, what + " (µm per pixel)") for v in values]


def _positive(value, what: str) -> float:
    """``value`` as a float; an InputError naming it unless it is positive and finite."""
    try:
        if isinstance(value, (bool, np.bool_, str, bytes)):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a positive finite number, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise InputError(f"{what} must be a positive finite number, got {value!r}")
    return number


def _or_none(factors: Iterable[float]) -> tuple[float, ...] | None:
    factors = tuple(float(f) for f in factors)
    return None if all(abs(f - 1) <= TOLERANCE for f in factors) else factors
