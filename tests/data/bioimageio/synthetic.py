"""Synthetic bioimage.io model descriptions that mimic features of real ones we may not commit.

Each builder writes one description (``bioimageio.yaml``, a format 0.4 or 0.5 model) with tiny
networks, its weights, and test tensors, into a folder. The test outputs are computed by
bioimage.io's own implementation (``bioimageio.core``: its pre/post-processing and its runner
for the weight format), so a description here is right by bioimage.io's definition, not ours;
bioimageio.spec validates each one before it is kept.

    .venv/bin/python tests/data/bioimageio/synthetic.py OUT_FOLDER [NAME ...]

writes OUT_FOLDER/NAME/ for each builder (all by default). The corpus commits their output under
``synthetic/`` and ``tests/test_bioimageio_corpus.py`` (slow) rebuilds them and runs
``bioimageio test`` on each.

What each mimics (see README.md for the real descriptions):

- ``channel_last_04``: stardist_example_model (0.4, CC-BY-NC-4.0, TensorFlow weights absent
  from the snapshot): axes ``byxc``, parametrized size with a zero step on batch/channel,
  ``scale_range`` per sample over ``yx``, an output whose channel count comes from the
  reference tensor's shape by ``offset`` (33 = 2 x 16.5), a halo; ONNX weights.
- ``xy_order_fixed_04``: unet2d_keras_tf / unet2d_keras_tf2 (0.4, Keras weights absent from the
  snapshot): axes ``bxyc`` (x before y, and a non-square image so a swap shows), a fixed shape,
  ``scale_range`` per sample jointly over ``xyc``, three output channels by ``scale``; ONNX weights.
- ``keras_only_04``: the same Keras examples' weight format: ``keras_hdf5`` weights alone. The
  weights file is a stub (no network inside): an importer must refuse the format (or convert a
  real file), never read this one. The test output is the test input (nothing computed it).
- ``cropped_output_05``: a 0.5 model whose output is the input's size minus 6 (valid
  convolutions: ``size: {tensor_id, axis_id, offset: -6}``), parametrized size; ONNX and
  TorchScript weights.
- ``volume_3d_05``: a 0.5 3D model (``bczyx``), parametrized size with different minima and steps
  per axis, ``zero_mean_unit_variance`` per sample; ONNX and TorchScript weights.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

LICENSE = "CC0-1.0"
AUTHORS = [{"name": "bioimage-zoo tests"}]
CITE = [{"text": "bioimage-zoo synthetic test description", "url": "https://bioimage.io"}]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _torch_net(kind: str):
    import torch
    from torch import nn

    torch.manual_seed({"channel_last": 1, "xy_order": 2, "cropped": 3, "volume": 4}[kind])

    class ChannelLast(nn.Module):
        """b y x c -> b y x 33 (a probability and 32 'rays', as StarDist's layout)."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 33, 3, padding=1))

        def forward(self, x):
            return self.body(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    class XYOrder(nn.Module):
        """b x y c -> b x y 3 (softmax over three classes), run on y x inside."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

        def forward(self, x):
            yx = x.permute(0, 3, 2, 1)                     # b c y x
            return torch.softmax(self.body(yx), dim=1).permute(0, 3, 2, 1)

    class Cropped(nn.Module):
        """b c y x -> b c (y-6) (x-6): three valid 3x3 convolutions."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Conv2d(6, 6, 3), nn.ReLU(), nn.Conv2d(6, 2, 3))

        def forward(self, x):
            return self.body(x)

    class Volume(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 1, 3, padding=1))

        def forward(self, x):
            return self.body(x) + x

    return {"channel_last": ChannelLast, "xy_order": XYOrder, "cropped": Cropped, "volume": Volume}[kind]().eval()


def _onnx(net, example, path: Path, names: tuple[str, str], dynamic: dict | None) -> None:
    import torch

    with torch.no_grad():
        torch.onnx.export(net, (torch.from_numpy(example),), str(path), opset_version=17, dynamo=False,
                          input_names=[names[0]], output_names=[names[1]], dynamic_axes=dynamic)


def _torchscript(net, example, path: Path) -> None:
    import torch

    with torch.no_grad():
        torch.jit.trace(net, torch.from_numpy(example)).save(str(path))


def _write(folder: Path, rdf: dict) -> Path:
    path = folder / "bioimageio.yaml"
    path.write_text(yaml.safe_dump(rdf, sort_keys=False), encoding="utf-8")
    return path


def _fill_test_outputs(rdf_path: Path, weight_format: str, outputs: list[str]) -> None:
    """Compute each test output with bioimageio.core from the test inputs, as ``bioimageio test``
    runs them (the whole sample, no blocks), save it over the placeholder and pin its sha256 (0.5)."""
    from bioimageio.core import create_prediction_pipeline, load_model_description
    from bioimageio.core.digest_spec import get_test_input_sample
    from bioimageio.spec import ValidationContext

    with ValidationContext(perform_io_checks=False):
        descr = load_model_description(str(rdf_path))
    folder = rdf_path.parent
    rdf = yaml.safe_load(rdf_path.read_text())
    # not as a context manager: bioimageio.core 0.11's unload waits forever on its worker here
    pipeline = create_prediction_pipeline(descr, weight_format=weight_format, devices=["cpu"])
    sample = pipeline.predict_sample_without_blocking(get_test_input_sample(descr))
    for k, name in enumerate(outputs):
        tensor = sample.members[list(sample.members)[k]]
        np.save(folder / name, tensor.data.to_numpy().astype(np.float32))
    if not rdf["format_version"].startswith("0.4"):
        for out, name in zip(rdf["outputs"], outputs):
            out["test_tensor"] = {"source": name, "sha256": _sha256(folder / name)}
        _write(folder, rdf)


def _validate(rdf_path: Path) -> None:
    from bioimageio.spec import InvalidDescr, ValidationContext, load_description

    with ValidationContext(perform_io_checks=True):
        descr = load_description(str(rdf_path))
    if isinstance(descr, InvalidDescr):
        raise SystemExit(f"{rdf_path} is not valid:\n{descr.validation_summary.display() or descr.validation_summary}")


def _common(name: str, description: str, fmt: str) -> dict:
    return {"format_version": fmt, "type": "model", "name": name, "description": description,
            "authors": AUTHORS, "cite": CITE, "license": LICENSE, "documentation": "README.md",
            "tags": ["bioimage-zoo-test", "synthetic"], "timestamp": "2025-01-01T00:00:00"}


def _readme(folder: Path, text: str) -> None:
    (folder / "README.md").write_text(f"# {folder.name}\n\n{text}\n\nSynthetic: built by "
                                      "tests/data/bioimageio/synthetic.py for bioimage-zoo's import tests.\n")


# ----------------------------------------------------------------------------- builders
def channel_last_04(folder: Path) -> Path:
    rng = np.random.default_rng(1)
    x = rng.normal(100, 20, (1, 32, 32, 1)).astype(np.float32)
    np.save(folder / "test_input.npy", x)
    np.save(folder / "test_output.npy", np.zeros((1, 32, 32, 33), np.float32))
    _onnx(_torch_net("channel_last"), x, folder / "weights.onnx", ("input", "output"),
          {"input": {0: "b", 1: "y", 2: "x"}, "output": {0: "b", 1: "y", 2: "x"}})
    rdf = _common("synthetic-channel-last", "Channel-last 0.4 model mimicking StarDist's layout.", "0.4.10")
    rdf.update({
        "inputs": [{"name": "input", "axes": "byxc", "data_type": "float32", "data_range": [-np.inf, np.inf],
                    "shape": {"min": [1, 16, 16, 1], "step": [0, 16, 16, 0]},
                    "preprocessing": [{"name": "scale_range", "kwargs": {
                        "mode": "per_sample", "axes": "yx", "min_percentile": 1.0, "max_percentile": 99.8}}]}],
        "outputs": [{"name": "output", "axes": "byxc", "data_type": "float32", "data_range": [-np.inf, np.inf],
                     "halo": [0, 4, 4, 0],
                     "shape": {"reference_tensor": "input", "scale": [1.0, 1.0, 1.0, 0.0],
                               "offset": [0.0, 0.0, 0.0, 16.5]}}],
        "test_inputs": ["test_input.npy"], "test_outputs": ["test_output.npy"],
        "weights": {"onnx": {"source": "weights.onnx", "sha256": _sha256(folder / "weights.onnx"),
                             "opset_version": 17}},
    })
    _readme(folder, "byxc input, 33 output channels by offset, scale_range per sample over yx, ONNX weights.")
    path = _write(folder, rdf)
    _fill_test_outputs(path, "onnx", ["test_output.npy"])
    return path


def xy_order_fixed_04(folder: Path) -> Path:
    rng = np.random.default_rng(2)
    x = rng.normal(50, 10, (1, 40, 56, 1)).astype(np.float32)        # b x y c: 40 wide, 56 high
    np.save(folder / "test_input.npy", x)
    np.save(folder / "test_output.npy", np.zeros((1, 40, 56, 3), np.float32))
    _onnx(_torch_net("xy_order"), x, folder / "weights.onnx", ("input", "output"), None)
    rdf = _common("synthetic-xy-order-fixed", "Fixed-shape bxyc 0.4 model mimicking the Keras examples' layout.",
                  "0.4.10")
    rdf.update({
        "inputs": [{"name": "input", "axes": "bxyc", "data_type": "float32", "data_range": [-np.inf, np.inf],
                    "shape": [1, 40, 56, 1],
                    "preprocessing": [{"name": "scale_range", "kwargs": {
                        "mode": "per_sample", "axes": "xyc", "min_percentile": 1.0, "max_percentile": 99.8}}]}],
        "outputs": [{"name": "output", "axes": "bxyc", "data_type": "float32", "data_range": [0.0, 1.0],
                     "shape": {"reference_tensor": "input", "scale": [1.0, 1.0, 1.0, 3.0],
                               "offset": [0.0, 0.0, 0.0, 0.0]}}],
        "test_inputs": ["test_input.npy"], "test_outputs": ["test_output.npy"],
        "weights": {"onnx": {"source": "weights.onnx", "sha256": _sha256(folder / "weights.onnx"),
                             "opset_version": 17}},
    })
    _readme(folder, "bxyc input of fixed shape 40 x 56 (x, y), three softmax channels, ONNX weights.")
    path = _write(folder, rdf)
    _fill_test_outputs(path, "onnx", ["test_output.npy"])
    return path


def keras_only_04(folder: Path) -> Path:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (1, 64, 64, 1)).astype(np.float32)
    np.save(folder / "test_input.npy", x)
    np.save(folder / "test_output.npy", x)
    (folder / "keras_weights.hdf5").write_bytes(b"not an HDF5 file: a stub standing for Keras weights\n")
    rdf = _common("synthetic-keras-only", "Keras weights alone (a stub file): to be refused by format.", "0.4.10")
    rdf.update({
        "inputs": [{"name": "input", "axes": "byxc", "data_type": "float32", "data_range": [-np.inf, np.inf],
                    "shape": [1, 64, 64, 1]}],
        "outputs": [{"name": "output", "axes": "byxc", "data_type": "float32", "data_range": [-np.inf, np.inf],
                     "shape": {"reference_tensor": "input", "scale": [1.0, 1.0, 1.0, 1.0],
                               "offset": [0.0, 0.0, 0.0, 0.0]}}],
        "test_inputs": ["test_input.npy"], "test_outputs": ["test_output.npy"],
        "weights": {"keras_hdf5": {"source": "keras_weights.hdf5", "sha256": _sha256(folder / "keras_weights.hdf5"),
                                   "tensorflow_version": "2.9"}},
    })
    _readme(folder, "keras_hdf5 weights only; the weights file is a stub (no network).")
    return _write(folder, rdf)


def _axes_05(spatial: dict[str, dict | int], channels: list[str]) -> list[dict]:
    return [{"type": "batch"}, {"type": "channel", "channel_names": channels},
            *({"type": "space", "id": a, "size": s} for a, s in spatial.items())]


def cropped_output_05(folder: Path) -> Path:
    rng = np.random.default_rng(4)
    x = rng.normal(10, 3, (1, 1, 40, 48)).astype(np.float32)
    np.save(folder / "test_input.npy", x)
    np.save(folder / "test_output.npy", np.zeros((1, 2, 34, 42), np.float32))
    net = _torch_net("cropped")
    _onnx(net, x, folder / "weights.onnx", ("raw", "cropped"),
          {"raw": {0: "b", 2: "y", 3: "x"}, "cropped": {0: "b", 2: "y", 3: "x"}})
    _torchscript(net, x, folder / "weights_torchscript.pt")
    rdf = _common("synthetic-cropped-output", "Valid convolutions: the output is 6 pixels smaller per axis.", "0.5.4")
    out_size = {a: {"tensor_id": "raw", "axis_id": a, "offset": -6} for a in "yx"}
    rdf.update({
        "inputs": [{"id": "raw", "axes": _axes_05({"y": {"min": 16, "step": 8}, "x": {"min": 16, "step": 8}},
                                                   ["intensity"]),
                    "test_tensor": {"source": "test_input.npy", "sha256": _sha256(folder / "test_input.npy")},
                    "preprocessing": [{"id": "scale_linear", "kwargs": {"gain": 0.1, "offset": -1.0}}]}],
        "outputs": [{"id": "cropped", "axes": _axes_05(out_size, ["a", "b"]),
                     "test_tensor": {"source": "test_output.npy", "sha256": _sha256(folder / "test_output.npy")},
                     "postprocessing": [{"id": "sigmoid"}]}],
        "weights": {
            "onnx": {"source": "weights.onnx", "sha256": _sha256(folder / "weights.onnx"), "opset_version": 17},
            "torchscript": {"source": "weights_torchscript.pt", "sha256": _sha256(folder / "weights_torchscript.pt"),
                            "pytorch_version": "2.13", "parent": "onnx"}},
    })
    _readme(folder, "Output = input - 6 per spatial axis (offset -6), scale_linear then sigmoid; ONNX and TorchScript.")
    path = _write(folder, rdf)
    _fill_test_outputs(path, "onnx", ["test_output.npy"])
    return path


def volume_3d_05(folder: Path) -> Path:
    rng = np.random.default_rng(5)
    x = rng.normal(5, 2, (1, 1, 12, 24, 32)).astype(np.float32)
    np.save(folder / "test_input.npy", x)
    np.save(folder / "test_output.npy", np.zeros_like(x))
    net = _torch_net("volume")
    _onnx(net, x, folder / "weights.onnx", ("volume", "restored"),
          {"volume": {0: "b", 2: "z", 3: "y", 4: "x"}, "restored": {0: "b", 2: "z", 3: "y", 4: "x"}})
    _torchscript(net, x, folder / "weights_torchscript.pt")
    rdf = _common("synthetic-volume-3d", "A 3D restoration model with per-axis size constraints.", "0.5.4")
    rdf.update({
        "inputs": [{"id": "volume", "axes": _axes_05({"z": {"min": 8, "step": 4}, "y": {"min": 8, "step": 8},
                                                      "x": {"min": 8, "step": 8}}, ["raw"]),
                    "test_tensor": {"source": "test_input.npy", "sha256": _sha256(folder / "test_input.npy")},
                    "preprocessing": [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["z", "y", "x"]}}]}],
        "outputs": [{"id": "restored",
                     "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["restored"]},
                              *({"type": "space", "id": a, "size": {"tensor_id": "volume", "axis_id": a}}
                                for a in "zyx")],
                     "test_tensor": {"source": "test_output.npy", "sha256": _sha256(folder / "test_output.npy")}}],
        "weights": {
            "onnx": {"source": "weights.onnx", "sha256": _sha256(folder / "weights.onnx"), "opset_version": 17},
            "torchscript": {"source": "weights_torchscript.pt", "sha256": _sha256(folder / "weights_torchscript.pt"),
                            "pytorch_version": "2.13", "parent": "onnx"}},
    })
    _readme(folder, "bczyx, z min 8 step 4, y/x min 8 step 8, zero_mean_unit_variance per sample.")
    path = _write(folder, rdf)
    _fill_test_outputs(path, "onnx", ["test_output.npy"])
    return path


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "channel_last_04": channel_last_04,
    "xy_order_fixed_04": xy_order_fixed_04,
    "keras_only_04": keras_only_04,
    "cropped_output_05": cropped_output_05,
    "volume_3d_05": volume_3d_05,
}


def build(name: str, out: Path) -> Path:
    """Write the synthetic description ``name`` into ``out/name`` (replaced); returns its yaml."""
    import shutil

    folder = Path(out) / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    path = BUILDERS[name](folder)
    _validate(path)
    return path


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    for name in sys.argv[2:] or BUILDERS:
        print(build(name, Path(sys.argv[1])))
