"""Physical scale, channels by name and stacks at prediction time (issue 24.2-4).

An image is brought to the scale its model was trained at and the prediction back to the
image's grid: images by linear interpolation, labels by nearest neighbour (object ids kept).
The factors come from, in order: ``diameter`` (the objects' size in the image, in pixels,
against the model's training objects), ``pixel_size`` (given, or read from OME-TIFF, ImageJ or
OME-Zarr metadata) against the model's, and ``anisotropy`` (z spacing over xy spacing) for 3D
models. What was done is said in words; an unknown pixel size for a model that records one is a
warning, never a silent run. Per-slice labels of a 2D model on a z-stack (or time-lapse) are
joined by IoU with ``stitch_threshold``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

log = logging.getLogger("zoo")


@dataclass
class ScalePlan:
    factors: tuple[float, ...] | None = None     # per spatial axis, image -> model grid (None: as it is)
    said: str = ""                               # what was done, in words
    warning: str = ""                            # e.g. the pixel size is unknown
    pixel_size: dict | None = None               # the image's, by axis (µm), given or read: its outputs declare it


def _pixel_sizes(value, spatial: str) -> dict[str, float] | None:
    """A given pixel size (one number for all axes, a list in the spatial order, or a dict by axis)."""
    if value is None:
        return None
    if isinstance(value, dict):
        sizes = dict(value)
    elif isinstance(value, (list, tuple)):
        if len(value) != len(spatial):
            raise InputError(f"--pixel-size has {len(value)} values; the model's spatial axes are '{spatial}'")
        sizes = dict(zip(spatial, value))
    else:
        sizes = {a: value for a in spatial}
    for axis, size in sizes.items():
        if not isinstance(size, (int, float)) or not math.isfinite(size) or size <= 0:
            raise InputError(f"--pixel-size {size}: expected a positive number of micrometres per pixel "
                             f"(axis {axis})")
    return {a: float(s) for a, s in sizes.items()}


def plan(spec, source: str | Path | None = None, pixel_size=None, diameter: float | None = None,
         anisotropy: float | None = None) -> ScalePlan:
    """How an image (``source``: its file, for metadata) is brought to ``spec``'s scale."""
    from ..metadata import read
    from ..runtime.scale import anisotropy_factors, diameter_factors, scale_factors

    spatial = spec.inputs[0].spatial_axes
    trained = spec.scale or {}
    given = _pixel_sizes(pixel_size, spatial)
    stated = read(source) if source is not None and given is None else None
    image_sizes, where = (given, "given") if given else \
        ((stated.pixel_size, stated.source) if stated and stated.pixel_size else (None, ""))
    factors, said, warning = None, "", ""
    if diameter is not None:
        if not trained.get("diameter"):
            raise InputError(f"{spec.ref} records no typical object diameter, so --diameter cannot be used; pass "
                             "--pixel-size (if the package records one) or predict at the image's own scale")
        factors = diameter_factors(diameter, trained["diameter"], len(spatial))
        said = f"objects of {diameter:g} px, the model's {trained['diameter']:g} px"
    elif image_sizes and trained.get("pixel_size"):
        model_sizes = trained["pixel_size"]
        factors = scale_factors([image_sizes.get(a) for a in spatial], [model_sizes.get(a) for a in spatial])
        said = (f"image {_sizes_text(image_sizes, spatial)} ({where}), model {_sizes_text(model_sizes, spatial)}")
    elif trained.get("pixel_size") and not image_sizes:
        warning = (f"the image's pixel size is unknown (no metadata, no --pixel-size): it is used at its own scale; "
                   f"{spec.ref} was trained at {_sizes_text(trained['pixel_size'], spatial)}. Pass --pixel-size "
                   "(or --diameter) if they differ")
    if anisotropy is not None:
        if len(spatial) != 3:
            raise InputError(f"--anisotropy is for 3D models; {spec.ref} is {len(spatial)}D")
        z = anisotropy_factors(anisotropy)
        if z is not None:
            factors = tuple(a * b for a, b in zip(factors or (1.0,) * 3, z))
            said = ", ".join(filter(None, [said, f"z spacing {anisotropy:g}x the xy spacing"]))
    if factors is not None and all(abs(f - 1) <= 0.01 for f in factors):
        factors = None
    if factors is not None:
        said = f"rescaled by {' x '.join(f'{f:.3g}' for f in factors)} to the model's scale and back ({said})"
    return ScalePlan(factors, said, warning, image_sizes)


def _sizes_text(sizes: dict, spatial: str) -> str:
    values = [sizes.get(a) for a in spatial if sizes.get(a)]
    if values and all(abs(v / values[0] - 1) < 1e-6 for v in values):
        return f"{values[0]:.4g} µm/px"
    return ", ".join(f"{a} {sizes[a]:.4g} µm" for a in spatial if sizes.get(a))


def predict_rescaled(model, image, axes: str | None, factors, **options) -> np.ndarray:
    """``model.predict`` at the model's scale: the image zoomed by ``factors``, the prediction
    restored to the image's grid (labels by nearest neighbour)."""
    from ..runtime import layout, resample

    predictor = model.predictor
    x, natural = predictor.to_tensor(np.asarray(image), axes)
    y = predictor.predict_tensor(resample.rescale_image(x, factors), **options)
    zoom = predictor.zoom() or [1.0] * (x.ndim - 2)
    shape = [int(round(s * z)) for s, z in zip(x.shape[2:], zoom)]
    if np.issubdtype(y.dtype, np.integer):
        y = resample.rescale_labels(y, shape=shape)
    else:
        y = resample.restore_size(y, shape)
    return layout.from_tensor(y, natural)


def pick_channels(model, image, axes: str | None, channels, file_channels=None):
    """(image, axes) with the model's channels by name (``channels``: ``"nuclei=0,cyto=1"``)."""
    from ..runtime import channels as by_name
    from ..runtime.layout import guess_axes

    mapping = by_name.parse(channels)
    if mapping is None:
        return image, axes
    inp = model.spec.inputs[0]
    image = np.asarray(image)
    axes = axes or guess_axes(image.shape, inp.spatial_axes)
    return by_name.pick(image, axes, mapping, inp.channels or ["c0"], file_channels)


def stitch_stack(labels: np.ndarray, axes: str, threshold: float) -> np.ndarray:
    """2D instance labels of a z-stack (else a time-lapse) joined across slices by IoU."""
    from ..segmentation.stitch import check_threshold, stitch

    threshold = check_threshold(threshold)
    along = "z" if "z" in axes else "t" if "t" in axes else None
    if along is None:
        raise InputError(f"--stitch-threshold joins the labels of a z-stack or a time-lapse; the image's axes are "
                         f"'{axes}'")
    return stitch(labels, threshold, axis=axes.index(along))
