"""N-D tiled prediction: overlapping tiles, batched through the runner, blended together.

Along every spatial axis the image is cut into *cores* of equal length (a multiple of the
network's ``step``, starting at 0, so every tile sits on the pooling grid). A *ragged* plan keeps
every core at the largest length the memory allows and shortens only the last one (on the grid
too): the tiles, and so the network's memory, are then the same for every image larger than one
tile, instead of depending on how evenly the image divides (an even split of a 4096 px axis into
1024 px tiles gives 900 px tiles, of a 16384 px one 992 px: 1.2x the activations). The work is
the same either way (the same number of tiles, no more pixels than the step rounds up). A tile is its core
plus ``blend + halo`` pixels on each side. The ``halo`` is context that is thrown away (it must
cover the receptive field); the ``blend`` margin is kept and cross-faded with the neighbouring
tile by linear ramps that add up to one. Where the halo covers the receptive field both tiles
agree there and the result equals a whole-image prediction; where it does not, the ramps hide
the seam instead of leaving a step. Outside the image, tiles read a reflection of it; nothing
is padded in memory, so a tile is read from a lazy source (memory map, Zarr) as it is needed.

Tiles run in raster order and their weighted outputs are summed into a band along the first
spatial axis; each band is handed to a writer as soon as no later tile can touch it, so memory
is set by one band and one batch of tiles, not by the image.

An output may be on another grid than the input (``zoom``: output pixels per input pixel, e.g.
4 for a 4x upsampling network, 1/2 for one that halves the size). The plan stays in input
pixels; regions, crops and ramps are carried onto the output grid, so the zoom must turn the
tile grid into whole output pixels (``step * zoom`` an integer).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import InputError, ZooError

Region = tuple[slice, ...]
Reader = Callable[[int, Region], np.ndarray]     # image index, spatial region inside it -> (c, *region)
Writer = Callable[[Region, np.ndarray], None]    # spatial region, (b, c_out, *region)


def _round_up(value: int, step: int) -> int:
    return value if step <= 1 else -(-value // step) * step


def default_blend(halo: int, step: int) -> int:
    """A quarter of the halo, on the pooling grid (0 for a model that declares no halo)."""
    return _round_up(math.ceil(halo / 4), max(step, 1)) if halo > 0 else 0


@dataclass(frozen=True)
class AxisPlan:
    """How one axis of ``size`` pixels is cut: ``n`` cores of ``core`` pixels."""

    size: int
    core: int
    halo: int
    blend: int
    n: int
    last: int = 0      # the last core's length when shorter than ``core`` (a ragged plan); 0: ``core``

    def core_of(self, i: int) -> int:
        """Length of tile ``i``'s core."""
        return self.last if self.last and i == self.n - 1 else self.core

    @property
    def margin(self) -> int:
        return self.halo + self.blend

    @property
    def tile(self) -> int:
        return self.core + 2 * self.margin

    def kept(self, i: int) -> tuple[int, int]:
        """Image range whose prediction tile ``i`` contributes to."""
        return max(0, i * self.core - self.blend), min(self.size, (i + 1) * self.core + self.blend)

    def final_after(self, i: int) -> int:
        """Pixels before this position are final once tiles ``0..i`` are summed."""
        return self.size if i == self.n - 1 else min(self.size, (i + 1) * self.core - self.blend)

    def weights(self, i: int) -> np.ndarray:
        """Blending weights over ``kept(i)``: ramps across each seam, 1 elsewhere."""
        lo, hi = self.kept(i)
        x = np.arange(lo, hi, dtype=np.float64) + 0.5
        w = np.ones(hi - lo)
        if self.blend:
            if i > 0:
                seam = i * self.core
                w = np.minimum(w, np.clip((x - seam + self.blend) / (2 * self.blend), 0, 1))
            if i < self.n - 1:
                seam = (i + 1) * self.core
                w = np.minimum(w, np.clip((seam + self.blend - x) / (2 * self.blend), 0, 1))
        return w.astype(np.float32)


def plan_axis(size: int, tile: int, halo: int, step: int, minimum: int, blend: int | None = None,
              ragged: bool = False) -> AxisPlan:
    """Cut an axis into cores no larger than ``tile`` allows, as even as the step permits, or
    (``ragged``) all of the largest length but the last, which is only as long as it must be."""
    if size < 1:
        raise InputError(f"cannot tile an axis of length {size}")
    step = max(step, 1)
    halo = _round_up(halo, step)
    blend = default_blend(halo, step) if blend is None else _round_up(max(blend, 0), step)
    margin = halo + blend
    # a core smaller than the margin would spend most of the work on context; never go below it,
    # nor below two blend zones (the ramps of both seams must fit in one core)
    smallest = _round_up(max(halo, 2 * blend, 1), step)
    largest = max(_round_up(tile - 2 * margin, step) if tile - 2 * margin >= step else 0, smallest)
    n = math.ceil(size / largest)
    core = max(_round_up(math.ceil(size / n), step), smallest)   # even cores: least padding
    if ragged and n > 1:
        core = largest
    while core + 2 * margin < minimum:                             # respect the spec's minimum shape
        core += step
    n = math.ceil(size / core)
    last = 0
    if ragged and n > 1:
        last = max(_round_up(size - (n - 1) * core, step), smallest)
        while last + 2 * margin < minimum:
            last += step
        # short even when nearly a core: reading it at the full tile size (past the image's end,
        # reflected) spent up to half a tile's work per axis. Its shapes cost no memory of their
        # own since ONNX Runtime's memory pattern is off on CPU (with it, four near-full shapes took
        # 860 MB against 735 MB for one on n2v-w2s at 2048^2; see runners.mem_pattern_allowed)
        last = 0 if last >= core else last
    return AxisPlan(size=size, core=core, halo=halo, blend=blend, n=n, last=last)


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Positions outside ``[0, size)`` mirrored back inside (numpy's 'reflect'; 'edge' for size 1)."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    index = np.abs(index) % period
    return np.where(index >= size, period - index, index)


def read_tile(read: Reader, b: int, plans: Sequence[AxisPlan], corner: Sequence[int]) -> np.ndarray:
    """Image ``b``'s tile whose core starts at ``corner`` (``c, *tile``), reflected outside the image
    (a last core that runs past the image's end is read on, reflected; only its kept range is used)."""
    region, takes = [], []
    for plan, start in zip(plans, corner):
        core = plan.core_of(start // plan.core)
        index = reflect_index(np.arange(start - plan.margin, start + core + plan.margin), plan.size)
        lo, hi = int(index.min()), int(index.max()) + 1
        region.append(slice(lo, hi))
        plain = hi - lo == len(index) and index[0] == lo and np.all(np.diff(index) == 1)
        takes.append(None if plain else index - lo)
    block = np.asarray(read(b, tuple(region)))
    for axis, take in enumerate(takes, start=1):
        if take is not None:
            block = np.take(block, take, axis=axis)
    return block


class _Band:
    """Weighted sum of tile outputs over a range of the first spatial axis.

    The buffer is allocated at its final height (``rows``: a row of tiles and the seam below
    it) instead of growing by a new array and a copy as tiles arrive, which held two bands at
    once. A flush hands the writer a view of the finished rows (it may keep it) and moves the
    pending seam rows into a fresh buffer."""

    def __init__(self, shape: tuple[int, ...], rows: int = 0):
        self.shape = shape       # (b, c_out, first-axis length, *rest)
        self.lo = 0
        self.valid = 0           # rows lo .. lo + valid hold sums
        self.rows = min(max(rows, 1), shape[2])
        self.data: np.ndarray | None = None

    def add(self, b: int, region: Region, values: np.ndarray) -> None:
        hi = region[0].stop
        if self.data is None:
            self.data = np.zeros(self.shape[:2] + (max(self.rows, hi - self.lo),) + self.shape[3:], np.float32)
        elif self.data.shape[2] < hi - self.lo:     # a plan taller than announced: grow (rare)
            grown = np.zeros(self.shape[:2] + (hi - self.lo,) + self.shape[3:], np.float32)
            grown[:, :, :self.valid] = self.data[:, :, :self.valid]
            self.data = grown
        local = (slice(region[0].start - self.lo, hi - self.lo),) + region[1:]
        self.data[(b, slice(None)) + local] += values
        self.valid = max(self.valid, hi - self.lo)

    def flush(self, until: int, write: Writer) -> None:
        if self.data is None or until <= self.lo:
            return
        n = until - self.lo
        write((slice(self.lo, until),) + tuple(slice(0, s) for s in self.shape[3:]), self.data[:, :, :n])
        left = max(self.valid - n, 0)
        fresh = np.zeros_like(self.data) if left or until < self.shape[2] else None
        if left:
            fresh[:, :, :left] = self.data[:, :, n:n + left]
        self.data, self.valid, self.lo = fresh, left, until


def _jobs(plans: Sequence[AxisPlan], n_images: int,
          last: range | None = None) -> Iterator[tuple[int, int, tuple[int, ...]]]:
    """(row along the first axis, image, tile index) in raster order, row by row (``last``: only
    these tiles along the last axis)."""
    ranges = [range(p.n) for p in plans[1:]]
    if last is not None and len(plans) > 1:
        ranges[-1] = last
    for row in range(plans[0].n):
        for b in range(n_images):
            for rest in itertools.product(*ranges):
                yield row, b, (row,) + rest


def tiles_for(plan: AxisPlan, lo: int, hi: int) -> range:
    """The tiles whose kept range (the prediction they contribute) touches ``[lo, hi)``."""
    touching = [i for i in range(plan.n) if plan.kept(i)[0] < hi and plan.kept(i)[1] > lo]
    return range(touching[0], touching[-1] + 1)


def _batches(jobs, batch_size: int, plans: Sequence[AxisPlan]):
    """Up to ``batch_size`` consecutive jobs at a time, all of one tile shape (a ragged plan's
    short last tiles start a batch of their own)."""
    def shape(job) -> tuple[int, ...]:
        return tuple(p.core_of(i) for i, p in zip(job[2], plans))

    chunk: list = []
    for job in jobs:
        if chunk and (len(chunk) == batch_size or shape(job) != shape(chunk[0])):
            yield chunk
            chunk = []
        chunk.append(job)
    if chunk:
        yield chunk


def _zoomed(value: int, zoom: Fraction) -> int:
    """An input-grid position on the output grid (a partial output pixel counts)."""
    return math.ceil(value * zoom)


def zooms_of(zoom: Sequence[float] | None, n: int) -> list[Fraction]:
    """Exact zoom factors (``None``: 1 along every axis)."""
    return [Fraction(1)] * n if zoom is None else [Fraction(z).limit_denominator(64) for z in zoom]


def check_zoom(plans: Sequence[AxisPlan], zooms: Sequence[Fraction]) -> None:
    """Every core, halo and blend must land on whole output pixels."""
    for axis, (plan_, z) in enumerate(zip(plans, zooms)):
        if z != 1 and any((v * z).denominator != 1 for v in (plan_.core, plan_.last, plan_.halo, plan_.blend)):
            raise InputError(f"spatial axis {axis}: tiles of {plan_.core} px with a halo of {plan_.halo} px do not "
                             f"land on whole pixels of an output {float(z):g}x the input's size; choose a tile "
                             f"that is a multiple of {z.denominator}")


def run_tiles(run: Callable[[np.ndarray], np.ndarray], read: Reader, write: Writer,
              shape: Sequence[int], plans: Sequence[AxisPlan], batch_size: int = 1,
              prepare: Callable[[np.ndarray, list[int]], np.ndarray] | None = None,
              progress: Callable[[int, int], None] | None = None,
              zoom: Sequence[float] | None = None, columns: tuple[int, int] | None = None) -> None:
    """Predict an image of ``shape`` (``b, c, *spatial``) tile by tile, from ``read`` to ``write``.

    ``prepare(tiles, images)`` is applied to every batch of tiles before the network, with the
    image index of each tile (pointwise pre-processing of a streamed image). ``write`` receives
    finished bands in order along the first spatial axis, in output pixels (``zoom``).
    ``columns`` (``lo, hi`` along the last spatial axis; no zoom): only the tiles whose kept range
    touches them run, and only these columns are written, equal to the whole image's (the same
    tiles, weights and order), so that a wide image can be predicted in strips whose band does
    not grow with its width.
    """
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    n_images, spatial = shape[0], tuple(shape[2:])
    zooms = zooms_of(zoom, len(plans))
    check_zoom(plans, zooms)
    out_spatial = tuple(_zoomed(s, z) for s, z in zip(spatial, zooms))
    last_tiles, band_origin = None, 0
    if columns is not None and len(plans) > 1:
        if any(z != 1 for z in zooms):
            raise ZooError("tiled prediction in column strips needs an output on the input's grid (no zoom)")
        last_tiles = tiles_for(plans[-1], *columns)
        band_origin = plans[-1].kept(last_tiles[0])[0]     # the band holds the strip's tiles' kept columns
        out_spatial = out_spatial[:-1] + (plans[-1].kept(last_tiles[-1])[1] - band_origin,)
        write = _columns_writer(write, columns, band_origin)
    per_row = math.prod(p.n for p in plans[1:-1]) * (len(last_tiles) if last_tiles is not None else
                                                     plans[-1].n if len(plans) > 1 else 1)
    total = n_images * plans[0].n * per_row
    band: _Band | None = None
    jobs = _jobs(plans, n_images, last_tiles)
    last_index = last_tiles[-1] if last_tiles is not None else None
    done = 0
    for chunk in _batches(jobs, batch_size, plans):
        tiles = np.stack([read_tile(read, b, plans, [i * p.core for i, p in zip(index, plans)])
                          for _, b, index in chunk]).astype(np.float32, copy=False)
        if prepare is not None:
            tiles = prepare(tiles, [b for _, b, _ in chunk])
        pred = run(tiles)
        expected = tuple(int(t * z) for t, z in zip(tiles.shape[2:], zooms))
        if pred.ndim != tiles.ndim or pred.shape[0] != tiles.shape[0] or pred.shape[2:] != expected:
            raise ZooError(f"the network returned shape {pred.shape} for tiles of shape {tiles.shape}: tiled "
                           f"prediction needs outputs of the same batch and spatial size as the input (times the "
                           f"zoom): {expected}")
        if band is None:     # one row of tiles (kept rows) and the seam below the one before
            band = _Band((n_images, pred.shape[1]) + out_spatial,
                         _zoomed(plans[0].core + 2 * plans[0].blend, zooms[0]) + 1)
        for k, (_, b, index) in enumerate(chunk):
            region, crop, weight = [], [], np.ones((1,) * len(plans), np.float32)
            for axis, (i, plan_, z) in enumerate(zip(index, plans, zooms)):
                lo, hi = plan_.kept(i)
                origin = i * plan_.core - plan_.margin
                out_lo, out_hi = int(lo * z), _zoomed(hi, z)
                shift = band_origin if axis == len(plans) - 1 else 0
                region.append(slice(out_lo - shift, out_hi - shift))
                start = int((lo - origin) * z)
                crop.append(slice(start, start + out_hi - out_lo))
                ramp = plan_.weights(i)
                if z != 1:     # each output pixel takes the ramp of the input pixel it lies in
                    ramp = ramp[np.minimum((np.arange(out_hi - out_lo) / z).astype(int), len(ramp) - 1)]
                shape_ = [1] * len(plans)
                shape_[axis] = out_hi - out_lo
                weight = weight * ramp.reshape(shape_)
            band.add(b, tuple(region), pred[(k, slice(None)) + tuple(crop)] * weight)
        row, b, index = chunk[-1]
        ends = [p.n - 1 for p in plans[1:]]
        if last_index is not None:
            ends[-1] = last_index
        row_complete = b == n_images - 1 and list(index[1:]) == ends
        finished_row = row if row_complete else row - 1
        if finished_row >= 0:
            band.flush(_zoomed(plans[0].final_after(finished_row), zooms[0]), write)
        done += len(chunk)
        if progress:
            progress(done, total)


def _columns_writer(write: Writer, columns: tuple[int, int], origin: int) -> Writer:
    """A writer of a strip's band (columns from ``origin``) that passes on ``columns`` only, in the
    image's coordinates."""
    lo, hi = columns

    def strip(region: Region, values: np.ndarray) -> None:
        keep = slice(lo - origin, hi - origin)
        write(region[:-1] + (slice(lo, hi),), values[..., keep])

    return strip


def plan(spatial: Sequence[int], tile: Sequence[int], halo: Sequence[int], step: Sequence[int],
         minimum: Sequence[int], blend: Sequence[int] | int | None = None, ragged: bool = False) -> list[AxisPlan]:
    """One :class:`AxisPlan` per spatial axis (``ragged``: see :func:`plan_axis`)."""
    blends = [blend] * len(spatial) if blend is None or isinstance(blend, int) else list(blend)
    return [plan_axis(*args, ragged=ragged) for args in zip(spatial, tile, halo, step, minimum, blends)]


def predict_tiled(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *, tile: Sequence[int],
                  halo: Sequence[int], step: Sequence[int], minimum: Sequence[int],
                  blend: Sequence[int] | int | None = None, batch_size: int = 1,
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Predict an in-memory ``x`` (``b, c, *spatial``) tile by tile; returns ``b, c_out, *spatial``."""
    plans = plan(x.shape[2:], tile, halo, step, minimum, blend)
    return predict_planned(run, x, plans, batch_size=batch_size, progress=progress)


def predict_planned(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, plans: Sequence[AxisPlan],
                    batch_size: int = 1, progress: Callable[[int, int], None] | None = None,
                    zoom: Sequence[float] | None = None) -> np.ndarray:
    """:func:`predict_tiled` with the tiling already planned (``zoom``: see :func:`run_tiles`)."""
    result: list[np.ndarray] = []
    out_spatial = tuple(_zoomed(s, z) for s, z in zip(x.shape[2:], zooms_of(zoom, x.ndim - 2)))

    def write(region: Region, values: np.ndarray) -> None:
        if not result:
            result.append(np.empty(x.shape[:1] + values.shape[1:2] + out_spatial, np.float32))
        result[0][(slice(None), slice(None)) + region] = values

    run_tiles(run, lambda b, region: x[(b, slice(None)) + region], write, x.shape, plans,
              batch_size=batch_size, progress=progress, zoom=zoom)
    return result[0]
