"""Per-object measurements of a label image (2D or 3D), with scikit-image's regionprops.

One row per object: label, centroid, area (2D) or volume (3D) in pixels, bounding box,
mean and max intensity per channel of an optional image, eccentricity (2D) and solidity; with a
classifier, its class and probabilities. Label ids need not be consecutive; 0 is background.
"""
from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError

AXES = "zyx"


def channels_last(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The image as ``(*labels.shape, channels)``: grey, channel-last or channel-first."""
    image = np.asarray(image)
    if image.shape == labels.shape:
        return image[..., None]
    if image.ndim == labels.ndim + 1 and image.shape[:-1] == labels.shape:
        return image
    if image.ndim == labels.ndim + 1 and image.shape[1:] == labels.shape:
        return np.moveaxis(image, 0, -1)
    raise InputError(f"the image {image.shape} does not fit the label image {labels.shape}: expected the same "
                     "shape, or one more axis for channels (first or last)")


def check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise InputError(f"expected a 2D or 3D label image, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.mod(labels, 1) == 0):
            raise InputError(f"a label image holds integer object ids (0 = background); got {labels.dtype} values "
                             "with fractions: is this an intensity image?")
        labels = labels.astype(np.int64)
    if labels.min(initial=0) < 0:
        raise InputError("a label image holds object ids >= 0 (0 = background); found negative values")
    return labels


def _solidity(region) -> float:
    """Area over convex area; NaN where the hull is degenerate (objects one pixel thick)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = float(region.solidity)
        except (ValueError, ZeroDivisionError, RuntimeError):
            return float("nan")
    return value if np.isfinite(value) else float("nan")


def measure(labels: np.ndarray, image: np.ndarray | None = None, channel_names: Sequence[str] | None = None) -> list[dict]:
    """One dict per object of ``labels``, in increasing label order."""
    from skimage.measure import regionprops

    labels = check_labels(labels)
    pixels = None if image is None else channels_last(image, labels).astype(np.float64, copy=False)
    n_channels = 0 if pixels is None else pixels.shape[-1]
    names = list(channel_names or ([""] if n_channels == 1 else [f"c{i}" for i in range(n_channels)]))
    axes = AXES[-labels.ndim:]
    rows = []
    for region in regionprops(labels):
        row: dict = {"label": int(region.label)}
        row.update({f"centroid_{a}": round(float(c), 3) for a, c in zip(axes, region.centroid)})
        row["area" if labels.ndim == 2 else "volume"] = int(region.area)
        box = region.bbox
        row.update({f"bbox_min_{a}": int(box[i]) for i, a in enumerate(axes)})
        row.update({f"bbox_max_{a}": int(box[i + labels.ndim]) for i, a in enumerate(axes)})
        if pixels is not None:
            values = pixels[region.slice][region.image]
            for k, name in enumerate(names):
                suffix = f"_{name}" if name else ""
                row[f"mean_intensity{suffix}"] = round(float(values[:, k].mean()), 4)
                row[f"max_intensity{suffix}"] = round(float(values[:, k].max()), 4)
        if labels.ndim == 2:
            row["eccentricity"] = round(float(region.eccentricity), 4)
        row["solidity"] = round(_solidity(region), 4)
        rows.append(row)
    return rows


def write_table(rows: list[dict], path: str | Path) -> Path:
    """Rows to ``.csv`` or ``.parquet`` (columns: the union of the rows' keys, in first-seen order)."""
    path = Path(path)
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["label"]
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        return path
    if suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError("writing Parquet needs pyarrow: pip install 'bioimage-zoo[parquet]', or write a .csv") from None
        pq.write_table(pa.table({c: [row.get(c) for row in rows] for c in columns}), str(path))
        return path
    raise InputError(f"cannot write a table as '{suffix}': use .csv or .parquet")


def measure_objects(labels: np.ndarray, image: np.ndarray | None = None, classifier=None, margin: float = 0.0,
                    channel_names: Sequence[str] | None = None) -> list[dict]:
    """:func:`measure` plus, with a classifier (a :class:`zoo.Model`), each object's class and
    class probabilities from the crop of ``image`` around it (2D)."""
    rows = measure(labels, image, channel_names)
    if classifier is None:
        return rows
    if image is None:
        raise InputError("classifying objects needs the image beside the label image")
    if np.asarray(labels).ndim != 2:
        raise InputError("per-object classification works on 2D label images; this one is 3D")
    classes = {row["label"]: row for row in classifier.classify_objects(channels_last(image, np.asarray(labels)),
                                                                       check_labels(labels), axes="yxc", margin=margin)}
    for row in rows:
        found = classes.get(row["label"], {})
        row.update({k: v for k, v in found.items() if k != "label"})
    return rows
