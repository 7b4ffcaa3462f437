"""What the tiler sees of a network that is not "one tensor in, one tensor of the same size out".

Networks published elsewhere may take a fixed input size, several input tensors, give several
outputs, or outputs on another grid (upsampled, downsampled, cropped). The tiler works on one
tensor per tile and an output ``zoom`` times the tile's size; :class:`NetworkCall` makes any such
network look like that:

- several inputs travel as one tensor, concatenated along channels, and are split again;
  several outputs come back concatenated the same way (they must share their geometry);
- a tile smaller than a fixed input size is padded (by reflection) to it, and the padding is
  cut off the output again;
- an output cropped by the network (``offset`` < 0) is padded back to ``tile * zoom`` by
  repeating its edge: those pixels lie in the halo, which the tiler throws away.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np

from ..errors import InputError, ZooError


def output_geometry(spec) -> tuple[list[Fraction], list[int]]:
    """(zoom, offset) per spatial axis, shared by every output (a refusal otherwise)."""
    n = len(spec.inputs[0].spatial_axes)
    geometries = {(tuple(Fraction(s).limit_denominator(64) for s in (t.scale or [1] * n)),
                   tuple(int(o) for o in (t.offset or [0] * n))) for t in spec.outputs}
    if len(geometries) > 1:
        raise InputError(f"{spec.ref}: its outputs have different sizes ({', '.join(t.name for t in spec.outputs)}); "
                         "bioimage-zoo predicts several outputs together only when they share their size")
    zoom, offset = geometries.pop()
    return list(zoom), list(offset)


def fixed_sizes(spec) -> list[int] | None:
    """The input's fixed spatial size (``shape.step`` all 0), or None where sizes may vary."""
    inp = spec.inputs[0]
    if inp.shape_min is not None and inp.shape_step is not None and not any(inp.shape_step):
        return list(inp.shape_min)
    return None


def plain(spec) -> bool:
    """A network the tiler can call as it is: one input, one output of the input's size, any size."""
    return len(spec.inputs) == 1 and len(spec.outputs) == 1 and not spec.outputs[0].resized \
        and fixed_sizes(spec) is None


class NetworkCall:
    """``runner`` called the way the tiler calls a network (see the module docstring)."""

    def __init__(self, spec, runner):
        self.runner = runner
        self.in_channels = [t.n_channels for t in spec.inputs]
        self.out_channels = [t.n_channels for t in spec.outputs]
        self.zoom, self.offset = output_geometry(spec)
        self.fixed = fixed_sizes(spec)
        self.many = len(spec.inputs) > 1 or len(spec.outputs) > 1
        if self.many and not hasattr(runner, "run_many"):
            raise InputError(f"{spec.ref} has several input or output tensors; its runtime "
                             f"({getattr(runner, 'name', 'this runner')}) runs networks with one of each")
        self.name, self.on_gpu = getattr(runner, "name", "network"), getattr(runner, "on_gpu", False)

    def _pad(self, batch: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
        if self.fixed is None:
            return batch, []
        spatial = batch.shape[2:]
        if any(s > f for s, f in zip(spatial, self.fixed)):
            raise ZooError(f"tiles of {spatial} exceed the network's fixed input size {tuple(self.fixed)}")
        before = [(f - s) // 2 // z.denominator * z.denominator for s, f, z in zip(spatial, self.fixed, self.zoom)]
        pads = [(lo, f - s - lo) for lo, s, f in zip(before, spatial, self.fixed)]   # lo on the output's grid
        if not any(lo or hi for lo, hi in pads):
            return batch, []
        mode = "reflect" if all(lo < s and hi < s for (lo, hi), s in zip(pads, spatial)) else "symmetric"
        return np.pad(batch, [(0, 0), (0, 0)] + pads, mode=mode), pads

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if not self.many:
            return self.runner(batch)
        parts = np.split(batch, np.cumsum(self.in_channels)[:-1], axis=1)
        outputs = self.runner.run_many([np.ascontiguousarray(p) for p in parts])
        return np.concatenate(outputs, axis=1)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        padded, pads = self._pad(batch)
        y = self._run(padded)
        size = padded.shape[2:]
        want = [int(s * z) for s, z in zip(size, self.zoom)]
        grow = [w - g for w, g in zip(want, y.shape[2:])]
        if any(grow):      # a cropped output: back to the tile's grid, the edge repeated into the halo
            if any(g < 0 or g % 2 for g in grow):
                raise ZooError(f"the network returned spatial size {y.shape[2:]} for input {tuple(size)}; "
                               f"expected {tuple(want)} less an even crop")
            y = np.pad(y, [(0, 0), (0, 0)] + [(g // 2, g // 2) for g in grow], mode="edge")
        if pads:
            y = y[(slice(None), slice(None)) + tuple(
                slice(int(lo * z), int(lo * z) + int(s * z)) for (lo, _), s, z in zip(pads, batch.shape[2:], self.zoom))]
        return y

    def split_outputs(self, y: np.ndarray) -> list[np.ndarray]:
        """The concatenated output as one array per output tensor."""
        return np.split(y, np.cumsum(self.out_channels)[:-1], axis=1)

    def bytes_per_pixel(self, probe: tuple[int, ...]) -> float:
        return self.runner.bytes_per_pixel((probe[0], self.in_channels[0], *probe[2:]))


def crop_halo(offset: Sequence[int], zoom: Sequence[Fraction]) -> list[int]:
    """The input halo that hides an output crop (``offset`` < 0) from the stitched result."""
    return [math.ceil(max(0, -o) / 2 / z) for o, z in zip(offset, zoom)]
