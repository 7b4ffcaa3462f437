"""The model object: one way from a package to predictions."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import architectures, opnames, spec as specs
from .errors import ColourImageError, InputError, ReproducibilityError, ZooError
from .package import files, readers
from .runtime import runners
from .runtime.predictor import Predictor, Tile

log = logging.getLogger("zoo")



class Model:
    """A verified model package, ready to predict.

    ``predict(image)`` takes a numpy array in the model's natural layout (``yx`` for a 2D
    one-channel model; ``cyx`` or ``yxc`` for several channels; ``zyx`` in 3D; a leading
    batch axis is allowed) and returns the output in the same layout. Every prediction goes
    through one :class:`zoo.runtime.predictor.Predictor` (``model.predictor``).
    """

    installed = None
    """The registry ``zoo.load`` found the package through (or the default one): error messages name
    other packages in it that fit the input (it answers ``names_taking(n_channels)``)."""

    def __init__(self, spec: specs.Spec, root: str | Path, runtime: str = "auto", device: str = "auto",
                 verified: bool = False, precision: str | None = None):
        if spec.kind != "package":
            raise InputError(f"{spec.name} is a blueprint (no weights); train it first with `zoo train`")
        if not spec.graph_only:
            architectures.get(spec.architecture_id)  # unknown architecture: clear error, now
        opnames.check_known(spec)
        self.spec = spec
        self.root = Path(root)
        if not verified:
            files.verify(spec, self.root)
        self.device = device
        self.predictor = Predictor(spec, runners.create(spec, self.root, runtime, device, precision))
        self._runtime = self.predictor.runner.name

    @classmethod
    def with_runner(cls, spec: specs.Spec, runner: runners.Runner) -> "Model":
        """A model around an in-memory runner (no package folder: no test tensors, no shift check)."""
        model = cls.__new__(cls)
        model.spec, model.root, model.device, model._runtime = spec, None, "cpu", runner.name
        model.predictor = Predictor(spec, runner)
        return model

    @property
    def runtime(self) -> str:
        """The runtime running the network now (``auto`` settles on one at the first large prediction;
        a runner swapped in without a name keeps the loaded one's)."""
        return getattr(self.predictor.runner, "name", self._runtime)

    def __repr__(self) -> str:
        return f"Model({self.spec.ref}, runtime={self.runtime}, root={self.root})"

    @property
    def runner(self) -> runners.Runner:
        return self.predictor.runner

    @property
    def _runner(self) -> runners.Runner:
        return self.predictor.runner

    @_runner.setter
    def _runner(self, runner) -> None:
        self.predictor.runner = runner

    @property
    def task(self):
        """The :class:`zoo.tasks.Task` of the package: what a prediction gives and how it runs."""
        return self.predictor.task

    @property
    def is_classifier(self) -> bool:
        """Whether the model gives one class per image (``task: classification``)."""
        return self.task.per_image

    @property
    def class_names(self) -> list[str]:
        """A classifier's classes, in the order of its probabilities."""
        return self.predictor.class_names

    @property
    def makes_instances(self) -> bool:
        """Whether predictions are instance label images."""
        return self.predictor.makes_instances

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
        with self._colour_hint():
            return self.predictor.predict(image, axes, tile, batch_size, blend, progress, raw)

    def predict_tensor(self, x: np.ndarray, tile: Tile = None, batch_size: int | None = None,
                       blend: int | None = None, progress: Callable[[int, int], None] | None = None,
                       raw: bool = False) -> np.ndarray:
        """Predict a float32 tensor in the spec's input axes (``b, c, *spatial``). Instance ops
        run on the whole stitched output, never per tile; ``raw`` skips them. A classifier gives
        ``b, n_classes`` (``raw``: the logits)."""
        return self.predictor.predict_tensor(x, tile, batch_size, blend, progress, raw)

    def predict_file(self, source, target, axes: str | None = None, tile: Tile = None,
                     batch_size: int | None = None, blend: int | None = None, progress=None,
                     raw: bool = False, overwrite: bool = False, opened=None,
                     pixel_size: dict | None = None) -> tuple[int, ...]:
        """Predict an image file into a TIFF, NPY or OME-Zarr block by block (out of core); returns
        the output shape. Segmentation models write instance labels unless ``raw``. An existing
        ``target`` is replaced only with ``overwrite``, and only by the same kind of output."""
        with self._colour_hint():
            return self.predictor.predict_file(source, target, axes=axes, tile=tile, batch_size=batch_size,
                                               blend=blend, progress=progress, raw=raw, overwrite=overwrite,
                                               opened=opened, pixel_size=pixel_size)

    def plan_tiles(self, spatial: Sequence[int], tile: Tile = None, batch_size: int | None = None,
                   blend: int | None = None, band_width: int | None = None):
        """How an image of this spatial shape is tiled: one plan per axis, and the batch size
        (``band_width``: predicted in column strips about this wide)."""
        return self.predictor.plan_tiles(spatial, tile, batch_size, blend, band_width)

    def network(self):
        """The runner as the tiler calls it (see :meth:`zoo.runtime.predictor.Predictor.network`)."""
        return self.predictor.network()

    def bytes_per_pixel(self) -> float:
        """The network's estimated activation memory per input pixel (measured once)."""
        return self.predictor.bytes_per_pixel()

    def classify_objects(self, image: np.ndarray, labels: np.ndarray, axes: str | None = None,
                         margin: float = 0.0) -> list[dict]:
        """A classifier's class for every object of ``labels``: one row per object (``label``,
        ``class``, ``probability``, ``p_<class>`` ...), from the crop around its bounding box."""
        from .classification.predict import classify_objects

        if not self.task.per_image:
            raise InputError(f"{self.spec.ref} is a {self.spec.task} model, not a classifier")
        return classify_objects(self.predictor, image, labels, axes, margin)

    def check_shift(self, image: np.ndarray, axes: str | None = None, prediction: np.ndarray | None = None):
        """How unlike the training inputs ``image`` is: a :class:`zoo.trust.check.ShiftReport`
        (``shift_score``, ``shift_threshold``, ``shift_warning``, messages), or None for a package
        without a shift check. ``prediction``: the instance labels already predicted, if any."""
        from .trust.check import check

        x, _ = self.predictor.to_tensor(image, axes)
        fits = prediction is not None and self.makes_instances and np.size(prediction) == np.prod(x.shape[2:])
        return check(self, x[:1], np.asarray(prediction).reshape(x.shape[2:]) if fits else None)

    @contextlib.contextmanager
    def lanes(self):
        """Within it, the network and the shift check run each call on the calling thread alone, so
        that several threads can predict one image each at once: the fast way through many small
        images on a CPU (folder mode). Yields False and changes nothing where that does not apply
        (a GPU, torch, reduced precision); restores the model's runners after."""
        single = runners.single_threaded(self.predictor.runner)
        if single is None:
            yield False
            return
        before = self.predictor.runner
        self.predictor.runner = single
        try:
            if self.root is not None and self.spec.trust:
                from .trust.check import on_calling_threads

                with on_calling_threads(self):
                    yield True
            else:
                yield True
        finally:
            self.predictor.runner = before

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

    # ------------------------------------------------------------------ checks
    def test(self) -> float:
        """Reproduce the package's test tensors; return the largest error relative to tolerance."""
        t = self.spec.test
        xs = {inp.name: readers.array(files.safe_join(self.root, ref.file))
              for inp, ref in zip(self.spec.inputs, t.inputs)}
        got = self.predictor.predict_tensors(xs, raw=True)   # labels are compared as the outputs behind them
        worst = 0.0
        for out, ref in zip(self.spec.outputs, t.outputs):
            expected = readers.array(files.safe_join(self.root, ref.file))
            what = f" output {out.name}" if len(self.spec.outputs) > 1 else " output"
            y = got[out.name]
            if y.shape != expected.shape:
                raise ReproducibilityError(f"{self.spec.ref} ({self.runtime}): test{what} has shape {y.shape}, "
                                           f"expected {expected.shape}")
            error = np.abs(y.astype(np.float64) - expected)
            allowed = t.atol + t.rtol * np.abs(expected.astype(np.float64))
            ratio = float(np.max(error / np.maximum(allowed, 1e-30))) if error.size else 0.0
            if not np.all(error <= allowed):
                raise ReproducibilityError(
                    f"{self.spec.ref}: the {self.runtime} runtime does not reproduce the test{what} "
                    f"(max error {ratio:.3g}x the tolerance rtol={t.rtol}, atol={t.atol}); "
                    f"{where_out_of_tolerance(error > allowed)}")
            worst = max(worst, ratio)
        return worst


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
    """The runtimes that can run a package: torch and ONNX Runtime, ONNX Runtime alone for an
    imported ONNX graph, TorchScript alone for an imported TorchScript module."""
    if spec.weights is not None and spec.weights.torchscript is not None:
        return ("torchscript",)
    return ("onnx",) if spec.graph_only else ("torch", "onnx")


def from_path(path: str | Path, runtime: str = "auto", device: str = "auto", precision: str | None = None) -> Model:
    path = Path(path)
    root = path if path.is_dir() else path.parent
    return Model(specs.load(path), root, runtime=runtime, device=device, precision=precision)
