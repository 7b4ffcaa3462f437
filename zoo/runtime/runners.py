"""Runners: the network as a function from a float32 batch to a float32 batch.

Both take and return numpy arrays in the spec's tensor axes (``b, c, *spatial``). The torch
runner needs the installed architecture's network file and the safetensors weights; the ONNX
runner needs neither torch nor Lightning.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from . import device as devices
from .onnx_session import open_session

log = logging.getLogger("zoo.runtime")

DEFAULT_REWRITES = ("split_concat", "upsample_subpixel", "upsample_conv")
"""The in-memory graph rewrites the ONNX runner applies unless told otherwise (see
:mod:`zoo.runtime.graph_rewrite`; both are exact up to float rounding, tested on every standard
package's test tensors)."""


PRECISIONS = {"torch": ("fp16", "bf16"), "onnx": ("fp16", "int8")}
"""Reduced precisions each runtime offers (``--precision``): torch by autocast, ONNX Runtime by a
float16 graph or static int8 quantization (see :mod:`zoo.runtime.precision`). None is the
default: float32."""


def check_precision(precision: str | None, runtime: str) -> None:
    if precision in (None, "fp32"):
        return
    if precision not in PRECISIONS.get(runtime, ()):
        from ..errors import InputError

        offers = {r: ", ".join(p) for r, p in PRECISIONS.items()}
        raise InputError(f"precision '{precision}' is not available with the {runtime} runtime "
                         f"(torch: {offers['torch']}; onnx: {offers['onnx']}); choose the runtime with --runtime")


class Runner(Protocol):
    name: str
    on_gpu: bool

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...

    def bytes_per_pixel(self, probe: tuple[int, ...]) -> float:
        """Estimated memory of the network's intermediate tensors per input pixel."""


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks instead of returning them to the system after every call.

    torch on CPU allocates and frees every activation per call; with glibc's defaults, large
    blocks are mapped and unmapped each time and the page faults cost about a third of the run
    (measured on the N2V U-Net, 764-px tiles, 2 cores: 0.69 -> 1.12 Mpx/s for +45% peak memory;
    ONNX Runtime gains only 5% for +70%, so it is left alone).
    Process-wide; set ZOO_MALLOC_TUNING=0 to leave malloc alone."""
    if os.environ.get("ZOO_MALLOC_TUNING", "1") == "0":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 256 << 20) == 1 and libc.mallopt(m_trim_threshold, 1 << 30) == 1
    except (OSError, AttributeError):   # not glibc (macOS, musl, Windows): nothing to tune
        return False
    log.info("glibc malloc keeps freed memory (ZOO_MALLOC_TUNING=0 to disable): %s", ok)
    return ok


def fold_batch_norm(module):
    """Fold every eval-mode batch norm that follows a convolution in a Sequential into that
    convolution (one pass over memory less per layer: +8% on the N2V U-Net on CPU)."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for child in module.children():
        fold_batch_norm(child)
    if isinstance(module, nn.Sequential):
        layers = list(module)
        for i, (conv, norm) in enumerate(zip(layers, layers[1:])):
            if isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and \
                    isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and norm.track_running_stats:
                module[i] = fuse_conv_bn_eval(conv, norm)
                module[i + 1] = nn.Identity()
    return module


class TorchRunner:
    """Runs a ``torch.nn.Module`` in eval mode under ``inference_mode``, channels-last where the
    convolutions are 2D or 3D (oneDNN on CPU and cuDNN on GPU are faster in that layout)."""

    name = "torch"

    def __init__(self, network, device: str = "auto", channels_last: bool = True, precision: str | None = None):
        import torch

        self._torch = torch
        check_precision(precision, self.name)
        self.precision = precision
        self._autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision or "")
        self.device = devices.torch_device(device)
        self.on_gpu = self.device.type == "cuda"
        if not self.on_gpu:
            keep_freed_memory()
        self.network = network.to(self.device).eval()
        self._formats = {4: torch.channels_last, 5: torch.channels_last_3d} if channels_last else {}
        self._converted: set[int] = set()

    @classmethod
    def from_package(cls, spec, root: Path, device: str = "auto", channels_last: bool = True,
                     precision: str | None = None) -> "TorchRunner":
        from .. import architectures
        from ..errors import InputError
        from ..package import readers

        if spec.graph_only:
            raise InputError(f"{spec.ref} is an ONNX graph without PyTorch weights (imported): run it with "
                             "runtime='onnx' (the default; `--runtime onnx` on the command line)")
        network = architectures.get(spec.architecture_id).build_network(spec.architecture_params)
        readers.load_weights(network, Path(root) / spec.weights.safetensors.file)
        return cls(fold_batch_norm(network.eval()), device, channels_last=channels_last, precision=precision)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            layout = self._formats.get(x.ndim)
            if layout is not None:
                if x.ndim not in self._converted:
                    self.network.to(memory_format=layout)
                    self._converted.add(x.ndim)
                x = x.contiguous(memory_format=layout)
            if self._autocast is not None:      # reduced precision inside, float32 out
                with torch.autocast(self.device.type, dtype=self._autocast):
                    return np.ascontiguousarray(self.network(x).float().cpu().numpy())
            return np.ascontiguousarray(self.network(x).float().cpu().numpy())

    def bytes_per_pixel(self, probe: tuple[int, ...]) -> float:
        from .memory import torch_bytes_per_pixel

        return torch_bytes_per_pixel(self.network, probe)


ARENA_MIN_FREE = 3 << 30
"""ONNX Runtime's memory arena is on where at least this much memory is free (it holds a tile's
activations between calls: about the tile budget of :mod:`zoo.runtime.memory`, 768 MiB at most)."""


def arena_allowed(on_gpu: bool = False) -> bool:
    """Whether the memory budget allows ONNX Runtime's CPU arena (``ZOO_ORT_ARENA=0|1`` decides)."""
    forced = os.environ.get("ZOO_ORT_ARENA")
    if forced in ("0", "1"):
        return forced == "1"
    from .memory import available_cpu_bytes

    return available_cpu_bytes() >= ARENA_MIN_FREE


def mem_pattern_allowed() -> bool:
    """Whether ONNX Runtime plans one block per input shape on CPU (``ZOO_ORT_MEM_PATTERN=0|1``
    decides; default off). Its pattern is allocated at the second call beside what the first call
    left in the arena, so it doubled a tile's memory (n2v-cbmi-2d, 992^2: 362 -> 748 MB) for no
    speed (1.04 Mpx/s without it, 0.98 with it, 2 threads)."""
    return os.environ.get("ZOO_ORT_MEM_PATTERN") == "1"


class OnnxRunner:
    """Runs an ONNX graph with ONNX Runtime (CUDA/TensorRT providers when present).

    The graph is rewritten in memory at load (:mod:`zoo.runtime.graph_rewrite`: skip
    connections' Concat split into two convolutions and an Add, and, where chosen, nearest
    upsampling + 3x3 convolution as one transposed convolution); the package's file is never
    changed. ``rewrites=()`` (or ``ZOO_ORT_REWRITES=none``) runs the graph as published.

    On CPU the memory arena is on where the free memory allows it (:func:`arena_allowed`):
    without it every call maps and unmaps each activation and the page faults cost 10-15% on
    the U-Nets; with it the largest tile's activations stay allocated between calls."""

    name = "onnx"

    def __init__(self, path: Path, device: str = "auto", threads: int | None = None,
                 rewrites=DEFAULT_REWRITES, arena: bool | None = None, precision: str | None = None,
                 calibration_inputs=None):
        import onnxruntime as ort

        from .graph_rewrite import rewrite

        check_precision(precision, self.name)
        self.precision = precision
        providers = devices.onnx_providers(device)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        on_cpu = providers == ["CPUExecutionProvider"]
        self.arena = arena_allowed() if arena is None else bool(arena)
        options.enable_cpu_mem_arena = self.arena if on_cpu else True
        options.enable_mem_pattern = mem_pattern_allowed() if on_cpu else True
        if threads or os.environ.get("ZOO_THREADS"):
            options.intra_op_num_threads = int(threads or os.environ["ZOO_THREADS"])
        options.log_severity_level = 3
        self.path = Path(path)
        forced = os.environ.get("ZOO_ORT_REWRITES")      # "none" or a comma list: for comparisons and bisecting
        if forced is not None:
            rewrites = () if forced.strip() in ("", "none") else tuple(r.strip() for r in forced.split(","))
        self.rewrites = tuple(rewrites)
        self.rewritten: dict[str, int] = {}

        def transform(data: bytes) -> bytes:
            out, self.rewritten = rewrite(data, self.rewrites)
            if precision:
                from .precision import reduce_onnx

                out = reduce_onnx(out, precision, calibration_inputs)
            return out

        self.session = open_session(path, options, providers,
                                    transform=transform if self.rewrites or precision else None)
        self.provider = self.session.get_providers()[0]
        self.on_gpu = self.provider != "CPUExecutionProvider"
        self._input = self.session.get_inputs()[0].name
        self._inputs = [i.name for i in self.session.get_inputs()]
        log.info("ONNX Runtime provider: %s (of %s); graph rewrites %s; arena %s", self.provider,
                 ", ".join(self.session.get_providers()),
                 ", ".join(f"{k} x{v}" for k, v in self.rewritten.items()) or "none",
                 "on" if options.enable_cpu_mem_arena else "off")

    @classmethod
    def from_package(cls, spec, root: Path, device: str = "auto", **settings) -> "OnnxRunner":
        if spec.weights.onnx is None:
            from ..errors import NotFoundError

            raise NotFoundError(f"{spec.ref} has no ONNX weights; use runtime='torch'")
        if settings.get("precision") == "int8" and settings.get("calibration_inputs") is None:
            from .precision import calibration_inputs

            settings["calibration_inputs"] = calibration_inputs(spec, root)
        return cls(Path(root) / spec.weights.onnx.file, device, **settings)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(None, {self._input: x})[0]

    def run_many(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """A graph with several inputs and outputs, in the graph's order."""
        feeds = {name: np.ascontiguousarray(b, dtype=np.float32) for name, b in zip(self._inputs, batches)}
        return list(self.session.run(None, feeds))

    def bytes_per_pixel(self, probe: tuple[int, ...]) -> float:
        from .memory import onnx_bytes_per_pixel

        return onnx_bytes_per_pixel(self.path, probe)


def single_threaded(runner) -> "OnnxRunner | None":
    """A copy of a CPU ONNX Runtime runner (``runtime="auto"``'s current one included) that runs
    each call on the calling thread alone: one intra-op thread, no pool to spin. Several threads
    can then each run one image at once through it (an ONNX Runtime session is safe to share),
    which on many small images wastes none of the time a pool spends waking and waiting. None
    where that does not apply: a GPU, torch (its thread count is one setting for the whole
    process), reduced precision."""
    base = getattr(runner, "inner", runner)
    if not isinstance(base, OnnxRunner) or base.on_gpu or base.precision:
        return None
    return OnnxRunner(base.path, "cpu", threads=1, rewrites=base.rewrites, arena=base.arena)


class TorchScriptRunner:
    """Runs an imported TorchScript module (``torch.jit.load``) on the chosen device.

    TorchScript is code: the module's TorchScript program runs in torch's interpreter (not
    Python; it cannot import modules). A package holds one only when its importer asked for it
    (``zoo import bioimageio --weights torchscript``); see SECURITY.md."""

    name = "torchscript"

    def __init__(self, path: Path, device: str = "auto"):
        import torch

        self._torch = torch
        self.device = devices.torch_device(device)
        self.on_gpu = self.device.type == "cuda"
        self.path = Path(path)
        self.module = torch.jit.load(str(path), map_location=self.device).eval()

    @classmethod
    def from_package(cls, spec, root: Path, device: str = "auto") -> "TorchScriptRunner":
        if spec.weights.torchscript is None:
            from ..errors import NotFoundError

            raise NotFoundError(f"{spec.ref} has no TorchScript weights; use runtime='onnx' or 'torch'")
        return cls(Path(root) / spec.weights.torchscript.file, device)

    def run_many(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self.module(*[torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)).to(self.device)
                                for b in batches])
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [np.ascontiguousarray(o.float().cpu().numpy()) for o in outs]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run_many([batch])[0]

    def bytes_per_pixel(self, probe: tuple[int, ...]) -> float:
        from .memory import FALLBACK_BYTES_PER_PIXEL

        return float(FALLBACK_BYTES_PER_PIXEL)


RUNTIMES = {"torch": TorchRunner, "onnx": OnnxRunner, "torchscript": TorchScriptRunner}
CHOICES = ("auto", "onnx", "torch")
"""What a user may ask for: ``auto`` (the default) is the fastest for the package on this machine,
chosen by :mod:`zoo.runtime.calibration` and cached."""


def create(spec, root: Path, runtime: str = "auto", device: str = "auto", precision: str | None = None) -> Runner:
    """The runner of ``runtime`` for a package. An imported TorchScript module runs only as
    TorchScript: ``auto``, ``onnx`` and ``torch`` name it for such a package. ``precision``
    (fp16, bf16, int8; default float32) with ``auto`` takes the runtime that offers it (torch for
    bf16 and fp16, ONNX Runtime for int8), without calibrating."""
    if runtime not in RUNTIMES and runtime != "auto":
        from ..errors import InputError

        raise InputError(f"unknown runtime '{runtime}': expected one of {', '.join(CHOICES)}")
    precision = None if precision in (None, "fp32") else precision
    weights = spec.weights
    if weights is not None and weights.torchscript is not None and weights.onnx is None:
        runtime = "torchscript"
    if precision is not None:
        if runtime == "auto":
            runtime = "onnx" if precision == "int8" or spec.graph_only else "torch"
            log.info("runtime auto: %s (offers precision %s)", runtime, precision)
        check_precision(precision, runtime)
        return RUNTIMES[runtime].from_package(spec, root, device, precision=precision)
    if runtime == "auto":
        from .calibration import choose_runner

        return choose_runner(spec, root, device, RUNTIMES)
    return RUNTIMES[runtime].from_package(spec, root, device)
