"""`zoo serve` as users run it: a real server process on a free loopback port, every endpoint,
every bad input (concurrently), batching, the queue limit, the token and a graceful shutdown."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tifffile

import zoo

from conftest import synthetic_nuclei


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args, home, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {**os.environ, "ZOO_HOME": str(home), "ZOO_CACHE": str(home / "cache"), **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "zoo", "serve", *map(str, args), "--port", str(self.port)],
                                     env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server died: {self.proc.communicate()}")
            try:
                if request(self.url + "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("the server did not start")

    def stop(self) -> bool:
        """SIGTERM; True when the server shut down cleanly (uvicorn re-raises the signal after its
        graceful shutdown, so the exit status is 0 or -SIGTERM)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60) in (0, -signal.SIGTERM)


def request(url, body: bytes | None = None, headers: dict | None = None, method: str | None = None):
    """(status, headers, body) of one HTTP request; 4xx/5xx are answers, not exceptions."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def tiff(array) -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, array)
    return out.getvalue()


def npy(array) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_package):
    s = Server(tiny_package, "--max-batch", 8, "--max-wait-ms", 50, home=tmp_path_factory.mktemp("home"))
    yield s
    assert s.stop()


def test_endpoints_and_the_published_schema(server):
    assert request(server.url + "/ready")[0] == 200
    status, _, body = request(server.url + "/v1/models")
    assert status == 200 and [m["name"] for m in json.loads(body)] == ["n2v-tiny"]
    info = json.loads(request(server.url + "/v1/models/n2v-tiny")[2])
    assert info["inputs"][0]["axes"] == "bcyx" and info["ref"] == "n2v-tiny@0.1.0" and not info["instances"]
    schema = json.loads(request(server.url + "/openapi.json")[2])
    assert any("predict" in path for path in schema["paths"]) and "/v1/models/{name}" in schema["paths"]
    metrics = request(server.url + "/metrics")[2].decode()
    assert "zoo_requests" in metrics and "zoo_queue_depth" in metrics


def test_predictions_match_the_offline_model_in_tiff_and_npy(server, tiny_package):
    image, _ = synthetic_nuclei((96, 80), seed=7)
    expected = zoo.load(tiny_package).predict(image)
    status, headers, body = request(server.url + "/v1/models/n2v-tiny/predict", tiff(image), {"Content-Type": "image/tiff"})
    assert status == 200 and headers["content-type"] == "image/tiff"
    np.testing.assert_allclose(tifffile.imread(io.BytesIO(body)), expected, rtol=1e-5, atol=1e-5)
    status, headers, body = request(server.url + "/v1/models/n2v-tiny/predict", npy(image),
                                    {"Content-Type": "application/x-npy", "Accept": "application/x-npy"})
    assert status == 200 and headers["content-type"] == "application/x-npy"
    np.testing.assert_allclose(np.load(io.BytesIO(body)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt, content_type", [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                               ("PNG", "application/octet-stream"), ("JPEG", "image/jpg")])
def test_png_and_jpeg_bodies_are_read_as_the_command_line_reads_them(server, tiny_package, tmp_path, fmt,
                                                                    content_type):
    """Issue 21.8: the same file, read by the CLI's reader and sent to the server, gives the same answer."""
    from PIL import Image

    from zoo.imageio import read_image

    image = (synthetic_nuclei((96, 80), seed=7)[0] // 4).clip(0, 255).astype(np.uint8)
    path = tmp_path / f"image.{fmt.lower()}"
    Image.fromarray(image).save(path, format=fmt)
    expected = zoo.load(tiny_package).predict(read_image(path))
    status, headers, body = request(server.url + "/v1/models/n2v-tiny/predict", path.read_bytes(),
                                    {"Content-Type": content_type})
    assert status == 200, body
    np.testing.assert_allclose(tifffile.imread(io.BytesIO(body)), expected, rtol=1e-5, atol=1e-5)


def test_concurrent_small_requests_are_batched(server, tiny_package):
    images = [synthetic_nuclei((64, 64), seed=100 + i)[0] for i in range(24)]
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda im: request(server.url + "/v1/models/n2v-tiny/predict", npy(im),
                                                   {"Content-Type": "application/x-npy", "Accept": "application/x-npy"}),
                                images))
    assert all(a[0] == 200 for a in answers)
    model = zoo.load(tiny_package)
    for image, (_, _, body) in zip(images[:3], answers[:3]):       # each gets its own slice of the batch
        np.testing.assert_allclose(np.load(io.BytesIO(body)), model.predict(image), rtol=1e-5, atol=1e-5)
    metrics = request(server.url + "/metrics")[2].decode()
    count = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("zoo_batch_size_count")))
    total = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("zoo_batch_size_sum")))
    assert total >= 24 and count < total                             # fewer network calls than requests


BAD = {
    "wrong content type": (b"hello", {"Content-Type": "text/plain"}, 415),
    "corrupt tiff": (b"II*\x00garbage", {"Content-Type": "image/tiff"}, 400),
    "empty body": (b"", {"Content-Type": "image/tiff"}, 400),
    "pickled npy": (None, {"Content-Type": "application/x-npy"}, 400),
    "complex dtype": (npy(np.zeros((8, 8), np.complex64)), {"Content-Type": "application/x-npy"}, 400),
    "rgb to a grey model": (npy(np.zeros((32, 32, 3), np.uint8)), {"Content-Type": "application/x-npy"}, 422),
    "huge declared size": (None, {"Content-Type": "application/x-npy"}, 413),
    "unacceptable accept": (npy(np.zeros((32, 32), np.uint8)), {"Content-Type": "application/x-npy",
                                                                 "Accept": "text/html"}, 406),
}


def _bad_body(name):
    body, headers, status = BAD[name]
    if name == "pickled npy":
        out = io.BytesIO()
        np.save(out, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        body = out.getvalue()
    if name == "huge declared size":       # a valid header declaring 10^10 values, and a few bytes of data
        header = npy(np.zeros((1, 1), np.float32))
        body = header.replace(b"(1, 1)", b"(100000, 100000)")
    return body, headers, status


def test_bad_input_gets_a_clear_4xx_concurrently_and_the_server_survives(server):
    cases = [(name, *_bad_body(name)) for name in BAD]
    cases += [("unknown model", npy(np.zeros((32, 32), np.uint8)), {"Content-Type": "application/x-npy"}, 404)]
    cases += [("wrong axes", npy(np.zeros((32, 32), np.uint8)), {"Content-Type": "application/x-npy"}, 422)]
    cases += [("nan image", npy(np.full((32, 32), np.nan, np.float32)), {"Content-Type": "application/x-npy"}, 422)]

    def send(case):
        name, body, headers, _ = case
        path = "/v1/models/nope/predict" if name == "unknown model" else "/v1/models/n2v-tiny/predict"
        query = "?axes=zyx" if name == "wrong axes" else ""
        return request(server.url + path + query, body, headers, method="POST")

    with ThreadPoolExecutor(len(cases) * 2) as pool:
        answers = list(pool.map(send, cases * 2))
    for (name, _, _, expected), (status, headers, body) in zip(cases * 2, answers):
        assert status == expected, (name, status, body)
        error = json.loads(body)
        assert error["status"] == expected and len(error["error"]) > 20, (name, error)
    too_big = request(server.url + "/v1/models/n2v-tiny/predict", b"x" * 100, {"Content-Type": "image/tiff",
                                                                               "Content-Length": str(1 << 40)})
    assert too_big[0] in (400, 413)
    assert request(server.url + "/health")[0] == 200
    assert 'code="500"' not in request(server.url + "/metrics")[2].decode()


def test_a_full_queue_answers_503_with_retry_after(tmp_path, tiny_package):
    s = Server(tiny_package, "--max-queue", 1, "--max-batch", 1, home=tmp_path / "home")
    try:
        image = npy(synthetic_nuclei((768, 768), seed=1)[0])
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: request(s.url + "/v1/models/n2v-tiny/predict", image,
                                                      {"Content-Type": "application/x-npy"}), range(12)))
        codes = [a[0] for a in answers]
        assert 503 in codes and 200 in codes and set(codes) <= {200, 503}, codes
        assert all(a[1].get("retry-after") for a in answers if a[0] == 503)
    finally:
        assert s.stop()


def test_a_prediction_over_the_timeout_answers_504_and_the_server_goes_on(tmp_path, tiny_package):
    s = Server(tiny_package, "--timeout", "0.05", home=tmp_path / "home")
    try:
        big = npy(synthetic_nuclei((1536, 1536), seed=2)[0])      # tiled by the runtime: well over 50 ms
        status, _, body = request(s.url + "/v1/models/n2v-tiny/predict", big, {"Content-Type": "application/x-npy"})
        assert status == 504 and "longer than 0.05 s" in json.loads(body)["error"]
        assert request(s.url + "/health")[0] == 200
    finally:
        assert s.stop()


def test_token_protects_predict_and_enables_admin(tmp_path, tiny_package):
    s = Server(tiny_package, "--token", "s3cret", home=tmp_path / "home")
    try:
        body, headers = npy(synthetic_nuclei((64, 64))[0]), {"Content-Type": "application/x-npy"}
        assert request(s.url + "/v1/models/n2v-tiny/predict", body, headers)[0] == 401
        auth = {**headers, "Authorization": "Bearer s3cret"}
        assert request(s.url + "/v1/models/n2v-tiny/predict", body, auth)[0] == 200
        assert request(s.url + "/v1/admin/models/n2v-tiny", headers={"Authorization": "Bearer wrong"},
                       method="DELETE")[0] == 401
        assert request(s.url + "/v1/admin/models/n2v-tiny", headers=auth, method="DELETE")[0] == 200
        assert request(s.url + "/v1/models/n2v-tiny/predict", body, auth)[0] == 404
        loaded = request(s.url + "/v1/admin/models", json.dumps({"ref": str(tiny_package)}).encode(),
                         {**auth, "Content-Type": "application/json"})
        assert loaded[0] == 200 and json.loads(loaded[2])["name"] == "n2v-tiny"
        missing = request(s.url + "/v1/admin/models", json.dumps({"ref": "no-such-model"}).encode(),
                          {**auth, "Content-Type": "application/json"})
        assert missing[0] == 404 and "no-such-model" in json.loads(missing[2])["error"]
    finally:
        assert s.stop()


def test_admin_is_off_without_a_token_and_shutdown_finishes_in_flight_requests(server):
    assert request(server.url + "/v1/admin/models", b'{"ref": "x"}', {"Content-Type": "application/json"})[0] == 403
    image = npy(synthetic_nuclei((1024, 1024), seed=3)[0])
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(request, server.url + "/v1/models/n2v-tiny/predict", image,
                              {"Content-Type": "application/x-npy"})
        time.sleep(0.5)                         # the request is in flight
        server.proc.send_signal(signal.SIGTERM)
        assert pending.result()[0] == 200
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)


def test_instance_models_answer_json_object_tables(tmp_path):
    from conftest import REPO

    s = Server("stardist-dsb-fluo-2d", home=tmp_path / "home")
    try:
        sample = (REPO / "samples" / "dsb_fluo_nuclei.tif").read_bytes()
        status, headers, body = request(s.url + "/v1/models/stardist-dsb-fluo-2d/predict", sample,
                                        {"Content-Type": "image/tiff", "Accept": "application/json"})
        assert status == 200 and headers["content-type"] == "application/json"
        assert headers["x-shift-warning"] == "false"            # 0.1.1 has a shift check; the sample is in domain
        assert float(headers["x-shift-score"]) <= float(headers["x-shift-threshold"])
        objects = json.loads(body)["objects"]
        assert 250 < len(objects) < 450                               # 369 nuclei in the sample
        first = objects[0]
        assert set(first) == {"label", "area", "centroid", "bbox"} and first["area"] > 10 and len(first["bbox"]) == 4
        labels = tifffile.imread(io.BytesIO(request(s.url + "/v1/models/stardist-dsb-fluo-2d/predict", sample,
                                                    {"Content-Type": "image/tiff"})[2]))
        assert labels.max() == len(objects)
    finally:
        assert s.stop()


def test_classifiers_answer_their_class_as_json(tmp_path):
    from conftest import REPO
    from PIL import Image

    s = Server("classifier-bccd", home=tmp_path / "home")
    try:
        status, _, body = request(s.url + "/v1/models/classifier-bccd")
        assert status == 200 and json.loads(body)["classes"] == ["Platelets", "RBC", "WBC"]
        for kind, expected in (("wbc", "WBC"), ("rbc", "RBC")):
            crop = np.asarray(Image.open(REPO / "samples" / f"bccd_{kind}.jpg"))
            status, headers, body = request(s.url + "/v1/models/classifier-bccd/predict?axes=yxc", npy(crop),
                                            {"Content-Type": "application/x-npy"})
            assert status == 200 and headers["content-type"] == "application/json", body
            prediction = json.loads(body)["predictions"][0]
            assert prediction["class"] == expected and abs(sum(prediction["probabilities"].values()) - 1) < 1e-4
    finally:
        assert s.stop()


def test_triton_export_writes_a_repository_whose_onnx_runs_with_the_declared_shapes(tmp_path, zoo_home):
    import re

    import onnxruntime as ort

    from zoo.cli import main as cli

    assert cli(["export", "triton", "stardist-dsb-fluo-2d", str(tmp_path / "repo"), "--max-batch", "4"]) == 0
    folder = tmp_path / "repo" / "stardist-dsb-fluo-2d"
    config = (folder / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in config and "max_batch_size: 4" in config and "dynamic_batching" in config
    assert "instance_group" in config and "preferred_batch_size: [2, 4]" in config
    declared = {m[0]: [int(d) for d in m[1].split(",")]
                for m in re.findall(r'name: "(\w+)" data_type: TYPE_FP32 dims: \[([-\d, ]+)\]', config)}
    assert declared == {"input": [1, -1, -1], "output": [33, -1, -1]}
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and [o.name for o in session.get_outputs()] == ["output"]
    for batch, shape in ((1, (64, 96)), (4, (128, 72))):           # variable batch and spatial sizes, step 8
        (y,) = session.run(None, {"input": np.random.rand(batch, 1, *shape).astype(np.float32)})
        assert y.shape == (batch, 33, *shape)
    assert "percentile_normalize" in (folder / "README.md").read_text()
