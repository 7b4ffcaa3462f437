"""The default runtime: the fastest runner for this package on this machine, measured once.

``runtime="auto"`` (the default of ``zoo.load`` and of every command) runs a short calibration
the first time a package predicts a large image on a machine (at least ``CALIBRATE_PIXELS``,
4 Mpx: a 2048 x 2048 image, where the calibration's few seconds are a small part of the work;
until then, and for small images, ONNX Runtime runs, which loads fastest). Every candidate
(ONNX Runtime with the graph rewrites of :mod:`zoo.runtime.graph_rewrite`: sub-pixel or
transposed convolutions, or the Concat split alone; torch channels-last or NCHW) predicts a
probe tile (256 x 256 in 2D, 48^3 in 3D) after one warm-up call, interleaved, up to three
rounds (fewer past 3 s), and the fastest by its best round wins. The choice and the
measurements go to a small JSON cache keyed by the package's weights (their sha256) and the
machine (CPU model, cores this process may use, thread setting, device, ONNX Runtime and torch
versions), so that later loads build the chosen runner alone.
Every choice is logged (``zoo.runtime``, INFO) with where it came from.

The cache lives in ``$ZOO_CALIBRATION`` (a file), else ``$XDG_CACHE_HOME/bioimage-zoo-calibration.json``
(``~/.cache/...``): per machine, not per registry, so a fresh ``ZOO_HOME`` reuses it.
``ZOO_CALIBRATE=0`` skips measuring (ONNX Runtime, the previous default); ``ZOO_RUNTIME=onnx|torch``
overrides the default outright. Measuring makes torch tune glibc's malloc for the process
(``zoo.runtime.runners.keep_freed_memory``), once per package and machine.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np

log = logging.getLogger("zoo.runtime")

PROBE = {2: 256, 3: 48}
CALIBRATE_PIXELS = 1 << 22
"""A prediction of at least this many pixels (``ZOO_CALIBRATE_PIXELS``) resolves ``auto`` by measuring."""
ROUNDS = 3
BUDGET_SECONDS = 3.0
"""Timed rounds stop after this long (at least one round): the calibration stays short on a busy machine."""
CACHE_VERSION = 2    # 2: sub-pixel and transposed-convolution candidates


def cache_path() -> Path:
    env = os.environ.get("ZOO_CALIBRATION")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bioimage-zoo-calibration.json"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict:
    """What makes one runner faster than another here (no torch import)."""
    from .device import cores

    return {"cpu": _cpu_model(), "arch": platform.machine(), "cores": cores(),
            "threads": os.environ.get("ZOO_THREADS", ""), "device": device,
            "gpu": os.path.exists("/dev/nvidia0"), "onnxruntime": _version("onnxruntime"),
            "torch": _version("torch"), "calibration": CACHE_VERSION}


def key_of(spec, device: str) -> str:
    weights = [f.sha256 for f in spec.weights.files()] if spec.weights is not None else []
    text = json.dumps({"weights": weights, "machine": machine(device)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, record: dict) -> None:
    """Merge one record into the cache (atomic rename; a lost race only costs a re-calibration)."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache()
        data[key] = record
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as e:
        log.info("cannot write the calibration cache %s: %s", path, e)


# a candidate: (label, runtime, settings for its from_package)
CANDIDATES = (
    ("onnx", "onnx", {}),
    ("onnx-convtranspose", "onnx", {"rewrites": ("split_concat", "upsample_conv")}),
    ("onnx-split-only", "onnx", {"rewrites": ("split_concat",)}),
    ("torch", "torch", {}),
    ("torch-nchw", "torch", {"channels_last": False}),
)


def _settings(label: str) -> tuple[str, dict]:
    for name, runtime, settings in CANDIDATES:
        if name == label:
            return runtime, dict(settings)
    raise KeyError(label)


def probe_input(spec) -> np.ndarray:
    """A probe tile the network takes (noise in [0, 1))."""
    inp = spec.inputs[0]
    n = len(inp.spatial_axes)
    side = PROBE.get(n, 32)
    shape = [m if st == 0 else max(m, -(-side // st) * st)
             for m, st in zip(inp.shape_min or [1] * n, inp.shape_step or [1] * n)]
    return np.random.default_rng(0).random((1, inp.n_channels, *shape), dtype=np.float32)


def candidates_for(spec) -> list[str]:
    weights = spec.weights
    labels = []
    if weights is not None and weights.onnx is not None:
        labels += ["onnx", "onnx-convtranspose", "onnx-split-only"]
    if weights is not None and weights.safetensors is not None and not spec.graph_only:
        labels += ["torch", "torch-nchw"]
    return labels


def measure(spec, root, device: str, labels: list[str], runtimes: dict, rounds: int = ROUNDS,
            built: dict | None = None) -> tuple[dict, dict]:
    """(seconds of each candidate's best round on the probe, the built runners); ``runtimes``:
    runner classes by runtime name (:data:`zoo.runtime.runners.RUNTIMES`); ``built``: runners
    already made, by label."""
    x = probe_input(spec)
    ready, built, best, first_error = dict(built or {}), {}, {}, None
    for label in labels:
        runtime, settings = _settings(label)
        try:
            runner = ready.get(label) or runtimes[runtime].from_package(spec, root, device, **settings)
            runner(x)                       # warm-up: session, allocator, layout conversion
        except Exception as e:   # noqa: BLE001 - a candidate that cannot run is not a candidate
            log.info("calibration: %s cannot run %s (%s)", label, spec.ref, (str(e).splitlines() or [""])[0][:200])
            first_error = first_error or e
            continue
        built[label], best[label] = runner, float("inf")
    started = time.perf_counter()
    for _ in range(rounds):
        if best and all(v < float("inf") for v in best.values()) and time.perf_counter() - started > BUDGET_SECONDS:
            break
        for label, runner in built.items():
            start = time.perf_counter()
            runner(x)
            best[label] = min(best[label], time.perf_counter() - start)
    if not built and first_error is not None:
        raise first_error           # no candidate runs: the first one's own error says why
    return {k: v for k, v in best.items() if v < float("inf")}, built


def choose_runner(spec, root, device: str, runtimes: dict):
    """The runner ``runtime="auto"`` gives for a package: the cached choice, or an
    :class:`AutoRunner` that runs ONNX Runtime until a large prediction measures the candidates
    (``runtimes``: runner classes by name, passed in so that this module imports no runner)."""
    from . import device as devices

    devices.parse(device)
    labels = candidates_for(spec)
    forced = os.environ.get("ZOO_RUNTIME", "")
    if forced in ("onnx", "torch"):
        log.info("runtime auto: %s (ZOO_RUNTIME)", forced)
        return runtimes[forced].from_package(spec, root, device)
    if len(labels) <= 3 or os.environ.get("ZOO_CALIBRATE", "1") == "0":      # ONNX graphs alone: the default rewrites
        label = labels[0] if labels else "onnx"
        runtime, settings = _settings(label)
        log.info("runtime auto: %s (%s)", label, "nothing to compare" if len(labels) <= 3 else "ZOO_CALIBRATE=0")
        return runtimes[runtime].from_package(spec, root, device, **settings)
    record = _read_cache().get(key_of(spec, device))
    if record and record.get("choice") in labels:
        runtime, settings = _settings(record["choice"])
        log.info("runtime auto: %s for %s (calibrated %s: %s; cache %s)", record["choice"], spec.ref,
                 record.get("when", "?"), _rates(record), cache_path())
        return runtimes[runtime].from_package(spec, root, device, **settings)
    return AutoRunner(spec, root, device, runtimes, labels)


def calibrate_pixels() -> int:
    try:
        return int(os.environ.get("ZOO_CALIBRATE_PIXELS", CALIBRATE_PIXELS))
    except ValueError:
        return CALIBRATE_PIXELS


class AutoRunner:
    """``runtime="auto"`` before it is measured: ONNX Runtime (the first candidate) runs until the
    predictor announces a prediction of at least :func:`calibrate_pixels` pixels
    (:meth:`resolve`); then every candidate is measured, the fastest runs from there on, and the
    choice is cached for later loads. Anything else is the current runner's."""

    def __init__(self, spec, root, device: str, runtimes: dict, labels: list[str]):
        self.spec, self.root, self.device, self.runtimes, self.labels = spec, root, device, runtimes, labels
        runtime, settings = _settings(labels[0])
        self.inner = runtimes[runtime].from_package(spec, root, device, **settings)
        self.resolved = False
        log.info("runtime auto: %s for %s until a prediction of %d px or more measures the others (%s)",
                 labels[0], spec.ref, calibrate_pixels(), ", ".join(labels[1:]))

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def on_gpu(self) -> bool:
        return self.inner.on_gpu

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.inner(batch)

    def bytes_per_pixel(self, probe) -> float:
        return self.inner.bytes_per_pixel(probe)

    def __getattr__(self, name):        # provider, session, rewritten, run_many ... of the runner in use
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def resolve(self, pixels: int) -> bool:
        """Measure now if ``pixels`` are about to be predicted and it was not done; True when the
        runner changed (the caller re-plans its tiles)."""
        if self.resolved or pixels < calibrate_pixels():
            return False
        self.resolved = True
        before = self.inner
        self.inner = calibrate(self.spec, self.root, self.device, self.runtimes, self.labels,
                               built={self.labels[0]: self.inner})
        return self.inner is not before


def calibrate(spec, root, device: str, runtimes: dict, labels: list[str], built: dict | None = None):
    """Measure the candidates, cache and log the choice, return its runner."""
    started = time.perf_counter()
    seconds, runners = measure(spec, root, device, labels, runtimes, built=built)
    choice = min(seconds, key=seconds.get)
    pixels = int(np.prod(probe_input(spec).shape[2:]))
    record = {"choice": choice, "package": spec.ref, "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "probe": list(probe_input(spec).shape), "mpx_per_s": {k: pixels / 1e6 / s for k, s in seconds.items()},
              "calibration_seconds": round(time.perf_counter() - started, 2), "machine": machine(device)}
    _write_cache(key_of(spec, device), record)
    log.info("runtime auto: %s for %s (calibrated now in %.1f s: %s; cached in %s)", choice, spec.ref,
             record["calibration_seconds"], _rates(record), cache_path())
    return runners[choice]


def _rates(record: dict) -> str:
    rates = record.get("mpx_per_s", {})
    return ", ".join(f"{k} {v:.2f} Mpx/s" for k, v in sorted(rates.items(), key=lambda kv: -kv[1]))
