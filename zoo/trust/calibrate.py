"""Compute an image's shift features with a model, calibrate a package's shift check on its
training and validation images, and check new inputs against it.

The features of one image: the spec's preprocessing applied to the whole image; image statistics
(:mod:`zoo.trust.features`) on it; the bottleneck features of a central crop (at most 256 pixels
per axis, 64 in 3D) through ``trust/encoder.onnx``, averaged over space; for instance models the
median object diameter of the prediction.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import IntegrityError
from ..package import readers
from ..runtime import ops
from .features import image_statistics, object_scale
from .shift import ShiftModel

log = logging.getLogger("zoo.trust")

STATISTICS, ENCODER = "trust/shift.npz", "trust/encoder.onnx"


@dataclass
class ShiftReport:
    shift_score: float
    shift_threshold: float
    parts: dict
    messages: list[str] = field(default_factory=list)

    @property
    def shift_warning(self) -> bool:
        return self.shift_score > self.shift_threshold

    def to_dict(self) -> dict:
        return {"shift_score": round(self.shift_score, 4), "shift_threshold": round(self.shift_threshold, 4),
                "shift_warning": self.shift_warning, "shift_parts": {k: round(v, 4) for k, v in self.parts.items()},
                "shift_messages": self.messages}

    def summary(self) -> str:
        what = "; ".join(self.messages) or "its features are unlike the training images'"
        return (f"input unlike the training data (shift score {self.shift_score:.2g} > {self.shift_threshold:.2g}): "
                f"{what}. Check the result, or fine-tune on a few of your own images")


def _crop(x: np.ndarray, spec) -> np.ndarray:
    """Central crop of a ``b, c, *spatial`` tensor: at most 256 (64 in 3D) per axis, on the grid."""
    inp = spec.inputs[0]
    n = len(inp.spatial_axes)
    limit = 256 if n == 2 else 64
    steps, mins = inp.shape_step or [1] * n, inp.shape_min or [1] * n
    region = [slice(None), slice(None)]
    for size, step, low in zip(x.shape[2:], steps, mins):
        length = min(size, limit)
        if step > 1:
            length = max(low, length - (length - low) % step) if length >= low else low
        start = max(0, (size - length) // 2)
        region.append(slice(start, start + length))
    crop = x[tuple(region)]
    pad = [(0, 0), (0, 0)] + [(0, max(0, r.stop - r.start - s)) for r, s in zip(region[2:], crop.shape[2:])]
    return np.pad(crop, pad, mode="reflect") if any(p[1] for p in pad) else np.ascontiguousarray(crop)


class Probe:
    """The shift features of images for one model (its encoder run by ONNX Runtime)."""

    def __init__(self, model, encoder: Path):
        from ..runtime.onnx_session import open_session

        self.model = model
        self.session = open_session(encoder)

    def __call__(self, x: np.ndarray, labels: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
        """``x``: one raw image as ``1, c, *spatial`` float32; ``labels``: its prediction if known."""
        spec = self.model.spec
        inp = spec.inputs[0]
        normalised = ops.apply(inp.preprocessing, x.astype(np.float32), {}, inp.name, ops.PREPROCESSING)
        embedding = self.session.run(None, {self.session.get_inputs()[0].name: _crop(normalised, spec)})[0][0]
        stats = image_statistics(x[0], normalised[0])
        if self.model.makes_instances:
            if labels is None:
                labels = self.model.predict_tensor(x)[0, 0]
            stats["scale"] = object_scale(labels)
        return np.asarray(embedding, np.float64), stats


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
              description: str | None = None) -> ShiftModel:
    """Add the shift check to an unpublished package: statistics of (at most ``max_train``)
    training images, a threshold from the validation images; amends its spec and card."""
    from .. import architectures, spec as specs
    from ..hashing import sha256_file
    from ..model import Model
    from ..package import build
    from ..trainers.data import read_raw

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
    np.savez(package / STATISTICS, **shift.arrays())

    def change(s):
        s.trust = {"statistics": {"file": STATISTICS, "sha256": sha256_file(package / STATISTICS)},
                   "encoder": {"file": ENCODER, "sha256": sha256_file(package / ENCODER)},
                   "threshold": round(shift.threshold, 6),
                   "calibration": {"train_images": len(chosen), "validation_images": len(val_images),
                                   "threshold": "99th percentile of the validation images' shift scores",
                                   "reference": {k: round(v, 4) for k, v in shift.reference.items()},
                                   **({"description": description} if description else {})}}
    build.amend(package, change)
    log.info("shift check calibrated on %d training and %d validation images: threshold %.3g", len(chosen),
             len(val_images), shift.threshold)
    return shift


def load_shift(spec, root: Path) -> ShiftModel | None:
    if not spec.trust:
        return None
    path = Path(root) / spec.trust["statistics"]["file"]
    try:
        return ShiftModel.from_arrays(readers.arrays(path))
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise IntegrityError(f"'{path.name}' does not hold a shift check's statistics ({type(e).__name__}: {e}); "
                             "the package is damaged: pull it again") from None


def check(model, x: np.ndarray, labels: np.ndarray | None = None) -> ShiftReport | None:
    """The shift report of one raw image (``1, c, *spatial``) for a model, None without a check."""
    if model.root is None or not model.spec.trust:
        return None
    cache = getattr(model, "_shift", None)
    if cache is None:
        cache = model._shift = (load_shift(model.spec, model.root), Probe(model, Path(model.root) / ENCODER))
    shift, probe = cache
    embedding, stats = probe(x, labels)
    score, parts = shift.score(embedding, stats)
    report = ShiftReport(score, shift.threshold, parts)
    if report.shift_warning:
        report.messages = shift.explain(parts, stats)
    return report
