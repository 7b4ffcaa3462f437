"""The dataset-shift check of new inputs against a package's calibrated training statistics.

The features of one image: the spec's preprocessing applied to the whole image; image statistics
(:mod:`zoo.trust.features`) on it; the bottleneck features of a central crop (at most 256 pixels
per axis, 64 in 3D) through ``trust/encoder.onnx``, averaged over space; for instance models the
median object diameter of the prediction, and every object's size (flagged per object when far
outside the training objects' sizes: :meth:`zoo.trust.shift.ShiftModel.size_flags`). Calibration,
which writes the check into a package, is :mod:`zoo.trust.calibrate`.

A "model" here is anything with ``spec``, ``root``, ``makes_instances`` and ``predict_tensor``.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import IntegrityError
from ..package import readers
from ..runtime import ops
from .features import image_statistics, object_scale
from .shift import ShiftModel

log = logging.getLogger("zoo.trust")

STATISTICS, ENCODER = "trust/shift.npz", "trust/encoder.onnx"
GEOMETRIC = ("fit_canvas",)      # preprocessing that resizes or pads: image statistics are taken before it
SCALE_LIMIT = 1.5                # objects this many times larger (or smaller) than the training's: a warning


@dataclass
class ShiftReport:
    shift_score: float
    shift_threshold: float
    parts: dict
    messages: list[str] = field(default_factory=list)
    objects: dict = field(default_factory=dict)      # instance models: label -> why its size is unusual
    scale_ratio: float | None = None                 # instance models: median object diameter / the training's
    scale_limit: float = SCALE_LIMIT                 # ratios beyond this (or below its inverse) are a mismatch
    training_span: float | None = None               # the training images' own medians spread this many times
                                                     # either side of the training's (2 sd)

    @property
    def scale_mismatch(self) -> bool:
        """Objects more than ``scale_limit`` times larger or smaller than the training objects."""
        return self.scale_ratio is not None and not 1 / self.scale_limit <= self.scale_ratio <= self.scale_limit

    @property
    def shift_warning(self) -> bool:
        return self.shift_score > self.shift_threshold or self.scale_mismatch

    @property
    def verdict(self) -> str:
        """One phrase: ``fits``, ``unlike the training data`` or ``at another scale`` (the scale alone)."""
        if self.shift_score > self.shift_threshold:
            return "unlike the training data"
        return "at another scale" if self.scale_mismatch else "fits"

    def to_dict(self) -> dict:
        return {"shift_score": round(self.shift_score, 4), "shift_threshold": round(self.shift_threshold, 4),
                "shift_warning": self.shift_warning, "shift_verdict": self.verdict,
                **({"scale_ratio": round(self.scale_ratio, 4)} if self.scale_ratio is not None else {}), "shift_parts": {k: round(v, 4) for k, v in self.parts.items()},
                "shift_messages": self.messages,
                **({"object_warnings": [{"label": k, "message": v} for k, v in sorted(self.objects.items())]}
                   if self.objects else {})}

    def objects_summary(self) -> str:
        return (f"{len(self.objects)} object(s) far outside the training objects' sizes (labels "
                f"{', '.join(map(str, sorted(self.objects)[:10]))}{' ...' if len(self.objects) > 10 else ''}): "
                "likely merged or spurious; check them")

    def summary(self) -> str:
        what = "; ".join(self.messages) or "its features are unlike the training images'"
        if self.shift_score <= self.shift_threshold:      # the scale alone
            return f"input at another scale than the training data: {what}"
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

    def __init__(self, model, encoder: Path, threads: int | None = None):
        import onnxruntime as ort

        from ..runtime.onnx_session import open_session
        from ..runtime.runners import mem_pattern_allowed

        self.model = model
        options = ort.SessionOptions()
        options.enable_mem_pattern = mem_pattern_allowed()     # as the network's: no memory per crop shape
        threads = threads or int(os.environ.get("ZOO_THREADS") or 0)
        if threads:                     # as many as the prediction's (ONNX Runtime's default: every core)
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = open_session(encoder, options)

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
    trained = (shift.reference or {}).get("scale")
    if stats.get("scale") and trained:
        report.scale_ratio = float(stats["scale"] / trained)
        report.training_span = float(np.exp(2 * shift.spreads.get("scale", 0.0)))
    if report.shift_score > report.shift_threshold:
        report.messages = shift.explain(parts, stats)
    if report.scale_mismatch:
        span = report.training_span or 1.0
        within = 1 / span <= report.scale_ratio <= span
        report.messages.append(
            f"its objects are {report.scale_ratio:.2g}x the size of the training objects (median diameter "
            f"{stats['scale']:.3g} px against {trained:.3g} px"
            + (f"; the training images' own objects spanned {1 / span:.2g}-{span:.2g}x, so the model may cope"
               if within else "")
            + f"): pass --diameter {stats['scale']:.3g} (or the image's --pixel-size) so that it is rescaled to "
            "the model's scale")
    report.objects = shift.size_flags(stats.get("areas", {}))
    if report.objects:
        log.warning("%s", report.objects_summary())
    return report


def _cached(model) -> tuple[ShiftModel, "Probe"]:
    cache = getattr(model, "_shift", None)
    if cache is None:
        cache = model._shift = (load_shift(model.spec, model.root), Probe(model, Path(model.root) / ENCODER))
    return cache


def single_threaded(model) -> tuple[ShiftModel, "Probe"]:
    """The model's shift check with its encoder on the calling thread alone (see
    :func:`zoo.runtime.runners.single_threaded`): for several threads checking one image each."""
    cache = getattr(model, "_shift", None)
    shift = cache[0] if cache is not None else load_shift(model.spec, model.root)
    return shift, Probe(model, Path(model.root) / ENCODER, threads=1)


@contextlib.contextmanager
def on_calling_threads(model):
    """Within it, ``model``'s shift check runs :func:`single_threaded`; its own check after."""
    before = getattr(model, "_shift", None)
    model._shift = single_threaded(model)
    try:
        yield
    finally:
        if before is not None:
            model._shift = before
        else:
            model.__dict__.pop("_shift", None)
