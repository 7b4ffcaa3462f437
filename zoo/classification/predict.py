"""Prediction for classifiers: whole images (one class each) and objects of a label image."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..runtime import layout, ops
from .canvas import object_boxes

BATCH = 64


def run_tensor(model, x: np.ndarray, raw: bool = False) -> np.ndarray:
    """``b, c, y, x`` float32 -> ``b, n_classes`` probabilities (logits with ``raw`` when the spec
    says so: the test tensors are the network's outputs before the softmax)."""
    spec = model.spec
    inp, out = spec.inputs[0], spec.outputs[0]
    if x.ndim != 4:
        raise InputError(f"expected a tensor with axes '{inp.axes}' (4 dimensions), got shape {x.shape}")
    layout.check_finite(x)
    results = []
    for start in range(0, x.shape[0], BATCH):
        context: ops.Context = {}
        part = ops.apply(inp.preprocessing, x[start:start + BATCH].astype(np.float32, copy=False), context, inp.name,
                         ops.PREPROCESSING)
        results.append(model.runner(part))
    y = np.concatenate(results)
    return y if raw else ops.apply(out.postprocessing, y, {}, out.name, ops.POSTPROCESSING)


def classify(model, image: np.ndarray, axes: str | None = None) -> tuple[str, np.ndarray]:
    """``(class name, probabilities)`` of one image in its natural layout (``yx``, ``yxc`` ...)."""
    inp = model.spec.inputs[0]
    x, _ = layout.tensor_for(image, axes, inp)
    if x.shape[0] != 1:
        raise InputError(f"predict classifies one image; got a batch of {x.shape[0]}: call it per image "
                         "(or predict_tensor for a batch of equal size)")
    probabilities = run_tensor(model, x)[0]
    return class_names(model)[int(np.argmax(probabilities))], probabilities


def class_names(model) -> list[str]:
    return list(model.spec.outputs[0].channels)


def classify_objects(model, image: np.ndarray, labels: np.ndarray, axes: str | None = None,
                     margin: float = 0.0) -> list[dict]:
    """One row per object of ``labels`` (2D): its class and the probability of every class,
    from the crop of ``image`` around its bounding box (grown by ``margin``)."""
    inp = model.spec.inputs[0]
    x, _ = layout.tensor_for(image, axes, inp)
    labels = np.asarray(labels)
    if x.shape[0] != 1 or labels.shape != x.shape[2:]:
        raise InputError(f"the label image {labels.shape} must have the image's spatial shape {x.shape[2:]} "
                         "(one 2D image and its labels)")
    names, rows = class_names(model), []
    for label, box in object_boxes(labels, margin):
        probabilities = run_tensor(model, np.ascontiguousarray(x[(slice(None), slice(None), *box)]))[0]
        best = int(np.argmax(probabilities))
        rows.append({"label": label, "class": names[best], "probability": round(float(probabilities[best]), 4),
                     **{f"p_{name}": round(float(p), 4) for name, p in zip(names, probabilities)}})
    return rows


class _Classify:
    """The Predictor's strategy for classifiers (:mod:`zoo.tasks`): one class per image."""

    @staticmethod
    def predict(predictor, image: np.ndarray, axes: str | None = None):
        return classify(predictor, image, axes)

    @staticmethod
    def predict_tensor(predictor, x: np.ndarray, raw: bool = False) -> np.ndarray:
        return run_tensor(predictor, x, raw=raw)


STRATEGY = _Classify()

