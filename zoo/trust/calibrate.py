"""Calibrate a package's dataset-shift check on its training and validation images: the
statistics and encoder that :mod:`zoo.trust.check` compares new inputs against.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..package import readers
from .check import ENCODER, STATISTICS, Probe, object_areas
from .shift import ShiftModel, size_distribution

log = logging.getLogger("zoo.trust")


def export_encoder(network, path: Path, spec) -> Path:
    """``trust/encoder.onnx``: the network's bottleneck features averaged over space, ``b, C``."""
    import torch

    from ..package.onnx_export import export

    class Encoder(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            h = self.net.encode(x)
            return h.mean(dim=tuple(range(2, h.ndim)))

    inp = spec.inputs[0]
    n = len(inp.spatial_axes)
    example = [1, inp.n_channels] + [max(64 if n == 2 else 32, m) for m in (inp.shape_min or [64] * n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    return export(Encoder(network).eval(), path, example, output_ndim=2)


def calibrate(package: str | Path, train_images: Sequence, val_images: Sequence, max_train: int = 150,
              description: str | None = None, train_labels: Sequence | None = None) -> ShiftModel:
    """Add the shift check to an unpublished package: statistics of (at most ``max_train``)
    training images, a threshold from the validation images; amends its spec and card. Instance
    models also record the training objects' sizes: from ``train_labels`` (label images of all
    the training images) where given, else from their predictions on the chosen images."""
    from .. import architectures, spec as specs
    from ..hashing import sha256_file
    from ..images import read_raw
    from ..model import Model
    from ..package import build

    package = Path(package)
    spec = specs.load(package)
    network = architectures.get(spec.architecture_id).build_network(spec.architecture_params)
    readers.load_weights(network, package / spec.weights.safetensors.file)
    if not hasattr(network, "encode"):
        raise TypeError(f"architecture '{spec.architecture_id}' has no encode(): no bottleneck features to compare")
    export_encoder(network.eval(), package / ENCODER, spec)
    model = Model(spec, package, runtime="onnx", device="cpu", verified=True)
    probe = Probe(model, package / ENCODER)
    step = max(1, len(train_images) // max_train)
    chosen = list(train_images)[::step][:max_train]

    def features(paths):
        out = [probe(read_raw(Path(p), spec.inputs[0])[None]) for p in paths]
        return np.stack([e for e, _ in out]), [s for _, s in out]

    train_e, train_s = features(chosen)
    val_e, val_s = features(val_images)
    shift = ShiftModel.fit(train_e, train_s, val_e, val_s)
    if model.makes_instances:
        from ..imageio import read_image

        areas = ([list(object_areas(read_image(Path(p))).values()) for p in train_labels] if train_labels else
                 [list(s.get("areas", {}).values()) for s in train_s])
        shift.sizes = size_distribution(areas, len(spec.inputs[0].spatial_axes))
    np.savez(package / STATISTICS, **shift.arrays())

    def change(s):
        s.trust = {"statistics": {"file": STATISTICS, "sha256": sha256_file(package / STATISTICS)},
                   "encoder": {"file": ENCODER, "sha256": sha256_file(package / ENCODER)},
                   "threshold": round(shift.threshold, 6),
                   "calibration": {"train_images": len(chosen), "validation_images": len(val_images),
                                   "threshold": "99th percentile of the validation images' shift scores",
                                   "reference": {k: round(v, 4) for k, v in shift.reference.items()},
                                   **({"object_sizes": _describe_sizes(shift.sizes, bool(train_labels))}
                                      if shift.sizes else {}),
                                   **({"description": description} if description else {})}}
    build.amend(package, change)
    log.info("shift check calibrated on %d training and %d validation images: threshold %.3g", len(chosen),
             len(val_images), shift.threshold)
    return shift


def _describe_sizes(sizes: dict, labelled: bool) -> dict:
    return {"source": "training labels" if labelled else "predictions on the training images",
            "objects": sizes["objects"], "median": round(sizes["median"], 1),
            "absolute": [round(v, 1) for v in sizes["absolute"]], "relative": [round(v, 4) for v in sizes["relative"]],
            "flagged_outside": f"{sizes['percentiles'][0]:g}-{sizes['percentiles'][1]:g}th percentiles, absolute or "
                               "relative to the median object of the image"}
