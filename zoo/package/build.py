"""Build a model package from a trained network: weights, ONNX, test tensors, cover, card, spec."""
from __future__ import annotations

import contextlib
import copy
import shutil
import uuid
from pathlib import Path

import numpy as np

from .. import imageio, spec as specs
from ..errors import InputError
from ..hashing import sha256_file
from ..opnames import makes_instances
from ..runtime import layout
from ..spec import FileRef, Spec, TestRecord, Training, Weights
from . import card, onnx_export

WEIGHTS = "weights/model.safetensors"
ONNX = "weights/model.onnx"
TORCHSCRIPT = "weights/model.torchscript.pt"
TEST_INPUT, TEST_OUTPUT = "test/input.npy", "test/output.npy"
COVER, CARD = "cover.png", "README.md"


def _center_crop(x: np.ndarray, size: int, step: list[int]) -> np.ndarray:
    """Central crop of a ``b, c, *spatial`` tensor to at most ``size`` per axis, a multiple of step."""
    region = [slice(None), slice(None)]
    for s, st in zip(x.shape[2:], step):
        length = min(s, size)
        length -= length % max(st, 1) if length >= st else 0
        start = (s - length) // 2
        region.append(slice(start, start + length))
    return np.ascontiguousarray(x[tuple(region)])


def _ref(root: Path, rel: str) -> FileRef:
    return FileRef(rel, sha256_file(root / rel))


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists():
        if not out.is_dir():
            raise InputError(f"{out} is a file; --out must name a folder for the package")
        if any(out.iterdir()):
            if not (out / specs.SPEC_FILE).is_file():
                raise InputError(f"{out} is a folder that is not a package; refusing to replace it. "
                                 "Choose an empty or new --out folder")
            if not overwrite:
                raise InputError(f"{out} already holds a package; choose another --out or pass overwrite")


@contextlib.contextmanager
def _staged(out: Path, overwrite: bool):
    """A temporary folder beside ``out`` that replaces it only once the block has finished."""
    _check_out(out, overwrite)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    (tmp / "weights").mkdir(parents=True)
    (tmp / "test").mkdir()
    try:
        yield tmp
        old = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.old"
        if out.exists():
            out.rename(old)            # the previous package stays whole until the new one is in place
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _named(blueprint: Spec, name, version, description) -> Spec:
    spec = blueprint.copy()
    spec.kind = "package"
    spec.name = name or spec.name
    spec.version = version or spec.version
    spec.description = description or spec.description
    spec.trust = None                  # a new package's shift check is calibrated on its own data, if at all
    return spec


def build(blueprint: Spec, network, out: str | Path, training: Training, sample: np.ndarray, *,
          name: str | None = None, version: str | None = None, description: str | None = None,
          test_size: int = 128, overwrite: bool = False) -> Path:
    """Write a complete package for ``network`` to ``out`` and return its path.

    ``sample`` is a raw image in the model's natural layout; a crop of it becomes the test
    tensors and the cover. The package is written to a temporary folder and renamed into place.
    """
    from safetensors.torch import save_file

    from ..runtime.runners import TorchRunner, fold_batch_norm

    out = Path(out).resolve()
    spec = _named(blueprint, name, version, description)
    inp = spec.inputs[0]
    with _staged(out, overwrite) as tmp:
        network = network.cpu().eval()
        save_file({k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}, str(tmp / WEIGHTS),
                  metadata={"architecture": spec.architecture_id, "package": f"{spec.name}@{spec.version}"})
        n = len(inp.spatial_axes)
        example = [1, inp.n_channels] + [max(64, m) for m in (inp.shape_min or [64] * n)]
        onnx_export.export(network, tmp / ONNX, example, output_ndim=len(spec.outputs[0].axes))
        spec.weights = Weights(safetensors=_ref(tmp, WEIGHTS), onnx=_ref(tmp, ONNX), onnx_opset=onnx_export.OPSET)
        # the test outputs come from the network as `zoo.load(..., runtime="torch")` will run it
        _complete(spec, tmp, TorchRunner(fold_batch_norm(copy.deepcopy(network)), device="cpu"), training, sample,
                  test_size)
    return out


def build_graph(blueprint: Spec, graph: Path, opset: int, out: str | Path, training: Training, sample: np.ndarray,
                *, name: str | None = None, version: str | None = None, description: str | None = None,
                test_size: int = 128, overwrite: bool = False) -> Path:
    """Write a package around an ONNX graph alone (architecture ``onnx-graph``, no trainable
    weights): its test outputs come from ONNX Runtime, the only runtime that can run it."""
    from ..runtime.runners import OnnxRunner

    out = Path(out).resolve()
    spec = _named(blueprint, name, version, description)
    with _staged(out, overwrite) as tmp:
        shutil.copyfile(graph, tmp / ONNX)
        spec.weights = Weights(safetensors=None, onnx=_ref(tmp, ONNX), onnx_opset=opset)
        _complete(spec, tmp, OnnxRunner(tmp / ONNX, device="cpu"), training, sample, test_size)
    return out


def build_script(blueprint: Spec, module: Path, out: str | Path, training: Training, sample, *,
                 name: str | None = None, version: str | None = None, description: str | None = None,
                 test_size: int = 128, overwrite: bool = False) -> Path:
    """Write a package around an imported TorchScript module alone (architecture ``torchscript``):
    its test outputs come from TorchScript, the only runtime that runs it. ``sample``: an image,
    or a dict of images by input name for a network with several inputs."""
    from ..runtime.runners import TorchScriptRunner

    out = Path(out).resolve()
    spec = _named(blueprint, name, version, description)
    with _staged(out, overwrite) as tmp:
        shutil.copyfile(module, tmp / TORCHSCRIPT)
        spec.weights = Weights(safetensors=None, torchscript=_ref(tmp, TORCHSCRIPT))
        _complete(spec, tmp, TorchScriptRunner(tmp / TORCHSCRIPT, device="cpu"), training, sample, test_size)
    return out


def _cover(spec: Spec, model, x: np.ndarray, path: Path) -> None:
    """Input and prediction side by side (the middle slice of a volume); a classifier's input
    titled with its class."""
    first = x if isinstance(x, np.ndarray) else x[spec.inputs[0].name]
    mid = tuple(s // 2 for s in first.shape[2:-2])
    view = np.moveaxis(first[(0, slice(None)) + mid], 0, -1) if first.shape[1] == 3 else first[(0, 0) + mid]
    if model.task.per_image:
        probabilities = model.predict_tensor(x)[0]
        best = int(np.argmax(probabilities))
        imageio.figure(path, [(f"{model.class_names[best]} ({probabilities[best]:.2f})", view)])
        return
    y = model.predict_tensors({spec.inputs[0].name: x} if isinstance(x, np.ndarray) else x)[spec.outputs[0].name]
    out_mid = tuple(s // 2 for s in y.shape[2:-2])
    panel = ("instances", y[(0, 0) + out_mid], "labels") if makes_instances(spec) else ("output", y[(0, 0) + out_mid])
    imageio.figure(path, [("input", view), panel])


def _test_names(spec: Spec) -> tuple[list[str], list[str]]:
    """Test tensor files: ``test/input.npy`` and ``test/output.npy`` for one tensor each, else
    one file per tensor, by name."""
    if len(spec.inputs) == 1 and len(spec.outputs) == 1:
        return [TEST_INPUT], [TEST_OUTPUT]
    return [f"test/input_{t.name}.npy" for t in spec.inputs], [f"test/output_{t.name}.npy" for t in spec.outputs]


def _crop_size(inp, test_size: int) -> tuple[int, list[int]]:
    """The test crop's size (at least the input's fixed or minimum size) and step."""
    n = len(inp.spatial_axes)
    return max([test_size, *(inp.shape_min or [])]), inp.shape_step or [1] * n


def _complete(spec: Spec, tmp: Path, runner, training: Training, sample, test_size: int) -> None:
    """Test tensors, cover, card and spec of a package whose weights are already in ``tmp``
    (``sample``: an image, or a dict of images by input name)."""
    from ..runtime.predictor import Predictor

    runner_model = Predictor(spec, runner)
    samples = sample if isinstance(sample, dict) else {spec.inputs[0].name: sample}
    xs = {inp.name: layout.tensor_for(samples[inp.name], None, inp)[0][:1] for inp in spec.inputs}
    test_x = {name: _center_crop(x, *_crop_size(inp, test_size)) for (name, x), inp in zip(xs.items(), spec.inputs)}
    test_y = runner_model.predict_tensors(test_x, raw=True)
    input_files, output_files = _test_names(spec)
    for inp, file in zip(spec.inputs, input_files):
        np.save(tmp / file, test_x[inp.name], allow_pickle=False)
    for out, file in zip(spec.outputs, output_files):
        np.save(tmp / file, test_y[out.name], allow_pickle=False)

    cover_x = {name: _center_crop(x, *_crop_size(inp, 256)) for (name, x), inp in zip(xs.items(), spec.inputs)}
    _cover(spec, runner_model, cover_x[spec.inputs[0].name] if len(cover_x) == 1 else cover_x, tmp / COVER)

    spread = max((float(np.ptp(y)) if y.size else 1.0) for y in test_y.values())
    spec.test = TestRecord(inputs=[_ref(tmp, f) for f in input_files], outputs=[_ref(tmp, f) for f in output_files],
                           rtol=1e-3, atol=max(1e-3 * spread, 1e-6))
    spec.training = training
    spec.covers, spec.documentation = [COVER], CARD
    write_spec_and_card(spec, tmp)


def write_spec_and_card(spec: Spec, root: Path) -> None:
    (root / CARD).write_text(card.render(spec), encoding="utf-8")
    specs.write(spec, root / specs.SPEC_FILE)


def record_metrics(root: str | Path, metrics: dict) -> Spec:
    """Add held-out metrics to an unpublished package's training record and regenerate its card."""
    return amend(root, lambda spec: spec.training.metrics.update(metrics))


def amend(root: str | Path, change) -> Spec:
    """Change an unpublished package's spec in place (``change(spec)``; weights and test tensors
    stay as they are) and regenerate its card."""
    root = Path(root)
    spec = specs.load(root)
    change(spec)
    write_spec_and_card(spec, root)
    return spec
