"""Fit a foreign ONNX graph to the zoo runtime's tensors: float32 ``b, c, *spatial`` in and out.

A bioimage.io model may declare other axis orders (``byxc``), no channel axis, or another
input type. Rather than teach every runner about layouts, the graph gets a few nodes in front
(cast, unsqueeze/squeeze, transpose) and behind; the original nodes are untouched. Graphs that
keep their data outside the file are refused: an imported package is one self-contained file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

IN, OUT = "zoo_input", "zoo_output"


def static_dims(model) -> tuple[list, list]:
    """The declared dims of the first input and output (ints where fixed, names or None where not)."""
    def dims(value):
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in value.type.tensor_type.shape.dim]
    return dims(model.graph.input[0]), dims(model.graph.output[0])


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)


def _axes_node(helper, model, op: str, source: str, target: str, axes: list[int]):
    """Squeeze/Unsqueeze in the form of the graph's opset (axes as an input from opset 13)."""
    if _opset(model) >= 13:
        name = f"{target}_axes"
        model.graph.initializer.append(helper.make_tensor(name, 7, [len(axes)], axes))   # 7 = INT64
        return helper.make_node(op, [source, name], [target])
    return helper.make_node(op, [source], [target], axes=axes)


def adapt(model, their_in: str, their_out: str, spatial: str):
    """Return ``model`` with input ``zoo_input`` and output ``zoo_output`` in the zoo's axes
    (``bc`` + ``spatial``, float32), given the axes the graph declares (e.g. ``byxc``, ``bzyx``).

    Both must have a batch axis; a missing channel axis becomes a channel of one."""
    import onnx
    from onnx import TensorProto, helper

    ours = "bc" + spatial
    for axes, what in ((their_in, "input"), (their_out, "output")):
        if "b" not in axes or set(axes) - set(ours):
            raise InputError(f"the {what} axes '{axes}' are not supported: bioimage-zoo imports graphs with a batch "
                             f"axis, an optional channel axis and the space axes {', '.join(spatial)}")
    graph = model.graph
    old_in, old_out = graph.input[0], graph.output[0]
    in_type = old_in.type.tensor_type.elem_type
    out_type = old_out.type.tensor_type.elem_type
    if their_in == ours and their_out == ours and in_type == out_type == TensorProto.FLOAT:
        return model

    front, current, layout = [], IN, ours
    if in_type != TensorProto.FLOAT:
        front.append(helper.make_node("Cast", [current], ["zoo_in_cast"], to=in_type))
        current = "zoo_in_cast"
    if "c" not in their_in:
        front.append(_axes_node(helper, model, "Squeeze", current, "zoo_in_squeezed", [1]))
        current, layout = "zoo_in_squeezed", "b" + spatial
    perm = [layout.index(a) for a in their_in]
    front.append(helper.make_node("Transpose", [current], [old_in.name], perm=perm) if perm != sorted(perm)
                 else helper.make_node("Identity", [current], [old_in.name]))

    back, current, layout = [], old_out.name, their_out
    if "c" not in layout:
        back.append(_axes_node(helper, model, "Unsqueeze", current, "zoo_out_unsqueezed", [len(layout)]))
        current, layout = "zoo_out_unsqueezed", layout + "c"
    perm = [layout.index(a) for a in ours]
    if out_type != TensorProto.FLOAT:
        back.append(helper.make_node("Transpose", [current], ["zoo_out_ordered"], perm=perm))
        back.append(helper.make_node("Cast", ["zoo_out_ordered"], [OUT], to=TensorProto.FLOAT))
    else:
        back.append(helper.make_node("Transpose", [current], [OUT], perm=perm))

    n = len(ours)
    new_in = helper.make_tensor_value_info(IN, TensorProto.FLOAT, ["batch", "channel", *spatial][:n])
    new_out = helper.make_tensor_value_info(OUT, TensorProto.FLOAT, ["batch", "channel", *spatial][:n])
    nodes = front + list(graph.node) + back
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.remove(old_in)
    graph.input.insert(0, new_in)
    graph.output.remove(old_out)
    graph.output.insert(0, new_out)
    onnx.checker.check_model(model)
    return model


def channels_last_output(model):
    """``model`` with its first output moved from ``b, c, *spatial`` to ``b, *spatial, c``."""
    import onnx
    from onnx import helper

    graph = model.graph
    old = graph.output[0]
    rank = len(old.type.tensor_type.shape.dim)
    graph.node.append(helper.make_node("Transpose", [old.name], ["channels_last"], perm=[0, *range(2, rank), 1]))
    new = helper.make_tensor_value_info("channels_last", old.type.tensor_type.elem_type,
                                        ["batch", *[f"d{i}" for i in range(rank - 2)], "channel"])
    graph.output.remove(old)
    graph.output.insert(0, new)
    onnx.checker.check_model(model)
    return model


def to_ours(array: np.ndarray, their_axes: str, spatial: str) -> np.ndarray:
    """A tensor in the graph's declared axes as the zoo's ``b, c, *spatial``."""
    if "c" not in their_axes:
        array, their_axes = array[..., None], their_axes + "c"
    return np.ascontiguousarray(np.transpose(array, [their_axes.index(a) for a in "bc" + spatial]))


def save(model, path: Path) -> Path:
    import onnx

    onnx.save(model, str(path), save_as_external_data=False)
    return path
