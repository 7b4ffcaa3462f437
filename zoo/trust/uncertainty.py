"""Uncertainty from disagreement: the same image predicted under the 8 flips and quarter turns
of the yx plane (test-time augmentation) and/or by several packages (an ensemble), each result
mapped back onto the image.

- restoration: the per-pixel standard deviation of the members' outputs (in output units);
- instance segmentation: per pixel, how split the members are on foreground (``4 p (1 - p)``,
  0 when all agree, 1 when half say object); per object of the plain prediction, a confidence:
  the mean IoU of its best match in each other member's labels (1 = every member finds it
  exactly).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..runtime import layout

DIHEDRAL = [(k, flip) for flip in (False, True) for k in range(4)]


def forward(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Flip (along x) then rotate the last two axes of ``x`` by ``k`` quarter turns."""
    if flip:
        x = x[..., ::-1]
    return np.ascontiguousarray(np.rot90(x, k, axes=(-2, -1)))


def backward(y: np.ndarray, k: int, flip: bool) -> np.ndarray:
    y = np.rot90(y, -k, axes=(-2, -1))
    return np.ascontiguousarray(y[..., ::-1] if flip else y)


@dataclass
class Uncertainty:
    prediction: np.ndarray          # the plain prediction (first model, no transform), natural layout
    uncertainty: np.ndarray         # per pixel, the prediction's layout (one channel for labels)
    confidence: dict[int, float] | None = None   # instance models: object label -> confidence
    members: int = 1


def _members(models: Sequence, x: np.ndarray, transforms: int) -> list[np.ndarray]:
    outputs = []
    for model in models:
        for k, flip in DIHEDRAL[:transforms]:
            outputs.append(backward(model.predict_tensor(forward(x, k, flip)), k, flip))
    return outputs


def object_confidence(reference: np.ndarray, others: Sequence[np.ndarray]) -> dict[int, float]:
    """For each object of ``reference`` (a label image), the mean over ``others`` of the IoU of
    its best-overlapping object there."""
    ids = np.unique(reference)
    ids = ids[ids != 0]
    if not others or not ids.size:
        return {int(i): 1.0 for i in ids}
    index = np.searchsorted(ids, reference)
    area = np.bincount(np.where(reference > 0, index, len(ids)).ravel(), minlength=len(ids) + 1)[:len(ids)]
    scores = np.zeros(len(ids))
    for other in others:
        both = (reference > 0) & (other > 0)
        pairs, counts = np.unique(np.stack([index[both], other[both]]), axis=1, return_counts=True)
        other_area = dict(zip(*np.unique(other[other > 0], return_counts=True)))
        best = np.zeros(len(ids))
        for (i, j), inter in zip(pairs.T, counts):
            iou = inter / (area[i] + other_area[j] - inter)
            best[i] = max(best[i], iou)
        scores += best
    return {int(i): round(float(s / len(others)), 4) for i, s in zip(ids, scores)}


def predict_with_uncertainty(models: Sequence, image: np.ndarray, axes: str | None = None,
                             tta: bool = True) -> Uncertainty:
    """The first model's prediction of ``image`` and the members' disagreement (``tta``: 8
    flips/rotations per model; several ``models``: an ensemble, which must share the task)."""
    first = models[0]
    if first.task.per_image:
        raise InputError("uncertainty maps are for image outputs; a classifier's probabilities already say how sure it is")
    if len({m.makes_instances for m in models}) > 1:
        raise InputError("an ensemble needs models of one kind: all instance segmentation or all image outputs")
    inp = first.spec.inputs[0]
    x, natural = layout.tensor_for(image, axes, inp)
    transforms = len(DIHEDRAL) if tta else 1
    if len(models) * transforms < 2:
        raise InputError("uncertainty needs at least two members: test-time augmentation, or several models")
    outputs = _members(models, x, transforms)
    plain = outputs[0]
    if first.makes_instances:
        foreground = np.mean([o > 0 for o in outputs], axis=0)
        spread = (4 * foreground * (1 - foreground)).astype(np.float32)
        confidence = {}
        for b in range(plain.shape[0]):
            confidence.update(object_confidence(plain[b, 0], [o[b, 0] for o in outputs[1:]]))
        return Uncertainty(layout.from_tensor(plain, natural), layout.from_tensor(spread, natural), confidence,
                           len(outputs))
    spread = np.std(np.stack(outputs).astype(np.float64), axis=0).astype(np.float32)
    return Uncertainty(layout.from_tensor(plain, natural), layout.from_tensor(spread, natural), None, len(outputs))
