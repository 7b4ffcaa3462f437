"""The model object: one way from a package to predictions."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import architectures, spec as specs
from .errors import InputError, ReproducibilityError
from .package import files
from .runtime import layout, ops, runners, tiling

log = logging.getLogger("zoo")

DEFAULT_TILE = {2: 512, 3: 128}


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
    def predict(self, image: np.ndarray, axes: str | None = None, tile: int | Sequence[int] | None = None,
                batch_size: int = 4, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Predict one image (or a batch) given in its natural layout; returns the same layout."""
        inp, out = self.spec.inputs[0], self.spec.outputs[0]
        x, natural = layout.to_tensor(image, axes, inp.spatial_axes, inp.n_channels)
        y = self.predict_tensor(x, tile=tile, batch_size=batch_size, progress=progress)
        return layout.from_tensor(y, natural, out.spatial_axes)

    def predict_tensor(self, x: np.ndarray, tile: int | Sequence[int] | None = None, batch_size: int = 4,
                       progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Predict a float32 tensor in the spec's input axes (``b, c, *spatial``)."""
        inp, out = self.spec.inputs[0], self.spec.outputs[0]
        n = len(inp.spatial_axes)
        if x.ndim != n + 2:
            raise InputError(f"expected a tensor with axes '{inp.axes}' ({n + 2} dimensions), got shape {x.shape}")
        context: ops.Context = {}
        x = ops.apply(inp.preprocessing, x.astype(np.float32, copy=False), context, inp.name, ops.PREPROCESSING)
        if tile is None:
            tile = self.default_tile(n)
        tiles = [tile] * n if isinstance(tile, int) else list(tile)
        if len(tiles) != n:
            raise InputError(f"tile must have {n} entries (one per spatial axis '{inp.spatial_axes}'), got {tiles}")
        y = tiling.predict_tiled(
            self.runner, x, tile=tiles, halo=inp.halo or [0] * n, step=inp.shape_step or [1] * n,
            minimum=inp.shape_min or [1] * n, batch_size=batch_size, progress=progress,
        )
        return ops.apply(out.postprocessing, y, context, out.name, ops.POSTPROCESSING)

    @staticmethod
    def default_tile(n_spatial: int) -> int:
        return DEFAULT_TILE[n_spatial]

    def predict_file(self, source, target, tile=None, batch_size: int = 4, progress=None) -> tuple[int, ...]:
        """Predict an image file into a TIFF band by band (out of core); returns the output shape."""
        from .runtime.stream import predict_file

        return predict_file(self, source, target, tile=tile, batch_size=batch_size, progress=progress)

    # ------------------------------------------------------------------ checks
    def test(self) -> float:
        """Reproduce the package's test tensors; return the largest error relative to tolerance."""
        t = self.spec.test
        x = np.load(files.safe_join(self.root, t.inputs[0].file), allow_pickle=False)
        expected = np.load(files.safe_join(self.root, t.outputs[0].file), allow_pickle=False)
        got = self.predict_tensor(x)
        if got.shape != expected.shape:
            raise ReproducibilityError(f"{self.spec.ref} ({self.runtime}): test output has shape {got.shape}, "
                                       f"expected {expected.shape}")
        error = np.abs(got.astype(np.float64) - expected)
        allowed = t.atol + t.rtol * np.abs(expected.astype(np.float64))
        ratio = float(np.max(error / np.maximum(allowed, 1e-30))) if error.size else 0.0
        if not np.all(error <= allowed):
            raise ReproducibilityError(
                f"{self.spec.ref}: the {self.runtime} runtime does not reproduce the test output "
                f"(max error {ratio:.3g}x the tolerance rtol={t.rtol}, atol={t.atol})")
        return ratio


def from_path(path: str | Path, runtime: str = "onnx", device: str = "auto") -> Model:
    path = Path(path)
    root = path if path.is_dir() else path.parent
    return Model(specs.load(path), root, runtime=runtime, device=device)
