"""N-D tiled prediction: cut an image into overlapping tiles, run them in batches, stitch.

Each tile is a *core* region plus ``halo`` pixels of context on each side; only the core of a
tile's prediction is kept. Cores are laid on a grid of multiples of the core size starting at
0, so every tile is aligned to the network's pooling grid (cores are multiples of ``step``),
and the image is reflect-padded once, the same way whatever the tile size. With a halo that
covers the receptive field, a tiled prediction equals a whole-image one.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError, ZooError


def _round_up(value: int, step: int) -> int:
    return value if step <= 1 else -(-value // step) * step


def plan_axis(size: int, tile: int, halo: int, step: int, minimum: int) -> tuple[int, int, int]:
    """(core, halo, n_tiles) along one axis: tile = core + 2*halo is a valid network size."""
    step = max(step, 1)
    halo = _round_up(halo, step)
    # a core smaller than the halo would spend most of the work on context: never go below it
    core = max(_round_up(tile - 2 * halo, step), _round_up(max(halo, 1), step))
    core = min(core, _round_up(size, step))          # never larger than the image needs
    while core + 2 * halo < minimum:                   # respect the spec's minimum shape
        core += step
    return core, halo, math.ceil(size / core)


def _pad_reflect(x: np.ndarray, pads: list[tuple[int, int]]) -> np.ndarray:
    """Reflect-pad each spatial axis (edge-pad an axis of length 1, which cannot reflect)."""
    for axis, pad in enumerate(pads, start=2):
        if pad != (0, 0):
            widths = [(0, 0)] * x.ndim
            widths[axis] = pad
            x = np.pad(x, widths, mode="reflect" if x.shape[axis] > 1 else "edge")
    return x


def predict_tiled(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *, tile: Sequence[int],
                  halo: Sequence[int], step: Sequence[int], minimum: Sequence[int],
                  batch_size: int = 4, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Predict ``x`` (``b, c, *spatial``) tile by tile; returns ``b, c_out, *spatial``."""
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    spatial = x.shape[2:]
    plans = [plan_axis(s, t, h, st, m) for s, t, h, st, m in zip(spatial, tile, halo, step, minimum)]
    pads = [(h, n * c - s + h) for s, (c, h, n) in zip(spatial, plans)]
    padded = _pad_reflect(x, pads)
    grids = [range(n) for _, _, n in plans]
    corners = [tuple(i * c for i, (c, _, _) in zip(idx, plans)) for idx in itertools.product(*grids)]
    jobs = [(b, corner) for b in range(x.shape[0]) for corner in corners]

    out = None
    done = 0
    for first in range(0, len(jobs), batch_size):
        chunk = jobs[first:first + batch_size]
        tiles = np.stack([
            padded[(b, slice(None)) + tuple(slice(o, o + c + 2 * h) for o, (c, h, _) in zip(corner, plans))]
            for b, corner in chunk
        ])
        pred = run(tiles)
        if pred.shape[0] != tiles.shape[0] or pred.shape[2:] != tiles.shape[2:]:
            raise ZooError(f"the network returned shape {pred.shape} for tiles of shape {tiles.shape}: tiled "
                           "prediction needs outputs of the same batch and spatial size as the input")
        if out is None:
            out = np.empty((x.shape[0], pred.shape[1]) + tuple(spatial), dtype=pred.dtype)
        for k, (b, corner) in enumerate(chunk):
            target, source = [], []
            for o, (c, h, _), s in zip(corner, plans, spatial):
                length = min(c, s - o)
                target.append(slice(o, o + length))
                source.append(slice(h, h + length))
            out[(b, slice(None)) + tuple(target)] = pred[(k, slice(None)) + tuple(source)]
        done += len(chunk)
        if progress:
            progress(done, len(jobs))
    return out
