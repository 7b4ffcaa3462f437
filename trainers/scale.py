"""The physical scale a package was trained at (issue 24.2): its pixel size and, for instance
models, its training objects' typical diameter, written into the package's ``scale`` block so
that predictions can rescale other images to it."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from zoo import metadata
from zoo.errors import InputError
from zoo.package import build

log = logging.getLogger("zoo.trainers")


def pixel_size_of(given, spatial: str, train_files: Sequence[Path]) -> tuple[dict | None, str]:
    """(µm per pixel by axis, where it came from): ``given`` (a number, or a dict by axis), else the
    training images' metadata when they all state the same one, else (None, why)."""
    if given is not None:
        sizes = given if isinstance(given, dict) else {a: given for a in spatial}
        for axis, value in sizes.items():
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
                raise InputError(f"--pixel-size {axis}={value}: expected a positive number of micrometres per pixel")
        return {a: float(sizes[a]) for a in spatial if a in sizes}, "--pixel-size"
    found = [metadata.read(p) for p in train_files]
    stated = [{a: m.pixel_size[a] for a in spatial if a in m.pixel_size} for m in found]
    if not stated or any(len(s) != len(spatial) for s in stated):
        return None, "the training images do not state their pixel size"
    first = stated[0]
    if any(any(abs(s[a] / first[a] - 1) > 0.01 for a in spatial) for s in stated):
        return None, "the training images state different pixel sizes"
    return first, f"training image metadata ({found[0].source})"


def diameter_of(label_files: Sequence[Path]) -> float | None:
    """The median of the training label images' median object diameters (px)."""
    from zoo.imageio import read_image
    from zoo.trust.features import object_scale

    values = [d for d in (object_scale(read_image(p)) for p in label_files) if d]
    return float(np.median(values)) if values else None


def record_scale(package: Path, spatial: str, train_files, pixel_size=None, label_files=None,
                 instances: bool = False) -> dict | None:
    """Write the package's ``scale`` block; returns it (None when nothing is known)."""
    sizes, source = pixel_size_of(pixel_size, spatial, train_files)
    scale: dict = {}
    if sizes:
        scale["pixel_size"] = sizes
    if instances and label_files:
        diameter = diameter_of(label_files)
        if diameter:
            scale["diameter"] = round(diameter, 3)
    if not scale:
        log.info("no physical scale recorded: %s", source)
        return None
    scale["measured_from"] = ", ".join(filter(None, [source if sizes else "",
                                                     "training labels (median object diameter)"
                                                     if "diameter" in scale else ""]))
    build.amend(package, lambda s: setattr(s, "scale", scale))
    return scale
