"""Device choice for both runners: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
from __future__ import annotations

import logging
import re

from ..errors import InputError

log = logging.getLogger("zoo.runtime")

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def parse(device: str) -> str:
    if not _DEVICE.match(device or ""):
        raise InputError(f"unknown device '{device}': expected auto, cpu, cuda or cuda:N")
    return device


def cores() -> int:
    """CPU cores this process may use (its affinity, not the machine's count)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:        # not on Linux
        return os.cpu_count() or 1


def _gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible to the system (without importing torch)."""
    import os

    return os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/version")


_warned: set[str] = set()


def _fall_back(runtime: str, why: str) -> None:
    """``auto`` found no usable GPU: say so once per runtime. A machine without a GPU is the
    normal case (info); a GPU that is present but unusable is worth a warning."""
    if runtime not in _warned:
        _warned.add(runtime)
        log.log(logging.WARNING if _gpu_present() else logging.INFO, "device auto: %s; running on CPU", why)


def onnx_providers(device: str) -> list:
    """ONNX Runtime execution providers for a device, best first."""
    import onnxruntime as ort

    device = parse(device)
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    has_cuda = "CUDAExecutionProvider" in available
    if not has_cuda:
        if device == "auto":
            _fall_back("onnx", "a GPU is present but ONNX Runtime has no CUDA provider (install the GPU extra: "
                               "pip install 'bioimage-zoo[gpu]')" if _gpu_present()
                       else "no CUDA GPU found for ONNX Runtime")
            return ["CPUExecutionProvider"]
        raise InputError(f"device '{device}' asked for, but ONNX Runtime has no CUDA provider here "
                         f"(available: {', '.join(available)}). Install the GPU extra "
                         "(pip install 'bioimage-zoo[gpu]') on a machine with CUDA, or use --device cpu.")
    index = int(device.split(":")[1]) if ":" in device else 0
    providers: list = []
    if "TensorrtExecutionProvider" in available and device == "auto":
        providers.append(("TensorrtExecutionProvider", {"device_id": index}))
    providers.append(("CUDAExecutionProvider", {"device_id": index}))
    providers.append("CPUExecutionProvider")
    return providers


def torch_device(device: str):
    import torch

    device = parse(device)
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if device == "auto":
            _fall_back("torch", "a GPU is present but this torch build cannot use it" if _gpu_present()
                       else "torch sees no CUDA GPU")
            return torch.device("cpu")
        raise InputError(f"device '{device}' asked for, but torch sees no CUDA GPU here. "
                         "Use --device cpu (or auto), or install a CUDA build of torch.")
    if device == "auto":
        return torch.device("cuda:0")
    return torch.device(device if ":" in device else "cuda:0")
