"""Choosing tile and batch sizes from the memory there is.

The network's memory per input pixel is estimated once per model from its graph: the sum of
every intermediate tensor for a small probe input (ONNX shape inference, or forward hooks on
the torch module), divided by the probe's pixels. Not all of them are alive at once: on the N2V
U-Net the measured peak was 0.39 (ONNX Runtime) and 0.40 (torch) of that sum, so half of it is
taken as the peak. Tiles then take a share of the free memory (``MemAvailable`` and the cgroup
limit on CPU, free device memory on CUDA).
"""
from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

log = logging.getLogger("zoo.runtime")

CPU_SHARE, CPU_CAP = 0.25, 768 << 20      # on CPU bigger tiles stop paying off; batching never does
GPU_SHARE, GPU_MAX_BATCH, GPU_ASSUMED_FREE = 0.5, 16, 4 << 30
MAX_TILE = {2: 1024, 3: 160}
LIVE_FRACTION = 0.5
FALLBACK_BYTES_PER_PIXEL = 4096


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().split()[0]
        return None if text == "max" else int(text)
    except (OSError, ValueError, IndexError):
        return None


def available_cpu_bytes() -> int:
    """Memory this process may still use: MemAvailable, capped by a cgroup (v2 or v1) limit."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit and usage is not None and limit < 1 << 60:
            available = min(available, max(limit - usage, 0))
    return available


def available_gpu_bytes(index: int = 0) -> int | None:
    """Free memory on a CUDA device (through torch when it can see the device)."""
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info(index)[0])
    except Exception as e:   # noqa: BLE001 - a broken CUDA setup must not stop a CPU fallback
        log.info("cannot query GPU memory: %s", e)
    return None


def onnx_bytes_per_pixel(path: str | Path, probe: Sequence[int]) -> float:
    """Sum of every tensor's bytes in an ONNX graph for a ``probe`` input, per input pixel."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, probe):
        dim.Clear()
        dim.dim_value = int(value)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    total = 0
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        shape = info.type.tensor_type.shape.dim
        if shape and all(d.HasField("dim_value") for d in shape):
            total += 4 * math.prod(d.dim_value for d in shape)
    return total / math.prod(probe[2:]) if total else FALLBACK_BYTES_PER_PIXEL


def torch_bytes_per_pixel(network, probe: Sequence[int]) -> float:
    """Sum of every leaf module's output bytes for a ``probe`` input, per input pixel."""
    import torch

    total = 0

    def count(_module, _inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    leaves = [m for m in network.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        device = next(network.parameters()).device
        with torch.inference_mode():
            network(torch.zeros(tuple(probe), device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return total / math.prod(probe[2:]) if total else FALLBACK_BYTES_PER_PIXEL


@dataclass(frozen=True)
class TileChoice:
    tile: list[int]
    batch_size: int
    reason: str


POWER_OF_TWO_GAP = 32


def below_power_of_two(side: int) -> int:
    """A tile side at or just above a power of two (up to 1/16 above), moved to just below it.

    A tile of 2**k pixels a side makes every activation with a power-of-two channel count exactly
    a power of two bytes, and ONNX Runtime's CPU arena grows by chunks rounded up to the next
    power of two: with its own overhead each such tensor takes a chunk twice its size. Measured
    on n2v-cbmi-2d (one thread or two): 608 MiB anonymous after the first call of a 1024 px tile
    against 313 MiB for 992 px, and 865 against 690 MiB after the second."""
    if side < 4 * POWER_OF_TWO_GAP:
        return side
    power = 1 << (side.bit_length() - 1)
    return power - POWER_OF_TWO_GAP if side < power + power // 16 else side


BAND_COPIES = 2
"""The stitching band (a row of tiles across the whole image, float32, every output channel) is
held about twice at a flush (the finished rows in the writer, the pending seam in a fresh buffer)."""


def _side(n: int, budget: float, live: float, band_per_row: float) -> int:
    """The largest tile side ``s`` with ``s**n * live + s * band_per_row <= budget``."""
    if band_per_row <= 0:
        return max(int((budget / live) ** (1 / n)), 1)
    lo, hi = 1, max(int((budget / live) ** (1 / n)), 1)
    while lo < hi:                       # monotone in s: bisect
        mid = (lo + hi + 1) // 2
        if mid ** n * live + mid * band_per_row <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def useful_side(margins: Sequence[int]) -> int:
    """The smallest tile side of which at least half is the tile's core (not its margins) on
    every axis together: below it most of the network's work is context thrown away."""
    widest = max(margins, default=0)
    n = max(len(margins), 1)
    return math.ceil(2 * widest / (1 - 0.5 ** (1 / n))) if widest else 1


def choose(spatial: Sequence[int], bytes_per_pixel: float, margins: Sequence[int], on_gpu: bool,
           available: int | None = None, out_channels: int = 0, band_width: int | None = None) -> TileChoice:
    """The largest tile (and, on GPU, batch) whose activations, and the stitching band of a row of
    such tiles across the image (``out_channels`` float32 channels; 0: not counted), fit the
    memory share. Counting the band keeps a wide image's memory within the same budget as a
    narrow one's: its tiles get shorter instead of its band growing with the width, but never
    shorter than :func:`useful_side` while the free memory's share (uncapped) holds them: a
    16384 px wide StarDist output (33 channels) would otherwise run 184 px tiles, ~10x the work
    of 512 px ones, so there the band grows with the width instead. ``band_width``: the band's
    length along the last axis when the image is predicted in column strips (default: the image's)."""
    n = len(spatial)
    if available is None:
        # ONNX Runtime on CUDA without a CUDA torch cannot ask the device: assume a small GPU
        available = (available_gpu_bytes() or GPU_ASSUMED_FREE) if on_gpu else available_cpu_bytes()
    budget = available * GPU_SHARE if on_gpu else min(available * CPU_SHARE, CPU_CAP)
    live = max(bytes_per_pixel * LIVE_FRACTION, 1.0)
    pixels = max(budget / live, 1.0)
    band_spatial = list(spatial[1:])
    if band_width is not None and band_spatial:
        band_spatial[-1] = min(band_spatial[-1], band_width)
    band_per_row = BAND_COPIES * 4 * out_channels * math.prod(band_spatial) if n > 1 else 0
    side = _side(n, budget, live, band_per_row)
    floor = min(useful_side(margins), _side(n, budget, live, 0))
    kept = ""
    if side < floor:        # a wide many-channel band would shrink the tiles until most of the work is halo:
        roomy = available * (GPU_SHARE if on_gpu else CPU_SHARE)      # spend free memory instead, up to its share
        side = max(side, min(floor, _side(n, roomy, live, band_per_row)))
        kept = f"; tiles kept at {side} px for speed (half of each tile useful), band over the {budget / 2**20:.0f} MiB budget"
    # no need for tiles larger than the image (plus its margins) on any axis
    side = min(side, MAX_TILE[n] if n in MAX_TILE else side)
    # an axis that fits in one tile is one tile; the others are cut just below a power of two
    tile = [s + 2 * m if s + 2 * m <= side else min(below_power_of_two(side), s + 2 * m)
            for s, m in zip(spatial, margins)]
    batch = 1
    if on_gpu:
        batch = int(max(1, min(GPU_MAX_BATCH, pixels // max(math.prod(tile), 1))))
    reason = (f"{bytes_per_pixel * LIVE_FRACTION / 1024:.2f} KiB/pixel, {budget / 2**20:.0f} MiB budget of "
              f"{available / 2**20:.0f} MiB free" +
              (f", band {band_per_row * tile[0] / 2**20:.0f} MiB" if band_per_row else "") + kept)
    return TileChoice(tile=tile, batch_size=batch, reason=reason)


def return_freed_memory() -> None:
    """Hand memory freed since the last call back to the system (glibc ``malloc_trim``; nothing
    elsewhere). glibc keeps freed blocks under its mmap threshold (which grows to 32 MiB as large
    arrays are freed) in its heap: between the labelling of one band and the next, the
    labelling's freed temporaries stayed resident, and cellpose-dsb-2d's resident memory climbed
    band after band (16384^2, one thread: 1305 -> 1728 -> 1800 MB between bands)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):      # not glibc (macOS, musl without it, Windows)
        return None
