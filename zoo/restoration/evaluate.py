"""Restoration on (image, target) pairs: PSNR and SSIM of the input and of the model's output
against the target, normalised as in CSBDeep, as a table and a figure (``zoo evaluate`` of a
restoration model). Scoring and comparing models of any task is :mod:`zoo.evaluate`."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..imageio import figure, read_image
from .metrics import normalized_psnr, normalized_ssim

COLUMNS = ("image", "psnr_input", "psnr_output", "ssim_input", "ssim_output")


def evaluate_pairs(model, images: Sequence[Path], targets: Sequence[Path], axes: str | None = None) -> list[dict]:
    """One row per image: metrics of the raw input and of the model's output against the target."""
    rows = []
    for image_path, target_path in zip(images, targets):
        image = read_image(image_path).astype(np.float32)
        target = read_image(target_path).astype(np.float32)
        if image.shape != target.shape:
            raise InputError(f"{image_path.name}: image {image.shape} and target {target.shape} differ in shape")
        output = model.predict(image, axes=axes)
        if output.shape != target.shape:
            raise InputError(f"{image_path.name}: {model.spec.ref} answers an output of shape {output.shape} but the "
                             f"target has shape {target.shape}; give targets in the layout of the model's output")
        rows.append({"image": image_path.name,
                     "psnr_input": normalized_psnr(image, target), "psnr_output": normalized_psnr(output, target),
                     "ssim_input": normalized_ssim(image, target), "ssim_output": normalized_ssim(output, target)})
    return rows


def summary(rows: list[dict]) -> dict:
    """Means over images (the numbers model cards report)."""
    if not rows:
        raise InputError("nothing to evaluate: no image pairs")
    means = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in COLUMNS[1:]}
    return {"n_images": len(rows), **means, "psnr_gain": round(means["psnr_output"] - means["psnr_input"], 4)}


def write_table(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
        mean = summary(rows)
        writer.writerow({"image": "mean", **{k: f"{mean[k]:.4f}" for k in COLUMNS[1:]}})
    return path


def write_figure(model, image_path: Path, target_path: Path, path: Path, axes: str | None = None) -> Path:
    """input | output | target for one pair (the middle slice of a 3D image)."""
    image = read_image(image_path).astype(np.float32)
    target = read_image(target_path).astype(np.float32)
    output = model.predict(image, axes=axes)
    panels = [("input", image), (model.spec.outputs[0].name, output), ("target", target)]
    return figure(path, [(title, _plane(a)) for title, a in panels])


def _plane(array: np.ndarray) -> np.ndarray:
    """The middle yx plane of a stack (figures are 2D)."""
    while array.ndim > 2:
        array = array[array.shape[0] // 2]
    return array


# ---------------------------------------------------------------------------- comparisons
