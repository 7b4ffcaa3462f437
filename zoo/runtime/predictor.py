"""The one prediction pipeline: a spec and a runner, from a user's array or file to the output.

layout conversion -> input ops -> tile plan -> tiled run (in memory, or streamed from and to a
file by :mod:`zoo.runtime.stream`) -> output ops -> instance ops (on the whole stitched output,
never per tile). Classification is a strategy of it (:mod:`zoo.classification.predict`): one
class per image instead of tiles. :class:`zoo.model.Model`, package building, the server and the
classifier all predict through a Predictor; nothing here knows about packages on disk. Which
path a task takes is :mod:`zoo.tasks`' table, not a branch on task names.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np

from .. import opnames, tasks
from ..architectures import import_target
from ..errors import InputError
from . import layout, memory, ops, tiling

log = logging.getLogger("zoo")

Tile = int | Sequence[int] | None
Progress = Callable[[int, int], None] | None


class Predictor:
    """Predictions of the network ``runner`` runs, as the ``spec`` declares them."""

    def __init__(self, spec, runner):
        self.spec = spec
        self.runner = runner
        self.task = tasks.of(spec)
        self._strategy = import_target(self.task.strategy) if self.task.strategy else None
        self._bytes_per_pixel: float | None = None

    # ------------------------------------------------------------------ what the spec says
    @property
    def class_names(self) -> list[str]:
        """A classifier's classes, in the order of its probabilities."""
        return list(self.spec.outputs[0].channels or []) if self.task.per_image else []

    @property
    def makes_instances(self) -> bool:
        """Whether predictions are instance label images."""
        return opnames.makes_instances(self.spec)

    # ------------------------------------------------------------------ prediction
    def predict(self, image: np.ndarray, axes: str | None = None, tile: Tile = None, batch_size: int | None = None,
                blend: int | None = None, progress: Progress = None, raw: bool = False) -> np.ndarray:
        """One image (or a batch) in its natural layout -> the output in the same layout; a
        classifier gives ``(class name, probabilities)``."""
        if self._strategy is not None:
            return self._strategy.predict(self, image, axes)
        x, natural = self.to_tensor(image, axes)
        y = self.predict_tensor(x, tile=tile, batch_size=batch_size, blend=blend, progress=progress, raw=raw)
        return layout.from_tensor(y, natural)

    def to_tensor(self, image: np.ndarray, axes: str | None = None):
        """(float32 ``b, c, *spatial`` tensor, the natural layout it came from)."""
        inp = self.spec.inputs[0]
        return layout.tensor_for(image, axes, inp)

    def predict_tensor(self, x: np.ndarray, tile: Tile = None, batch_size: int | None = None,
                       blend: int | None = None, progress: Progress = None, raw: bool = False) -> np.ndarray:
        """A float32 tensor in the spec's input axes (``b, c, *spatial``) -> the output tensor.
        ``raw`` skips the instance ops. A classifier gives ``b, n_classes`` (``raw``: logits)."""
        if self._strategy is not None:
            return self._strategy.predict_tensor(self, x, raw)
        inp, out = self.spec.inputs[0], self.spec.outputs[0]
        n = len(inp.spatial_axes)
        if x.ndim != n + 2:
            raise InputError(f"expected a tensor with axes '{inp.axes}' ({n + 2} dimensions), got shape {x.shape}")
        layout.check_finite(x)
        context: ops.Context = {}
        x = ops.apply(inp.preprocessing, x.astype(np.float32, copy=False), context, inp.name, ops.PREPROCESSING)
        plans, batch_size = self.plan_tiles(x.shape[2:], tile, batch_size, blend)
        y = tiling.predict_planned(self.runner, x, plans, batch_size=batch_size, progress=progress)
        return ops.apply(opnames.output_ops(self.spec, raw), y, context, out.name, ops.POSTPROCESSING)

    def predict_file(self, source, target, axes: str | None = None, tile: Tile = None,
                     batch_size: int | None = None, blend: int | None = None, progress: Progress = None,
                     raw: bool = False, overwrite: bool = False, opened=None) -> tuple[int, ...]:
        """An image file into a TIFF, NPY or OME-Zarr, block by block (out of core); returns the
        output shape (see :func:`zoo.runtime.stream.predict_file`; ``opened``: the input already
        opened lazily, so that a prediction opens its input once)."""
        from .stream import predict_file

        return predict_file(self, source, target, axes=axes, tile=tile, batch_size=batch_size, blend=blend,
                            progress=progress, raw=raw, overwrite=overwrite, opened=opened)

    # ------------------------------------------------------------------ tiling
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
        if self._bytes_per_pixel is None:
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
