"""Out-of-core prediction: file in, file out, band by band, in memory set by the band.

The input is memory-mapped (uncompressed TIFF, NPY); per-image statistics for normalisation
are measured once on a sample of rows; the image is then predicted in bands along its first
spatial axis (each with the halo of real context around it), and every band is written into a
memory-mapped output TIFF, flushed and released before the next. Bands start on multiples of
the tile core, so the result equals the in-memory prediction.
"""
from __future__ import annotations

import logging
import mmap
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import layout, ops, tiling

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


def _row_sample(image: np.ndarray, axis0_len: int) -> np.ndarray:
    stride = max(1, int(np.ceil(image.size / _SAMPLE_PIXELS)))
    return np.asarray(image[::stride] if stride < axis0_len else image[:1])


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
    core, h, n_bands = tiling.plan_axis(image.shape[0], tiles[0], halo[0], step[0], minimum[0])

    # per-image statistics, once, from a sample of rows
    context: ops.Context = {}
    sample = _row_sample(image, image.shape[0]).astype(np.float32)[None, None]
    ops.apply(inp.preprocessing, sample, context, inp.name, ops.PREPROCESSING)
    frozen = ops.freeze(context)

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    result = None
    for band in range(n_bands):
        start, stop = band * core, min((band + 1) * core, image.shape[0])
        lo, hi = max(0, start - h), min(image.shape[0], stop + h)
        x = np.asarray(image[lo:hi], dtype=np.float32)[None, None]
        band_context = dict(frozen)
        x = ops.apply(inp.preprocessing, x, band_context, inp.name, ops.PREPROCESSING)
        y = tiling.predict_tiled(model.runner, x, tile=tiles, halo=halo, step=step, minimum=minimum,
                                 batch_size=batch_size)
        y = ops.apply(out.postprocessing, y, band_context, out.name, ops.POSTPROCESSING)
        y = y[0, :, start - lo: start - lo + (stop - start)]
        if result is None:
            shape = image.shape if y.shape[0] == 1 else (y.shape[0],) + image.shape
            result = tifffile.memmap(str(target), shape=shape, dtype=y.dtype)
        if y.shape[0] == 1:
            result[start:stop] = y[0]
        else:
            result[:, start:stop] = y
        result.flush()
        _release(result)
        _release(image)
        if progress:
            progress(band + 1, n_bands)
    shape = tuple(result.shape)
    del result
    return shape
