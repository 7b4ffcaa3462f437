"""A bioimage.io model description's tensors as the zoo's: axes, sizes, halos and ops.

Works on bioimage.io's own parsed description (format 0.5; a 0.4 description is converted by
bioimageio.spec first), so default axis ids, parametrized and fixed sizes and size references
read the same whatever format the file was written in. Every refusal names the field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from ..errors import InputError
from ..runtime.ops import POSTPROCESSING, PREPROCESSING
from ..spec import Op, TensorSpec

SPACE = ("z", "y", "x")


@dataclass
class Tensors:
    """The zoo's inputs and outputs, and each tensor's axis order in the network (``their``)."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    their_inputs: list[str]
    their_outputs: list[str]

    @property
    def spatial(self) -> str:
        return self.inputs[0].spatial_axes


def letters(tensor, where: str) -> str:
    """bioimage.io axes as the zoo's letters (``b``, ``c``, ``z``/``y``/``x``), in their order."""
    out = ""
    for axis in tensor.axes:
        kind, name = axis.type, str(axis.id)
        if kind == "batch":
            out += "b"
        elif kind == "channel":
            out += "c"
        elif kind == "space" and name in SPACE:
            out += name
        else:
            raise InputError(f"{where}.axes: the axis '{name}' ({kind}) is not supported: bioimage-zoo imports "
                             "batch, channel and space axes named z, y and x")
    return out


def _channels(tensor) -> list[str]:
    axis = next((a for a in tensor.axes if a.type == "channel"), None)
    if axis is None:
        return ["c0"]
    names = [str(n) for n in getattr(axis, "channel_names", None) or []]
    return names or [f"c{k}" for k in range(int(axis.size))]


def _batch_cap(tensor) -> int | None:
    axis = next((a for a in tensor.axes if a.type == "batch"), None)
    return int(axis.size) if axis is not None and isinstance(getattr(axis, "size", None), int) else None


def _input_sizes(tensor, by_id: dict, where: str) -> tuple[list[int], list[int]]:
    """(min, step) per spatial axis; a fixed size is step 0; a reference takes the other input's."""
    mins, steps = [], []
    for axis in (a for a in tensor.axes if a.type == "space"):
        size = axis.size
        if isinstance(size, int):
            mins.append(size), steps.append(0)
        elif hasattr(size, "step"):
            mins.append(int(size.min)), steps.append(int(size.step))
        elif hasattr(size, "tensor_id"):
            ref = by_id.get(str(size.tensor_id))
            ref_axis = next((a for a in ref.axes if str(a.id) == str(size.axis_id)), None) if ref else None
            if ref_axis is None or not isinstance(ref_axis.size, (int,)) and not hasattr(ref_axis.size, "step"):
                raise InputError(f"{where}.axes.{axis.id}.size: refers to {size.tensor_id}.{size.axis_id}, which "
                                 "is not an input axis of fixed or parametrized size")
            fixed = isinstance(ref_axis.size, int)
            mins.append(int(ref_axis.size if fixed else ref_axis.size.min) + int(size.offset or 0))
            steps.append(0 if fixed else int(ref_axis.size.step))
        else:
            raise InputError(f"{where}.axes.{axis.id}.size: {size!r} is not a size bioimage-zoo can tile")
    return mins, steps


def _output_geometry(tensor, inputs: dict, where: str) -> tuple[list[Fraction], list[int], list[int]]:
    """(zoom, offset, halo in output pixels) per spatial axis of an output."""
    zooms, offsets, halos = [], [], []
    for axis in (a for a in tensor.axes if a.type == "space"):
        size = axis.size
        halos.append(int(getattr(axis, "halo", 0) or 0))
        if hasattr(size, "tensor_id"):
            ref = inputs.get(str(size.tensor_id))
            ref_axis = next((a for a in ref.axes if str(a.id) == str(size.axis_id)), None) if ref else None
            if ref_axis is None:
                raise InputError(f"{where}.axes.{axis.id}.size: refers to {size.tensor_id}.{size.axis_id}, which is "
                                 "not an input axis")
            zooms.append(Fraction(float(ref_axis.scale) / float(axis.scale)).limit_denominator(64))
            offsets.append(int(size.offset or 0))
        elif isinstance(size, int):
            ref_axis = next((a for t in inputs.values() for a in t.axes if str(a.id) == str(axis.id)), None)
            if ref_axis is None or not isinstance(ref_axis.size, int):
                raise InputError(f"{where}.axes.{axis.id}.size: a fixed output size ({size}) of an input whose size "
                                 "varies: bioimage-zoo needs the output's size as a function of the input's")
            zooms.append(Fraction(size, int(ref_axis.size)))
            offsets.append(0)
        else:
            raise InputError(f"{where}.axes.{axis.id}.size: {size!r}: outputs whose size depends on the data are not "
                             "supported (bioimage-zoo tiles images and needs the output's size from the input's)")
    return zooms, offsets, halos


# ----------------------------------------------------------------------------- processing ops
def _axes_param(kwargs: dict) -> list[str] | None:
    axes = kwargs.get("axes")
    return None if axes is None else [a if isinstance(a, str) else a.get("id", "") for a in axes]


def zoo_op(kind: str, kwargs: dict, where: str, n_channels: int) -> Op | None:
    """One bioimage.io op as the zoo's (None: nothing to do in a float32 runtime)."""
    axes = _axes_param(kwargs)
    if kind in ("scale_range", "zero_mean_unit_variance"):
        joint = ("c" in axes or "channel" in axes) if axes is not None else n_channels > 1
        if kwargs.get("reference_tensor") or (joint and n_channels > 1):
            raise InputError(f"{where}: '{kind}' over {axes or 'the whole tensor'}"
                             f"{' of ' + kwargs['reference_tensor'] if kwargs.get('reference_tensor') else ''} has no "
                             "bioimage-zoo equivalent yet (the zoo normalises each image and channel on its own)")
        if kind == "scale_range":
            return Op("percentile_normalize", {"low": float(kwargs.get("min_percentile", 0.0)),
                                               "high": float(kwargs.get("max_percentile", 100.0))})
        return Op("zero_mean_unit_variance", {})
    if kind == "fixed_zero_mean_unit_variance":
        return Op("zero_mean_unit_variance", {"mean": kwargs["mean"], "std": kwargs["std"]})
    if kind == "scale_linear":
        return Op("scale_linear", {"gain": kwargs.get("gain", 1.0), "offset": kwargs.get("offset", 0.0)})
    if kind == "clip":
        return Op("clip", {k: kwargs[k] for k in ("min", "max") if kwargs.get(k) is not None})
    if kind == "sigmoid":
        return Op("sigmoid", {})
    if kind == "binarize":
        return Op("threshold", {"value": float(kwargs["threshold"])})
    if kind == "ensure_dtype":
        return None
    if kind == "stardist_postprocessing":     # same layout as ours: probability, then rays from x towards y
        if len(kwargs.get("grid") or []) != 2 or any(int(g) != 1 for g in kwargs["grid"]):
            raise InputError(f"{where}: StarDist post-processing on a grid of {kwargs.get('grid')} (or in 3D) is not "
                             "supported yet; bioimage-zoo's runs on every pixel of a 2D output")
        return Op("stardist_instances", {"prob_threshold": float(kwargs["prob_threshold"]),
                                         "nms_threshold": float(kwargs["nms_threshold"])})
    raise InputError(f"{where}: the bioimage.io op '{kind}' has no bioimage-zoo equivalent yet")


def zoo_ops(items, where: str, n_channels: int, allowed: dict) -> list[Op]:
    """A tensor's bioimage.io ops (parsed descriptions or plain dicts) as the zoo's."""
    out = []
    for k, item in enumerate(items or []):
        kind = item["id"] if isinstance(item, dict) else str(item.id)
        kwargs = (item.get("kwargs") or {}) if isinstance(item, dict) else \
            (item.kwargs.model_dump(mode="json") if getattr(item, "kwargs", None) is not None else {})
        op = zoo_op(kind, kwargs, f"{where}[{k}]", n_channels)
        if op is not None and op.op not in allowed:
            raise InputError(f"{where}[{k}]: the bioimage.io op '{kind}' is not supported there yet")
        if op is not None:
            out.append(op)
    return out


# ----------------------------------------------------------------------------- tensors
def tensors(descr) -> Tensors:
    """The zoo's tensors for a parsed model description (see the module docstring)."""
    by_id = {str(t.id): t for t in descr.inputs}
    their_in = [letters(t, f"inputs[{i}]") for i, t in enumerate(descr.inputs)]
    their_out = [letters(t, f"outputs[{i}]") for i, t in enumerate(descr.outputs)]
    spatial = "".join(a for a in "zyx" if a in their_in[0])
    for i, t in enumerate(their_in + their_out):
        if "".join(a for a in "zyx" if a in t) != spatial:
            raise InputError(f"the tensors' space axes differ ({', '.join(their_in + their_out)}): bioimage-zoo "
                             "imports models whose inputs and outputs share their space axes")
    geometry = []
    for i, t in enumerate(descr.outputs):     # in our order of space axes (z, y, x)
        order = [a for a in their_out[i] if a in SPACE]
        zoom, offset, halo = _output_geometry(t, by_id, f"outputs[{i}]")
        geometry.append(tuple([values[order.index(a)] for a in spatial] for values in (zoom, offset, halo)))
    inputs = []
    for i, t in enumerate(descr.inputs):
        mins, steps = _input_sizes(t, by_id, f"inputs[{i}]")
        order = [a for a in their_in[i] if a in SPACE]          # their order of space axes -> ours (z, y, x)
        mins, steps = [mins[order.index(a)] for a in spatial], [steps[order.index(a)] for a in spatial]
        halo = [0] * len(spatial)
        for zoom, offset, out_halo in geometry:       # the input halo that covers every output's halo and crop
            for k in range(len(spatial)):
                halo[k] = max(halo[k], math.ceil((out_halo[k] + max(0, -offset[k]) / 2) / zoom[k]))
        channels = _channels(t)
        inp = TensorSpec(name=str(t.id), axes="bc" + spatial, dtype="float32", channels=channels,
                         shape_min=mins, shape_step=steps, halo=halo if any(halo) else None,
                         description=(t.description or None), batch=_batch_cap(t))
        inp.preprocessing = zoo_ops(t.preprocessing, f"inputs[{i}].preprocessing", len(channels), PREPROCESSING)
        inputs.append(inp)
    outputs = []
    for i, (t, (zoom, offset, _)) in enumerate(zip(descr.outputs, geometry)):
        channels = _channels(t)
        out = TensorSpec(name=str(t.id), axes="bc" + spatial, dtype="float32", channels=channels,
                         description=(t.description or None))
        if any(z != 1 for z in zoom) or any(offset):
            out.scale = [int(z) if z.denominator == 1 else float(z) for z in zoom]
            out.offset = offset
        out.postprocessing = zoo_ops(t.postprocessing, f"outputs[{i}].postprocessing", len(channels), POSTPROCESSING)
        star = next((p for p in t.postprocessing or [] if str(p.id) == "stardist_postprocessing"), None)
        if star is not None:     # the graph gives the probability and the rays; the op makes labels
            out.channels = ["probability"] + [f"ray{k:02d}" for k in range(int(star.kwargs.n_rays))]
        outputs.append(out)
    return Tensors(inputs, outputs, their_in, their_out)
