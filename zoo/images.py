"""Folders of images and images as arrays, with numpy alone (no torch, no Lightning).

Training, evaluation, the dataset-shift check and the importers all read images this way:
listing a folder, pairing each image with the target of the same name, a by-image split, an
image in a model's input layout, its normalisation exactly as prediction does it, and the
intensity statistics a package records. Lightning's data modules live in ``zoo.trainers``.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError, NotFoundError
from .imageio import IMAGE_SUFFIXES, ZARR, read_image
from .runtime import layout, ops
from .spec import TensorSpec


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise NotFoundError(f"training data folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                   and (p.is_file() or p.suffix.lower() == ZARR))
    if not paths:
        raise InputError(f"no images in {folder}: expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    return paths


def match_targets(images: Sequence[Path], target_folder: str | Path) -> list[Path]:
    """The target of every image: the file of the same name (or stem) in ``target_folder``."""
    targets = {p.name: p for p in list_images(target_folder)}
    by_stem = {p.stem: p for p in targets.values()}
    matched, missing = [], []
    for image in images:
        target = targets.get(image.name) or by_stem.get(image.stem)
        (matched.append(target) if target else missing.append(image.name))
    if missing:
        raise InputError(f"{len(missing)} image(s) have no target of the same name in {target_folder}: "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return matched


def split_by_image(paths: Sequence[Path], val_fraction: float, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Split whole images (never patches) into training and validation sets, reproducibly."""
    paths = sorted(paths)
    if len(paths) < 2:
        raise InputError(f"need at least 2 images for a train/validation split, got {len(paths)}")
    shuffled = paths[:]
    random.Random(seed).shuffle(shuffled)
    n_val = min(max(1, round(val_fraction * len(paths))), len(paths) - 1)
    return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])


def read_raw(path: Path, tensor: TensorSpec) -> np.ndarray:
    """An image as float32 ``c, *spatial`` in the model's input layout (not yet normalised)."""
    x, _ = layout.tensor_for(read_image(path), None, tensor)
    if x.shape[0] != 1:
        raise InputError(f"{path}: training images must be single images, got a batch of {x.shape[0]}")
    return x[0]


def normalise(raw: np.ndarray, tensor: TensorSpec) -> np.ndarray:
    """Apply the spec's preprocessing, exactly as prediction will."""
    return ops.apply(tensor.preprocessing, raw[None], {}, tensor.name, ops.PREPROCESSING)[0]


def intensity_statistics(images: Sequence[np.ndarray]) -> dict:
    """Mean, std and percentiles of raw training intensities (recorded for dataset-shift checks)."""
    sample = np.concatenate([img.ravel()[:: max(1, img.size // 250_000)] for img in images]).astype(np.float64)
    qs = [0.1, 1, 50, 99, 99.9]
    values = np.percentile(sample, qs)
    return {"mean": float(sample.mean()), "std": float(sample.std()),
            "percentiles": {f"p{q:g}": float(v) for q, v in zip(qs, values)}}
