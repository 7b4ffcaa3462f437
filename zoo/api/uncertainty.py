"""Uncertainty of a prediction in memory (a viewer's layer, a notebook's array)."""
from __future__ import annotations

from typing import Sequence

from .sharing import as_model


def predict_uncertain(model, image, axes: str | None = None, ensemble: Sequence = (), tta: bool = True):
    """``model``'s prediction of an image array and the disagreement of its members (the 8 flips
    and rotations with ``tta``, and the packages of ``ensemble``): a
    :class:`zoo.trust.uncertainty.Uncertainty` (``prediction``, ``uncertainty``: per-pixel
    standard deviation for restoration, foreground disagreement 0-1 for instance models;
    ``confidence`` per object)."""
    import numpy as np

    from ..trust.uncertainty import predict_with_uncertainty

    model = as_model(model)
    members = [model] + [as_model(ref, model.runtime, model.device, model.installed) for ref in ensemble]
    return predict_with_uncertainty(members, np.asarray(image), axes=axes, tta=tta)
