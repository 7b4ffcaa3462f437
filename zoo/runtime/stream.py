"""Out-of-core prediction: file in, file out, band by band, in memory set by the band.

The input is memory-mapped (uncompressed TIFF, NPY); per-image statistics for normalisation
are measured once on a sample of rows; the image is then predicted block by block (one tile
core high, ``batch_size`` cores wide, each read with the halo of real context around it), and
every block is written into a memory-mapped output TIFF, flushed and released row by row.
Blocks start on multiples of the tile core, so the result equals the in-memory prediction,
and memory is set by the block, not by the image's width or height.
"""
from __future__ import annotations

import itertools
import logging
import mmap
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import ops, tiling

log = logging.getLogger("zoo.runtime")

_SAMPLE_PIXELS = 1 << 22


def open_lazy(path: str | Path) -> np.ndarray:
    """A read-only view of an image that loads pages on demand when the format allows it."""
    import tifffile

    from ..imageio import read_image

    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_file():
        try:
            if suffix == ".npy":
                return np.load(path, mmap_mode="r", allow_pickle=False)
            if suffix in (".tif", ".tiff"):
                image = tifffile.memmap(str(path), mode="r")
                if image.size:
                    return image
        except (ValueError, OSError, IndexError):   # compressed, tiled or damaged: read_image decides
            log.info("%s cannot be memory-mapped: reading it whole", path)
    return read_image(path)   # clear errors for missing, corrupt and unsupported files


def _release(array) -> None:
    """Drop a memory map's resident pages (written pages must be flushed first)."""
    mm = getattr(array, "_mmap", None)
    if isinstance(mm, mmap.mmap) and hasattr(mm, "madvise"):
        mm.madvise(mmap.MADV_DONTNEED)


def _row_sample(image: np.ndarray) -> np.ndarray:
    """Every k-th row (first axis), about _SAMPLE_PIXELS values: statistics without reading it all."""
    stride = max(1, int(np.ceil(image.size / _SAMPLE_PIXELS)))
    return np.asarray(image[::stride] if stride < image.shape[0] else image[:1])


def predict_file(model, source: str | Path, target: str | Path, tile=None, batch_size: int = 4,
                 progress=None) -> tuple[int, ...]:
    """Predict a single-channel image file into a float32 TIFF without holding either in memory."""
    import tifffile

    inp, out = model.spec.inputs[0], model.spec.outputs[0]
    spatial = inp.spatial_axes
    image = open_lazy(source)
    if inp.n_channels != 1 or image.ndim != len(spatial):
        raise InputError(f"streaming needs a single {spatial} image for a one-channel model; got shape "
                         f"{image.shape}. Use in-memory prediction for this file.")
    n = len(spatial)
    tiles = [tile or model.default_tile(n)] * n if not isinstance(tile, (list, tuple)) else list(tile)
    halo, step = inp.halo or [0] * n, inp.shape_step or [1] * n
    minimum = inp.shape_min or [1] * n
    plans = [tiling.plan_axis(s, t, hh, st, m) for s, t, hh, st, m in zip(image.shape, tiles, halo, step, minimum)]
    # a block spans one tile core on every axis but the last, where it spans batch_size cores
    spans = [c for c, _, _ in plans[:-1]] + [plans[-1][0] * max(1, batch_size)]
    grids = [range(-(-s // span)) for s, span in zip(image.shape, spans)]

    # per-image statistics, once, from a sample of rows
    context: ops.Context = {}
    sample = _row_sample(image).astype(np.float32)[None, None]
    ops.apply(inp.preprocessing, sample, context, inp.name, ops.PREPROCESSING)
    frozen = ops.freeze(context)

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    result = None
    blocks = list(itertools.product(*grids))
    for done, index in enumerate(blocks, start=1):
        core_slices, read, crop = [], [], []
        for i, size, span, (_, h, _) in zip(index, image.shape, spans, plans):
            start, stop = i * span, min((i + 1) * span, size)
            lo, hi = max(0, start - h), min(size, stop + h)     # real context around the block
            core_slices.append(slice(start, stop))
            read.append(slice(lo, hi))
            crop.append(slice(start - lo, start - lo + stop - start))
        x = np.asarray(image[tuple(read)], dtype=np.float32)[None, None]
        block_context = dict(frozen)
        x = ops.apply(inp.preprocessing, x, block_context, inp.name, ops.PREPROCESSING)
        y = tiling.predict_tiled(model.runner, x, tile=tiles, halo=halo, step=step, minimum=minimum,
                                 batch_size=batch_size)
        y = ops.apply(out.postprocessing, y, block_context, out.name, ops.POSTPROCESSING)
        y = y[(0, slice(None)) + tuple(crop)]
        if result is None:
            shape = image.shape if y.shape[0] == 1 else (y.shape[0],) + image.shape
            result = tifffile.memmap(str(target), shape=shape, dtype=y.dtype)
        if y.shape[0] == 1:
            result[tuple(core_slices)] = y[0]
        else:
            result[(slice(None),) + tuple(core_slices)] = y
        if done % len(grids[-1]) == 0 or done == len(blocks):   # after each row of blocks
            result.flush()
            _release(result)
            _release(image)
        if progress:
            progress(done, len(blocks))
    shape = tuple(result.shape)
    del result
    return shape
