"""``zoo export triton PKG OUT/``: an NVIDIA Triton Inference Server model repository.

    OUT/<name>/config.pbtxt     ONNX Runtime backend, variable spatial dims, dynamic batching,
                                an instance group (GPU when Triton has one, else CPU)
    OUT/<name>/1/model.onnx     the package's verified ONNX graph

Triton runs the network; the package's pre- and post-processing (per-image percentile
normalisation, instance labelling) stay with the client and are written into
``OUT/<name>/README.md`` so that nobody forgets them.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .. import spec as specs
from ..errors import InputError
from ..package import files


def _dims(tensor, n_channels: int) -> list[int]:
    return [n_channels] + [-1] * len(tensor.spatial_axes)


def config(spec: specs.Spec, max_batch: int = 8, max_delay_us: int = 5000, instances: int = 1,
           kind: str = "KIND_AUTO") -> str:
    """The ``config.pbtxt`` text for a package."""
    inp, out = spec.inputs[0], spec.outputs[0]
    preferred = [b for b in (2, 4, 8, 16, 32) if b <= max_batch] or [max_batch]
    return "\n".join([
        f'name: "{spec.name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch}",
        "input [",
        f'  {{ name: "input" data_type: TYPE_FP32 dims: {_dims(inp, inp.n_channels)} }}',
        "]",
        "output [",
        f'  {{ name: "output" data_type: TYPE_FP32 dims: {_dims(out, out.n_channels)} }}',
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: {preferred}",
        f"  max_queue_delay_microseconds: {max_delay_us}",
        "}",
        f"instance_group [ {{ count: {instances} kind: {kind} }} ]",
        f'parameters {{ key: "zoo_ref" value: {{ string_value: "{spec.ref}" }} }}',
        "",
    ])


def export(package: str | Path, out: str | Path, max_batch: int = 8, gpu: bool | None = None) -> Path:
    """Write the model repository for ``package`` (a verified package folder) under ``out``."""
    root = Path(package)
    spec = specs.load(root)
    if spec.kind != "package" or spec.weights is None or spec.weights.onnx is None:
        raise InputError(f"{root} has no ONNX weights to export (train or pull a package first)")
    files.verify(spec, root)
    inp = spec.inputs[0]
    if inp.axes[0] != "b" or inp.axes[1] != "c":
        raise InputError(f"Triton export expects inputs with axes b, c, then spatial axes; {spec.ref} has {inp.axes}")
    folder = Path(out) / spec.name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(files.safe_join(root, spec.weights.onnx.file), folder / "1" / "model.onnx")
    kind = "KIND_AUTO" if gpu is None else ("KIND_GPU" if gpu else "KIND_CPU")
    (folder / "config.pbtxt").write_text(config(spec, max_batch=max_batch, kind=kind))
    pre = ", ".join(o.op for o in inp.preprocessing) or "none"
    post = ", ".join(o.op for o in spec.outputs[0].postprocessing) or "none"
    step = inp.shape_step or [1] * len(inp.spatial_axes)
    (folder / "README.md").write_text(
        f"# {spec.ref} for Triton\n\nInput `input`: float32 `{inp.axes}`, spatial sizes multiples of {step} "
        f"(minimum {inp.shape_min}); halo {inp.halo} when tiling.\n\nThe client applies the package's "
        f"preprocessing before sending (`{pre}`) and its postprocessing after (`{post}`); `zoo predict` and "
        "`zoo serve` do both.\n")
    return folder
