"""Helpers on label images shared by the instance steps."""
from __future__ import annotations

import numpy as np


def relabel_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects under ``min_size`` pixels and number the rest 1..n (in order of first pixel)."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    ids, first = np.unique(labels.ravel(), return_index=True)
    order = [i for _, i in sorted(zip(first, ids)) if keep[i]]
    table = np.zeros(len(sizes), np.int32)
    table[order] = np.arange(1, len(order) + 1)
    return table[labels]


def object_table(labels: np.ndarray) -> list[dict]:
    """One row per object of a label image (2D or 3D): label, area (pixels or voxels), centroid and
    bounding box in pixel coordinates (scikit-image's regionprops)."""
    from skimage.measure import regionprops

    rows = []
    for region in regionprops(np.asarray(labels, dtype=np.int64)):
        rows.append({"label": int(region.label), "area": int(region.area),
                     "centroid": [round(float(c), 2) for c in region.centroid],
                     "bbox": [int(b) for b in region.bbox]})
    return rows
