"""Pre/post-processing ops, by the names specs use. One implementation each, shared by every
runner. Arrays are float32 in the spec's tensor axes with batch and channel first
(``b, c, *spatial``). Ops that must be undone later (normalisation) leave what they need in
``context``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..classification.canvas import fit_canvas
from ..errors import SpecError
from ..segmentation.ops import INSTANCE_OPS

Context = dict[str, Any]
OpFunction = Callable[[np.ndarray, dict, Context, str], np.ndarray]

_MAX_STAT_SAMPLES = 1 << 22  # percentiles of huge images from a strided sample


def _stat_sample(x: np.ndarray) -> np.ndarray:
    """(b, c, n) view of at most ~4M values per image and channel, for statistics."""
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)
    stride = max(1, flat.shape[-1] // _MAX_STAT_SAMPLES)
    return flat[..., ::stride]


def percentile_normalize(x: np.ndarray, params: dict, context: Context, tensor: str) -> np.ndarray:
    """Map the ``low``/``high`` percentiles to 0/1: per image and channel, or stored values
    (``low_value``/``high_value``, e.g. the training set's) when the spec gives them."""
    if tensor in context.get("frozen", {}):
        lo, scale = context["frozen"][tensor]
        context.setdefault("scale", {})[tensor] = (lo, scale)
        return ((x - lo) / scale).astype(np.float32, copy=False)
    if "low_value" in params and "high_value" in params:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        lo = np.broadcast_to(np.asarray(params["low_value"], np.float32).reshape(shape), x.shape[:2] + (1,) * (x.ndim - 2))
        hi = np.broadcast_to(np.asarray(params["high_value"], np.float32).reshape(shape), lo.shape)
    else:
        low, high = float(params.get("low", 1.0)), float(params.get("high", 99.8))
        lo, hi = np.percentile(_stat_sample(x), [low, high], axis=-1)  # (b, c) each
        shape = lo.shape + (1,) * (x.ndim - 2)
        lo, hi = lo.reshape(shape).astype(np.float32), hi.reshape(shape).astype(np.float32)
    scale = np.maximum(hi - lo, np.float32(1e-6))
    context.setdefault("scale", {})[tensor] = (lo, scale)
    return ((x - lo) / scale).astype(np.float32, copy=False)


def zero_mean_unit_variance(x: np.ndarray, params: dict, context: Context, tensor: str) -> np.ndarray:
    """Subtract ``mean`` and divide by ``std`` (fixed values, or per image when not given)."""
    if tensor in context.get("frozen", {}):
        mean, std = context["frozen"][tensor]
        context.setdefault("scale", {})[tensor] = (mean, std)
        return ((x - mean) / std).astype(np.float32, copy=False)
    if "mean" in params and "std" in params:
        shape = (1, -1) + (1,) * (x.ndim - 2)   # a scalar or one value per channel
        mean = np.asarray(params["mean"], np.float32).reshape(shape)
        std = np.asarray(params["std"], np.float32).reshape(shape)
    else:
        sample = _stat_sample(x)
        shape = x.shape[:2] + (1,) * (x.ndim - 2)
        mean = sample.mean(axis=-1).reshape(shape).astype(np.float32)
        std = sample.std(axis=-1).reshape(shape).astype(np.float32)
    std = np.maximum(std, np.float32(1e-6))
    context.setdefault("scale", {})[tensor] = (mean, std)
    return ((x - mean) / std).astype(np.float32, copy=False)


def restore_input_scale(y: np.ndarray, params: dict, context: Context, tensor: str) -> np.ndarray:
    """Undo the normalisation of input ``input`` (restoration outputs in the input's units)."""
    source = params.get("input")
    scales = context.get("scale", {})
    if source not in scales:
        raise SpecError(f"restore_input_scale: input '{source}' was not normalised by a preprocessing op "
                        f"(normalised inputs: {sorted(scales) or 'none'})")
    offset, scale = scales[source]
    return (y * scale + offset).astype(np.float32, copy=False)


def _channel_param(value, ndim: int) -> np.ndarray:
    """A scalar or per-channel parameter shaped to broadcast over ``b, c, *spatial``."""
    return np.asarray(value, np.float32).reshape((1, -1) + (1,) * (ndim - 2))


def scale_linear(x: np.ndarray, params: dict, context: Context, tensor: str) -> np.ndarray:
    """``gain * x + offset`` (scalars or one value per channel)."""
    gain = _channel_param(params.get("gain", 1.0), x.ndim)
    offset = _channel_param(params.get("offset", 0.0), x.ndim)
    return (x * gain + offset).astype(np.float32, copy=False)


def scale_range(x: np.ndarray, params: dict, context: Context, tensor: str) -> np.ndarray:
    """Map fixed values ``min``/``max`` (e.g. 0 and 65535 for uint16 data) to 0/1."""
    lo = _channel_param(params["min"], x.ndim)
    hi = _channel_param(params["max"], x.ndim)
    return ((x - lo) / np.maximum(hi - lo, np.float32(1e-6))).astype(np.float32, copy=False)


def clip(x: np.ndarray, params: dict, context: Context, tensor: str) -> np.ndarray:
    return np.clip(x, params.get("min"), params.get("max")).astype(x.dtype, copy=False)


def sigmoid(x: np.ndarray, params: dict, context: Context, tensor: str) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32, copy=False)   # overflow-free form


def softmax(x: np.ndarray, params: dict, context: Context, tensor: str) -> np.ndarray:
    """Softmax over the channel axis."""
    shifted = np.exp(x - x.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)


def argmax(x: np.ndarray, params: dict, context: Context, tensor: str) -> np.ndarray:
    """Index of the largest channel, as a single ``int32`` channel (class labels)."""
    return np.argmax(x, axis=1)[:, None].astype(np.int32)


def threshold(x: np.ndarray, params: dict, context: Context, tensor: str) -> np.ndarray:
    """``x > value`` as ``uint8`` 0/1 (a mask)."""
    return (x > float(params.get("value", 0.5))).astype(np.uint8)


_SHARED: dict[str, OpFunction] = {
    "zero_mean_unit_variance": zero_mean_unit_variance,
    "scale_linear": scale_linear,
    "scale_range": scale_range,
    "clip": clip,
}
PREPROCESSING: dict[str, OpFunction] = {"percentile_normalize": percentile_normalize, "fit_canvas": fit_canvas,
                                         **_SHARED}
POSTPROCESSING: dict[str, OpFunction] = {
    "restore_input_scale": restore_input_scale,
    "sigmoid": sigmoid,
    "softmax": softmax,
    "argmax": argmax,
    "threshold": threshold,
    **_SHARED,
}
POSTPROCESSING.update(INSTANCE_OPS)


def freeze(context: Context) -> Context:
    """A context whose per-image statistics are fixed: later calls (tiles, bands of one image)
    reuse them instead of measuring each piece on its own."""
    return {"frozen": dict(context.get("scale", {}))}


def apply(ops, x: np.ndarray, context: Context, tensor: str, table: dict[str, OpFunction]) -> np.ndarray:
    for op in ops:
        x = table[op.op](x, op.params, context, tensor)
    return x
