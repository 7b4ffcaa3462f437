"""The server under abuse (issue 20, items 9-12), on a real server process on loopback: a timed-out
prediction frees its worker, unloading never blocks the other routes, uploads buffered across
connections are capped, and clients that go away are not counted as server errors."""
from __future__ import annotations

import io
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tifffile

from conftest import synthetic_nuclei
from test_serve import Server, npy, request

PREDICT = "/v1/models/n2v-tiny/predict"
NPY = {"Content-Type": "application/x-npy"}


def blank_tiff(side: int) -> bytes:
    """A compressed all-zero image: a few KB on the wire, seconds of tiled prediction."""
    out = io.BytesIO()
    tifffile.imwrite(out, np.zeros((side, side), np.uint8), compression="zlib")
    return out.getvalue()


def small_request(server: Server):
    return request(server.url + PREDICT, npy(synthetic_nuclei((64, 64), seed=5)[0]), NPY)


def test_a_timed_out_prediction_frees_the_worker_within_a_tile(tmp_path, tiny_package):
    # a timeout that a small request meets even on a loaded machine (at 0.5 s, six small requests
    # in a row timed out while four benchmarks shared two cores), and an image far longer than it
    s = Server(tiny_package, "--timeout", "2", home=tmp_path / "home")
    try:
        status, _, body = request(s.url + PREDICT, blank_tiff(8192), {"Content-Type": "image/tiff"})   # 100 tiles
        assert status == 504 and "longer than 2 s" in json.loads(body)["error"]
        timed_out, codes = time.perf_counter(), []
        while time.perf_counter() - timed_out < 8 and 200 not in codes:   # the whole image takes ~20 s more
            codes.append(small_request(s)[0])
        assert codes[-1] == 200, f"the worker was still busy with the abandoned image: {codes}"
    finally:
        assert s.stop()


def test_unloading_during_a_prediction_blocks_no_route_and_the_prediction_finishes(tmp_path, tiny_package):
    s = Server(tiny_package, "--token", "t0ken", "--timeout", "20", home=tmp_path / "home")
    auth = {"Authorization": "Bearer t0ken"}
    try:
        with ThreadPoolExecutor(1) as pool:
            nuclei = np.tile(synthetic_nuclei((512, 512), seed=3)[0], (8, 8))   # 4096^2: ~5 s of tiles
            running = pool.submit(request, s.url + PREDICT, npy(nuclei), {**auth, **NPY})
            time.sleep(1.5)                                            # decoded and tiling
            started = time.perf_counter()
            assert request(s.url + "/v1/admin/models/n2v-tiny", headers=auth, method="DELETE")[0] == 200
            assert request(s.url + "/health")[0] == 200
            assert json.loads(request(s.url + "/v1/models")[2]) == []
            assert time.perf_counter() - started < 1.0, "unloading blocked the event loop"
            assert not running.done()
            status, _, body = request(s.url + PREDICT, npy(synthetic_nuclei((64, 64))[0]), {**auth, **NPY})
            assert status == 404 and "no model 'n2v-tiny'" in json.loads(body)["error"]
            status, headers, body = running.result()
            assert status == 200 and headers["x-shape"] == "4096,4096", body[:200]
    finally:
        assert s.stop()


@pytest.fixture(scope="module")
def capped(tmp_path_factory, tiny_package):
    """A server that buffers at most 1 MiB of request bodies at once."""
    s = Server(tiny_package, home=tmp_path_factory.mktemp("home"), env={"ZOO_SERVE_MAX_IN_FLIGHT_MB": "1"})
    yield s
    assert s.stop()


def start_upload(server: Server, declared: int, sent: int) -> socket.socket:
    """A connection that declares ``declared`` bytes of body and sends only ``sent`` of them."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    head = (f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-npy\r\n"
            f"Content-Length: {declared}\r\n\r\n")
    sock.sendall(head.encode() + b"\0" * sent)
    return sock


def answer(sock: socket.socket, wait: float) -> bytes | None:
    """The start of the server's answer on ``sock``, or None when none comes within ``wait`` s."""
    sock.settimeout(wait)
    try:
        return sock.recv(4096) or None
    except socket.timeout:
        return None


def counters(server: Server) -> dict[str, float]:
    text = request(server.url + "/metrics")[2].decode()
    return {name: float(value) for name, value in (line.rsplit(" ", 1) for line in text.splitlines()
                                                    if line and not line.startswith("#"))}


def server_errors(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith('zoo_errors_total{code="5') and '"503"' not in k)


def test_uploads_buffered_across_connections_are_capped_with_503(capped):
    image = npy(synthetic_nuclei((128, 128), seed=4)[0].astype(np.float32))   # 64 KiB: no room beside the two
    uploads = [start_upload(capped, 500_000, 1000) for _ in range(2)]
    try:
        assert [answer(u, 0.3) for u in uploads] == [None, None]    # both wait for the rest of their body
        third = start_upload(capped, 500_000, 1000)
        with third:
            refused = answer(third, 3) or b""
        assert refused.startswith(b"HTTP/1.1 503") and b"retry-after" in refused.lower(), refused[:300]
        status, headers, body = request(capped.url + PREDICT, image, NPY)
        assert status == 503 and headers.get("retry-after") and "uploads" in json.loads(body)["error"]
    finally:
        for u in uploads:
            u.close()
    codes, deadline = [], time.perf_counter() + 3                   # the server notices the clients left
    while time.perf_counter() < deadline and 200 not in codes:
        codes.append(request(capped.url + PREDICT, image, NPY)[0])
        time.sleep(0.05)
    assert codes[-1] == 200, codes


def test_a_client_that_goes_away_mid_body_is_counted_as_a_disconnect_not_a_server_error(capped):
    before = counters(capped)
    start_upload(capped, 100_000, 1000).close()
    deadline, after = time.perf_counter() + 3, before
    while time.perf_counter() < deadline:
        after = counters(capped)
        if after.get("zoo_client_disconnects_total", 0) > before.get("zoo_client_disconnects_total", 0):
            break
        time.sleep(0.05)
    assert after.get("zoo_client_disconnects_total", 0) == before.get("zoo_client_disconnects_total", 0) + 1, after
    assert server_errors(after) == server_errors(before) == 0, after
    assert small_request(capped)[0] == 200
