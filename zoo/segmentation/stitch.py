"""Stitching 2D instance labels across z (or t) into 3D objects by IoU, as Cellpose's
``stitch3D`` does."""
from __future__ import annotations

import math

import numpy as np

from zoo.errors import InputError


def stitch(labels: np.ndarray, threshold: float, axis: int = 0) -> np.ndarray:
    """Join the per-slice objects of ``labels`` along ``axis`` (z of ``zyx``, or t of ``tyx``)
    into objects that span slices.

    Going slice by slice, each object takes the id of the previous slice's object it overlaps
    with the highest IoU, if that IoU is at least ``threshold``; otherwise it starts a new object.
    As in Cellpose, a previous object passes its id to at most one object (the one it overlaps
    best), so no two objects of a slice ever merge, and an object that skips a slice is not
    rejoined. Ids in a slice may be any non-negative integers (0 is background) and need not
    agree between slices. Returns int32 labels (int64 for huge stacks) of the same shape, ids
    1..n in order of first appearance. ``threshold`` must be in (0, 1].
    """
    threshold = check_threshold(threshold)
    labels = np.asarray(labels)
    if labels.ndim < 2 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"a stack of integer label images is expected (e.g. zyx), got shape {labels.shape} "
                         f"and dtype {labels.dtype}")
    if not -labels.ndim <= axis < labels.ndim:
        raise InputError(f"axis {axis} does not exist in labels of shape {labels.shape}")
    stack = np.moveaxis(labels, axis, 0)
    if stack.size and stack.min() < 0:
        raise InputError("label ids must be non-negative (0 is background), got a negative id")
    dtype = np.int32 if stack.size < 2**31 else np.int64
    out = np.zeros(stack.shape, dtype)
    prev, prev_ids, n = None, None, 0            # the previous slice: compact ids, and their stitched ids
    for k in range(stack.shape[0]):
        cur, m = _compact(stack[k])
        table = np.zeros(m + 1, dtype)
        if prev is not None and m and len(prev_ids) > 1:
            ci, pi = _matches(cur, m, prev, len(prev_ids) - 1, threshold)
            table[ci] = prev_ids[pi]
        new = np.flatnonzero(table[1:] == 0) + 1
        table[new] = np.arange(n + 1, n + 1 + len(new), dtype=dtype)
        n += len(new)
        out[k] = table[cur]
        prev, prev_ids = cur, table
    return np.moveaxis(out, 0, axis)


def check_threshold(threshold) -> float:
    """The stitch threshold as a float; an InputError unless it is a number in (0, 1]."""
    try:
        if isinstance(threshold, (bool, np.bool_, str, bytes)):
            raise TypeError
        value = float(threshold)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 1):
        raise InputError(f"the stitch threshold is an IoU in (0, 1] (e.g. 0.25; higher joins fewer "
                         f"objects), got {threshold!r}")
    return value


def _compact(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Ids of one slice renumbered 1..m in order (0 stays background), and m."""
    top = int(image.max()) if image.size else 0
    if top <= 4 * image.size:                         # small ids: a lookup table, no sort
        present = np.bincount(image.ravel().astype(np.intp, copy=False), minlength=top + 1) > 0
        present[0] = False
        table = np.cumsum(present)
        return table[image], int(table[-1])
    ids = np.unique(image)                            # few large ids: sort them, look pixels up
    ids = ids[ids > 0]
    return np.where(image > 0, np.searchsorted(ids, image) + 1, 0), len(ids)


def _matches(cur: np.ndarray, m: int, prev: np.ndarray, mp: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (current object, previous object) joined: IoU >= threshold, each previous object to
    its best current one, then each current object to its best remaining previous one."""
    both = (cur > 0) & (prev > 0)
    codes = cur[both].astype(np.int64) * (mp + 1) + prev[both]
    if (m + 1) * (mp + 1) <= 4 * codes.size:          # few objects: count every pair in a table
        inter = np.bincount(codes, minlength=(m + 1) * (mp + 1))
        codes = np.flatnonzero(inter)
        inter = inter[codes]
    else:
        codes, inter = np.unique(codes, return_counts=True)
    ci, pi = codes // (mp + 1), codes % (mp + 1)
    area_c = np.bincount(cur.ravel(), minlength=m + 1)
    area_p = np.bincount(prev.ravel(), minlength=mp + 1)
    iou = inter / (area_c[ci] + area_p[pi] - inter)
    keep = iou >= threshold
    ci, pi, iou = ci[keep], pi[keep], iou[keep]
    for by_prev in (True, False):                 # best per previous object, then per current one
        key = pi if by_prev else ci
        order = np.lexsort((-iou, key))
        first = order[np.r_[True, key[order][1:] != key[order][:-1]]] if order.size else order
        ci, pi, iou = ci[first], pi[first], iou[first]
    return ci, pi
