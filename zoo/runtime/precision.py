"""Reduced precision for ONNX Runtime, made in memory from the float32 graph (never the default).

- ``fp16``: every float tensor and operator in float16, inputs and outputs kept float32 (ONNX
  Runtime's own converter). On CPUs without float16 arithmetic ONNX Runtime falls back to
  casts around float32 kernels, so this pays off on GPUs only.
- ``int8``: static quantization (QDQ, weights per output channel int8, activations uint8), its
  ranges calibrated on the package's own test input after the declared pre-processing.

torch's reduced precisions (``bf16``, ``fp16``) are autocast in :class:`zoo.runtime.runners.TorchRunner`.
The quality change of each is measured in ``scripts/bench_predict.py --precision-report``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def calibration_inputs(spec, root) -> list[np.ndarray]:
    """Network inputs to calibrate int8 ranges: the package's test input, pre-processed as the
    runtime would (and its mirror images, so that a small test tile covers more structure)."""
    from . import ops

    inp = spec.inputs[0]
    x = np.load(Path(root) / spec.test.inputs[0].file, allow_pickle=False).astype(np.float32) \
        if getattr(spec, "test", None) is not None and spec.test.inputs else \
        np.random.default_rng(0).random((1, inp.n_channels) + (64,) * len(inp.spatial_axes), dtype=np.float32)
    x = ops.apply(inp.preprocessing, x, {}, inp.name, ops.PREPROCESSING)
    return [x, np.ascontiguousarray(x[..., ::-1]), np.ascontiguousarray(np.flip(x, axis=-2))]


def reduce_onnx(data: bytes, precision: str, inputs: list[np.ndarray] | None = None) -> bytes:
    import onnx

    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load_model_from_string(data), keep_io_types=True)
        return model.SerializeToString()
    if precision == "int8":
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        model = onnx.load_model_from_string(data)
        name = model.graph.input[0].name
        feeds = iter([{name: x} for x in (inputs or [])])

        class Reader(CalibrationDataReader):
            def get_next(self):
                return next(feeds, None)

        with tempfile.TemporaryDirectory(prefix="zoo-int8-") as tmp:
            source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            source.write_bytes(data)
            quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            return target.read_bytes()
    raise ValueError(f"unknown precision {precision}")
