"""The model object: one way from a package to predictions."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import architectures, spec as specs
from .errors import ColourImageError, InputError, ReproducibilityError, ZooError
from .package import files, readers
from .runtime import layout, memory, ops, runners, tiling

log = logging.getLogger("zoo")

Tile = int | Sequence[int] | None


class Model:
    """A verified model package, ready to predict.

    ``predict(image)`` takes a numpy array in the model's natural layout (``yx`` for a 2D
    one-channel model; ``cyx`` or ``yxc`` for several channels; ``zyx`` in 3D; a leading
    batch axis is allowed) and returns the output in the same layout.
    """

    def __init__(self, spec: specs.Spec, root: str | Path, runtime: str = "onnx", device: str = "auto",
                 verified: bool = False):
        if spec.kind != "package":
            raise InputError(f"{spec.name} is a blueprint (no weights); train it first with `zoo train`")
        if not spec.graph_only:
            architectures.get(spec.architecture_id)  # unknown architecture: clear error, now
        ops.check_known(spec)
        self.spec = spec
        self.root = Path(root)
        if not verified:
            files.verify(spec, self.root)
        self.runtime = runtime
        self.device = device
        self._runner: runners.Runner = runners.create(spec, self.root, runtime, device)

    @classmethod
    def with_runner(cls, spec: specs.Spec, runner: runners.Runner) -> "Model":
        """A model around an in-memory runner (used while building a package)."""
        model = cls.__new__(cls)
        model.spec, model.root, model.runtime, model.device = spec, None, runner.name, "cpu"
        model._runner = runner
        return model

    def __repr__(self) -> str:
        return f"Model({self.spec.ref}, runtime={self.runtime}, root={self.root})"

    @property
    def runner(self) -> runners.Runner:
        return self._runner

    # ------------------------------------------------------------------ prediction
    def predict(self, image: np.ndarray, axes: str | None = None, tile: Tile = None, batch_size: int | None = None,
                blend: int | None = None, progress: Callable[[int, int], None] | None = None,
                raw: bool = False) -> np.ndarray:
        """Predict one image (or a batch) given in its natural layout; returns the same layout.

        Instance-segmentation models return the label image (0 = background, ``int32``);
        ``raw=True`` returns the network's outputs instead (probabilities, distances, flows).
        Classifiers return ``(class name, probabilities)`` in the order of ``class_names``.

        ``tile`` (pixels per axis, context included) and ``batch_size`` (tiles per network call)
        are chosen from free memory unless given; ``blend`` is the cross-faded margin between
        tiles (default a quarter of the halo; 0 crops tiles edge to edge).
        """
        if self.is_classifier:
            from .classification.predict import classify

            return classify(self, image, axes)
        inp = self.spec.inputs[0]
        with self._colour_hint():
            x, natural = layout.to_tensor(image, axes, inp.spatial_axes, inp.n_channels, inp.grey == "repeat")
        y = self.predict_tensor(x, tile=tile, batch_size=batch_size, blend=blend, progress=progress, raw=raw)
        return layout.from_tensor(y, natural)

    @property
    def is_classifier(self) -> bool:
        """Whether the model gives one class per image (``task: classification``)."""
        return self.spec.task.split("/")[0] == "classification"

    @property
    def class_names(self) -> list[str]:
        """A classifier's classes, in the order of its probabilities."""
        return list(self.spec.outputs[0].channels or []) if self.is_classifier else []

    def classify_objects(self, image: np.ndarray, labels: np.ndarray, axes: str | None = None,
                         margin: float = 0.0) -> list[dict]:
        """A classifier's class for every object of ``labels``: one row per object (``label``,
        ``class``, ``probability``, ``p_<class>`` ...), from the crop around its bounding box."""
        from .classification.predict import classify_objects

        if not self.is_classifier:
            raise InputError(f"{self.spec.ref} is a {self.spec.task} model, not a classifier")
        return classify_objects(self, image, labels, axes, margin)

    def check_shift(self, image: np.ndarray, axes: str | None = None, prediction: np.ndarray | None = None):
        """How unlike the training inputs ``image`` is: a :class:`zoo.trust.calibrate.ShiftReport`
        (``shift_score``, ``shift_threshold``, ``shift_warning``, messages), or None for a package
        without a shift check. ``prediction``: the instance labels already predicted, if any."""
        from .trust.calibrate import check

        inp = self.spec.inputs[0]
        x, _ = layout.to_tensor(image, axes, inp.spatial_axes, inp.n_channels, inp.grey == "repeat")
        fits = prediction is not None and self.makes_instances and np.size(prediction) == np.prod(x.shape[2:])
        return check(self, x[:1], np.asarray(prediction).reshape(x.shape[2:]) if fits else None)

    @property
    def makes_instances(self) -> bool:
        """Whether predictions are instance label images."""
        return ops.makes_instances(self.spec)

    def predict_tensor(self, x: np.ndarray, tile: Tile = None, batch_size: int | None = None,
                       blend: int | None = None, progress: Callable[[int, int], None] | None = None,
                       raw: bool = False) -> np.ndarray:
        """Predict a float32 tensor in the spec's input axes (``b, c, *spatial``). Instance ops
        run on the whole stitched output, never per tile; ``raw`` skips them. A classifier gives
        ``b, n_classes`` (``raw``: the logits)."""
        if self.is_classifier:
            from .classification.predict import run_tensor

            return run_tensor(self, x, raw=raw)
        inp, out = self.spec.inputs[0], self.spec.outputs[0]
        n = len(inp.spatial_axes)
        if x.ndim != n + 2:
            raise InputError(f"expected a tensor with axes '{inp.axes}' ({n + 2} dimensions), got shape {x.shape}")
        layout.check_finite(x)
        context: ops.Context = {}
        x = ops.apply(inp.preprocessing, x.astype(np.float32, copy=False), context, inp.name, ops.PREPROCESSING)
        plans, batch_size = self.plan_tiles(x.shape[2:], tile, batch_size, blend)
        y = tiling.predict_planned(self.runner, x, plans, batch_size=batch_size, progress=progress)
        return ops.apply(ops.output_ops(self.spec, raw), y, context, out.name, ops.POSTPROCESSING)

    def plan_tiles(self, spatial: Sequence[int], tile: Tile = None, batch_size: int | None = None,
                   blend: int | None = None) -> tuple[list[tiling.AxisPlan], int]:
        """How an image of this spatial shape is tiled: one plan per axis, and the batch size."""
        inp = self.spec.inputs[0]
        n = len(inp.spatial_axes)
        halo, step, minimum = inp.halo or [0] * n, inp.shape_step or [1] * n, inp.shape_min or [1] * n
        if tile is None or batch_size is None:
            margins = [tiling.plan_axis(s, 1 << 30, h, st, m, blend).margin
                       for s, h, st, m in zip(spatial, halo, step, minimum)]
            choice = memory.choose(spatial, self.bytes_per_pixel(), margins, on_gpu=self.runner.on_gpu)
            log.info("tiles %s, batch %d (%s)", "x".join(map(str, choice.tile)), choice.batch_size, choice.reason)
            tile = choice.tile if tile is None else tile
            batch_size = choice.batch_size if batch_size is None else batch_size
        tiles = [tile] * n if isinstance(tile, int) else list(tile)
        if len(tiles) != n or not all(isinstance(t, (int, np.integer)) and t > 0 for t in tiles):
            raise InputError(f"tile must be a positive size or {n} of them (one per spatial axis "
                             f"'{inp.spatial_axes}'), got {tile}")
        return tiling.plan(spatial, tiles, halo, step, minimum, blend), batch_size

    def bytes_per_pixel(self) -> float:
        """The network's estimated activation memory per input pixel (measured once)."""
        if getattr(self, "_bytes_per_pixel", None) is None:
            inp = self.spec.inputs[0]
            n = len(inp.spatial_axes)
            side = 64 if n == 2 else 32
            probe = [max(m, -(-side // st) * st) for m, st in zip(inp.shape_min or [1] * n, inp.shape_step or [1] * n)]
            try:
                self._bytes_per_pixel = self.runner.bytes_per_pixel((1, inp.n_channels, *probe))
            except Exception as e:   # noqa: BLE001 - an estimate must never stop a prediction
                log.info("cannot estimate the network's memory (%s): assuming %d bytes/pixel", e,
                         memory.FALLBACK_BYTES_PER_PIXEL)
                self._bytes_per_pixel = float(memory.FALLBACK_BYTES_PER_PIXEL)
        return self._bytes_per_pixel

    def predict_file(self, source, target, axes: str | None = None, tile: Tile = None,
                     batch_size: int | None = None, blend: int | None = None, progress=None,
                     raw: bool = False, overwrite: bool = False) -> tuple[int, ...]:
        """Predict an image file into a TIFF, NPY or OME-Zarr block by block (out of core); returns
        the output shape. Segmentation models write instance labels unless ``raw``. An existing
        ``target`` is replaced only with ``overwrite``, and only by the same kind of output."""
        from .runtime.stream import predict_file

        with self._colour_hint():
            return predict_file(self, source, target, axes=axes, tile=tile, batch_size=batch_size, blend=blend,
                                progress=progress, raw=raw, overwrite=overwrite)

    installed = None
    """The registry ``zoo.load`` found the package through (or the default one): error messages name
    other packages in it that fit the input (it answers ``names_taking(n_channels)``)."""

    @contextlib.contextmanager
    def _colour_hint(self):
        """Name the installed packages that take colour when a colour image meets a grey model."""
        try:
            yield
        except ColourImageError as e:
            try:
                names = self.installed.names_taking(3) if self.installed is not None else []
            except ZooError:           # an unreadable registry: the error itself still stands
                names = []
            hint = f" (installed: {', '.join(names)})" if names else ""
            raise ColourImageError(f"{e}{hint}") from None

    # ------------------------------------------------------------------ transfer learning
    def finetune(self, data, out, **options) -> Path:
        """Fine-tune this package on a few of your own images and write the child package to
        ``out``; see :func:`zoo.trainers.finetune.finetune` for the options (``target``,
        ``freeze``, ``lr``, ``layer_decay``, ``rehearsal`` ...)."""
        from .trainers.finetune import finetune

        return finetune(self, data, out, **options)

    # ------------------------------------------------------------------ checks
    def test(self) -> float:
        """Reproduce the package's test tensors; return the largest error relative to tolerance."""
        t = self.spec.test
        x = readers.array(files.safe_join(self.root, t.inputs[0].file))
        expected = readers.array(files.safe_join(self.root, t.outputs[0].file))
        got = self.predict_tensor(x, raw=True)    # labels are compared as the outputs behind them
        if got.shape != expected.shape:
            raise ReproducibilityError(f"{self.spec.ref} ({self.runtime}): test output has shape {got.shape}, "
                                       f"expected {expected.shape}")
        error = np.abs(got.astype(np.float64) - expected)
        allowed = t.atol + t.rtol * np.abs(expected.astype(np.float64))
        ratio = float(np.max(error / np.maximum(allowed, 1e-30))) if error.size else 0.0
        if not np.all(error <= allowed):
            raise ReproducibilityError(
                f"{self.spec.ref}: the {self.runtime} runtime does not reproduce the test output "
                f"(max error {ratio:.3g}x the tolerance rtol={t.rtol}, atol={t.atol}); "
                f"{where_out_of_tolerance(error > allowed)}")
        return ratio


def where_out_of_tolerance(bad: np.ndarray) -> str:
    """Where the out-of-tolerance values of a ``b, c, *spatial`` comparison lie, in words: a band
    along the border (padding) is told apart from errors spread over the image."""
    share = f"{int(np.count_nonzero(bad))} of {bad.size} values are out of tolerance"
    spatial = bad.shape[2:]
    if not spatial:
        return share
    hits = np.nonzero(bad)[2:]
    depth = np.min([np.minimum(i, size - 1 - i) for i, size in zip(hits, spatial)], axis=0)
    band = int(depth.max()) + 1
    if band > min(spatial) // 4:
        return f"{share}, spread over the image, not only along its border"
    return (f"{share}, all within {band} px of the border: the zoo pads by reflection; compute the test output "
            "with the zoo (`zoo import onnx`, `zoo bump`), or pad by reflection (numpy.pad mode='reflect', at "
            "least the receptive field) when you compute it")


def runtimes_of(spec: specs.Spec) -> tuple[str, ...]:
    """The runtimes that can run a package: torch and ONNX Runtime, or ONNX Runtime alone for an
    imported ONNX graph."""
    return ("onnx",) if spec.graph_only else ("torch", "onnx")


def from_path(path: str | Path, runtime: str = "onnx", device: str = "auto") -> Model:
    path = Path(path)
    root = path if path.is_dir() else path.parent
    return Model(specs.load(path), root, runtime=runtime, device=device)
