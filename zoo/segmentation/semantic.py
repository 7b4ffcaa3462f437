"""Three-class semantic segmentation (background / object interior / object boundary), 2D or
3D, as in the DSB2018 U-Net entries and Caicedo et al. 2019: the training target from a label
image, and instances by growing the interiors over the foreground.

The boundary class (each object's outermost pixel layer) separates touching objects, so the
interior components are one seed per object; the seeds then grow back over the foreground.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .labels import relabel_small

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


def classes(labels: np.ndarray) -> np.ndarray:
    """The class of every pixel (``int64``): 0 background, 1 interior, 2 boundary."""
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    out = (labels > 0).astype(np.int64)
    out[find_boundaries(labels, mode="inner") & (labels > 0)] = BOUNDARY
    return out


def instances(probabilities: np.ndarray, seed_threshold: float = 0.5, mask_threshold: float = 0.5,
              min_size: int = 10) -> np.ndarray:
    """Label image from class probabilities (``3, *spatial``): seeds are connected interior
    regions (probability above ``seed_threshold``), grown over the foreground (1 - background
    above ``mask_threshold``), each pixel joining its nearest seed. Foreground
    components without a seed become objects of their own; objects under ``min_size`` pixels
    are dropped."""
    from scipy import ndimage as ndi

    if probabilities.ndim not in (3, 4) or probabilities.shape[0] != 3:
        raise InputError(f"expected class probabilities of shape (3, *spatial), got {probabilities.shape}")
    interior = probabilities[INTERIOR]
    foreground = (1.0 - probabilities[BACKGROUND]) > mask_threshold
    seeds, n = ndi.label((interior > seed_threshold) & foreground)
    components, _ = ndi.label(foreground)
    # every foreground pixel joins its nearest seed within the same foreground component: a rule
    # that depends on the neighbourhood alone (a flooding order would depend on the whole image,
    # and labelling in bands must give what the whole image gives)
    nearest = ndi.distance_transform_edt(seeds == 0, return_distances=False, return_indices=True)
    nearest = tuple(nearest)
    labels = np.where(foreground & (components[nearest] == components), seeds[nearest], 0)
    orphans, _ = ndi.label(foreground & (labels == 0))
    labels = np.where(orphans > 0, orphans + n, labels)
    return relabel_small(labels.astype(np.int32), min_size)
