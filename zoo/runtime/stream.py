"""Out-of-core prediction: file in, file out, in memory set by one band of tiles.

The input is opened lazily (memory-mapped TIFF or NPY, OME-Zarr chunks); per-image statistics
for normalisation are measured once per image on a sample of rows and then frozen, so every
tile is normalised the same way; tiles are read as they are needed and blended into bands that
are post-processed and written into the output (memory-mapped TIFF or NPY, or OME-Zarr) as soon
as they are final. Where a row of the network's outputs across the image is large (many channels
on a wide image), the image goes in column strips of whole tiles, each run over its own columns
and the context it needs, so memory stops growing with the width too. The output is written
under a temporary name and renamed when complete: an interrupted prediction never leaves a
half-written file under the name asked for.
"""
from __future__ import annotations

import logging
import mmap
from pathlib import Path

import numpy as np

from .. import opnames
from ..errors import InputError, storage
from ..imageio import TIFF, ZARR, check_output, open_lazy, partial_path, remove_partial, replace_output
from . import memory, ops, tiling
from .layout import Layout, check_finite, layout_for

log = logging.getLogger("zoo.runtime")

_SAMPLE_PIXELS = 1 << 22
_SAMPLE_MIN_ROWS = 64      # rows (a volume's planes) the normalisation sample spans at least
_WRITE_COLUMNS = 1024     # bands are post-processed and written this many columns at a time
STREAM_SUFFIXES = TIFF + (ZARR, ".npy")
MAX_OBJECT_SIZE = 128      # pixels: the overlap between the bands labelled one at a time
_LABEL_BAND_BYTES = 192 << 20
"""Network outputs the labeller holds (a window of rows and the band arriving next). Labelling
itself works with ~45 B per pixel of its window besides (3.5x the outputs' bytes for 3 channels),
so this sets most of the instance path's memory: 192 MiB holds a 4096^2 3-channel output whole,
and larger images label in about its memory (unet-dsb-2d, 4096x16384 in strips, one thread:
1525 MB peak at 256 MiB, 1324 MB at 192 MiB, 1308 MB for 4096^2; no slower: 263 against 272 s)."""
_STRIP_ROW_BYTES = 640 << 10    # a row of network outputs (float32, every channel) of a column strip
MIN_STRIP_TILES = 4             # a strip is at least this many tiles wide (its context tiles run twice)
LABEL_STRIP_WIDTH = 8192
"""Columns of an instance-labelling strip at most, whatever the channels. Besides the outputs it
holds, labelling works with ~45 B per pixel of its window (seeds, components, nearest-seed
indices: 510 MB for an 11.7 Mpx window of unet-dsb-2d, 494 MB of cellpose-dsb-2d), and the window
and the band both spanned the width: 3-channel outputs 16384 px wide peaked 1.2-1.3x their
4096^2 peak (measured 2026-12-07, 2048x16384 image: unet 1385 MB whole width, 1179 MB in
8192 px strips, 1196 MB for 4096^2; no slower: 46.9 against 41.9 s, as the tiles grow back)."""


def _advise(array, advice: int) -> None:
    mm = getattr(array, "_mmap", None) if isinstance(array, np.memmap) else None
    if isinstance(mm, mmap.mmap) and hasattr(mm, "madvise"):
        mm.madvise(advice)


def _release(array) -> None:
    """Flush a memory map and drop its resident pages (they are on disk)."""
    if isinstance(array, np.memmap) and array.mode != "r":
        array.flush()
    _advise(array, getattr(mmap, "MADV_DONTNEED", 4))


def _sample_strides(spatial, channels: int) -> list[int]:
    """Strides along each spatial axis of the normalisation sample (about :data:`_SAMPLE_PIXELS`
    values): every k-th row, whole, while that spans at least :data:`_SAMPLE_MIN_ROWS` rows (or
    all of them); else that many rows (a volume's planes, a slide ~65000 px wide), each strided
    along the other axes too. Whole rows alone sampled a volume of 2048^2 planes from its first."""
    rows, rest = spatial[0], list(spatial[1:])
    per_row = max(1, int(np.prod(rest)) * channels)
    stride = max(1, -(-rows * per_row // _SAMPLE_PIXELS))
    if -(-rows // stride) >= min(rows, _SAMPLE_MIN_ROWS) or not rest:
        return [stride] + [1] * len(rest)
    stride = -(-rows // min(rows, _SAMPLE_MIN_ROWS))
    inner = -(-rows // stride) * per_row / _SAMPLE_PIXELS
    step = int(np.ceil(inner ** (1 / len(rest))))
    return [stride] + [min(step, size) for size in rest]


def _frozen_statistics(model, layout: Layout, image, b: int) -> ops.Context:
    """Pre-processing statistics of image ``b``, from about _SAMPLE_PIXELS values spread over it
    (see :func:`_sample_strides`)."""
    inp = model.spec.inputs[0]
    rows = layout.spatial_shape[0]
    stride, *steps = _sample_strides(layout.spatial_shape, layout.n_channels)
    rest = tuple(slice(0, s, step) for s, step in zip(layout.spatial_shape[1:], steps))
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


def strip_width(spatial, channels: int, widest: int | None = None) -> int | None:
    """Columns (last spatial axis) of a strip whose row of ``channels`` float32 network outputs
    fits :data:`_STRIP_ROW_BYTES` (~5000 px of StarDist's 33 channels, ~55000 px of 3) and that is
    at most ``widest`` columns (instance labelling: :data:`LABEL_STRIP_WIDTH`), or None when the
    whole width fits: the stitching band and the labelling window then stop growing with the
    image's width (they held ~1.1 GB and ~0.8 GB of StarDist outputs 16384 px wide).
    2D only: a 3D "row" is a whole plane, and strips of it would be a tile or two wide."""
    if len(spatial) != 2:
        return None
    width = max(1, _STRIP_ROW_BYTES // (4 * max(channels, 1) * int(np.prod(spatial[1:-1]))))
    if widest is not None:
        width = min(width, widest)
    return None if width >= spatial[-1] else width


def strips(plan: tiling.AxisPlan, width: int | None, overlap: int = 0) -> list[tuple[int, int]]:
    """The columns each strip owns (``lo, hi``, on the tile grid) when the strips are about
    ``width`` wide with ``overlap`` columns of context on both sides; one strip when ``width`` is
    None or the image is at most one strip wide."""
    if width is None:
        return [(0, plan.size)]
    per_strip = max(MIN_STRIP_TILES, (width - 2 * overlap) // plan.core)    # whole tiles: none runs thrice
    if per_strip >= plan.n:
        return [(0, plan.size)]
    bounds = list(range(0, plan.size, per_strip * plan.core)) + [plan.size]
    return list(zip(bounds[:-1], bounds[1:]))


def _windows(plans, parts: list[tuple[int, int]], overlap: int = 0) -> list[tuple[int, int] | None]:
    """The columns each strip is predicted over: its own and ``overlap`` on both sides (None: one
    strip, the whole width)."""
    if len(parts) == 1:
        return [None]
    size = plans[-1].size
    return [(max(0, lo - overlap), min(size, hi + overlap)) for lo, hi in parts]


def _tiles_per_image(plans, window: tuple[int, int] | None) -> int:
    """Tiles one image runs for a strip predicted over ``window`` (None: the whole width)."""
    last = plans[-1].n if window is None else len(tiling.tiles_for(plans[-1], *window))
    return int(np.prod([p.n for p in plans[:-1]])) * last


class _TileCount:
    """One progress over several tiling passes (column strips, groups of images): the callback of
    each pass reports the tiles of the passes before it plus its own, out of ``total``."""

    def __init__(self, total: int, progress):
        self.total, self.progress, self.done = total, progress, 0

    def part(self, count: int):
        """The callback of the next pass, which runs ``count`` tiles."""
        offset, self.done = self.done, self.done + count

        def report(done: int, _total: int) -> None:
            if self.progress:
                self.progress(offset + done, self.total)
        return report


def _reader(layout: Layout, image, repeat: int):
    """``read(b, region)``: a piece of image ``b``, refused when not finite, channels repeated
    ``repeat`` times (a grey image into a model of several input channels)."""
    def read(b: int, region: tiling.Region) -> np.ndarray:
        where = ", ".join(f"{a} {s.start}:{s.stop}" for a, s in zip(layout.spatial, region))
        piece = _finite(layout.read(image, b, region), b, where)
        return np.repeat(piece, repeat, axis=0) if repeat > 1 else piece
    return read


def _preparer(model, frozen: list, first: int = 0):
    """``prepare(tiles, images)``: tiles of images ``first + images`` pre-processed with each
    image's frozen statistics."""
    inp = model.spec.inputs[0]

    def prepare(tiles: np.ndarray, images: list[int]) -> np.ndarray:
        return np.concatenate([ops.apply(inp.preprocessing, tiles[k:k + 1], dict(frozen[first + b]), inp.name,
                                         ops.PREPROCESSING) for k, b in enumerate(images)])
    return prepare


def _postprocess(model, pixel_ops, frozen: list, part: np.ndarray, first: int = 0) -> np.ndarray:
    """Network outputs ``part`` (``b, c, ...``) of images ``first ..`` post-processed pixel by
    pixel, each with its image's frozen statistics (and the scale they froze)."""
    out = model.spec.outputs[0]
    return np.concatenate([ops.apply(pixel_ops, part[i:i + 1],
                                     {**frozen[first + i], "scale": dict(frozen[first + i]["frozen"])},
                                     out.name, ops.POSTPROCESSING) for i in range(part.shape[0])])


def _column_pieces(c0: int, c1: int):
    """Columns ``c0:c1`` as slices of at most :data:`_WRITE_COLUMNS`: bands are post-processed
    and written a few columns at a time, so their temporaries and dirty pages are not a band's."""
    for start in range(c0, c1, _WRITE_COLUMNS):
        yield slice(start, min(start + _WRITE_COLUMNS, c1))


class _Sink:
    """The output file, created at the first band (when channels and dtype are known) under a
    temporary name; ``commit`` replaces an existing ``target`` only as :func:`check_output` allows."""

    def __init__(self, target: Path, layout: Layout, overwrite: bool = False, source: Path | None = None,
                 pixel_size: dict | None = None):
        self.target, self.layout, self.overwrite, self.source = target, layout, overwrite, source
        self.pixel_size = pixel_size         # µm by axis, declared in the output (TIFF, OME-Zarr)
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

            from ..metadata import tiff_options

            return tifffile.memmap(str(self.partial), shape=layout.shape, dtype=dtype,
                                   **tiff_options(layout.axes, self.pixel_size), photometric="minisblack")
        if suffix == ".npy":
            return np.lib.format.open_memmap(str(self.partial), mode="w+", dtype=dtype, shape=layout.shape)
        from ..omezarr import create_omezarr

        return create_omezarr(self.partial, layout.shape, dtype, layout.axes.replace("b", "t"),
                              pixel_size=self.pixel_size)

    def commit(self) -> tuple[int, ...]:
        shape = tuple(self.array.shape)
        _release(self.array)
        self.array = None
        replace_output(self.partial, self.target, self.overwrite, self.source)
        return shape

    def discard(self) -> None:
        self.array = None
        remove_partial(self.partial)


def _open_input(model, source: Path, axes: str | None, opened=None):
    inp = model.spec.inputs[0]
    image, stated = opened or open_lazy(source)      # refuses non-numeric dtypes and sizes its file does not hold
    if image.size == 0:
        raise InputError(f"{source} holds no image data (shape {image.shape})")
    layout, repeat = layout_for(image.shape, axes or stated, inp)
    return image, layout, repeat


def predict_file(model, source: str | Path, target: str | Path, axes: str | None = None, tile=None,
                 batch_size: int | None = None, blend: int | None = None, progress=None,
                 raw: bool = False, max_object_size: int = MAX_OBJECT_SIZE,
                 overwrite: bool = False, opened=None, pixel_size: dict | None = None) -> tuple[int, ...]:
    """Predict an image file into a TIFF, NPY or OME-Zarr without holding either in memory.

    ``axes`` (e.g. ``tzyx``) is needed only when the file does not state them and they cannot be
    guessed. Returns the output's shape (its axes are those of the input, with ``c`` for several
    output channels). Instance-segmentation models write labels (see :func:`_predict_instances`;
    objects are assumed smaller than ``max_object_size`` pixels) unless ``raw``. An existing
    ``target`` is replaced only with ``overwrite`` (see :func:`zoo.imageio.check_output`).
    ``opened``: ``source`` already opened by :func:`zoo.imageio.open_lazy` (it is not opened again).
    ``pixel_size`` (µm by axis): the input's, declared in the output."""
    source, target = Path(source), Path(target)
    if target.suffix.lower() not in STREAM_SUFFIXES:
        raise InputError(f"cannot stream into '{target.suffix}': expected one of {', '.join(STREAM_SUFFIXES)}")
    check_output(target, overwrite, source)        # before any work; again when the output is complete
    if opnames.makes_instances(model.spec) and not raw:
        return _predict_instances(model, source, target, axes, tile, batch_size, blend, progress, max_object_size,
                                  overwrite, opened, pixel_size)
    inp, out = model.spec.inputs[0], model.spec.outputs[0]
    image, layout, repeat = _open_input(model, source, axes, opened)
    width = strip_width(layout.spatial_shape, out.n_channels)
    plans, batch_size = model.plan_tiles(layout.spatial_shape, tile, batch_size, blend, band_width=width)
    frozen = [_frozen_statistics(model, layout, image, b) for b in range(layout.n_images)]
    pixel_ops = opnames.output_ops(model.spec, raw=True)
    windows = _windows(plans, strips(plans[-1], width))
    counts = [layout.n_images * _tiles_per_image(plans, w) for w in windows]
    tiles_done = _TileCount(sum(counts), progress)
    read, prepare = _reader(layout, image, repeat), _preparer(model, frozen)

    def write(region: tiling.Region, band: np.ndarray) -> None:
        lo = region[-1].start
        for columns in _column_pieces(lo, region[-1].stop):
            part = band[..., columns.start - lo:columns.stop - lo]
            sink.write(region[:-1] + (columns,), _postprocess(model, pixel_ops, frozen, part))
            sink.release()     # dirty output pages of a few columns at a time, not a band's
        _release(image)

    shape = (layout.n_images, inp.n_channels) + layout.spatial_shape
    sink = _Sink(target, layout, overwrite, source, pixel_size)
    try:
        with storage(f"write {target}"):
            target.parent.mkdir(parents=True, exist_ok=True)
            for window, count in zip(windows, counts):
                tiling.run_tiles(model.network(), read, write, shape, plans, batch_size=batch_size,
                                 prepare=prepare, progress=tiles_done.part(count), columns=window)
            return sink.commit()
    except BaseException:
        sink.discard()
        raise


def _predict_instances(model, source: Path, target: Path, axes, tile, batch_size, blend, progress,
                       max_object_size: int, overwrite: bool, opened=None,
                       pixel_size: dict | None = None) -> tuple[int, ...]:
    """Instance labels of a file too large for memory, in one pass and with no temporary file:
    the network's outputs (tiled and blended as for any model, then post-processed pixel by
    pixel) are labelled as their bands arrive, from a window of rows held in memory
    (:class:`_BandLabeller`), exactly as :func:`label_bands` labels a whole array. Images
    (frames, slices) are tiled a few at a time, as many as fit in one labelling window, so the
    window never holds a whole stack. An image wider than :data:`LABEL_STRIP_WIDTH` (sooner for
    many-channel outputs, StarDist's 33) is labelled in column strips (:func:`strips`), each with
    ``max_object_size`` columns of context on both sides, keeping the objects that start in it,
    so neither the stitching band nor the labelling window grows with the width."""
    out = model.spec.outputs[0]
    instance_ops = [op for op in out.postprocessing if opnames.is_instance_op(op.op)]
    image, layout, repeat = _open_input(model, source, axes, opened)
    width = strip_width(layout.spatial_shape, out.n_channels, LABEL_STRIP_WIDTH)
    plans, batch_size = model.plan_tiles(layout.spatial_shape, tile, batch_size, blend, band_width=width)
    frozen = [_frozen_statistics(model, layout, image, b) for b in range(layout.n_images)]
    pixel_ops = opnames.output_ops(model.spec, raw=True)
    raw_layout = layout.output(out.n_channels)
    overlap = min(max_object_size, layout.spatial_shape[-1])
    parts = strips(plans[-1], width, overlap)
    windows = _windows(plans, parts, overlap)
    widest = max((hi - lo for lo, hi in (w for w in windows if w)), default=None)
    band_bytes = _LABEL_BAND_BYTES
    per_image = (_label_held_rows(raw_layout, max_object_size, band_bytes, widest)
                 * _label_row_bytes(raw_layout, widest))
    group = max(1, min(layout.n_images, band_bytes // max(per_image, 1)))
    per_strip = [_tiles_per_image(plans, w) for w in windows]
    tiles_done = _TileCount(layout.n_images * sum(per_strip), progress)
    read = _reader(layout, image, repeat)

    sink = _Sink(target, layout, overwrite, source, pixel_size)
    try:
        with storage(f"write {target}"):
            target.parent.mkdir(parents=True, exist_ok=True)
            for first in range(0, layout.n_images, group):
                count = min(group, layout.n_images - first)
                next_ids = [0] * count          # each image numbered from 1 across its strips
                for own, window, tiles in zip(parts, windows, per_strip):
                    labeller = _BandLabeller(raw_layout, first, count, instance_ops, sink, max_object_size,
                                             band_bytes, columns=window, own=own if window else None,
                                             next_ids=next_ids)
                    _label_strip(model, labeller, read, image, frozen, pixel_ops, plans, batch_size, layout,
                                 window, tiles_done.part(count * tiles))
                    next_ids = labeller.next_ids
            return sink.commit()
    except BaseException:
        sink.discard()
        raise


def _label_strip(model, labeller: "_BandLabeller", read, image, frozen, pixel_ops, plans, batch_size: int,
                 layout: Layout, window: tuple[int, int] | None, report) -> None:
    """Run the tiles of one strip (``window``: its columns with their context; None: the whole
    width) of images ``labeller.first ..`` and label them as their bands arrive; ``report``: the
    progress callback of this pass (see :class:`_TileCount`)."""
    inp = model.spec.inputs[0]
    first = labeller.first

    def write(region: tiling.Region, band: np.ndarray) -> None:
        # handed on a labelling band of rows at a time (the window then holds one band more than
        # it must), and a few columns at a time, as predict_file writes them
        lo, hi = region[0].start, region[0].stop
        c0, c1 = region[-1].start, region[-1].stop
        for r0 in range(lo, hi, labeller.band):
            rows = slice(r0, min(hi, r0 + labeller.band))
            for columns in _column_pieces(c0, c1):
                part = band[:, :, rows.start - lo:rows.stop - lo][..., columns.start - c0:columns.stop - c0]
                labeller.put((rows,) + region[1:-1] + (columns,), _postprocess(model, pixel_ops, frozen, part, first))
            labeller.advance(rows.stop)
        _release(image)

    tiling.run_tiles(model.network(), lambda b, region: read(first + b, region), write,
                     (labeller.count, inp.n_channels) + layout.spatial_shape, plans, batch_size=batch_size,
                     prepare=_preparer(model, frozen, first), progress=report, columns=window)
    labeller.finish()


def _label_row_bytes(layout: Layout, width: int | None = None) -> int:
    """Bytes of one row (along the first spatial axis) of one image of float32 network outputs
    (``width``: of a strip that many columns wide)."""
    rest = list(layout.spatial_shape[1:])
    if width is not None and rest:
        rest[-1] = width
    return layout.n_channels * int(np.prod(rest)) * 4


def _label_band_rows(layout: Layout, overlap: int, band_bytes: int, width: int | None = None) -> int:
    """Rows labelled per band (each read with ``overlap`` rows more on both sides), so that what a
    :class:`_BandLabeller` holds (a window: the band and its overlaps, and the next band arriving)
    fits ``band_bytes``. Counting the window alone let the rows held reach twice ``band_bytes``
    on a wide image (unet-dsb-2d at 16384 px: 485 MiB held and 22 Mpx labelled at once, against
    the whole 200 MiB image at 4096 px)."""
    return max(overlap, (band_bytes // _label_row_bytes(layout, width) - 2 * overlap) // 2)


def _label_window(layout: Layout, max_object_size: int, band_bytes: int, width: int | None = None) -> int:
    """Rows of one image held to label one band: the band and its overlap on both sides."""
    rows = layout.spatial_shape[0]
    overlap = min(max_object_size, rows)
    return min(rows, _label_band_rows(layout, overlap, band_bytes, width) + 2 * overlap)


def _label_held_rows(layout: Layout, max_object_size: int, band_bytes: int, width: int | None = None) -> int:
    """Rows of one image a :class:`_BandLabeller` holds: a window, and the band that arrives next."""
    rows = layout.spatial_shape[0]
    overlap = min(max_object_size, rows)
    return min(rows, _label_window(layout, max_object_size, band_bytes, width)
               + _label_band_rows(layout, overlap, band_bytes, width))


def _label_band(values: np.ndarray, b: int, r0: int, r1: int, lo: int, instance_ops, sink: "_Sink",
                next_id: int, c0: int = 0, own: tuple[int, int] | None = None) -> int:
    """Label image ``b``'s network outputs ``values`` (``c, rows lo.., *rest``, the last axis from
    column ``c0``) and write into ``sink`` the objects whose first row lies in ``r0:r1`` (and,
    given ``own``, whose first column lies in it), numbered from ``next_id + 1`` (pixels already
    labelled by an earlier band or strip keep their label). Returns the last number given."""
    from scipy import ndimage as ndi

    region = (slice(lo, lo + values.shape[1]),)
    if values.ndim > 2:     # the middle axes whole, the last from column c0
        region += tuple(slice(0, s) for s in values.shape[2:-1]) + (slice(c0, c0 + values.shape[-1]),)
    labels = ops.apply(instance_ops, values[np.newaxis], {}, "labels", ops.POSTPROCESSING)[0, 0]
    boxes = ndi.find_objects(labels)
    ids = [i + 1 for i, box in enumerate(boxes) if box is not None and r0 <= lo + box[0].start < r1
           and (own is None or own[0] <= c0 + box[-1].start < own[1])]
    table = np.zeros(len(boxes) + 1, np.int32)
    table[ids] = np.arange(next_id + 1, next_id + len(ids) + 1)
    kept = table[labels]
    if sink.array is not None:
        current = sink.out_layout.read(sink.array, b, region)[0]
        kept = np.where(current > 0, current, kept)
    sink.write(region, kept[np.newaxis, np.newaxis], first=b)
    sink.release()
    return next_id + len(ids)


class _BandLabeller:
    """Labels images ``first .. first + count - 1`` while their network outputs stream in, in
    order along the first spatial axis: the bands of :func:`label_bands`, each as soon as its rows
    and their overlap have arrived, from a window of rows held in memory (rows no later band
    needs are dropped), so the outputs are never written anywhere. ``columns``: only these
    columns (last spatial axis) arrive, a strip with its context; only the objects that start in
    ``own`` are kept (each strip keeps those that start in it, as each band does along rows)."""

    def __init__(self, layout: Layout, first: int, count: int, instance_ops, sink: "_Sink",
                 max_object_size: int = MAX_OBJECT_SIZE, band_bytes: int | None = None,
                 columns: tuple[int, int] | None = None, own: tuple[int, int] | None = None,
                 next_ids: list[int] | None = None):
        band_bytes = _LABEL_BAND_BYTES if band_bytes is None else band_bytes
        self.first, self.count, self.instance_ops, self.sink = first, count, instance_ops, sink
        self.c0, width = (columns[0], columns[1] - columns[0]) if columns else (0, None)
        self.own = own
        self.rows = layout.spatial_shape[0]
        self.rest = tuple(layout.spatial_shape[1:-1]) + ((width or layout.spatial_shape[-1],)
                                                          if len(layout.spatial_shape) > 1 else ())
        self.overlap = min(max_object_size, self.rows)
        self.band = _label_band_rows(layout, self.overlap, band_bytes, width)
        self.held = _label_held_rows(layout, max_object_size, band_bytes, width)    # rows come a band at a time
        self.buffer: np.ndarray | None = None    # (count, c, rows lo.., *rest)
        self.lo = self.hi = 0                      # rows held: lo..hi (hi: all of them received)
        self.r0 = 0                                # the next band to label starts here
        self.next_ids = list(next_ids) if next_ids is not None else [0] * count

    def put(self, region: tiling.Region, values: np.ndarray) -> None:
        """Network outputs ``values`` (``count, c, *region``) of rows at or after those received."""
        start, stop = region[0].start, region[0].stop
        if self.buffer is not None and start < self.lo:
            raise ValueError(f"rows {start}:{stop} arrive after rows before {self.lo} were dropped")
        self._room(stop, values)
        inside = region[1:]
        if self.c0 and len(inside):
            inside = inside[:-1] + (slice(inside[-1].start - self.c0, inside[-1].stop - self.c0),)
        self.buffer[(slice(None), slice(None), slice(start - self.lo, stop - self.lo)) + inside] = values

    def advance(self, hi: int) -> None:
        """Every row before ``hi`` has been received: label each band whose window is complete."""
        self.hi = max(self.hi, hi)
        while self.r0 < self.rows:
            r1 = min(self.rows, self.r0 + self.band)
            top = min(self.rows, r1 + self.overlap)
            if self.hi < top:
                return
            bottom = max(0, self.r0 - self.overlap)
            for i in range(self.count):
                self.next_ids[i] = _label_band(self.buffer[i, :, bottom - self.lo:top - self.lo], self.first + i,
                                               self.r0, r1, bottom, self.instance_ops, self.sink, self.next_ids[i],
                                               self.c0, self.own)
            memory.return_freed_memory()     # the labelling's temporaries, before the next tiles run
            self.r0 = r1

    def finish(self) -> None:
        if self.r0 < self.rows:
            raise ValueError(f"labelling stopped at row {self.r0} of {self.rows}: the outputs did not all arrive")
        self.buffer = None

    def _room(self, stop: int, values: np.ndarray) -> None:
        """Make the buffer hold rows up to ``stop``, dropping rows before the next band's overlap."""
        if self.buffer is None:
            self.lo = 0
            rows = max(self.held, stop)
            self.buffer = np.zeros((self.count, values.shape[1], rows) + self.rest, values.dtype)
            return
        if stop - self.lo <= self.buffer.shape[2]:
            return
        keep = max(self.lo, min(self.hi, self.r0 - self.overlap))      # rows before it are never read again
        n = self.hi - keep
        if keep > self.lo:
            step = keep - self.lo
            for i in range(0, n, step):                 # moved forward in pieces that do not overlap
                j = min(n, i + step)
                self.buffer[:, :, i:j] = self.buffer[:, :, step + i:step + j]
            self.lo = keep
        if stop - self.lo > self.buffer.shape[2]:
            grown = np.zeros(self.buffer.shape[:2] + (stop - self.lo,) + self.buffer.shape[3:], self.buffer.dtype)
            grown[:, :, :n] = self.buffer[:, :, :n]
            self.buffer = grown


def label_bands(outputs, layout: Layout, instance_ops, sink: "_Sink", max_object_size: int = MAX_OBJECT_SIZE,
                band_bytes: int | None = None) -> None:
    """Label network ``outputs`` (an array in ``layout``) into ``sink``, band by band along the
    first spatial axis.

    Each band is read with ``max_object_size`` pixels of overlap on both sides and keeps the
    objects whose first row lies in it, whole and with their own context, numbered after those
    of the bands before: an object on a band seam is found once, as in a whole-image labelling.
    """
    band_bytes = _LABEL_BAND_BYTES if band_bytes is None else band_bytes
    rows, rest = layout.spatial_shape[0], layout.spatial_shape[1:]
    overlap = min(max_object_size, rows)
    band = _label_band_rows(layout, overlap, band_bytes)
    for b in range(layout.n_images):            # each image (frame, slice) labelled on its own, from 1
        next_id = 0
        for r0 in range(0, rows, band):
            r1 = min(rows, r0 + band)
            lo, hi = max(0, r0 - overlap), min(rows, r1 + overlap)
            region = (slice(lo, hi),) + tuple(slice(0, s) for s in rest)
            next_id = _label_band(layout.read(outputs, b, region), b, r0, r1, lo, instance_ops, sink, next_id)
        _release(outputs)
