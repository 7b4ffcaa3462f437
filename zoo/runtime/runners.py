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

log = logging.getLogger("zoo.runtime")


class Runner(Protocol):
    name: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchRunner:
    """Runs a ``torch.nn.Module`` in eval mode under ``inference_mode``."""

    name = "torch"

    def __init__(self, network, device: str = "auto"):
        import torch

        self._torch = torch
        self.device = devices.torch_device(device)
        self.network = network.to(self.device).eval()

    @classmethod
    def from_package(cls, spec, root: Path, device: str = "auto") -> "TorchRunner":
        from safetensors.torch import load_file

        from .. import architectures

        network = architectures.get(spec.architecture_id).build_network(spec.architecture_params)
        state = load_file(str(Path(root) / spec.weights.safetensors.file))
        network.load_state_dict(state, strict=True)
        return cls(network, device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            return self.network(x).float().cpu().numpy()


class OnnxRunner:
    """Runs an ONNX graph with ONNX Runtime (CUDA/TensorRT providers when present)."""

    name = "onnx"

    def __init__(self, path: Path, device: str = "auto", threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads or os.environ.get("ZOO_THREADS"):
            options.intra_op_num_threads = int(threads or os.environ["ZOO_THREADS"])
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=options,
                                            providers=devices.onnx_providers(device))
        self.provider = self.session.get_providers()[0]
        self._input = self.session.get_inputs()[0].name
        log.info("ONNX Runtime provider: %s", self.provider)

    @classmethod
    def from_package(cls, spec, root: Path, device: str = "auto") -> "OnnxRunner":
        if spec.weights.onnx is None:
            from ..errors import NotFoundError

            raise NotFoundError(f"{spec.ref} has no ONNX weights; use runtime='torch'")
        return cls(Path(root) / spec.weights.onnx.file, device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(None, {self._input: x})[0]


RUNTIMES = {"torch": TorchRunner, "onnx": OnnxRunner}


def create(spec, root: Path, runtime: str = "onnx", device: str = "auto") -> Runner:
    if runtime not in RUNTIMES:
        from ..errors import InputError

        raise InputError(f"unknown runtime '{runtime}': expected one of {', '.join(RUNTIMES)}")
    return RUNTIMES[runtime].from_package(spec, root, device)
