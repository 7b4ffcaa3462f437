"""The fast path: ONNX graphs rewritten in memory (exactly), and the default runtime chosen by a
cached calibration."""
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.runtime import calibration, graph_rewrite, ops
from zoo.runtime.runners import OnnxRunner

STANDARD = Path(zoo.__file__).parent / "standard" / "packages"


def latest(package: Path) -> Path:
    return max(package.iterdir(), key=lambda p: tuple(int(v) for v in p.name.split(".")))


def session(data: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", sorted(p.name for p in STANDARD.iterdir()))
def test_rewritten_graph_reproduces_every_standard_package(name):
    """Every standard package's network, rewritten, gives the published graph's output on the
    package's own test input: max abs diff < 1e-5 (relative to the output's range where it
    exceeds 1: StarDist's distances reach 35, where float32 rounding alone is 4e-6)."""
    root = latest(STANDARD / name)
    data = (root / "weights" / "model.onnx").read_bytes()
    new, counts = graph_rewrite.rewrite(data)
    spec = zoo.load(root, runtime="onnx", device="cpu").spec
    if spec.task == "classification":
        assert not any(counts.values()) and new == data
        return
    inp_axes = spec.inputs[0].spatial_axes
    upsampled = counts["upsample_subpixel"] if len(inp_axes) == 2 else counts["upsample_conv"]
    assert upsampled >= 2 and counts["split_concat"] >= 1, (inp_axes, counts)
    inp = spec.inputs[0]
    x = ops.apply(inp.preprocessing, np.load(root / "test" / "input.npy").astype(np.float32), {}, inp.name,
                  ops.PREPROCESSING)
    before, after = session(data), session(new)
    assert {o.op_type for o in _nodes(new)} >= ({"DepthToSpace"} if len(inp_axes) == 2 else {"ConvTranspose"})
    assert sum(n.op_type == "Concat" for n in _nodes(new)) == sum(n.op_type == "Concat" for n in _nodes(data)) - \
        counts["split_concat"]
    feeds = {before.get_inputs()[0].name: x}
    for y0, y1 in zip(before.run(None, feeds), after.run(None, feeds)):
        assert y0.shape == y1.shape
        assert np.abs(y0 - y1).max() < 1e-5 * max(1.0, float(np.abs(y0).max()))


def _nodes(data: bytes):
    import onnx

    return onnx.load_model_from_string(data).graph.node


def _unet_like(dims: int, mode: str = "nearest", concat_users: int = 1, scale: float = 2.0) -> bytes:
    """A small graph: pool -> conv -> resize -> concat with the skip -> conv (-> a second reader)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(dims)
    k = [3] * dims
    w1 = rng.normal(size=(4, 2, *k)).astype(np.float32)
    w2 = rng.normal(size=(3, 6, *k)).astype(np.float32)
    b2 = rng.normal(size=(3,)).astype(np.float32)
    pads = [1] * 2 * dims
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[int(scale)] * dims, strides=[int(scale)] * dims),
        helper.make_node("Conv", ["p", "w1"], ["h"], kernel_shape=k, pads=pads),
        helper.make_node("Resize", ["h", "", "scales"], ["u"], mode=mode, coordinate_transformation_mode="asymmetric",
                         nearest_mode="floor"),
        helper.make_node("Concat", ["u", "x"], ["c"], axis=1),
        helper.make_node("Conv", ["c", "w2", "b2"], ["y"], kernel_shape=k, pads=pads),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if concat_users == 2:
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    spatial = [f"s{i}" for i in range(dims)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2, *spatial])], outputs,
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                     numpy_helper.from_array(b2, "b2"),
                     numpy_helper.from_array(np.array([1, 1] + [scale] * dims, np.float32), "scales")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("dims,which,ops", [
    (2, graph_rewrite.REWRITES, ["MaxPool", "Conv", "Conv", "DepthToSpace", "Slice", "Conv", "Add"]),
    (2, ("split_concat", "upsample_conv"), ["MaxPool", "Conv", "ConvTranspose", "Conv", "Add"]),
    (3, graph_rewrite.REWRITES, ["MaxPool", "Conv", "ConvTranspose", "Conv", "Add"]),
    (2, ("split_concat",), ["MaxPool", "Conv", "Resize", "Conv", "Conv", "Add"])])
def test_rewrites_are_exact_in_2d_and_3d(dims, which, ops):
    data = _unet_like(dims)
    new, counts = graph_rewrite.rewrite(data, which)
    assert counts["split_concat"] == 1 and sum(counts.values()) == (1 if len(which) == 1 else 2)
    assert [n.op_type for n in _nodes(new)] == ops
    x = np.random.default_rng(1).random((2, 2) + (12, 14, 10)[:dims], dtype=np.float32)
    y0, y1 = session(data).run(None, {"x": x})[0], session(new).run(None, {"x": x})[0]
    assert y0.shape == y1.shape
    assert np.abs(y0 - y1).max() < 1e-5 * max(1.0, float(np.abs(y0).max()))


def test_patterns_that_are_not_exact_are_left_alone():
    # a Concat read twice cannot go; bilinear upsampling and a scale of 3 are not repeats of 2
    new, counts = graph_rewrite.rewrite(_unet_like(2, concat_users=2))
    assert counts["split_concat"] == 0 and "Concat" in [n.op_type for n in _nodes(new)]
    for data in (_unet_like(2, mode="linear"), _unet_like(2, scale=3.0)):
        new, counts = graph_rewrite.rewrite(data)
        assert counts["upsample_conv"] == counts["upsample_subpixel"] == 0
        assert "Resize" in [n.op_type for n in _nodes(new)]
        x = np.random.default_rng(2).random((1, 2, 12, 12), dtype=np.float32)
        np.testing.assert_allclose(session(data).run(None, {"x": x})[0], session(new).run(None, {"x": x})[0],
                                   rtol=1e-5, atol=1e-5)


def test_the_runner_rewrites_in_memory_and_leaves_the_package_file(tiny_package):
    onnx_file = tiny_package / "weights" / "model.onnx"
    digest = hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    fast = OnnxRunner(onnx_file, "cpu")
    plain = OnnxRunner(onnx_file, "cpu", rewrites=())
    assert fast.rewritten["split_concat"] >= 1 and fast.rewritten["upsample_subpixel"] >= 1 and plain.rewritten == {}
    x = np.random.default_rng(0).random((2, 1, 48, 64), dtype=np.float32)
    np.testing.assert_allclose(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    assert hashlib.sha256(onnx_file.read_bytes()).hexdigest() == digest


def test_the_arena_follows_the_memory_budget(tiny_package, monkeypatch):
    onnx_file = tiny_package / "weights" / "model.onnx"
    monkeypatch.setenv("ZOO_ORT_ARENA", "0")
    assert OnnxRunner(onnx_file, "cpu").arena is False
    monkeypatch.setenv("ZOO_ORT_ARENA", "1")
    assert OnnxRunner(onnx_file, "cpu").arena is True
    monkeypatch.delenv("ZOO_ORT_ARENA")
    from zoo.runtime import runners

    monkeypatch.setattr("zoo.runtime.memory.available_cpu_bytes", lambda: runners.ARENA_MIN_FREE - 1)
    assert OnnxRunner(onnx_file, "cpu").arena is False


_SECOND_CALL = """
import sys, numpy as np, zoo
def rss(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) / 1024
runner = zoo.load("n2v-cbmi-2d", runtime="onnx").runner
x = np.random.default_rng(0).random((1, 1, 512, 512), dtype=np.float32)
before = rss("VmRSS")
runner(x)
first = rss("VmRSS")
for shape in [(512, 512), (512, 384), (384, 512), (384, 384), (512, 512)]:   # a ragged plan's shapes
    runner(np.ascontiguousarray(x[..., :shape[0], :shape[1]]))
print(first - before, rss("VmHWM") - first)
"""


def test_a_tile_costs_its_memory_once_not_again_at_the_second_call():
    """ONNX Runtime's memory pattern, allocated at the second call beside what the first call left
    in the arena, doubled a tile's memory (n2v-cbmi-2d, 992^2: 362 -> 748 MB) and added more for
    every other input shape: it is off on CPU, so the shorter tiles of a ragged plan cost nothing
    more either. Measured in a fresh process (its own high-water mark)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ZOO_ORT_MEM_PATTERN"} | {"ZOO_THREADS": "1", "ZOO_ORT_ARENA": "1"}
    first, again = map(float, subprocess.run([sys.executable, "-c", _SECOND_CALL], env=env, capture_output=True,
                                             text=True, check=True, timeout=300).stdout.split())
    assert first > 30, first                           # a 512^2 tile's activations, held by the arena
    assert again < 0.25 * first, (first, again)        # the calls after it: nothing more


def test_default_runtime_is_calibrated_once_logged_and_cached(tiny_package, tmp_path, monkeypatch, caplog):
    """ONNX Runtime runs small predictions; the first large one measures every candidate, runs the
    fastest and caches the choice, which later loads take without measuring."""
    cache = tmp_path / "calibration.json"
    monkeypatch.setenv("ZOO_CALIBRATION", str(cache))
    monkeypatch.setenv("ZOO_CALIBRATE_PIXELS", str(200 * 200))
    monkeypatch.delenv("ZOO_RUNTIME", raising=False)
    model = zoo.load(tiny_package, device="cpu")
    assert model.runtime == "onnx" and isinstance(model.runner, calibration.AutoRunner)
    model.predict(np.random.default_rng(0).random((64, 64), dtype=np.float32))
    assert not cache.exists() and not model.runner.resolved          # small: nothing measured
    with caplog.at_level(logging.INFO, logger="zoo.runtime"):
        big = model.predict(np.random.default_rng(0).random((256, 256), dtype=np.float32))
    records = json.loads(cache.read_text())
    assert len(records) == 1
    record = next(iter(records.values()))
    rates = record["mpx_per_s"]
    assert set(rates) == {"onnx", "onnx-convtranspose", "onnx-split-only", "torch", "torch-nchw"}
    assert record["choice"] == max(rates, key=rates.get)
    assert model.runtime == calibration._settings(record["choice"])[0]
    assert any("runtime auto: " + record["choice"] in r.getMessage() and "calibrated now" in r.getMessage()
               for r in caplog.records)
    reference = zoo.load(tiny_package, runtime="onnx", device="cpu").predict(
        np.random.default_rng(0).random((256, 256), dtype=np.float32))
    np.testing.assert_allclose(big, reference, rtol=1e-3, atol=1e-3)

    def no_measuring(*args, **kwargs):
        raise AssertionError("a cached choice was measured again")

    monkeypatch.setattr(calibration, "measure", no_measuring)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zoo.runtime"):
        again = zoo.load(tiny_package, device="cpu")
    assert again.runtime == model.runtime and not isinstance(again.runner, calibration.AutoRunner)
    assert any("runtime auto: " in r.getMessage() and "cache" in r.getMessage() for r in caplog.records)
    # another machine setting is another key; an explicit runtime is never calibrated
    monkeypatch.setenv("ZOO_THREADS", "1")
    other = zoo.load(tiny_package, device="cpu")
    with pytest.raises(AssertionError, match="measured again"):
        other.predict(np.zeros((256, 256), np.float32))
    assert zoo.load(tiny_package, runtime="onnx", device="cpu").runtime == "onnx"
    monkeypatch.setenv("ZOO_RUNTIME", "torch")
    assert zoo.load(tiny_package, device="cpu").runtime == "torch"
