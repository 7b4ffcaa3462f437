"""Rewriting a U-Net's ONNX graph in memory so that ONNX Runtime runs it as fast as torch.

Two exact rewrites (the same function, up to float rounding), applied at load to the graph's
bytes; the package's file is never changed:

- **Concat split.** ``Conv(Concat(a, b))`` over channels is ``Conv_a(a) + Conv_b(b)``, the
  kernel split along its input channels (the bias kept once). The skip connection's Concat,
  a full copy of both tensors, disappears; ONNX Runtime fuses the Add into the second
  convolution (its NCHWc kernels take a "sum" input).
- **Upsample + Conv.** A 3x3 convolution (padding 1) over a nearest-neighbour 2x upsampling is
  a 4x4 transposed convolution with stride 2 and padding 1 over the low-resolution input: the
  two output phases of every axis see two input pixels each, weighted by the kernel's taps
  summed as the upsampling repeats them (``t = [w2, w1 + w2, w0 + w1, w0]`` per axis). The
  upsampled tensor is never built, and the work falls to 4/9 (2D) or 8/27 (3D) of the
  convolution's. ONNX Runtime runs transposed convolutions outside its blocked (NCHWc) kernels,
  at about half their speed, so in 2D the same arithmetic goes as a **sub-pixel convolution**:
  a 2x2 convolution (padding 1) with four outputs per channel at low resolution (one per output
  phase, ``[w0, w1 + w2]`` and ``[w0 + w1, w2]`` per axis), DepthToSpace, and a crop of one
  pixel on every side (the odd phase sits one row early). Which of these is fastest depends on
  the machine; the calibration (:mod:`zoo.runtime.calibration`) measures them.

Each rewrite applies only where the pattern is exact (a Concat whose output feeds one
convolution only, over channels with known counts; a Resize/Upsample with scale 2 on every
spatial axis and nearest mode with floor-or-half-pixel rounding; a 3x3(x3) convolution with
padding 1, stride 1, dilation 1, one group); anything else is left as it is.
"""
from __future__ import annotations

import logging
from typing import Iterable

import numpy as np

log = logging.getLogger("zoo.runtime")

REWRITES = ("split_concat", "upsample_subpixel", "upsample_conv")
"""Every rewrite, in the order they apply (the Concat split first exposes Resize -> Conv; the
sub-pixel form takes the 2D upsamplings, the transposed convolution what is left: 3D)."""

# per axis, the transposed kernel's 4 taps from the 3 of the convolution over a 2x nearest upsampling
_PHASES = np.array([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=np.float64)
# per axis, the 2-tap kernels of the two output phases (rows p-1, p of the input padded by one):
# the odd phase first, as DepthToSpace then puts it at the even position one row early
_SUBPIXEL = np.array([[[1, 1, 0], [0, 0, 1]],      # odd output rows 2i+1: rows i, i+1 -> w0+w1, w2
                      [[1, 0, 0], [0, 1, 1]]],     # even output rows 2i: rows i-1, i -> w0, w1+w2
                     dtype=np.float64)


def rewrite(data: bytes, which: Iterable[str] = REWRITES) -> tuple[bytes, dict[str, int]]:
    """The graph's bytes with the rewrites ``which`` applied, and how often each applied."""
    import onnx

    which = [w for w in REWRITES if w in set(which)]
    unknown = set(which) - set(REWRITES)
    if unknown:
        raise ValueError(f"unknown graph rewrites {sorted(unknown)}; known: {', '.join(REWRITES)}")
    counts = {w: 0 for w in which}
    if not which:
        return data, counts
    model = onnx.load_model_from_string(data)
    if model.graph.node and any(n.op_type == "If" or n.op_type == "Loop" for n in model.graph.node):
        return data, counts     # control flow: leave it alone
    graph = _Graph(model)
    if "split_concat" in which:
        counts["split_concat"] = graph.split_concats()
    if "upsample_subpixel" in which:
        counts["upsample_subpixel"] = graph.upsample_convs(subpixel=True)
    if "upsample_conv" in which:
        counts["upsample_conv"] = graph.upsample_convs()
    if not any(counts.values()):
        return data, counts
    graph.finish()
    return model.SerializeToString(), counts


class _Graph:
    """A graph with the look-ups the rewrites need (producers, consumers, constants, channels)."""

    def __init__(self, model):
        import onnx

        self.onnx = onnx
        self.model = model
        self.graph = model.graph
        self.init = {t.name: t for t in self.graph.initializer}
        self.constants = {}
        for node in self.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
        self.channels = self._channels()
        self._names: set[str] = {n.name for n in self.graph.node} | {o for n in self.graph.node for o in n.output}
        self._counter = 0

    # ------------------------------------------------------------------ look-ups
    def _channels(self) -> dict[str, int]:
        """Static channel counts (axis 1) of every tensor shape inference can tell."""
        onnx = self.onnx
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model, strict_mode=False)
        except Exception:   # noqa: BLE001 - no shapes: the Concat split just does not apply
            return {}
        out = {}
        for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            dims = info.type.tensor_type.shape.dim
            if len(dims) >= 2 and dims[1].HasField("dim_value"):
                out[info.name] = dims[1].dim_value
        return out

    def array(self, name: str) -> np.ndarray | None:
        if name in self.init:
            return self.onnx.numpy_helper.to_array(self.init[name])
        return self.constants.get(name)

    def consumers(self, name: str) -> list:
        return [n for n in self.graph.node if name in n.input]

    def producer(self, name: str):
        return next((n for n in self.graph.node if name in n.output), None)

    def is_output(self, name: str) -> bool:
        return any(o.name == name for o in self.graph.output)

    def attrs(self, node) -> dict:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def fresh(self, stem: str) -> str:
        while True:
            self._counter += 1
            name = f"{stem}__zoo{self._counter}"
            if name not in self._names and name not in self.init:
                self._names.add(name)
                return name

    def add_weight(self, stem: str, value: np.ndarray) -> str:
        name = self.fresh(stem)
        tensor = self.onnx.numpy_helper.from_array(np.ascontiguousarray(value.astype(np.float32)), name)
        self.graph.initializer.append(tensor)
        self.init[name] = tensor
        return name

    def replace(self, old: list, new: list) -> None:
        """Put ``new`` nodes where the first of ``old`` was (keeping the topological order). Nodes are
        told apart by their outputs: rebuilding the node list copies the protobuf messages."""
        gone = {tuple(n.output) for n in old}
        nodes = list(self.graph.node)
        at = min(i for i, n in enumerate(nodes) if tuple(n.output) in gone)
        kept = [n for n in nodes if tuple(n.output) not in gone]
        at = sum(1 for n in nodes[:at] if tuple(n.output) not in gone)
        del self.graph.node[:]
        self.graph.node.extend(kept[:at] + new + kept[at:])

    def current(self, kind: tuple[str, ...]) -> list:
        """The nodes of these op types now in the graph (the list is re-read after each rewrite)."""
        return [n for n in self.graph.node if n.op_type in kind]

    def conv_plain(self, node, kernel: int | None = None) -> bool:
        """A Conv with one group, stride 1 and dilation 1 (and, given ``kernel``, that kernel with padding
        kernel // 2 on every side), weights and bias constant."""
        if node.op_type != "Conv" or self.array(node.input[1]) is None:
            return False
        if len(node.input) > 2 and node.input[2] and self.array(node.input[2]) is None:
            return False
        a = self.attrs(node)
        w = self.array(node.input[1])
        n = w.ndim - 2
        if a.get("group", 1) != 1 or any(s != 1 for s in a.get("strides", [1] * n)) or \
                any(d != 1 for d in a.get("dilations", [1] * n)) or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            return False
        if kernel is not None:
            pads = a.get("pads", [0] * 2 * n)
            return list(w.shape[2:]) == [kernel] * n and list(pads) == [kernel // 2] * 2 * n
        return True

    # ------------------------------------------------------------------ Concat split
    def split_concats(self) -> int:
        done, seen = 0, set()
        while True:
            concat = next((n for n in self.current(("Concat",)) if n.output[0] not in seen), None)
            if concat is None:
                return done
            seen.add(concat.output[0])
            users = self.consumers(concat.output[0])
            if len(users) != 1 or self.is_output(concat.output[0]):
                continue
            conv = users[0]
            axis = self.attrs(concat).get("axis")
            if conv.input[0] != concat.output[0] or not self.conv_plain(conv) or axis not in (1, -len(self.array(conv.input[1]).shape)):
                continue
            widths = [self.channels.get(i) for i in concat.input]
            w = self.array(conv.input[1])
            if any(c is None for c in widths) or sum(widths) != w.shape[1]:
                continue
            attrs = [a for a in conv.attribute]
            bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
            new, parts, start = [], [], 0
            for k, (source, width) in enumerate(zip(concat.input, widths)):
                weight = self.add_weight(conv.input[1] + "_part", w[:, start:start + width])
                start += width
                out = self.fresh(conv.output[0] + "_part")
                inputs = [source, weight] + ([bias] if bias and k == len(widths) - 1 else [])
                node = self.onnx.helper.make_node("Conv", inputs, [out], name=self.fresh((conv.name or "conv") + "_part"))
                node.attribute.extend(attrs)
                new.append(node)
                parts.append(out)
            total = parts[0]
            for k, part in enumerate(parts[1:], 1):
                target = conv.output[0] if k == len(parts) - 1 else self.fresh(conv.output[0] + "_sum")
                # the last convolution's output second: ONNX Runtime fuses "Conv + Add" when the Conv comes first
                new.append(self.onnx.helper.make_node("Add", [part, total], [target], name=self.fresh("split_add")))
                total = target
            self.replace([concat, conv], new)
            done += 1

    # ------------------------------------------------------------------ Upsample + Conv
    def _nearest_x2(self, node) -> bool:
        """A Resize/Upsample that repeats every spatial pixel twice (nearest, scale 2, batch and channels kept)."""
        if node.op_type not in ("Resize", "Upsample"):
            return False
        a = self.attrs(node)
        mode = a.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "nearest":
            return False
        if node.op_type == "Resize":
            ctm = a.get("coordinate_transformation_mode", b"half_pixel")
            ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
            nearest = a.get("nearest_mode", b"round_prefer_floor")
            nearest = nearest.decode() if isinstance(nearest, bytes) else nearest
            # asymmetric: source = floor(o / 2) needs floor; half-pixel: (o + 0.5) / 2 - 0.5 never ties
            if not ((ctm == "asymmetric" and nearest == "floor") or
                    (ctm in ("half_pixel", "pytorch_half_pixel") and nearest in ("round_prefer_floor", "round_prefer_ceil"))):
                return False
            if a.get("antialias", 0) or a.get("axes") or a.get("exclude_outside", 0):
                return False
            scales = self.array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if len(node.input) > 3 and node.input[3]:
                return False   # sizes given instead of scales
        else:
            scales = self.array(node.input[1]) if len(node.input) > 1 else None
        if scales is None or scales.ndim != 1 or len(scales) < 3:
            return False
        return bool(scales[0] == 1 and scales[1] == 1 and np.all(scales[2:] == 2))

    def upsample_convs(self, subpixel: bool = False) -> int:
        done, seen = 0, set()
        while True:
            resize = next((n for n in self.current(("Resize", "Upsample")) if n.output[0] not in seen), None)
            if resize is None:
                return done
            seen.add(resize.output[0])
            users = self.consumers(resize.output[0])
            if len(users) != 1 or self.is_output(resize.output[0]) or not self._nearest_x2(resize):
                continue
            conv = users[0]
            if conv.input[0] != resize.output[0] or not self.conv_plain(conv, kernel=3):
                continue
            w = self.array(conv.input[1]).astype(np.float64)   # (out, in, 3, 3[, 3])
            n = w.ndim - 2
            if subpixel:
                if n != 2:
                    continue      # DepthToSpace is 2D only
                self.replace([resize, conv], self._subpixel(resize, conv, w))
                done += 1
                continue
            t = w
            for axis in range(n):   # taps of each spatial axis: 3 -> 4
                t = np.moveaxis(np.tensordot(t, _PHASES, axes=([2 + axis], [1])), -1, 2 + axis)
            weight = self.add_weight(conv.input[1] + "_up", np.swapaxes(t, 0, 1))   # ConvTranspose: (in, out, k...)
            inputs = [resize.input[0], weight] + ([conv.input[2]] if len(conv.input) > 2 and conv.input[2] else [])
            node = self.onnx.helper.make_node("ConvTranspose", inputs, [conv.output[0]],
                                              name=self.fresh((conv.name or "conv") + "_up"),
                                              kernel_shape=[4] * n, strides=[2] * n, pads=[1] * 2 * n)
            self.replace([resize, conv], [node])
            done += 1

    def _subpixel(self, resize, conv, w: np.ndarray) -> list:
        """Nearest 2x upsampling + 3x3 conv as a 2x2 conv (padding 1) with four outputs per channel at
        low resolution, DepthToSpace, and a crop of one pixel on every side: 4/9 of the work, in
        ONNX Runtime's blocked convolution kernels."""
        helper = self.onnx.helper
        out_channels = w.shape[0]
        # k[a, b, o, i, y, x]: phase (a, b) of output channel o
        k = np.einsum("ayr,bxc,oirc->aboiyx", _SUBPIXEL, _SUBPIXEL, w)
        # DepthToSpace (DCR): channel (a * 2 + b) * C + o goes to block position (a, b)
        weight = self.add_weight(conv.input[1] + "_subpixel", k.reshape(4 * out_channels, w.shape[1], 2, 2))
        inputs = [resize.input[0], weight]
        if len(conv.input) > 2 and conv.input[2]:
            bias = self.array(conv.input[2])
            inputs.append(self.add_weight(conv.input[2] + "_subpixel", np.tile(bias, 4)))
        phases, spread = self.fresh(conv.output[0] + "_phases"), self.fresh(conv.output[0] + "_spread")
        starts = self.add_int64(conv.output[0] + "_starts", [1, 1])
        ends = self.add_int64(conv.output[0] + "_ends", [-1, -1])
        axes = self.add_int64(conv.output[0] + "_axes", [2, 3])
        return [helper.make_node("Conv", inputs, [phases], name=self.fresh((conv.name or "conv") + "_subpixel"),
                                 kernel_shape=[2, 2], pads=[1, 1, 1, 1]),
                helper.make_node("DepthToSpace", [phases], [spread], name=self.fresh("subpixel_spread"), blocksize=2,
                                 mode="DCR"),
                helper.make_node("Slice", [spread, starts, ends, axes], [conv.output[0]], name=self.fresh("subpixel_crop"))]

    def add_int64(self, stem: str, values) -> str:
        name = self.fresh(stem)
        tensor = self.onnx.numpy_helper.from_array(np.array(values, dtype=np.int64), name)
        self.graph.initializer.append(tensor)
        self.init[name] = tensor
        return name

    # ------------------------------------------------------------------ clean-up
    def finish(self) -> None:
        """Drop the initializers and Constant nodes nothing reads any more."""
        used = {i for n in self.graph.node for i in n.input} | {o.name for o in self.graph.output}
        for _ in range(2):
            dead = [n for n in self.graph.node if n.op_type == "Constant" and not any(o in used for o in n.output)]
            for node in dead:
                self.graph.node.remove(node)
            used = {i for n in self.graph.node for i in n.input} | {o.name for o in self.graph.output}
        keep = [t for t in self.graph.initializer if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)
        # shapes of removed tensors would only mislead shape inference
        names = {o for n in self.graph.node for o in n.output} | {i.name for i in self.graph.input}
        keep_info = [v for v in self.graph.value_info if v.name in names]
        del self.graph.value_info[:]
        self.graph.value_info.extend(keep_info)
