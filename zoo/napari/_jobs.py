"""What the napari widget does, without Qt: a layer in, layers out, corrections to a child package.

Everything here goes through :mod:`zoo.api` (``predict``, ``predict_file``, ``predict_uncertain``,
``check_shift``, ``finetune``, ``publish``, ``load``); the widget runs these functions in
background workers, and ``scripts/napari_finetune_round.py`` runs them as they are. Layers are
read through their public attributes only (``data``, ``scale``, ``translate``, ``units``, ``rgb``,
``name``, ``source``), so a test can hand in napari layers or look-alikes.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger("zoo.napari")

STREAM_PIXELS = 4096 * 4096
"""In-memory layers larger than this (pixels) are predicted block by block into a file too."""


class Cancelled(Exception):
    """The user pressed Cancel: the work stopped and nothing was kept."""


# ---------------------------------------------------------------------------- layers in
@dataclass
class LayerImage:
    """An image layer as the api takes it."""

    data: Any                            # numpy array, or a lazy one (dask, zarr, memmap)
    axes: str | None                     # natural layout (``yx``, ``yxc``, ``cyx``, ``zyx`` ...), None: let the api guess
    name: str
    scale: tuple[float, ...]             # per layer dimension (napari: without the RGB axis)
    translate: tuple[float, ...]
    pixel_size: tuple[float, ...] | None  # µm per spatial axis (last two or three), None when unknown
    pixel_size_said: str = ""            # where the pixel size came from, in words
    source: Path | None = None           # the file the layer was opened from, if any
    rgb: bool = False                    # napari's RGB(A) layer: a last axis of colours

    @property
    def lazy(self) -> bool:
        return is_lazy(self.data)


_UM = {"nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3, "centimeter": 1e4, "meter": 1e6,
       "angstrom": 1e-4}


def micrometres_per(unit) -> float | None:
    """How many µm one ``unit`` (a pint unit, or its name) is; None for pixels or unknown units."""
    name = str(unit).strip().lower()
    for key, factor in _UM.items():
        if name in (key, key + "s"):
            return factor
    return {"nm": 1e-3, "um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "mm": 1e3, "m": 1e6}.get(name)


def is_lazy(data) -> bool:
    """Data that should be read block by block: anything but an in-memory numpy array (dask,
    zarr, a memory map), or an in-memory array over :data:`STREAM_PIXELS`."""
    if isinstance(data, np.memmap) or not isinstance(data, np.ndarray):
        return True
    return data.size > STREAM_PIXELS * (data.shape[-1] if data.ndim == 3 and data.shape[-1] in (3, 4) else 1)


def layer_image(layer, spatial: int = 2) -> LayerImage:
    """The image of a napari Image layer (its first scale if multiscale): data, axes, pixel size.

    ``spatial``: the model's spatial dimensions (2 or 3). The pixel size comes from the layer's
    scale over its last ``spatial`` axes: in µm when the layer's units say a length; taken as µm
    when the units are pixels but the scale is not 1 (what most readers set); unknown otherwise."""
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    rgb = bool(getattr(layer, "rgb", False))
    ndim = data.ndim - (1 if rgb else 0)
    scale = tuple(float(s) for s in layer.scale)
    translate = tuple(float(t) for t in layer.translate)
    axes = _guess_axes(ndim, rgb, spatial, data.shape)
    n = min(spatial, ndim)
    sizes, said = None, ""
    tail = scale[-n:]
    units = list(getattr(layer, "units", None) or [])[-n:]
    factors = [micrometres_per(u) for u in units] if units else []
    if factors and all(f is not None for f in factors):
        sizes = tuple(s * f for s, f in zip(tail, factors))
        said = f"from the layer's scale ({_um(sizes)})"
    elif any(abs(s - 1.0) > 1e-9 for s in tail):
        sizes = tail
        said = f"from the layer's scale, taken as µm ({_um(sizes)})"
    source = getattr(getattr(layer, "source", None), "path", None)
    return LayerImage(data, axes, layer.name, scale, translate, sizes, said, Path(source) if source else None, rgb)


def _um(sizes) -> str:
    if len(set(sizes)) == 1:
        return f"{sizes[0]:.4g} µm/px"
    return " x ".join(f"{s:.4g}" for s in sizes) + " µm"


def _guess_axes(ndim: int, rgb: bool, spatial: int, shape) -> str | None:
    """The natural axes of a layer's data, where they are plain: 2D (``yx``, ``yxc`` for RGB) or a
    volume for a 3D model; None (the api guesses, and says so when it cannot) otherwise."""
    if rgb:       # 2D colour: the api tells RGB apart itself, and says so when the model is grey
        return {3: "zyxc" if spatial == 3 else "tyxc"}.get(ndim)
    if ndim == 2:
        return "yx"
    if ndim == 3 and spatial == 3:
        return "zyx"
    return None


class LazyArray:
    """A lazy array (dask, zarr) as the runtime's streaming reads it: each block read is a numpy
    array, and the whole array is never asked for."""

    def __init__(self, data):
        self.data = data
        self.shape = tuple(int(s) for s in data.shape)
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def __getitem__(self, key):
        return np.asarray(self.data[key])


# ---------------------------------------------------------------------------- layers out
@dataclass
class Output:
    """A layer to add: ``kind`` is ``image`` or ``labels``; ``kwargs`` go to ``viewer.add_<kind>``."""

    data: Any
    kind: str
    name: str
    kwargs: dict = field(default_factory=dict)


@dataclass
class RunResult:
    model: str                        # name@version
    outputs: list[Output]
    shift: Any = None                 # a ShiftReport, or None for a package without a shift check
    verdict: str = ""                 # the shift check in words
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    streamed: bool = False

    @property
    def main(self) -> Output:
        return self.outputs[0]


def verdict(report) -> str:
    """The shift check in plain words."""
    if report is None:
        return "no shift check: this package records no training statistics"
    head = (f"input unlike the training data (shift score {report.shift_score:.3g} > {report.shift_threshold:.3g})"
            if report.shift_warning else
            f"input like the training data (shift score {report.shift_score:.3g} ≤ {report.shift_threshold:.3g})")
    return head + (": " + "; ".join(report.messages) if report.messages else "")


def _placement(image: LayerImage, out_shape: Sequence[int], spatial: int) -> dict:
    """scale and translate for an output whose last ``spatial`` axes cover the input's."""
    in_spatial = np.shape(image.data)[-spatial - 1:-1] if image.rgb else np.shape(image.data)[-spatial:]
    scale = list(image.scale[-spatial:])
    translate = list(image.translate[-spatial:])
    for i, (a, b) in enumerate(zip(in_spatial, out_shape[-spatial:])):
        if b and a != b:                   # an output on another grid (an upsampling network)
            scale[i] *= a / b
    lead = len(out_shape) - spatial
    return {"scale": [1.0] * lead + scale, "translate": [0.0] * lead + translate}


def run_model(model, image: LayerImage, *, raw: bool = False, uncertainty: bool = False, channels=None,
              use_pixel_size: bool = True, shift: bool = True, progress: Callable[[int, int], None] | None = None,
              cancel: Callable[[], bool] | None = None, workdir: str | Path | None = None) -> RunResult:
    """``model`` (a loaded :class:`zoo.model.Model`) on a layer's image: its outputs as layers with
    the input's scale and translate, the shift verdict, the uncertainty as an extra layer.

    ``channels``: the model's channels by name (``{"nuclei": 0, "cyto": 1}``: positions in the
    layer). Lazy layers (dask, zarr, memory maps, very large arrays) are predicted block by block
    into ``workdir`` and come back memory-mapped, never loaded whole. ``cancel()`` is asked at each
    tile; when it says True the prediction stops with :class:`Cancelled`."""
    from .. import api

    started = time.perf_counter()

    def tick(done: int, total: int) -> None:
        if cancel is not None and cancel():
            raise Cancelled("prediction cancelled")
        if progress is not None:
            progress(done, total)

    spatial = len(model.spec.inputs[0].spatial_axes)
    pixel_size = image.pixel_size if use_pixel_size else None
    instances = model.makes_instances and not raw
    notes = [f"pixel size {image.pixel_size_said}"] if pixel_size and image.pixel_size_said else []
    name = f"{image.name} | {model.spec.name}"
    result = RunResult(model.spec.ref, [], notes=notes)
    data, axes = image.data, image.axes
    if image.lazy and not uncertainty and channels is None:
        if workdir is None:
            import tempfile

            workdir = tempfile.mkdtemp(prefix="zoo-napari-")
        target = Path(workdir) / f"{_safe(name)}{'_raw' if raw else ''}.npy"
        source = image.source or Path(workdir) / f"{_safe(image.name)}.layer"
        done = api.predict_file(model, source, target, opened=(LazyArray(data), axes), raw=raw, overwrite=True,
                                progress=tick, pixel_size=pixel_size)
        output = done.result if done.result is not None else np.load(target, mmap_mode="r")
        result.streamed = done.streamed
        result.notes += done.notes
    else:
        array = np.asarray(data)
        if uncertainty:
            if pixel_size is not None or channels is not None:
                result.notes.append("uncertainty: predicted at the layer's own scale and channels")
            tick(0, 1)
            got = api.predict_uncertain(model, array, axes=axes)
            tick(1, 1)
            output = got.prediction
            extra = Output(got.uncertainty, "image", f"{name} uncertainty",
                           {"colormap": "magma", "blending": "additive",
                            "metadata": {"zoo": {"model": model.spec.ref, "kind": "uncertainty", "members": got.members,
                                                 "confidence": got.confidence}}})
        else:
            output = api.predict(model, array, axes=axes, pixel_size=pixel_size, channels=channels, raw=raw,
                                 progress=tick)
    if instances:
        main = Output(output, "labels", name, {"metadata": {"zoo": {"model": model.spec.ref, "kind": "prediction",
                                                                    "predicted": np.array(output)
                                                                    if not result.streamed else None}}})
    else:
        kind = "raw outputs" if raw else model.spec.outputs[0].name
        channel_names = model.spec.outputs[0].channels or []
        main = Output(output, "image", f"{name} {kind}" if raw else name,
                      {"metadata": {"zoo": {"model": model.spec.ref, "kind": kind, "channels": channel_names}}})
    main.kwargs.update(_placement(image, np.shape(output), spatial))
    result.outputs.append(main)
    if uncertainty:
        extra.kwargs.update(_placement(image, np.shape(extra.data), spatial))
        result.outputs.append(extra)
    if shift:
        prediction = output if instances else None       # streamed: memory-mapped, only its centre is read
        if not image.lazy:
            sample = np.asarray(image.data)
        elif image.data.ndim <= 3:              # the api reads the centre of the layer and of the labels alike
            sample = LazyArray(image.data)
        else:                                   # a lazy 4D layer: its centre block, checked without the labels
            sample, prediction = _centre(image.data, spatial), None
        try:
            result.shift = api.check_shift(model, sample, axes=axes, prediction=prediction)
        except Exception as e:   # noqa: BLE001 - the prediction stands; the verdict says why there is none
            log.info("shift check failed: %s", e)
            result.verdict = f"no shift check: {e}"
        else:
            result.verdict = verdict(result.shift)
    result.seconds = time.perf_counter() - started
    return result


def _centre(data, spatial: int, side: int = 1024):
    """The central ``side`` x ``side`` block of the last two spatial axes (others whole: a volume's
    central block too), read from a lazy array."""
    key = []
    for i, s in enumerate(data.shape):
        if i >= data.ndim - spatial:
            start = max(0, (s - side) // 2)
            key.append(slice(start, start + side))
        else:
            key.append(slice(None))
    return np.asarray(data[tuple(key)])


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "layer"


# ---------------------------------------------------------------------------- corrections -> child
@dataclass
class FinetuneResult:
    child: str                      # name@version in the local registry
    parent: str
    path: Path                      # the child package folder (before publishing)
    seconds: float
    steps: int
    crops: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def crops(image: np.ndarray, target: np.ndarray | None, region: tuple[int, int, int, int] | None = None,
          size: int = 128, rgb: bool = False) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The corrected ``region`` (y0, y1, x0, x1; default the whole image) cut into strips at least
    ``size`` px wide along its longer side (at most 4), image and target alike."""
    h, w = image.shape[:2] if rgb else image.shape[-2:]
    y0, y1, x0, x1 = region or (0, h, 0, w)
    y0, x0, y1, x1 = max(0, y0), max(0, x0), min(h, y1), min(w, x1)
    if y1 - y0 < 16 or x1 - x0 < 16:
        from ..errors import InputError

        raise InputError(f"the corrected region is {y1 - y0} x {x1 - x0} px: draw a rectangle of at least 16 x 16 px "
                         "(a few nuclei) over the part you corrected")
    along_x = (x1 - x0) >= (y1 - y0)
    length = (x1 - x0) if along_x else (y1 - y0)
    n = max(1, min(4, length // size))
    edges = np.linspace(0, length, n + 1).astype(int)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        ys, xs = (slice(y0, y1), slice(x0 + a, x0 + b)) if along_x else (slice(y0 + a, y0 + b), slice(x0, x1))
        key = (ys, xs) if rgb else (Ellipsis, ys, xs)
        out.append((np.ascontiguousarray(image[key]),
                    None if target is None else np.ascontiguousarray(target[(Ellipsis, ys, xs)])))
    return out


def next_version(name: str, registry=None) -> str:
    """The next free patch version of ``name`` in the registry (0.1.0 for a new name)."""
    from packaging.version import Version

    from .. import api

    reg = api.registry(registry) if registry is None or isinstance(registry, (str, Path)) else registry
    try:
        versions = reg.versions(name)
    except Exception:   # noqa: BLE001 - an unknown name: a first version
        versions = []
    if not versions:
        return "0.1.0"
    last = max(Version(v) for v in versions)
    return f"{last.major}.{last.minor}.{last.micro + 1}"


def finetune_on_corrections(parent: str, image: np.ndarray, target: np.ndarray | None, workdir: str | Path, *,
                            rgb: bool = False, region=None, steps: int = 100, name: str | None = None,
                            patch: int | None = None, batch_size: int | None = None, registry=None,
                            on_step: Callable[[int, int, dict], None] | None = None,
                            cancel: Callable[[], bool] | None = None, seed: int = 0,
                            val_every: int | None = None) -> FinetuneResult:
    """Fine-tune ``parent`` (``name@version``) on a layer and its correction (instance labels, a
    clean image, or None for a self-supervised model), publish the child in the local registry
    (lineage: its parent) and return its reference.

    The corrected ``region`` is cut into strips (:func:`crops`), written as TIFF pairs under
    ``workdir`` and given to :func:`zoo.api.finetune`; the first and last strips are also its
    validation images (one correction round has no other data), on which the best weights seen
    (every ``val_every`` steps, default a quarter of the steps) are picked."""
    import tifffile

    from .. import api

    started = time.perf_counter()
    parent_spec = api.load(parent).spec
    parent_ref = parent_spec.ref
    config = (parent_spec.training.config if parent_spec.training else None) or {}
    default_patch = int(config.get("patch") or 128) if not isinstance(config.get("patch"), list) else \
        int(min(config["patch"]))
    pieces = crops(np.asarray(image), None if target is None else np.asarray(target), region,
                   size=max(patch or 0, default_patch), rgb=rgb)
    smallest = min(min((p.shape[:2] if rgb else p.shape[-2:])) for p, _ in pieces)
    if patch is None:
        patch = min(default_patch, smallest // 8 * 8)
    patch = max(16, min(patch, smallest // 8 * 8))
    workdir = Path(workdir)
    images, targets = workdir / "images", workdir / "targets"
    images.mkdir(parents=True, exist_ok=True)
    targets.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (piece, tgt) in enumerate(pieces):
        path = images / f"crop_{i}.tif"
        tifffile.imwrite(path, piece, photometric="rgb" if rgb else "minisblack")
        if tgt is not None:
            tifffile.imwrite(targets / path.name, tgt.astype(np.uint16 if np.issubdtype(tgt.dtype, np.integer)
                                                             else np.float32))
        files.append(path)
    name = name or f"{parent_spec.name}-ft"
    version = next_version(name, registry)
    losses: list[tuple[int, float]] = []

    def step(done: int, total: int, values: dict) -> None:
        if cancel is not None and cancel():
            raise Cancelled("fine-tuning cancelled")
        if "train_loss" in values:
            losses.append((done, values["train_loss"]))
        if on_step is not None:
            on_step(done, total, values)

    out = workdir / f"{name}-{version}"
    val_files = list(dict.fromkeys([files[0], files[-1]]))
    path = api.finetune(parent_ref, None, out, target=targets if target is not None else None, train_files=files,
                        val_files=val_files, max_steps=steps, val_every=val_every or max(1, steps // 4), patience=None,
                        evaluate=False, progress=False, name=name, version=version, patch=patch,
                        batch_size=batch_size, seed=seed, overwrite=True, on_step=step,
                        description=f"{parent_spec.name} fine-tuned in napari on {len(files)} corrected crop(s) "
                                    f"of one image, {steps} steps.")
    published = api.publish(path, registry)
    child = published.ref
    notes = [f"{len(files)} crop(s) of the corrected region, {patch} px patches; validated on {len(val_files)} of them"]
    return FinetuneResult(child, parent_ref, Path(path), time.perf_counter() - started, steps, len(files), losses,
                          notes)
