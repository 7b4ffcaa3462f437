"""Evaluate an instance-segmentation model on images with true label images: AP, F1 and PQ per
group of images (e.g. per image kind), beside the classical baseline on the same images."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..imageio import read_image
from .metrics import evaluate
from .baseline import otsu_watershed

REPORTED = (0.5, 0.75, 0.9)


def _summary(truths: list[np.ndarray], predictions: list[np.ndarray]) -> dict:
    rows = {r["threshold"]: r for r in evaluate(truths, predictions, thresholds=list(REPORTED))}
    return {"ap50": rows[0.5]["ap"], "ap75": rows[0.75]["ap"], "ap90": rows[0.9]["ap"],
            "f1_50": rows[0.5]["f1"], "precision50": rows[0.5]["precision"], "recall50": rows[0.5]["recall"],
            "pq50": rows[0.5]["panoptic_quality"]}


def evaluate_segmentation(model, images: Sequence[Path], labels: Sequence[Path],
                          groups: Sequence[str] | None = None, baseline: bool = True) -> dict[str, dict]:
    """``{group: {images, ap50, ap75, ap90, f1_50, precision50, recall50, pq50, baseline_ap50,
    ..., seconds_per_mpx}}`` (one group ``all`` unless ``groups`` names each image's group),
    with the Otsu + watershed baseline on the same images when ``baseline``."""
    if not model.makes_instances:
        raise InputError(f"{model.spec.ref} is not an instance-segmentation model (its task is {model.spec.task})")
    if len(images) != len(labels):
        raise InputError(f"{len(images)} images but {len(labels)} label images")
    groups = list(groups) if groups is not None else ["all"] * len(images)
    collected: dict[str, dict[str, list]] = {}
    for image_path, label_path, group in zip(images, labels, groups):
        image, truth = read_image(image_path), np.asarray(read_image(label_path))
        started = time.perf_counter()
        predicted = model.predict(image)
        seconds = time.perf_counter() - started
        if predicted.shape != truth.shape:
            raise InputError(f"{label_path}: labels of shape {truth.shape} do not match the prediction "
                             f"{predicted.shape} for {image_path}")
        entry = collected.setdefault(group, {"truth": [], "model": [], "baseline": [], "seconds": 0.0, "pixels": 0})
        entry["truth"].append(truth)
        entry["model"].append(predicted)
        if baseline:
            entry["baseline"].append(otsu_watershed(image))
        entry["seconds"] += seconds
        entry["pixels"] += truth.size
    results = {}
    for group, entry in sorted(collected.items()):
        row = {"images": len(entry["truth"]), **_summary(entry["truth"], entry["model"])}
        if baseline:
            row.update({f"baseline_{k}": v for k, v in _summary(entry["truth"], entry["baseline"]).items()})
        row["seconds_per_mpx"] = entry["seconds"] / (entry["pixels"] / 1e6)
        results[group] = row
    return results


def _raw_outputs(model, image: np.ndarray) -> np.ndarray:
    """The network's outputs for one image as ``1, c, *spatial`` (whatever the image's layout)."""
    from ..runtime.layout import tensor_for

    x, _ = tensor_for(image, None, model.spec.inputs[0])
    return model.predict_tensor(x, raw=True)


# the thresholds each instance step exposes, and the values tried when tuning them
THRESHOLD_GRIDS = {
    "stardist_instances": {"prob_threshold": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8], "nms_threshold": [0.3, 0.4, 0.5]},
    "cellpose_instances": {"prob_threshold": [0.3, 0.4, 0.5, 0.6, 0.7]},
    "semantic_instances": {"seed_threshold": [0.4, 0.5, 0.6, 0.7, 0.8], "mask_threshold": [0.4, 0.5, 0.6]},
}


def tune_thresholds(model, images: Sequence[Path], labels: Sequence[Path]) -> tuple[dict, float]:
    """The instance step's thresholds that maximise the mean of AP@0.5 and AP@0.75 on these
    images (as StarDist's ``optimize_thresholds``; pass training images, so that validation
    stays untouched): (best params, their score). The network runs once per image."""
    import itertools

    from ..opnames import is_instance_op
    from ..runtime import ops

    op = next(o for o in model.spec.outputs[0].postprocessing if is_instance_op(o.op))
    grid = THRESHOLD_GRIDS[op.op]
    raws = [_raw_outputs(model, read_image(p)) for p in images]
    truths = [np.asarray(read_image(p)) for p in labels]
    best, best_score = dict(op.params), -1.0
    for values in itertools.product(*grid.values()):
        params = {**op.params, **dict(zip(grid, values))}
        predicted = [ops.POSTPROCESSING[op.op](r, params, {}, "labels")[0, 0] for r in raws]
        rows = evaluate(truths, predicted, thresholds=[0.5, 0.75])
        score = (rows[0]["ap"] + rows[1]["ap"]) / 2
        if score > best_score:
            best, best_score = params, score
    return best, best_score


def write_table(results: dict[str, dict], path: str | Path | None = None) -> str:
    """A markdown table of the results (model and baseline side by side)."""
    lines = ["| images | n | AP@0.5 | AP@0.75 | AP@0.9 | F1@0.5 | PQ@0.5 | baseline AP@0.5 | baseline AP@0.75 | s/Mpx |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for group, r in results.items():
        lines.append(f"| {group} | {r['images']} | {r['ap50']:.3f} | {r['ap75']:.3f} | {r['ap90']:.3f} | "
                     f"{r['f1_50']:.3f} | {r['pq50']:.3f} | {r.get('baseline_ap50', float('nan')):.3f} | "
                     f"{r.get('baseline_ap75', float('nan')):.3f} | {r['seconds_per_mpx']:.2f} |")
    text = "\n".join(lines) + "\n"
    if path is not None:
        Path(path).write_text(text)
    return text
