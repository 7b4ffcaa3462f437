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
from . import geometry, layout, memory, ops, tiling

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

    @property
    def several(self) -> bool:
        """Several input or output tensors: predictions take and give dicts keyed by tensor name."""
        return len(self.spec.inputs) > 1 or len(self.spec.outputs) > 1

    @property
    def streams(self) -> bool:
        """Whether a file can be predicted block by block (one tensor in and out, on one grid)."""
        return geometry.plain(self.spec) or (not self.several and not self.spec.outputs[0].resized)

    def network(self):
        """The runner as the tiler calls it (:mod:`zoo.runtime.geometry`): itself for a plain
        network, adapted for fixed sizes, several tensors or resized outputs."""
        return self.runner if geometry.plain(self.spec) else geometry.NetworkCall(self.spec, self.runner)

    def zoom(self) -> list[float] | None:
        """Output pixels per input pixel, per spatial axis (None: the input's grid)."""
        if geometry.plain(self.spec):
            return None
        zoom, _ = geometry.output_geometry(self.spec)
        return None if all(z == 1 for z in zoom) else [float(z) for z in zoom]

    # ------------------------------------------------------------------ prediction
    def predict(self, image: np.ndarray, axes: str | None = None, tile: Tile = None, batch_size: int | None = None,
                blend: int | None = None, progress: Progress = None, raw: bool = False) -> np.ndarray:
        """One image (or a batch) in its natural layout -> the output in the same layout; a
        classifier gives ``(class name, probabilities)``."""
        if self._strategy is not None:
            return self._strategy.predict(self, image, axes)
        if self.several or isinstance(image, dict):
            return self.predict_many(image, axes, tile=tile, batch_size=batch_size, blend=blend, progress=progress,
                                     raw=raw)
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
        if self.several:
            raise InputError(f"{self.spec.ref} has several input or output tensors "
                             f"({', '.join(t.name for t in self.spec.inputs + self.spec.outputs)}): use "
                             "predict_tensors with a dict of tensors by name")
        return self.predict_tensors({self.spec.inputs[0].name: x}, tile=tile, batch_size=batch_size, blend=blend,
                                    progress=progress, raw=raw)[self.spec.outputs[0].name]

    def predict_tensors(self, xs: dict, tile: Tile = None, batch_size: int | None = None,
                        blend: int | None = None, progress: Progress = None, raw: bool = False) -> dict:
        """Float32 tensors by input name (``b, c, *spatial``, one spatial shape) -> outputs by name."""
        inputs, outputs = self.spec.inputs, self.spec.outputs
        if self._strategy is not None and inputs[0].name in xs:
            return {outputs[0].name: self._strategy.predict_tensor(self, xs[inputs[0].name], raw)}
        missing = [t.name for t in inputs if t.name not in xs]
        unknown = [k for k in xs if k not in {t.name for t in inputs}]
        if missing or unknown:
            raise InputError(f"{self.spec.ref} takes the inputs {', '.join(t.name for t in inputs)}; "
                             + (f"missing: {', '.join(missing)}" if missing else f"unknown: {', '.join(unknown)}"))
        n = len(inputs[0].spatial_axes)
        context: ops.Context = {}
        prepared = []
        for inp in inputs:
            x = xs[inp.name]
            if x.ndim != n + 2:
                raise InputError(f"input {inp.name}: expected a tensor with axes '{inp.axes}' ({n + 2} dimensions), "
                                 f"got shape {x.shape}")
            layout.check_finite(x)
            prepared.append(ops.apply(inp.preprocessing, x.astype(np.float32, copy=False), context, inp.name,
                                      ops.PREPROCESSING))
        shapes = {(p.shape[0],) + p.shape[2:] for p in prepared}
        if len(shapes) > 1:
            raise InputError(f"{self.spec.ref}: the inputs {', '.join(t.name for t in inputs)} must have one batch and "
                             f"spatial shape; got {', '.join(str(p.shape) for p in prepared)}")
        x = prepared[0] if len(prepared) == 1 else np.concatenate(prepared, axis=1)
        plans, batch_size = self.plan_tiles(x.shape[2:], tile, batch_size, blend)
        network = self.network()
        y = tiling.predict_planned(network, x, plans, batch_size=batch_size, progress=progress, zoom=self.zoom())
        parts = network.split_outputs(y) if isinstance(network, geometry.NetworkCall) else [y]
        return {out.name: ops.apply(opnames.output_ops(self.spec, raw, i), part, context, out.name, ops.POSTPROCESSING)
                for i, (out, part) in enumerate(zip(outputs, parts))}

    def predict_many(self, images: dict, axes: dict | str | None = None, **options) -> dict:
        """Images by input name in their natural layout -> outputs by name in the same layout
        (``axes``: one string for all, or a dict by input name)."""
        if not isinstance(images, dict):
            raise InputError(f"{self.spec.ref} takes several inputs ({', '.join(t.name for t in self.spec.inputs)}): "
                             "give a dict of images by input name")
        xs, natural = {}, None
        for inp in self.spec.inputs:
            if inp.name not in images:
                raise InputError(f"{self.spec.ref}: no image for input '{inp.name}' (it takes "
                                 f"{', '.join(t.name for t in self.spec.inputs)})")
            given = axes.get(inp.name) if isinstance(axes, dict) else axes
            xs[inp.name], layout_ = layout.tensor_for(images[inp.name], given, inp)
            natural = natural or layout_
        ys = self.predict_tensors(xs, **options)
        return {name: layout.from_tensor(y, natural) for name, y in ys.items()}

    def predict_file(self, source, target, axes: str | None = None, tile: Tile = None,
                     batch_size: int | None = None, blend: int | None = None, progress: Progress = None,
                     raw: bool = False, overwrite: bool = False, opened=None,
                     pixel_size: dict | None = None) -> tuple[int, ...]:
        """An image file into a TIFF, NPY or OME-Zarr, block by block (out of core); returns the
        output shape (see :func:`zoo.runtime.stream.predict_file`; ``opened``: the input already
        opened lazily, so that a prediction opens its input once)."""
        from .stream import predict_file

        return predict_file(self, source, target, axes=axes, tile=tile, batch_size=batch_size, blend=blend,
                            progress=progress, raw=raw, overwrite=overwrite, opened=opened, pixel_size=pixel_size)

    # ------------------------------------------------------------------ tiling
    def plan_tiles(self, spatial: Sequence[int], tile: Tile = None, batch_size: int | None = None,
                   blend: int | None = None, band_width: int | None = None) -> tuple[list[tiling.AxisPlan], int]:
        """How an image of this spatial shape is tiled: one plan per axis, and the batch size
        (``band_width``: predicted in column strips about this wide, see :func:`memory.choose`)."""
        inp = self.spec.inputs[0]
        n = len(inp.spatial_axes)
        resolve = getattr(self.runner, "resolve", None)     # runtime auto: measured before a large prediction
        if resolve is not None and resolve(int(np.prod(spatial))):
            self._bytes_per_pixel = None
        halo, step, minimum = inp.halo or [0] * n, inp.shape_step or [1] * n, inp.shape_min or [1] * n
        fixed = geometry.fixed_sizes(self.spec)
        if fixed is not None:      # tiles of exactly the network's size (the last padded by reflection)
            if tile is not None and list([tile] * n if isinstance(tile, int) else tile) != fixed:
                log.info("tile %s ignored: %s takes tiles of %s only", tile, self.spec.ref, fixed)
            tile = fixed
            if all(s <= f for s, f in zip(spatial, fixed)):   # one tile holds the image: run it whole, no seams
                halo, blend = [0] * n, 0
        if inp.batch is not None:
            batch_size = min(batch_size or inp.batch, inp.batch)
        if tile is None or batch_size is None:
            margins = [tiling.plan_axis(s, 1 << 30, h, st, m, blend).margin
                       for s, h, st, m in zip(spatial, halo, step, minimum)]
            choice = memory.choose(spatial, self.bytes_per_pixel(), margins, on_gpu=self.runner.on_gpu,
                                   out_channels=sum(out.n_channels or 1 for out in self.spec.outputs),
                                   band_width=band_width)
            log.info("tiles %s, batch %d (%s)", "x".join(map(str, choice.tile)), choice.batch_size, choice.reason)
            tile = choice.tile if tile is None else tile
            batch_size = choice.batch_size if batch_size is None else batch_size
        tiles = [tile] * n if isinstance(tile, int) else list(tile)
        if len(tiles) != n or not all(isinstance(t, (int, np.integer)) and t > 0 for t in tiles):
            raise InputError(f"tile must be a positive size or {n} of them (one per spatial axis "
                             f"'{inp.spatial_axes}'), got {tile}")
        # one batch at a time (CPU): every tile but the last of each axis at the largest size, so
        # the network's memory is the same for any image larger than one tile (tiling.plan_axis)
        ragged = batch_size == 1 and fixed is None
        return tiling.plan(spatial, tiles, halo, step, minimum, blend, ragged=ragged), batch_size

    def bytes_per_pixel(self) -> float:
        """The network's estimated activation memory per input pixel (measured once)."""
        if self._bytes_per_pixel is None:
            inp = self.spec.inputs[0]
            n = len(inp.spatial_axes)
            side = 64 if n == 2 else 32
            probe = [m if st == 0 else max(m, -(-side // st) * st)      # step 0: the one size it takes
                     for m, st in zip(inp.shape_min or [1] * n, inp.shape_step or [1] * n)]
            try:
                self._bytes_per_pixel = self.runner.bytes_per_pixel((1, inp.n_channels, *probe))
            except Exception as e:   # noqa: BLE001 - an estimate must never stop a prediction
                log.info("cannot estimate the network's memory (%s): assuming %d bytes/pixel", e,
                         memory.FALLBACK_BYTES_PER_PIXEL)
                self._bytes_per_pixel = float(memory.FALLBACK_BYTES_PER_PIXEL)
        return self._bytes_per_pixel
