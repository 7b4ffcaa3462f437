"""``zoo import onnx MODEL.onnx``: a network trained anywhere, exported to ONNX, as a zoo package.

The graph becomes an ``onnx-graph`` package (ONNX Runtime runs it, tiled like any other). Its
axes (``--axes``, e.g. ``bcyx`` or ``byxc``) are fitted to the zoo's ``b, c, *spatial`` float32
tensors by a few nodes around the graph (:mod:`zoo.export.onnx_layout`); the pre/post-processing
ops are named from the op registry (:mod:`zoo.runtime.ops`). The test output is computed by the
zoo's own runtime (its ops, its tiling, which pads borders by reflection, ONNX Runtime), so
``zoo validate`` passes on the package as written; hashes, the card and the cover come with it
(:func:`zoo.package.build.build_graph`). Without a test input, a synthetic one is made
(:func:`synthetic_input`). docs/publishing.md describes the conventions.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import spec as specs
from ..errors import InputError, storage
from ..hashing import sha256_file
from ..package import build, readers
from ..runtime import layout
from ..opnames import is_instance_op
from ..runtime.ops import POSTPROCESSING, PREPROCESSING
from ..spec import Op, Spec, TensorSpec, Training
from . import onnx_layout

OpLike = str | Op | dict
MIN_OPSET = 17                  # the spec's lowest ONNX opset; older graphs are converted
SYNTHETIC_SIDE = {2: 128, 3: 48}
_PAIR = r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\[[^\]]*\]|[^,\[\]]+?)\s*"
_PARAMS = re.compile(rf"{_PAIR}(,{_PAIR})*")


# ----------------------------------------------------------------------------- ops
def parse_op(op: OpLike, table: dict, where: str) -> Op:
    """An op of ``table`` from an :class:`Op`, ``{"op": ..., "params": ...}`` or the text
    ``NAME`` / ``NAME:KEY=VALUE,KEY=VALUE`` (values read as YAML: numbers, lists, words)."""
    import yaml

    if isinstance(op, str):
        name, _, text = op.partition(":")
        if text.strip() and not _PARAMS.fullmatch(text):
            raise InputError(f"{where}: cannot read the parameters of '{op}': expected NAME:KEY=VALUE,KEY=VALUE "
                             "(e.g. percentile_normalize:low=1,high=99.8)")
        pairs = re.findall(rf"(?:^|,){_PAIR}(?=,|$)", text) if text.strip() else []
        op = Op(name.strip(), {k: yaml.safe_load(v) for k, v in pairs})
    elif isinstance(op, dict):
        op = Op.from_dict(op)
    if op.op not in table:
        raise InputError(f"{where}: unknown op '{op.op}' (known here: {', '.join(sorted(table))}; "
                         "docs/publishing.md lists them with their parameters)")
    return op


def parse_ops(ops: Sequence[OpLike] | None, table: dict, where: str) -> list[Op]:
    return [parse_op(op, table, where) for op in ops or []]


def task_of(output_ops: Sequence[Op]) -> str:
    """The task a graph's post-processing implies: instances, masks/classes, else restoration."""
    names = {op.op for op in output_ops}
    if any(is_instance_op(n) for n in names):
        return "segmentation/instance"
    if names & {"sigmoid", "softmax", "argmax", "threshold"}:
        return "segmentation"
    return "restoration"


# ----------------------------------------------------------------------------- the graph
def per_axis(value: int | Sequence[int] | None, spatial: str, what: str) -> list[int] | None:
    """One non-negative integer per spatial axis, from a single value or a list."""
    if value is None:
        return None
    values = [int(value)] * len(spatial) if np.isscalar(value) else [int(v) for v in value]
    if len(values) != len(spatial) or min(values) < 0:
        raise InputError(f"{what} {value}: expected one value, or one per spatial axis '{spatial}', each >= 0")
    return values


def _round_up(value: int, step: int) -> int:
    return -(-value // max(step, 1)) * max(step, 1)


def check_axes(axes: str, what: str) -> str:
    """The spatial axes (``yx`` or ``zyx``) of a graph's axes string such as ``bcyx`` or ``byxc``."""
    if not axes:
        raise InputError(f"say the graph's axes in its own order: {what} bcyx (or byxc, bczyx, ...)")
    if not re.fullmatch(r"[bczyx]+", axes or "") or len(set(axes)) != len(axes) or not {"b", "y", "x"} <= set(axes):
        raise InputError(f"{what} '{axes}': expected the graph's axes in its own order, with a batch axis b, an "
                         "optional channel axis c and the space axes yx or zyx (e.g. bcyx, byxc, bczyx)")
    return "".join(a for a in "zyx" if a in axes)


def _load(source: Path):
    """The ONNX model in ``source``, self-contained, at opset 17 or later."""
    import onnx

    from ..runtime.onnx_session import checked_bytes

    if not source.is_file():
        raise InputError(f"{source} is not a file: give the .onnx file your exporter wrote")
    with storage("read the ONNX model"):
        model = onnx.load_model_from_string(checked_bytes(source))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
        except Exception as e:   # noqa: BLE001 - the converter raises many kinds; say what to do
            raise InputError(f"{source.name} uses ONNX opset {opset} and cannot be converted to {MIN_OPSET} "
                             f"({type(e).__name__}); export it with opset_version={MIN_OPSET} or later") from None
    return model


def _batch_is_dynamic(declared: list, axes: str, source: Path) -> None:
    if len(declared) != len(axes):
        raise InputError(f"{source.name}: the graph's input has {len(declared)} dimensions, --axes '{axes}' names "
                         f"{len(axes)}")
    batch = declared[axes.index("b")]
    if isinstance(batch, int) and batch > 0:
        raise InputError(f"{source.name} fixes the batch size to {batch}: bioimage-zoo runs tiles in batches; export "
                         "it with a dynamic batch axis (torch.onnx.export(..., dynamic_axes={'input': {0: 'batch', "
                         "...}}))")


def _input_channels(declared: list, axes: str, channels: int | None, source: Path) -> int:
    if "c" not in axes:
        return 1
    fixed = declared[axes.index("c")]
    fixed = fixed if isinstance(fixed, int) and fixed > 0 else None
    if channels is not None and fixed is not None and channels != fixed:
        raise InputError(f"{source.name} takes {fixed} channel(s), not {channels}")
    if channels is None and fixed is None:
        raise InputError(f"{source.name} leaves its channel axis dynamic: say how many channels it takes "
                         "(--channels N)")
    return channels or fixed


def prepare_graph(source: Path, axes: str, output_axes: str, spatial: str, channels: int | None,
                  work: Path) -> tuple[Path, int, int]:
    """(the graph of ``source`` fitted to the zoo's tensors and saved in ``work``, its opset, its
    number of input channels)."""
    model = _load(source)
    declared, _ = onnx_layout.static_dims(model)
    _batch_is_dynamic(declared, axes, source)
    n_channels = _input_channels(declared, axes, channels, source)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    graph = onnx_layout.save(onnx_layout.adapt(model, axes, output_axes, spatial), work / "graph.onnx")
    return graph, opset, n_channels


def output_channels(graph: Path, n_channels: int, step: Sequence[int], minimum: Sequence[int]) -> int:
    """How many channels the graph gives (run once on zeros; its output must keep the input's size)."""
    from ..runtime.runners import OnnxRunner

    x = np.zeros((1, n_channels, *[max(_round_up(32, st), m) for st, m in zip(step, minimum)]), np.float32)
    try:
        y = OnnxRunner(graph, device="cpu")(x)
    except Exception as e:   # noqa: BLE001 - ONNX Runtime's errors name nodes; say what to try first
        raise InputError(f"the ONNX graph does not run on an input of shape {x.shape} ({str(e).splitlines()[0][:200]})."
                         f" If it needs sizes that are multiples of 2^depth, say so with --step (now {list(step)}); "
                         "check --axes and --channels") from None
    if y.ndim != x.ndim or y.shape[2:] != x.shape[2:]:
        raise InputError(f"the ONNX graph turns an input of shape {x.shape} into {y.shape}: zoo import onnx takes "
                         "image-to-image graphs whose output has the input's spatial size")
    return int(y.shape[1])


# ----------------------------------------------------------------------------- the test input
def synthetic_input(spatial: str, n_channels: int, step: Sequence[int], minimum: Sequence[int]) -> np.ndarray:
    """A synthetic test input ``1, c, *spatial`` (float32): fluorescent nuclei (Gaussian blobs,
    background 10, peaks about 200, Poisson-Gaussian noise) of 128 px a side in 2D and 48 in 3D,
    rounded up to the step and the minimum; one independent image per channel."""
    from ..synthetic import nuclei

    shape = [max(_round_up(SYNTHETIC_SIDE[len(spatial)], st), m) for st, m in zip(step, minimum)]
    images = [nuclei(shape, n=12 if len(spatial) == 2 else 20, seed=c)[0] for c in range(n_channels)]
    return np.stack(images)[None].astype(np.float32)


def raw_test_input(test_input: str | Path | np.ndarray | None, axes: str, spatial: str, n_channels: int,
                step: Sequence[int], minimum: Sequence[int]) -> tuple[np.ndarray, str]:
    """(the raw test input as ``1, c, *spatial`` float32, where it came from). ``test_input`` is
    an array or ``.npy`` file in the graph's axes or in the image's natural layout (``yx``,
    ``cyx``, ...); without one, :func:`synthetic_input`."""
    if test_input is None:
        return synthetic_input(spatial, n_channels, step, minimum), "synthetic nuclei (zoo.synthetic.nuclei)"
    where = "the given array"
    if not isinstance(test_input, np.ndarray):
        where = Path(test_input).name
        with storage("read the test input"):
            test_input = readers.array(test_input)
    if test_input.ndim == len(axes):
        x = onnx_layout.to_ours(np.asarray(test_input), axes, spatial)
    else:
        x, _ = layout.to_tensor(test_input, None, spatial, n_channels)
    if x.shape[1] != n_channels:
        raise InputError(f"the test input {where} has {x.shape[1]} channel(s); the graph takes {n_channels}")
    return np.ascontiguousarray(x[:1], dtype=np.float32), where


def training_record(source: Path, test_x: np.ndarray, config: dict) -> Training:
    """What is known of a graph trained elsewhere: its file's fingerprint and the test input's statistics."""
    from ..images import intensity_statistics

    return Training(
        data={"description": f"not described: trained outside bioimage-zoo and imported from {source.name} "
                             "(n_train 0 = unknown)",
              "source": f"ONNX file {source.name}", "fingerprint": sha256_file(source), "n_train": 0,
              "n_validation": 0},
        statistics=intensity_statistics([test_x]), metrics={}, config=config, parent=None)


# ----------------------------------------------------------------------------- the importer
def _tensors(n_in: int, n_out: int, spatial: str, step: list[int], minimum: list[int],
             halo: list[int] | None, input_ops: list[Op], output_ops: list[Op]) -> tuple[TensorSpec, TensorSpec]:
    inp = TensorSpec(name="input", axes="bc" + spatial, dtype="float32", channels=[f"c{i}" for i in range(n_in)],
                     shape_min=minimum, shape_step=step, halo=halo, preprocessing=input_ops)
    out = TensorSpec(name="output", axes="bc" + spatial, dtype="float32", channels=[f"c{i}" for i in range(n_out)],
                     postprocessing=output_ops)
    return inp, out


def _check_identity(spec: Spec) -> None:
    """Name, version, licence, task and tensors checked by the schema before the package is built."""
    specs.validate({**spec.to_dict(), "kind": "blueprint"}, source=f"the package {spec.name}")


def import_onnx(source: str | Path, out: str | Path, *, name: str, axes: str, output_axes: str | None = None,
                input_ops: Sequence[OpLike] = (), output_ops: Sequence[OpLike] = (),
                test_input: str | Path | np.ndarray | None = None, halo: int | Sequence[int] | None = None,
                step: int | Sequence[int] | None = None, minimum: int | Sequence[int] | None = None,
                channels: int | None = None, version: str = "0.1.0", description: str | None = None,
                authors: Sequence[str] = (), license: str = "CC-BY-4.0", task: str | None = None,
                tags: Sequence[str] = (), overwrite: bool = False) -> Path:
    """Write a complete package for the ONNX graph ``source`` to ``out`` and return its path.

    ``axes``: the graph's input axes in its order (``bcyx``, ``byxc``, ``bczyx``; the output's
    are the same unless ``output_axes``); ``input_ops`` / ``output_ops``: ops of the op registry
    (``"percentile_normalize:low=1,high=99.8"``, ``"sigmoid"``); ``halo``: the receptive-field
    margin per spatial axis that tiles get; ``step`` / ``minimum``: the sizes the graph accepts
    (``minimum + k * step``); ``test_input``: a raw image (array or ``.npy``), synthetic if None.
    """
    if not name:
        raise InputError("name the package: --name NAME (lower-case letters, digits, '.', '_' and '-')")
    source, spatial = Path(source), check_axes(axes, "--axes")
    output_axes = output_axes or axes
    if check_axes(output_axes, "--output-axes") != spatial:
        raise InputError(f"the output axes '{output_axes}' have other space axes than the input's '{axes}'")
    step = per_axis(1 if step is None else step, spatial, "--step")
    step = [max(s, 1) for s in step]
    minimum = per_axis(minimum, spatial, "--min") or list(step)
    inp_ops = parse_ops(input_ops, PREPROCESSING, "--input-op")
    out_ops = parse_ops(output_ops, POSTPROCESSING, "--output-op")
    with tempfile.TemporaryDirectory() as tmp:
        graph, opset, n_in = prepare_graph(source, axes, output_axes, spatial, channels, Path(tmp))
        x, origin = raw_test_input(test_input, axes, spatial, n_in, step, minimum)
        n_out = output_channels(graph, n_in, step, minimum)
        inp, outp = _tensors(n_in, n_out, spatial, step, minimum, per_axis(halo, spatial, "--halo"),
                             inp_ops, out_ops)
        spec = Spec(kind="package", name=name, version=version,
                    description=description or f"{name}: a network trained outside bioimage-zoo, imported from "
                                               f"ONNX ({source.name}).",
                    authors=[{"name": a} for a in authors] or [{"name": "unknown (set --author)"}], license=license,
                    task=task or task_of(out_ops), architecture_id=specs.ONNX_GRAPH, architecture_params={},
                    inputs=[inp], outputs=[outp], tags=list(dict.fromkeys(["imported", "onnx", *tags])))
        _check_identity(spec)
        config = {"imported_from": {"format": "onnx", "file": source.name, "axes": axes, "output_axes": output_axes,
                                    "test_input": origin, "statistics_from": "the test input"}}
        return build.build_graph(spec, graph, opset, out, training_record(source, x, config), x, overwrite=overwrite)
