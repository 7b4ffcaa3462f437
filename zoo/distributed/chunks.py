"""One large image (OME-Zarr, TIFF, NPY) predicted in chunks on Dask workers.

The image is tiled by the Predictor's one global plan (:class:`zoo.runtime.tiling.AxisPlan`:
cores, blend, halo), exactly as a single process tiles it. Chunks are blocks of whole tiles,
cut at seams inside a core's unblended interior (where one tile alone decides every pixel), on
multiples of the output's Zarr chunk. Every tile is run once, by the chunk its core starts in:

1. :func:`accumulate` runs a chunk's own tiles and adds them with the global plan's ramps; the
   part of their sum that falls into a neighbouring chunk (the seam tile's far side: a strip a
   little wider than the blend) is saved as a small ``.npy`` piece in the partial output;
2. :func:`finish` adds the pieces its neighbours left for it, applies the pixel ops and writes
   its chunk straight into the output OME-Zarr. The client submits it once those neighbours
   are done (:func:`run_owned`).

No two chunks write one Zarr chunk, no tile is run twice and no pixel passes through the
client. Normalisation statistics are measured once per image on the client (as
:mod:`zoo.runtime.stream` does) and passed to every chunk, so the result equals the
single-process streamed prediction (to float rounding: a pixel near a seam sums the same
tiles in another order).

The output is written under a hidden partial name; a worker marks each chunk done after writing
it, so a re-run after the client died resumes (same input, model and plan; pieces already saved
are used again), and the output appears under its name only when complete.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import opnames
from ..errors import InputError
from ..runtime import ops
from ..runtime.layout import Layout, check_finite
from ..runtime.tiling import AxisPlan, read_tile, tiles_for

MAX_BLOCK = 512            # the output's Zarr chunks along a spatial axis are at most this
DONE = ".zoo-done"         # inside the partial output: one empty file per finished chunk
PIECES = ".zoo-pieces"     # inside the partial output: what a chunk's tiles add to a neighbour
STATE_KEY = "bioimage-zoo-dask"


def axis_bounds(plan: AxisPlan, tiles_per_chunk: int, fine_end: bool = False) -> tuple[tuple[int, ...], int]:
    """(chunk boundaries ``0 < ... < size`` along one axis, the output's Zarr chunk there).
    ``fine_end``: the last full chunk is cut into one-tile chunks, so that the run ends on small
    tasks (chunks are submitted in raster order: the first axis's last chunks are the last tasks;
    with whole-size chunks one worker idled up to a chunk's time while the other ran the last).

    A seam lies in tile ``i``'s interior ``[i*core + blend, (i+1)*core - blend]`` (one tile
    decides every pixel there; never the last tile's, so that every chunk owns a tile), on a
    multiple of the Zarr chunk; a core with no interior (core == 2 blend) is cut at its start
    instead (two tiles then reach across it)."""
    interior = plan.core - 2 * plan.blend
    if interior >= 1:       # a seam in tile i's interior: tiles 0..i start before it
        block = min(MAX_BLOCK, 1 << (interior.bit_length() - 1))      # a multiple lies in every interior
        seams = [(i + 1, -(-(i * plan.core + plan.blend) // block) * block) for i in range(plan.n - 1)]
    else:                   # a seam at tile i's start: tiles 0..i-1 start before it
        block = min(MAX_BLOCK, plan.core & -plan.core)                 # the largest power of two dividing it
        seams = [(i, i * plan.core) for i in range(1, plan.n)]
    last = (plan.n - 1) // tiles_per_chunk * tiles_per_chunk        # tiles before the last chunk's start
    fine = fine_end and plan.n - last == tiles_per_chunk > 1
    bounds = [0]
    for before, seam in seams:          # ``before``: how many tiles start before the seam
        if (before % tiles_per_chunk == 0 or fine and before > last) and bounds[-1] < seam < plan.size:
            bounds.append(seam)
    return tuple(bounds) + (plan.size,), block


def owned_tiles(plan: AxisPlan, lo: int, hi: int) -> range:
    """The tiles whose core starts in ``[lo, hi)``: each tile belongs to one chunk."""
    return range(-(-lo // plan.core), min(plan.n, -(-hi // plan.core)))


def extent(plans: Sequence[AxisPlan], region) -> tuple[tuple[int, int], ...]:
    """The range a chunk's own tiles contribute to: its region and the strips beyond its seams."""
    out = []
    for plan, (lo, hi) in zip(plans, region):
        tiles = owned_tiles(plan, lo, hi)
        out.append((min(lo, plan.kept(tiles[0])[0]), max(hi, plan.kept(tiles[-1])[1])))
    return tuple(out)


def spills(plans: Sequence[AxisPlan], region) -> list[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """(offset of the neighbour, where in the chunk's :func:`extent` its piece lies) for every
    neighbour the chunk's tiles reach (offsets -1, 0, 1 per axis, not all 0)."""
    ext = extent(plans, region)
    ranges = [{-1: (e0, lo), 0: (lo, hi), 1: (hi, e1)} for (lo, hi), (e0, e1) in zip(region, ext)]
    found = []
    for offset in itertools.product((-1, 0, 1), repeat=len(plans)):
        if any(offset) and all(r[o][1] > r[o][0] for r, o in zip(ranges, offset)):
            found.append((offset, tuple(slice(r[o][0] - e0, r[o][1] - e0) for r, o, (e0, _) in
                                        zip(ranges, offset, ext))))
    return found


@dataclass(frozen=True)
class Grid:
    """The chunks of one image: boundaries and output Zarr chunk per spatial axis."""

    bounds: tuple[tuple[int, ...], ...]
    blocks: tuple[int, ...]

    @classmethod
    def of(cls, plans: Sequence[AxisPlan], chunk: int | Sequence[int]) -> "Grid":
        """Chunks of about ``chunk`` pixels a side (whole tiles)."""
        sizes = [chunk] * len(plans) if isinstance(chunk, int) else list(chunk)
        cut = [axis_bounds(p, max(1, round(c / p.core)), fine_end=a == 0) for a, (p, c) in enumerate(zip(plans, sizes))]
        return cls(tuple(b for b, _ in cut), tuple(k for _, k in cut))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(b) - 1 for b in self.bounds)

    def region(self, index: Sequence[int]) -> tuple[tuple[int, int], ...]:
        return tuple((b[i], b[i + 1]) for b, i in zip(self.bounds, index))

    def indices(self):
        return itertools.product(*(range(n) for n in self.shape))


@dataclass(frozen=True)
class Job:
    """What a worker needs to predict one chunk (everything small: no pixels)."""

    name: str                     # the model plugin
    source: str
    layout: Layout
    repeat: int
    plans: tuple
    batch_size: int
    frozen: dict                  # the image's normalisation statistics
    partial: str                  # the output OME-Zarr being written
    out_layout: Layout
    b: int
    index: tuple[int, ...]
    region: tuple[tuple[int, int], ...]

    @property
    def key(self) -> str:
        return "-".join(map(str, (self.b, *self.index)))


@lru_cache(maxsize=4)
def _opened(source: str, stamp: float):
    from ..imageio import open_lazy

    return open_lazy(source)[0]


def open_input(source: str):
    """The input, opened lazily once per worker (again when the file changed)."""
    path = Path(source)
    stamp = max((p.stat().st_mtime for p in [path, *path.glob("*/.zarray")] if p.exists()), default=0.0)
    return _opened(source, stamp)


def blended(model, job: Job, region: Sequence[tuple[int, int]], tiles=None) -> np.ndarray:
    """The network's outputs over ``region`` of image ``job.b`` (``c, *region``, before the pixel
    ops): ``tiles`` (default: every tile touching it), with the global plan's ramps, summed in
    raster order."""
    image, inp, plans = open_input(job.source), model.spec.inputs[0], job.plans
    network = model.predictor.network()

    def read(b: int, where) -> np.ndarray:
        piece = job.layout.read(image, b, where)
        check_finite(piece)
        return np.repeat(piece, job.repeat, axis=0) if job.repeat > 1 else piece

    if tiles is None:
        tiles = itertools.product(*(tiles_for(p, lo, hi) for p, (lo, hi) in zip(plans, region)))
    tiles = iter(tiles)
    acc = None
    while batch := list(itertools.islice(tiles, job.batch_size)):
        x = np.stack([read_tile(read, job.b, plans, [i * p.core for i, p in zip(index, plans)])
                      for index in batch]).astype(np.float32, copy=False)
        x = np.concatenate([ops.apply(inp.preprocessing, x[k:k + 1], dict(job.frozen), inp.name, ops.PREPROCESSING)
                            for k in range(len(batch))])
        pred = network(x)
        if pred.shape[0] != x.shape[0] or pred.shape[2:] != x.shape[2:]:
            raise InputError(f"the network returned shape {pred.shape} for tiles of shape {x.shape}: chunked "
                             "prediction needs outputs on the input's grid")
        if acc is None:
            acc = np.zeros((pred.shape[1],) + tuple(hi - lo for lo, hi in region), np.float32)
        for k, index in enumerate(batch):
            _add(acc, pred[k], index, plans, region)
    return acc


def _add(acc: np.ndarray, pred: np.ndarray, index, plans, region) -> None:
    """Tile ``index``'s prediction, weighted as :func:`zoo.runtime.tiling.run_tiles` weighs it,
    added where its kept range meets ``region``."""
    into, crop, weight = [slice(None)], [slice(None)], np.ones((1,) * len(plans), np.float32)
    for axis, (i, plan, (r0, r1)) in enumerate(zip(index, plans, region)):
        lo, hi = plan.kept(i)
        a, z = max(lo, r0), min(hi, r1)
        if a >= z:
            return
        origin = i * plan.core - plan.margin
        into.append(slice(a - r0, z - r0))
        crop.append(slice(a - origin, z - origin))
        shape = [1] * len(plans)
        shape[axis] = z - a
        weight = weight * plan.weights(i)[a - lo:z - lo].reshape(shape)
    acc[tuple(into)] += pred[tuple(crop)] * weight


def pixel_outputs(model, job: Job, values: np.ndarray) -> np.ndarray:
    """The output's pixel-wise post-processing (``1, c, ...``) with the image's frozen statistics."""
    out = model.spec.outputs[0]
    context = {**job.frozen, "scale": dict(job.frozen["frozen"])}
    return ops.apply(opnames.output_ops(model.spec, raw=True), values[np.newaxis], context, out.name,
                     ops.POSTPROCESSING)


def write(job: Job, values: np.ndarray, region=None) -> None:
    """``values`` (``1, c, *region``) into the partial output: whole Zarr chunks of this chunk only."""
    import zarr

    region = job.region if region is None else region
    array = zarr.open_array(str(Path(job.partial) / "0"), mode="r+")
    job.out_layout.write(array, tuple(slice(lo, hi) for lo, hi in region), values, first=job.b)


def mark_done(job: Job) -> None:
    (Path(job.partial) / DONE / job.key).touch()


def piece_path(job: Job, target: Sequence[int], source: Sequence[int]) -> Path:
    """Where chunk ``source`` leaves what its tiles add to chunk ``target`` (of image ``job.b``)."""
    name = "-".join(map(str, (job.b, *target))) + "--" + "-".join(map(str, source))
    return Path(job.partial) / PIECES / f"{name}.npy"


def accumulate(job: Job) -> np.ndarray:
    """Worker task, step 1: run the chunk's own tiles; save the pieces its neighbours need and
    return the sum over its own region (``c, *region``, before the pixel ops)."""
    from .plugin import model_on_worker

    model = model_on_worker(job.name)
    ext = extent(job.plans, job.region)
    tiles = itertools.product(*(owned_tiles(p, lo, hi) for p, (lo, hi) in zip(job.plans, job.region)))
    acc = blended(model, job, ext, tiles)
    for offset, where in spills(job.plans, job.region):
        target = tuple(i + o for i, o in zip(job.index, offset))
        path = piece_path(job, target, job.index)
        partial = path.with_name(f".{path.stem}.partial.npy")
        np.save(partial, acc[(slice(None),) + where])
        partial.replace(path)                   # whole or absent: a reader never sees half of it
    own = tuple(slice(lo - e0, hi - e0) for (lo, hi), (e0, _) in zip(job.region, ext))
    return np.ascontiguousarray(acc[(slice(None),) + own])


def finish(job: Job, own: np.ndarray, sources: Sequence[tuple[int, ...]]) -> float:
    """Worker task, step 2: add the pieces chunks ``sources`` left for this one to ``own`` (in
    raster order of the chunks), apply the pixel ops, write the chunk and mark it done; returns
    the seconds it took. A chunk already marked done is left as it is (a task run again)."""
    from .plugin import model_on_worker

    started = time.perf_counter()
    if (Path(job.partial) / DONE / job.key).exists():
        return 0.0
    model = model_on_worker(job.name)
    values = np.zeros_like(own)
    parts = sorted([(tuple(s), piece_path(job, job.index, s)) for s in sources] + [(tuple(job.index), None)])
    for source, path in parts:
        piece = own if path is None else np.load(path, allow_pickle=False)
        where = [slice(None)]
        for size, n, i, s in zip(own.shape[1:], piece.shape[1:], job.index, source):
            where.append(slice(0, n) if s < i else slice(size - n, size) if s > i else slice(None))
        values[tuple(where)] += piece
    write(job, pixel_outputs(model, job, values))
    mark_done(job)
    for source, path in parts:
        if path is not None:
            path.unlink(missing_ok=True)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------- the client's side
def fingerprint(source: Path, model, layout: Layout, plans, raw: bool, grid: Grid) -> str:
    """What a partial output was made from: a re-run resumes it only when this is unchanged."""
    files = [source] if source.is_file() else sorted(source.rglob("*.zarray")) + sorted(source.rglob("zarr.json"))
    stamps = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    body = [str(source.resolve()), stamps, model.spec.ref, layout.axes, layout.shape, [vars(p) for p in plans],
            raw, grid.bounds]
    return hashlib.sha256(json.dumps(body, default=str).encode()).hexdigest()


def open_partial(partial: Path, shape, dtype, axes: str, chunks, print_: str) -> set[str]:
    """The partial output: resumed when its fingerprint is ``print_`` (the keys of its finished
    chunks come back), else made anew (empty set)."""
    import zarr

    from ..omezarr import create_omezarr

    if partial.is_dir():
        try:
            if zarr.open_group(str(partial), mode="r").attrs.get(STATE_KEY, {}).get("fingerprint") == print_:
                return {p.name for p in (partial / DONE).iterdir()}
        except Exception:      # noqa: BLE001 - unreadable: made anew
            pass
        shutil.rmtree(partial)
    create_omezarr(partial, shape, dtype, axes, chunks=chunks)
    zarr.open_group(str(partial), mode="r+").attrs[STATE_KEY] = {"fingerprint": print_}
    (partial / DONE).mkdir()
    (partial / PIECES).mkdir()
    return set()


def sources_of(jobs: Sequence[Job]) -> dict[str, list[Job]]:
    """For each chunk (by key), the chunks whose tiles add to it, in raster order."""
    where = {(j.b, j.index): j for j in jobs}
    found: dict[str, list[Job]] = {j.key: [] for j in jobs}
    for job in jobs:
        for offset, _ in spills(job.plans, job.region):
            target = where[(job.b, tuple(i + o for i, o in zip(job.index, offset)))]
            found[target.key].append(job)
    return found


def run_owned(client, jobs: Sequence[Job], done: set[str], progress: Callable[[int, int], None] | None = None) -> None:
    """Steps 1 and 2 for every chunk of ``jobs`` not in ``done``: each chunk's :func:`accumulate`
    (and those of the neighbours whose pieces for it are missing), then its :func:`finish` as
    soon as its own and its neighbours' are complete, ahead of further chunks (so that a worker
    holds a chunk's sum or two at a time, whatever the image's size). Sums stay on the workers.
    A failed task stops the run with its error."""
    from distributed import as_completed

    sources = sources_of(jobs)
    todo = {j.key: j for j in jobs if j.key not in done}
    needed = set(todo) | {s.key for t in todo.values() for s in sources[t.key]
                          if not piece_path(t, t.index, s.index).exists()}
    accs = {j.key: client.submit(accumulate, j, pure=False, priority=0) for j in jobs if j.key in needed}
    waiting = {t: {s.key for s in sources[t] if s.key in accs} | {t} for t in todo}
    dependents: dict[str, list[str]] = {k: [] for k in accs}
    for t, keys in waiting.items():
        for k in keys:
            dependents[k].append(t)
    key_of = {f.key: k for k, f in accs.items()}
    finishes: dict = {}                         # running finishes by key (a result released once seen)
    pending = as_completed(list(accs.values()))
    count = 0
    try:
        for future in pending:
            if future.status != "finished":
                future.result()                 # raises the task's error
            if future.key not in key_of:        # a finish
                finishes.pop(future.key, None)
                count += 1
                if progress:
                    progress(count, len(todo))
                continue
            k = key_of.pop(future.key)
            for t in dependents[k]:
                waiting[t].discard(k)
                if not waiting[t]:              # its own sum and its neighbours' pieces are ready
                    f = client.submit(finish, todo[t], accs.pop(t), [s.index for s in sources[t]], pure=False,
                                      priority=1)
                    finishes[f.key] = f
                    pending.add(f)
            if k not in todo:
                del accs[k]                     # run for its pieces only: they are on disk
    except BaseException:
        client.cancel(list(accs.values()) + list(finishes.values()))
        raise
