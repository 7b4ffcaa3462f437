"""Remote registries against real servers on 127.0.0.1: a static HTTP server serving the registry
layout (with ranges), one that drops connections, answers 404/500 or serves a tampered file; the
cache (second pulls move no bytes, offline mode), mirroring, search, and processes publishing
and pulling at the same time."""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import zoo
from zoo.errors import IntegrityError, NotFoundError, ZooError
from zoo.registry import LocalRegistry, default_registry
from zoo.registry.http import HttpStore
from zoo.registry.remote import RemoteRegistry, mirror, registry_for, search, split_ref

from test_cli import zoo_cli


class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with byte ranges, plus the faults a test asks for (``server.faults``)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        faults, path = self.server.faults, self.path.split("?")[0]
        self.server.log.append((path, self.headers.get("Range")))
        if path in faults.get("status", {}):
            self.send_error(faults["status"][path])
            return
        local = Path(self.translate_path(path))
        if not local.is_file():
            return super().do_GET()
        data = local.read_bytes()
        if path in faults.get("tamper", set()):
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        if not start and path.endswith("index.json"):
            return super().do_GET()                    # conditional requests (If-Modified-Since -> 304)
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if faults.get("drop", {}).get(path, 0) > 0:    # send half, then cut the connection
            faults["drop"][path] -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_package):
    """A registry folder with n2v-tiny 0.1.0 and 0.2.0."""
    root = tmp_path_factory.mktemp("registry")
    reg = LocalRegistry(root / "registry", cache=root / "pubcache")
    reg.publish(tiny_package)
    second = root / "v2"
    shutil.copytree(tiny_package, second)
    (second / "zoo.yaml").write_text((second / "zoo.yaml").read_text().replace("version: 0.1.0", "version: 0.2.0"))
    reg.publish(second)
    return root / "registry"


@pytest.fixture
def server(published):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(published)))
    httpd.faults, httpd.log = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def package_bytes(registry: Path, version: str) -> int:
    return sum(f.stat().st_size for f in (registry / "packages" / "n2v-tiny" / version).rglob("*") if f.is_file())


def test_pull_over_http_then_again_from_the_cache(server, published, tmp_path):
    first = RemoteRegistry(HttpStore(server.url), cache=tmp_path / "cache", offline=False)
    spec, folder = first.pull("n2v-tiny")
    assert spec.ref == "n2v-tiny@0.2.0"                          # latest, compared as versions
    assert first.bytes_moved == package_bytes(published, "0.2.0")
    assert first.resolve("n2v-tiny@^0.1") == ("n2v-tiny", "0.1.0")
    second_store = HttpStore(server.url)
    second = RemoteRegistry(second_store, cache=tmp_path / "cache", offline=False)
    server.log.clear()
    assert second.pull("n2v-tiny@0.2.0")[1] == folder
    assert second.bytes_moved == 0 and second_store.requests == 1 and second_store.bytes == 0   # 304 on the index
    assert [path for path, _ in server.log] == ["/index.json"]
    model = zoo.load(f"{server.url}/n2v-tiny@0.1.0")            # a URL reference, through the same cache
    assert model.spec.ref == "n2v-tiny@0.1.0"


def test_a_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    weights = "/packages/n2v-tiny/0.1.0/weights/model.onnx"
    server.faults["drop"] = {weights: 2}
    registry = RemoteRegistry(HttpStore(server.url), cache=tmp_path / "cache", offline=False)
    spec, folder = registry.pull("n2v-tiny@0.1.0")
    ranges = [r for path, r in server.log if path == weights]
    assert len(ranges) == 3 and ranges[0] is None and ranges[1].startswith("bytes=") and ranges[2] != ranges[1]
    zoo.load(folder).test()


def test_a_connection_that_always_drops_fails_cleanly_and_resumes_later(server, tmp_path):
    weights = "/packages/n2v-tiny/0.1.0/weights/model.safetensors"
    server.faults["drop"] = {weights: 100}
    registry = RemoteRegistry(HttpStore(server.url), cache=tmp_path / "cache", offline=False)
    with pytest.raises(ZooError, match="interrupted 4 times; run the same command again"):
        registry.pull("n2v-tiny@0.1.0")
    assert not (tmp_path / "cache" / "packages").exists()          # nothing half-written is visible
    server.faults["drop"] = {}
    server.log.clear()
    registry.pull("n2v-tiny@0.1.0")
    assert [r for path, r in server.log if path == weights][0].startswith("bytes=")   # resumed, not restarted


def test_http_errors_and_tampered_files_are_clear_and_leave_nothing_in_the_cache(server, tmp_path):
    cache = tmp_path / "cache"
    server.faults["status"] = {"/index.json": 500}
    with pytest.raises(ZooError, match="HTTP 500"):
        RemoteRegistry(HttpStore(server.url), cache=cache, offline=False).pull("n2v-tiny")
    server.faults["status"] = {"/packages/n2v-tiny/0.1.0/test/output.npy": 404}
    with pytest.raises(NotFoundError, match="test/output.npy"):
        RemoteRegistry(HttpStore(server.url), cache=cache, offline=False).pull("n2v-tiny@0.1.0")
    assert not (cache / "packages").exists()
    server.faults = {"tamper": {"/packages/n2v-tiny/0.1.0/weights/model.safetensors"}}
    with pytest.raises(IntegrityError, match="weights/model.safetensors"):
        RemoteRegistry(HttpStore(server.url), cache=tmp_path / "fresh", offline=False).pull("n2v-tiny@0.1.0")
    assert not (tmp_path / "fresh" / "packages").exists()
    server.faults = {}                       # the server repaired: the interrupted pull completes
    RemoteRegistry(HttpStore(server.url), cache=cache, offline=False).pull("n2v-tiny@0.1.0")
    with pytest.raises(NotFoundError, match="not found on the server"):
        RemoteRegistry(HttpStore(server.url + "/nowhere"), cache=cache, offline=False).pull("n2v-tiny")
    with pytest.raises(ZooError, match="cannot reach"):
        RemoteRegistry(HttpStore("http://127.0.0.1:9"), cache=cache, offline=False).pull("n2v-tiny")


def test_offline_resolves_from_the_cache_alone(server, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    with pytest.raises(NotFoundError, match="never read"):
        RemoteRegistry(HttpStore(server.url), cache=cache, offline=True).pull("n2v-tiny")
    RemoteRegistry(HttpStore(server.url), cache=cache, offline=False).pull("n2v-tiny@0.1.0")
    server.log.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = RemoteRegistry(HttpStore(server.url), cache=cache)
    assert offline.pull("n2v-tiny@^0.1")[0].ref == "n2v-tiny@0.1.0"
    with pytest.raises(NotFoundError, match="offline, and n2v-tiny@0.2.0 is not in the cache"):
        offline.pull("n2v-tiny@0.2.0")
    assert server.log == []                                       # not one request


def test_mirror_copies_verifies_and_resumes(server, tmp_path, zoo_home):
    destination = tmp_path / "mirror"
    first = mirror(server.url, destination, progress=lambda line: None)
    assert first == {"copied": 2, "skipped": 0}
    assert mirror(server.url, destination, progress=lambda line: None) == {"copied": 0, "skipped": 2}
    source_index = json.loads(urlopen(f"{server.url}/index.json"))
    mirrored = LocalRegistry(destination).index()
    assert {v: e["sha256"] for v, e in mirrored["n2v-tiny"].items()} == \
           {v: e["sha256"] for v, e in source_index["n2v-tiny"].items()}
    assert registry_for(destination).pull("n2v-tiny@0.1.0")[0].ref == "n2v-tiny@0.1.0"


def urlopen(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_search_by_text_task_tag_architecture_and_axes(zoo_home):
    rows = default_registry().entries()
    names = lambda **kw: {r["name"] for r in search(rows, **kw)}   # noqa: E731
    assert names(task="segmentation") >= {"stardist-dsb-fluo-2d", "cellpose-dsb-2d", "unet-synth-3d"}
    assert "n2v-w2s" not in names(task="segmentation")
    assert names(architecture="stardist") == {"stardist-dsb-fluo-2d", "stardist-dsb-he-2d"}
    assert names(axes="bczyx") == {"care-synth-3d", "unet-synth-3d"}
    assert names(text="H&E stardist") == {"stardist-dsb-he-2d"}
    assert names(tag="self-supervised") >= {"n2v-w2s"}
    assert names(text="no such words anywhere") == set()


def test_split_ref():
    assert split_ref("hf://my-lab/stardist@0.1.0") == ("hf://my-lab", "stardist@0.1.0")
    assert split_ref("http://host:8000/zoo/reg/n2v-w2s") == ("http://host:8000/zoo/reg", "n2v-w2s")
    with pytest.raises(ZooError, match="names no package"):
        split_ref("http://host")


def test_cli_pull_list_search_cache_over_http(server, tmp_path):
    home = tmp_path / "home"
    first = zoo_cli("pull", f"{server.url}/n2v-tiny@0.1.0", env_home=home).stdout
    second = zoo_cli("pull", f"{server.url}/n2v-tiny@0.1.0", env_home=home).stdout
    assert first.split("\t")[1] == second.split("\t")[1] and "\t0 bytes downloaded" in second
    assert int(first.strip().split("\t")[2].split()[0]) > 0
    assert zoo_cli("list", "--remote", server.url, env_home=home).stdout.startswith("n2v-tiny\t0.2.0\t")
    assert "n2v-tiny" in zoo_cli("search", "--remote", server.url, "--architecture", "n2v", env_home=home).stdout
    zoo_cli("--registry", server.url, "pull", "n2v-tiny@0.2.0", env_home=home)
    listing = zoo_cli("cache", "ls", env_home=home).stdout
    assert "n2v-tiny@0.1.0" in listing and "n2v-tiny@0.2.0" in listing
    assert "removed 1 item(s)" in zoo_cli("cache", "prune", env_home=home).stdout     # keeps the latest
    assert "n2v-tiny@0.1.0" not in zoo_cli("cache", "ls", env_home=home).stdout
    offline = zoo_cli("--offline", "pull", f"{server.url}/n2v-tiny@0.1.0", env_home=home, check=False)
    assert offline.returncode == 2 and "offline" in offline.stderr and "Traceback" not in offline.stderr
    readonly = zoo_cli("push", tmp_path, "--to", server.url, env_home=home, check=False)
    assert readonly.returncode == 2 and "read-only" in readonly.stderr


def _spawn(*args, home: Path):
    env = {**os.environ, "ZOO_HOME": str(home), "ZOO_CACHE": str(home / "cache")}
    return subprocess.Popen([sys.executable, "-m", "zoo", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_pulling_at_once_download_once(server, tmp_path):
    weights = "/packages/n2v-tiny/0.2.0/weights/model.onnx"
    procs = [_spawn("pull", f"{server.url}/n2v-tiny@0.2.0", home=tmp_path / "home") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len({out.split("\t")[1] for out, _ in outs}) == 1
    assert sorted(int(out.strip().split("\t")[2].split()[0]) for out, _ in outs)[0] == 0   # the other waited
    assert [path for path, _ in server.log].count(weights) == 1


def test_two_processes_publishing_at_once_leave_a_consistent_registry(tiny_package, tmp_path):
    versions = []
    for version in ("0.3.0", "0.4.0"):
        folder = tmp_path / version
        shutil.copytree(tiny_package, folder)
        (folder / "zoo.yaml").write_text((folder / "zoo.yaml").read_text().replace("version: 0.1.0", f"version: {version}"))
        versions.append(folder)
    registry = tmp_path / "shared-registry"
    for packages in ([versions[0], versions[1]], [versions[0], versions[0]]):     # different, then the same version
        procs = [_spawn("--registry", registry, "push", folder, "--no-test", home=tmp_path / "home") for folder in packages]
        outs = [p.communicate(timeout=300) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
    index = json.loads((registry / "index.json").read_text())
    assert sorted(index["n2v-tiny"]) == ["0.3.0", "0.4.0"]
    reg = LocalRegistry(registry, cache=tmp_path / "check")
    for version in ("0.3.0", "0.4.0"):
        reg.pull(f"n2v-tiny@{version}")                        # complete and verified
    assert not list((registry / ".tmp").glob("*")) if (registry / ".tmp").exists() else True
