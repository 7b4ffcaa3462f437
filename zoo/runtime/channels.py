"""Channels by name: ``--channels nuclei=0,cyto=1`` maps an image's channels onto the model's.

Each of the model's channel names gets a channel of the file, by position (``0``) or by the
name the file's metadata gives it (``DAPI``). The result holds exactly the model's channels, in
the model's order; a name the model lacks, a missing one or a channel the file does not have is
an error that lists both sides.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError


def parse(text: str | dict | None) -> dict[str, int | str] | None:
    """``"nuclei=0,cyto=1"`` (or a dict) -> ``{"nuclei": 0, "cyto": 1}``; None stays None."""
    if text is None or isinstance(text, dict):
        return text
    mapping: dict[str, int | str] = {}
    for item in filter(None, (part.strip() for part in str(text).split(","))):
        name, sep, source = item.partition("=")
        if not sep or not name.strip() or not source.strip():
            raise InputError(f"--channels takes MODEL_CHANNEL=FILE_CHANNEL pairs separated by commas "
                             f"(e.g. nuclei=0,cyto=1 or nuclei=DAPI), got '{item}'")
        source = source.strip()
        mapping[name.strip()] = int(source) if source.lstrip("-").isdigit() else source
    if not mapping:
        raise InputError("--channels is empty: give MODEL_CHANNEL=FILE_CHANNEL pairs, e.g. nuclei=0,cyto=1")
    return mapping


def pick(image, axes: str, mapping: dict[str, int | str], model_channels: Sequence[str],
         file_channels: Sequence[str] | None = None) -> tuple[np.ndarray, str]:
    """``image`` (axes ``axes``) with the model's channels, in its order, taken as ``mapping``
    says; returns (image, axes) with a ``c`` axis of the model's length (none for one channel)."""
    wanted = list(model_channels or ["c0"])
    unknown = [k for k in mapping if k not in wanted]
    missing = [k for k in wanted if k not in mapping]
    if unknown or missing:
        raise InputError(f"--channels names {', '.join(mapping)}; the model's channels are {', '.join(wanted)}"
                         + (f" (unknown: {', '.join(unknown)})" if unknown else "")
                         + (f" (missing: {', '.join(missing)})" if missing else ""))
    image = np.asarray(image)
    if "c" not in axes:
        image, axes = image[..., None], axes + "c"
    n = image.shape[axes.index("c")]
    names = list(file_channels or [])
    indices = []
    for model_name in wanted:
        source = mapping[model_name]
        if isinstance(source, str):
            if source not in names:
                raise InputError(f"--channels {model_name}={source}: the file names its channels "
                                 f"{', '.join(names) if names else '(it names none: use positions 0..' + str(n - 1) + ')'}")
            source = names.index(source)
        if not 0 <= source < n:
            raise InputError(f"--channels {model_name}={source}: the image has {n} channel(s), numbered 0..{n - 1}")
        indices.append(source)
    picked = np.take(image, indices, axis=axes.index("c"))
    if len(indices) == 1:                   # a grey model: a grey image, no channel axis
        return np.squeeze(picked, axis=axes.index("c")), axes.replace("c", "")
    return picked, axes
