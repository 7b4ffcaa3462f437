"""Out-of-core prediction: file in, file out, in memory set by one band of tiles.

The input is opened lazily (memory-mapped TIFF or NPY, OME-Zarr chunks); per-image statistics
for normalisation are measured once per image on a sample of rows and then frozen, so every
tile is normalised the same way; tiles are read as they are needed and blended into bands that
are post-processed and written into the output (memory-mapped TIFF or NPY, or OME-Zarr) as soon
as they are final. The output is written under a temporary name and renamed when complete: an
interrupted prediction never leaves a half-written file under the name asked for.
"""
from __future__ import annotations

import logging
import mmap
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, storage
from ..imageio import TIFF, ZARR, check_output, open_lazy, partial_path, remove_partial, replace_output
from . import ops, tiling
from .layout import Layout, check_finite, for_input

log = logging.getLogger("zoo.runtime")

_SAMPLE_PIXELS = 1 << 22
_WRITE_COLUMNS = 1024     # bands are post-processed and written this many columns at a time
STREAM_SUFFIXES = TIFF + (ZARR, ".npy")
MAX_OBJECT_SIZE = 128      # pixels: the overlap between the bands labelled one at a time
_LABEL_BAND_BYTES = 256 << 20   # network outputs read per band when labelling


def _advise(array, advice: int) -> None:
    mm = getattr(array, "_mmap", None) if isinstance(array, np.memmap) else None
    if isinstance(mm, mmap.mmap) and hasattr(mm, "madvise"):
        mm.madvise(advice)


def _release(array) -> None:
    """Flush a memory map and drop its resident pages (they are on disk)."""
    if isinstance(array, np.memmap) and array.mode != "r":
        array.flush()
    _advise(array, getattr(mmap, "MADV_DONTNEED", 4))


def _frozen_statistics(model, layout: Layout, image, b: int) -> ops.Context:
    """Pre-processing statistics of image ``b``, from about _SAMPLE_PIXELS values of its rows."""
    inp = model.spec.inputs[0]
    rows = layout.spatial_shape[0]
    per_row = max(1, int(np.prod(layout.spatial_shape[1:])) * layout.n_channels)
    stride = max(1, -(-rows * per_row // _SAMPLE_PIXELS))
    rest = tuple(slice(0, s) for s in layout.spatial_shape[1:])
    # sparse rows: without MADV_RANDOM the kernel's read-around maps most of the file
    _advise(image, getattr(mmap, "MADV_RANDOM", 1))
    pieces = []
    for start in range(0, rows, 16 * stride):   # copied a few rows at a time, pages released
        pieces.append(np.array(layout.read(image, b, (slice(start, min(rows, start + 16 * stride), stride),) + rest),
                               dtype=np.float32))
        _release(image)
    _advise(image, getattr(mmap, "MADV_NORMAL", 0))
    sample = _finite(np.concatenate(pieces, axis=1)[np.newaxis], b, "in the rows sampled for normalisation")
    context: ops.Context = {}
    ops.apply(inp.preprocessing, sample, context, inp.name, ops.PREPROCESSING)
    return ops.freeze(context)


def _finite(piece: np.ndarray, b: int, where: str) -> np.ndarray:
    """``piece`` of image ``b``, refused when it holds NaN or infinities (checked as read, so the
    whole image is never held)."""
    try:
        check_finite(piece)
    except InputError as e:
        raise InputError(f"image {b}, {where}: {e}") from None
    return piece


class _Sink:
    """The output file, created at the first band (when channels and dtype are known) under a
    temporary name; ``commit`` replaces an existing ``target`` only as :func:`check_output` allows."""

    def __init__(self, target: Path, layout: Layout, overwrite: bool = False, source: Path | None = None):
        self.target, self.layout, self.overwrite, self.source = target, layout, overwrite, source
        self.partial = partial_path(target)
        self.array = None
        self.out_layout: Layout | None = None

    def write(self, region: tiling.Region, values: np.ndarray, first: int = 0) -> None:
        """``values`` (``b, c, *region``) as images ``first``, ``first + 1``, ..."""
        if self.array is None:
            self.out_layout = self.layout.output(values.shape[1])
            self.array = self._create(self.out_layout, values.dtype)
        self.out_layout.write(self.array, region, values, first)

    def release(self) -> None:
        """Flush what was written and drop it from memory (once per band, not per write)."""
        if self.array is not None:
            _release(self.array)

    def _create(self, layout: Layout, dtype):
        suffix = self.target.suffix.lower()
        if suffix in TIFF:
            import tifffile

            return tifffile.memmap(str(self.partial), shape=layout.shape, dtype=dtype,
                                   metadata={"axes": layout.axes.upper()}, photometric="minisblack")
        if suffix == ".npy":
            return np.lib.format.open_memmap(str(self.partial), mode="w+", dtype=dtype, shape=layout.shape)
        from ..omezarr import create_omezarr

        return create_omezarr(self.partial, layout.shape, dtype, layout.axes.replace("b", "t"))

    def commit(self) -> tuple[int, ...]:
        shape = tuple(self.array.shape)
        _release(self.array)
        self.array = None
        replace_output(self.partial, self.target, self.overwrite, self.source)
        return shape

    def discard(self) -> None:
        self.array = None
        remove_partial(self.partial)


def _open_input(model, source: Path, axes: str | None):
    inp = model.spec.inputs[0]
    image, stated = open_lazy(source)      # refuses non-numeric dtypes and sizes its file does not hold
    if image.size == 0:
        raise InputError(f"{source} holds no image data (shape {image.shape})")
    layout, repeat = for_input(image.shape, axes or stated, inp.spatial_axes, inp.n_channels, inp.grey == "repeat")
    return image, layout, repeat


def predict_file(model, source: str | Path, target: str | Path, axes: str | None = None, tile=None,
                 batch_size: int | None = None, blend: int | None = None, progress=None,
                 raw: bool = False, max_object_size: int = MAX_OBJECT_SIZE,
                 overwrite: bool = False) -> tuple[int, ...]:
    """Predict an image file into a TIFF, NPY or OME-Zarr without holding either in memory.

    ``axes`` (e.g. ``tzyx``) is needed only when the file does not state them and they cannot be
    guessed. Returns the output's shape (its axes are those of the input, with ``c`` for several
    output channels). Instance-segmentation models write labels (see :func:`_predict_instances`;
    objects are assumed smaller than ``max_object_size`` pixels) unless ``raw``. An existing
    ``target`` is replaced only with ``overwrite`` (see :func:`zoo.imageio.check_output`)."""
    source, target = Path(source), Path(target)
    if target.suffix.lower() not in STREAM_SUFFIXES:
        raise InputError(f"cannot stream into '{target.suffix}': expected one of {', '.join(STREAM_SUFFIXES)}")
    check_output(target, overwrite, source)        # before any work; again when the output is complete
    if ops.makes_instances(model.spec) and not raw:
        return _predict_instances(model, source, target, axes, tile, batch_size, blend, progress, max_object_size,
                                  overwrite)
    inp, out = model.spec.inputs[0], model.spec.outputs[0]
    image, layout, repeat = _open_input(model, source, axes)
    plans, batch_size = model.plan_tiles(layout.spatial_shape, tile, batch_size, blend)
    frozen = [_frozen_statistics(model, layout, image, b) for b in range(layout.n_images)]
    pixel_ops = ops.output_ops(model.spec, raw=True)

    def read(b: int, region: tiling.Region) -> np.ndarray:
        where = ", ".join(f"{a} {s.start}:{s.stop}" for a, s in zip(layout.spatial, region))
        piece = _finite(layout.read(image, b, region), b, where)
        return np.repeat(piece, repeat, axis=0) if repeat > 1 else piece

    def prepare(tiles: np.ndarray, images: list[int]) -> np.ndarray:
        return np.concatenate([ops.apply(inp.preprocessing, tiles[k:k + 1], dict(frozen[b]), inp.name,
                                         ops.PREPROCESSING) for k, b in enumerate(images)])

    def write(region: tiling.Region, band: np.ndarray) -> None:
        width = region[-1].stop
        for start in range(0, width, _WRITE_COLUMNS):    # temporaries of a few columns, not a band
            columns = slice(start, min(start + _WRITE_COLUMNS, width))
            part = band[..., columns]
            done = [ops.apply(pixel_ops, part[b:b + 1], {**frozen[b], "scale": dict(frozen[b]["frozen"])},
                              out.name, ops.POSTPROCESSING) for b in range(part.shape[0])]
            sink.write(region[:-1] + (columns,), np.concatenate(done))
        sink.release()
        _release(image)

    sink = _Sink(target, layout, overwrite, source)
    try:
        with storage(f"write {target}"):
            target.parent.mkdir(parents=True, exist_ok=True)
            tiling.run_tiles(model.runner, read, write, (layout.n_images, inp.n_channels) + layout.spatial_shape,
                             plans, batch_size=batch_size, prepare=prepare, progress=progress)
            return sink.commit()
    except BaseException:
        sink.discard()
        raise


def _predict_instances(model, source: Path, target: Path, axes, tile, batch_size, blend, progress,
                       max_object_size: int, overwrite: bool) -> tuple[int, ...]:
    """Instance labels of a file too large for memory, in two passes: the network's outputs are
    streamed into a temporary NPY beside the target (tiled and blended as for any model), then
    labelled band by band (:func:`label_bands`)."""
    instance_ops = [op for op in model.spec.outputs[0].postprocessing if ops.is_instance_op(op.op)]
    raw_path = target.with_name(f".{target.name}.raw-{os.getpid()}.npy")
    _, layout, _ = _open_input(model, source, axes)
    sink = _Sink(target, layout, overwrite, source)
    try:
        predict_file(model, source, raw_path, axes, tile, batch_size, blend, progress, raw=True)
        with storage(f"write {target}"):
            outputs = np.load(raw_path, mmap_mode="r")
            label_bands(outputs, layout.output(model.spec.outputs[0].n_channels), instance_ops, sink,
                        max_object_size)
            del outputs
            return sink.commit()
    except BaseException:
        sink.discard()
        raise
    finally:
        raw_path.unlink(missing_ok=True)


def label_bands(outputs, layout: Layout, instance_ops, sink: "_Sink", max_object_size: int = MAX_OBJECT_SIZE,
                band_bytes: int | None = None) -> None:
    """Label network ``outputs`` (an array in ``layout``) into ``sink``, band by band along the
    first spatial axis.

    Each band is read with ``max_object_size`` pixels of overlap on both sides and keeps the
    objects whose first row lies in it, whole and with their own context, numbered after those
    of the bands before: an object on a band seam is found once, as in a whole-image labelling.
    """
    from scipy import ndimage as ndi

    band_bytes = _LABEL_BAND_BYTES if band_bytes is None else band_bytes
    rows, rest = layout.spatial_shape[0], layout.spatial_shape[1:]
    overlap = min(max_object_size, rows)
    per_row = layout.n_channels * int(np.prod(rest)) * 4
    band = max(overlap, band_bytes // per_row - 2 * overlap)
    for b in range(layout.n_images):            # each image (frame, slice) labelled on its own, from 1
        next_id = 0
        for r0 in range(0, rows, band):
            r1 = min(rows, r0 + band)
            lo, hi = max(0, r0 - overlap), min(rows, r1 + overlap)
            region = (slice(lo, hi),) + tuple(slice(0, s) for s in rest)
            labels = ops.apply(instance_ops, layout.read(outputs, b, region)[np.newaxis], {}, "labels",
                               ops.POSTPROCESSING)[0, 0]
            boxes = ndi.find_objects(labels)
            ids = [i + 1 for i, box in enumerate(boxes) if box is not None and r0 <= lo + box[0].start < r1]
            table = np.zeros(len(boxes) + 1, np.int32)
            table[ids] = np.arange(next_id + 1, next_id + len(ids) + 1)
            next_id += len(ids)
            kept = table[labels]
            if sink.array is not None:
                current = sink.out_layout.read(sink.array, b, region)[0]
                kept = np.where(current > 0, current, kept)
            sink.write(region, kept[np.newaxis, np.newaxis], first=b)
            sink.release()
        _release(outputs)
