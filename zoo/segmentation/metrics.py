"""Instance-segmentation metrics: objects matched one-to-one by IoU (Hungarian assignment), then
precision, recall, F1, average precision as the DSB2018/StarDist papers define it
(TP / (TP + FP + FN)) and panoptic quality, at IoU thresholds 0.5 ... 0.9, 2D or 3D.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError

THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels made consecutive (0 stays background): (image, number of objects)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        ids, inverse = np.concatenate([[0], ids]), inverse + 1
    return inverse.reshape(labels.shape), len(ids) - 1


def iou_matrix(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """IoU of every true object (rows) with every predicted object (columns), from one pass of
    counts over the pixel pairs."""
    if truth.shape != prediction.shape:
        raise InputError(f"label images differ in shape: truth {truth.shape}, prediction {prediction.shape}")
    for name, labels in (("truth", truth), ("prediction", prediction)):
        if labels.dtype.kind not in "iub" or (labels.dtype.kind == "i" and labels.min(initial=0) < 0):
            raise InputError(f"{name} must be a label image of non-negative integers, got {labels.dtype}")
    t, n = _relabel(truth)
    p, m = _relabel(prediction)
    overlap = np.bincount(t.ravel() * (m + 1) + p.ravel(), minlength=(n + 1) * (m + 1)).reshape(n + 1, m + 1)
    area_t, area_p = overlap.sum(axis=1, keepdims=True), overlap.sum(axis=0, keepdims=True)
    union = area_t + area_p - overlap
    iou = overlap / np.maximum(union, 1)
    return iou[1:, 1:]


def _match(iou: np.ndarray, threshold: float) -> np.ndarray:
    """IoUs of the pairs matched one-to-one (Hungarian on IoU, pairs below ``threshold`` dropped)."""
    from scipy.optimize import linear_sum_assignment

    if iou.size == 0:
        return np.zeros(0)
    eligible = np.where(iou >= threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(eligible, maximize=True)
    matched = iou[rows, cols]
    return matched[matched >= threshold]


def counts(truth: np.ndarray, prediction: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> list[dict]:
    """Per threshold: tp, fp, fn, the summed IoU of the matches, and the object counts."""
    iou = iou_matrix(truth, prediction)
    n_true, n_pred = iou.shape
    rows = []
    for t in thresholds:
        matched = _match(iou, t)
        tp = len(matched)
        rows.append({"threshold": t, "tp": tp, "fp": n_pred - tp, "fn": n_true - tp,
                     "iou_sum": float(matched.sum()), "n_true": n_true, "n_pred": n_pred})
    return rows


def scores(rows: Iterable[dict]) -> list[dict]:
    """Precision, recall, F1, AP (TP/(TP+FP+FN)), mean matched IoU and panoptic quality from
    counts; rows of several images at the same threshold are summed first (as StarDist does)."""
    totals: dict[float, dict] = {}
    for row in rows:
        total = totals.setdefault(row["threshold"], {k: 0 for k in ("tp", "fp", "fn", "iou_sum", "n_true", "n_pred")})
        for key in total:
            total[key] += row[key]
    out = []
    for t, c in sorted(totals.items()):
        tp, fp, fn = c["tp"], c["fp"], c["fn"]
        ratio = lambda a, b: a / b if b else (1.0 if a == b else 0.0)  # noqa: E731  empty vs empty is perfect
        out.append({"threshold": t, **{k: c[k] for k in ("tp", "fp", "fn", "n_true", "n_pred")},
                    "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
                    "f1": ratio(2 * tp, 2 * tp + fp + fn), "ap": ratio(tp, tp + fp + fn),
                    "mean_matched_iou": c["iou_sum"] / tp if tp else 0.0,
                    "panoptic_quality": ratio(c["iou_sum"], tp + fp / 2 + fn / 2)})
    return out


def evaluate(truths: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
             thresholds: Sequence[float] = THRESHOLDS) -> list[dict]:
    """Scores of a data set (every image's counts summed per threshold)."""
    if len(truths) != len(predictions):
        raise InputError(f"{len(truths)} ground-truth images but {len(predictions)} predictions")
    return scores(row for t, p in zip(truths, predictions) for row in counts(t, p, thresholds))
