"""One image on Dask, the client's side: plan once, measure once, submit chunks, commit.

The client opens the input lazily, plans the tiles (:meth:`zoo.runtime.predictor.Predictor.plan_tiles`)
and measures the normalisation statistics of each image once, exactly as the single-process
stream does; workers then predict the chunks of :mod:`.chunks` (and :mod:`.instances` for
labels). No pixel of the output passes through the client.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from .. import opnames
from ..errors import InputError
from ..runtime import ops
from . import chunks

log = logging.getLogger("zoo.distributed")

DEFAULT_CHUNK = {2: 2048, 3: 256}      # a chunk's side (pixels, whole tiles) by spatial dimensions
CHUNKS_PER_SLOT = 4                    # at least this many chunks per worker thread where the image allows
MAX_OBJECT_SIZE = 128                  # instance models: overlap between chunks, as the stream's bands


def partial_path(target: Path) -> Path:
    """Where a chunked output is written until complete: one fixed name, so that a re-run resumes."""
    return target.with_name(f".{target.name}.partial-dask")


def default_chunk(plans, slots: int = 1) -> list[int]:
    """A chunk's side per axis: about :data:`DEFAULT_CHUNK` pixels (so a worker's memory does not
    grow with the image), fewer tiles a side where the image would otherwise give fewer than
    :data:`CHUNKS_PER_SLOT` chunks per worker thread (``slots``). No tile runs twice whatever the
    size (:func:`zoo.distributed.chunks.run_owned`), so small chunks cost only their tasks."""
    pixels = DEFAULT_CHUNK.get(len(plans), 256)
    tiles = [max(1, min(round(pixels / p.core), p.n)) for p in plans]
    while math.prod(-(-p.n // t) for p, t in zip(plans, tiles)) < CHUNKS_PER_SLOT * slots and max(tiles) > 1:
        widest = max(range(len(tiles)), key=lambda a: tiles[a])
        tiles[widest] -= 1
    return [t * p.core for p, t in zip(plans, tiles)]


def slots_of(client) -> int:
    """Worker threads of ``client``'s cluster (1 when it cannot tell)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:          # noqa: BLE001 - a scheduler that answers differently: one slot
        return 1


def _output_kind(model, frozen: dict, n_spatial: int) -> tuple[int, np.dtype]:
    """(channels, dtype) of the post-processed output: the pixel ops run on a small probe."""
    out = model.spec.outputs[0]
    probe = np.zeros((1, out.n_channels) + (4,) * n_spatial, np.float32)
    y = ops.apply(opnames.output_ops(model.spec, raw=True), probe, {**frozen, "scale": dict(frozen["frozen"])},
                  out.name, ops.POSTPROCESSING)
    return y.shape[1], y.dtype


def predict_image(client, model, name: str, source: str | Path, target: str | Path, *, axes: str | None = None,
                  tile=None, batch_size: int | None = None, blend: int | None = None, raw: bool = False,
                  overwrite: bool = False, chunk: int | None = None, max_object_size: int = MAX_OBJECT_SIZE,
                  progress: Callable[[int, int], None] | None = None) -> tuple[int, ...]:
    """Predict ``source`` into the OME-Zarr ``target`` on the workers of ``client`` (the plugin
    ``name`` holds ``model`` there); returns the output's shape. ``chunk``: pixels a side of a
    chunk (default: :func:`default_chunk`); instance models label per chunk and reconcile the
    seams (objects up to ``max_object_size`` pixels)."""
    from ..imageio import check_output, open_lazy, replace_output
    from ..runtime.layout import layout_for
    from ..runtime.stream import _frozen_statistics

    source, target = Path(source), Path(target)
    if target.suffix.lower() != ".zarr":
        raise InputError(f"with --cluster one image is cut into chunks that the workers write into an OME-Zarr: "
                         f"give -o {target.with_suffix('.zarr').name} (not {target.name})")
    check_output(target, overwrite, source)
    predictor = model.predictor
    if predictor.several or predictor.task.per_image or not predictor.streams or predictor.zoom() is not None:
        raise InputError(f"{model.spec.ref} cannot be predicted in chunks (several tensors, a classifier, or an "
                         "output on another grid): predict it without --cluster")
    image, stated = open_lazy(source)
    if image.size == 0:
        raise InputError(f"{source} holds no image data (shape {image.shape})")
    layout, repeat = layout_for(image.shape, axes or stated, model.spec.inputs[0])
    plans, batch_size = predictor.plan_tiles(layout.spatial_shape, tile, batch_size, blend)
    frozen = [_frozen_statistics(model, layout, image, b) for b in range(layout.n_images)]
    grid = chunks.Grid.of(plans, chunk or default_chunk(plans, slots_of(client)))
    instances = opnames.makes_instances(model.spec) and not raw
    channels, dtype = (1, np.dtype(np.int32)) if instances else _output_kind(model, frozen[0], len(plans))
    out_layout = layout.output(channels)
    zarr_chunks = tuple(grid.blocks[layout.spatial.index(a)] if a in layout.spatial else 1 for a in out_layout.axes)
    partial = partial_path(target)
    stamp = chunks.fingerprint(source, model, layout, plans, raw, grid)
    if instances:        # the seams' matching is not kept between runs: labels are made anew
        stamp += f"-labels-{os.getpid()}"
    done = chunks.open_partial(partial, out_layout.shape, dtype, out_layout.axes.replace("b", "t"), zarr_chunks,
                               stamp)
    jobs = [chunks.Job(name, str(source), layout, repeat, tuple(plans), batch_size, frozen[b], str(partial),
                       out_layout, b, index, grid.region(index))
            for b in range(layout.n_images) for index in grid.indices()]
    log.info("%s: %d chunk(s) of %s, %d finished before", source, len(jobs),
             "x".join(str(len(b) - 1) for b in grid.bounds), len(done))
    try:
        if instances:
            from .instances import label

            label(client, jobs, grid, min(max_object_size, *layout.spatial_shape), progress)
        else:
            chunks.run_owned(client, jobs, done, progress)
    except Exception:            # an error: nothing kept (an interrupted client keeps its chunks to resume)
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(partial / chunks.DONE, ignore_errors=True)
    shutil.rmtree(partial / chunks.PIECES, ignore_errors=True)
    replace_output(partial, target, overwrite, source)
    return out_layout.shape
