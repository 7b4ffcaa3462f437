"""Export a network to ONNX with dynamic batch and spatial axes."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

OPSET = 17


def export(network, path: Path, example_shape: Sequence[int], opset: int = OPSET, output_ndim: int | None = None) -> Path:
    """Write ``network`` (eval mode, on CPU) as ONNX; axis 0 and every spatial axis are dynamic
    (the output's too, unless ``output_ndim`` says it has none: ``2`` for class scores)."""
    import onnx
    import torch

    network = network.cpu().eval()
    example = torch.zeros(tuple(example_shape), dtype=torch.float32)
    names = ["batch"] + [f"d{i}" for i in range(len(example_shape) - 2)]
    dynamic = {0: names[0], **{i + 2: n for i, n in enumerate(names[1:])}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(network, (example,), str(path), opset_version=opset, dynamo=False,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": dynamic, "output": dynamic if output_ndim is None else {0: "batch"}})
    onnx.checker.check_model(str(path))
    return path
