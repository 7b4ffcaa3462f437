"""Scoring a classifier on held-out images: accuracy, per-class precision/recall/F1, macro-F1
and the confusion matrix, recorded in the package and drawn for its model card."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

CONFUSION = "confusion.png"


def classification_metrics(true: Sequence[int], predicted: Sequence[int], classes: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix
    (rows: true class, columns: predicted)."""
    k = len(classes)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, int), np.asarray(predicted, int)), 1)
    per_class = {}
    for i, name in enumerate(classes):
        tp = matrix[i, i]
        precision = tp / matrix[:, i].sum() if matrix[:, i].sum() else 0.0
        recall = tp / matrix[i].sum() if matrix[i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": round(float(precision), 4), "recall": round(float(recall), 4),
                           "f1": round(float(f1), 4), "support": int(matrix[i].sum())}
    return {"accuracy": round(float(np.trace(matrix) / max(matrix.sum(), 1)), 4),
            "macro_f1": round(float(np.mean([c["f1"] for c in per_class.values()])), 4),
            "per_class": per_class, "confusion": {"classes": list(classes), "matrix": matrix.tolist()}}


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """The confusion matrix as a PNG: counts in cells shaded by row-normalised frequency."""
    from PIL import Image, ImageDraw

    matrix = np.asarray(matrix)
    k, cell, left, top = len(classes), 72, 110, 60
    image = Image.new("RGB", (left + k * cell + 20, top + k * cell + 40), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title or "confusion matrix (rows: true, columns: predicted)", fill=(0, 0, 0))
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for j, name in enumerate(classes):
        draw.text((left + j * cell + 6, top - 18), name[:10], fill=(0, 0, 0))
    for i, name in enumerate(classes):
        draw.text((10, top + i * cell + cell // 2 - 6), name[:14], fill=(0, 0, 0))
        for j in range(k):
            shade = int(255 - 200 * rows[i, j])
            box = [left + j * cell, top + i * cell, left + (j + 1) * cell - 2, top + (i + 1) * cell - 2]
            draw.rectangle(box, fill=(shade, shade, 255))
            draw.text((box[0] + 8, box[1] + cell // 2 - 12), f"{matrix[i, j]}\n{rows[i, j]:.1%}",
                      fill=(0, 0, 0) if rows[i, j] < 0.6 else (255, 255, 255))
    draw.text((left, top + k * cell + 12), "predicted ->", fill=(0, 0, 0))
    path = Path(path)
    image.save(path)
    return path


def score_package(package: str | Path, examples, description: str) -> dict:
    """Score an unpublished package (ONNX Runtime) on ``examples`` (``path``, ``label``); record
    the metrics under ``held_out``, add the confusion figure as a cover and regenerate the card."""
    from .. import model as models
    from ..imageio import read_image
    from ..package import build

    package = Path(package)
    model = models.from_path(package, runtime="onnx", device="cpu")
    names = model.class_names
    index = {c: i for i, c in enumerate(names)}
    unknown = sorted({e.label for e in examples} - set(index))
    if unknown:
        from ..errors import InputError

        raise InputError(f"held-out labels {unknown} are not classes of {model.spec.ref} ({names})")
    predicted = [index[model.predict(read_image(e.path))[0]] for e in examples]
    metrics = classification_metrics([index[e.label] for e in examples], predicted, names)
    metrics["data"] = description
    confusion_figure(np.asarray(metrics["confusion"]["matrix"]), names, package / CONFUSION,
                     f"{model.spec.name}: {description}")

    def change(spec):
        spec.training.metrics["held_out"] = metrics
        if CONFUSION not in spec.covers:
            spec.covers.append(CONFUSION)
    build.amend(package, change)
    return metrics
