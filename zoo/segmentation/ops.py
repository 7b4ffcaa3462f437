"""Instance post-processing as spec ops: network outputs (``b, c, *spatial``) -> label images
(``b, 1, *spatial`` int32, 0 = background).

These ops see the whole stitched output of an image, never a tile, so objects on tile seams
are found once; ``zoo.runtime.stream`` runs them band by band with an overlap when an image is
streamed. ``Model.predict(raw=True)`` skips them.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError


def _per_image(y: np.ndarray, fn) -> np.ndarray:
    return np.stack([fn(image)[None] for image in y]).astype(np.int32)


def semantic_instances(y: np.ndarray, params: dict, context: dict, tensor: str) -> np.ndarray:
    """Classes (background, interior, boundary) -> instances by a seeded watershed."""
    from .semantic import instances

    return _per_image(y, lambda p: instances(p, **params))


def stardist_instances(y: np.ndarray, params: dict, context: dict, tensor: str) -> np.ndarray:
    """Object probability + ray distances -> instances by polygon NMS (2D)."""
    from .stardist import instances

    if y.ndim != 4:
        raise InputError(f"StarDist post-processing is 2D; got an output of shape {y.shape}")
    return _per_image(y, lambda p: instances(p[0], np.moveaxis(p[1:], 0, -1), **params))


def cellpose_instances(y: np.ndarray, params: dict, context: dict, tensor: str) -> np.ndarray:
    """Flows (one channel per spatial axis) + cell probability -> instances by following the flows."""
    from .cellpose import instances

    dims = y.ndim - 2
    if y.shape[1] != dims + 1:
        raise InputError(f"cellpose output needs {dims} flow channels and a probability, got {y.shape[1]} channels")
    return _per_image(y, lambda p: instances(p[:dims], p[dims], **params))


INSTANCE_OPS = {
    "semantic_instances": semantic_instances,
    "stardist_instances": stardist_instances,
    "cellpose_instances": cellpose_instances,
}
