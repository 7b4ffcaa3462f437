"""Compute an image's shift features with a model, calibrate a package's shift check on its
training and validation images, and check new inputs against it.

The features of one image: the spec's preprocessing applied to the whole image; image statistics
(:mod:`zoo.trust.features`) on it; the bottleneck features of a central crop (at most 256 pixels
per axis, 64 in 3D) through ``trust/encoder.onnx``, averaged over space; for instance models the
median object diameter of the prediction, and every object's size (flagged per object when far
outside the training objects' sizes: :meth:`zoo.trust.shift.ShiftModel.size_flags`).
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
from .shift import ShiftModel, size_distribution

log = logging.getLogger("zoo.trust")

STATISTICS, ENCODER = "trust/shift.npz", "trust/encoder.onnx"
GEOMETRIC = ("fit_canvas",)      # preprocessing that resizes or pads: image statistics are taken before it


@dataclass
class ShiftReport:
    shift_score: float
    shift_threshold: float
    parts: dict
    messages: list[str] = field(default_factory=list)
    objects: dict = field(default_factory=dict)      # instance models: label -> why its size is unusual

    @property
    def shift_warning(self) -> bool:
        return self.shift_score > self.shift_threshold

    def to_dict(self) -> dict:
        return {"shift_score": round(self.shift_score, 4), "shift_threshold": round(self.shift_threshold, 4),
                "shift_warning": self.shift_warning, "shift_parts": {k: round(v, 4) for k, v in self.parts.items()},
                "shift_messages": self.messages,
                **({"object_warnings": [{"label": k, "message": v} for k, v in sorted(self.objects.items())]}
                   if self.objects else {})}

    def objects_summary(self) -> str:
        return (f"{len(self.objects)} object(s) far outside the training objects' sizes (labels "
                f"{', '.join(map(str, sorted(self.objects)[:10]))}{' ...' if len(self.objects) > 10 else ''}): "
                "likely merged or spurious; check them")

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
        # statistics of the image as normalised, before a classifier's fit_canvas resizes and pads it
        # (the padding would make a crop's median depend on its size); the encoder sees all of it
        cut = next((i for i, op in enumerate(inp.preprocessing) if op.op in GEOMETRIC), len(inp.preprocessing))
        normalised = ops.apply(inp.preprocessing[:cut], x.astype(np.float32), {}, inp.name, ops.PREPROCESSING)
        encoded = ops.apply(inp.preprocessing[cut:], normalised, {}, inp.name, ops.PREPROCESSING)
        embedding = self.session.run(None, {self.session.get_inputs()[0].name: _crop(encoded, spec)})[0][0]
        stats = image_statistics(x[0], normalised[0])
        if self.model.makes_instances:
            if labels is None:
                labels = self.model.predict_tensor(x)[0, 0]
            stats["scale"] = object_scale(labels)
            stats["areas"] = object_areas(labels)
        return np.asarray(embedding, np.float64), stats


def object_areas(labels: np.ndarray) -> dict[int, int]:
    """``{label: area}`` (voxels in 3D) of a label image's objects."""
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64))
    return {int(i): int(counts[i]) for i in np.flatnonzero(counts) if i}


def size_flags(model, labels: np.ndarray) -> dict[int, str]:
    """The objects of a prediction (a label image) far outside the training objects' sizes, with
    why; empty for a package without a recorded size distribution."""
    shift = _cached(model)[0] if model.root is not None and model.spec.trust else None
    return shift.size_flags(object_areas(labels)) if shift is not None else {}


def flag_rows(model, rows: list[dict]) -> list[dict]:
    """Measurement rows (``area`` or ``volume`` per ``label``) with a ``size_warning`` column:
    empty, or why the object's size is far outside the training objects' (instance models whose
    shift check records the training sizes)."""
    shift = _cached(model)[0] if model.root is not None and model.spec.trust else None
    if shift is None or not shift.sizes:
        return rows
    flags = shift.size_flags({r["label"]: r.get("area", r.get("volume", 0)) for r in rows})
    for row in rows:
        row["size_warning"] = flags.get(row["label"], "")
    return rows


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
    shift, probe = _cached(model)
    embedding, stats = probe(x, labels)
    score, parts = shift.score(embedding, stats)
    report = ShiftReport(score, shift.threshold, parts)
    if report.shift_warning:
        report.messages = shift.explain(parts, stats)
    report.objects = shift.size_flags(stats.get("areas", {}))
    if report.objects:
        log.warning("%s", report.objects_summary())
    return report


def _cached(model) -> tuple[ShiftModel, "Probe"]:
    cache = getattr(model, "_shift", None)
    if cache is None:
        cache = model._shift = (load_shift(model.spec, model.root), Probe(model, Path(model.root) / ENCODER))
    return cache
