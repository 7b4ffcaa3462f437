"""Pull by id (issue 23.4): ``bioimageio:<id>`` is resolved as bioimageio.spec resolves it (its
collection pattern, then its id map, with the URLs from its settings), downloaded into the
verified cache, imported, and works offline afterwards. Every test talks to a real HTTP server
on loopback that serves a collection and packages built from the corpus (tests/data/bioimageio);
a guard refuses any other connection."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from zoo.errors import InputError, IntegrityError, NotFoundError, ZooError
from zoo.export.bioimageio_pull import fetch, names_bioimageio, pull_bioimageio

CORPUS = Path(__file__).parent / "data" / "bioimageio"
VOLUME = CORPUS / "synthetic" / "volume_3d_05"          # 0.5: onnx + torchscript, files beside the description
XY = CORPUS / "synthetic" / "xy_order_fixed_04"         # 0.4: onnx, served as a package zip


class Site:
    """A static web server on 127.0.0.1: ``routes`` maps a path to bytes; ``seen`` logs requests."""

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.seen: list[str] = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                site.seen.append(self.path)
                body = site.routes.get(self.path.split("?")[0])
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def artifact(self, model_id: str, folder: Path, rdf_changes=None) -> None:
        """Serve ``folder`` as the collection pattern serves an artifact: ``rdf.yaml`` and its files."""
        for f in folder.iterdir():
            if f.name != "bioimageio.yaml":
                self.routes[f"/artifacts/{model_id}/files/{f.name}"] = f.read_bytes()
        raw = yaml.safe_load((folder / "bioimageio.yaml").read_text())
        if rdf_changes:
            rdf_changes(raw)
        self.routes[f"/artifacts/{model_id}/files/rdf.yaml"] = yaml.safe_dump(raw, sort_keys=False).encode()

    def package_zip(self, model_id: str, folder: Path, sha256: str | None = "auto") -> str:
        """Serve ``folder`` zipped and list it in the id map; returns the zip's sha256."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for f in sorted(folder.iterdir()):
                z.write(f, f.name)
        data = buf.getvalue()
        self.routes[f"/zips/{model_id}.zip"] = data
        actual = hashlib.sha256(data).hexdigest()
        id_map = json.loads(self.routes.get("/id_map.json", b"{}"))
        id_map[model_id] = {"source": f"{self.url}/zips/{model_id}.zip",
                            **({"sha256": actual if sha256 == "auto" else sha256} if sha256 else {})}
        self.routes["/id_map.json"] = json.dumps(id_map).encode()
        return actual


@pytest.fixture
def guard(monkeypatch):
    """Connections to anything but loopback fail loudly; the list holds what was refused."""
    refused = []
    real = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "localhost", "::1"):
            refused.append(address)
            raise AssertionError(f"a test tried to reach {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return refused


@pytest.fixture
def site(monkeypatch, zoo_home, guard):
    """A collection on loopback, named through bioimageio.spec's own settings."""
    from bioimageio.spec import settings

    s = Site()
    monkeypatch.setattr(settings, "collection_http_pattern", s.url + "/artifacts/{bioimageio_id}/files/rdf.yaml")
    monkeypatch.setattr(settings, "id_map", s.url + "/id_map.json")
    monkeypatch.setattr(settings, "id_map_draft", s.url + "/id_map_draft.json")
    monkeypatch.setattr(settings, "resolve_draft", True)
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield s
    s.stop()


def _predicts(path: Path) -> None:
    import zoo

    model = zoo.load(path, device="cpu")
    assert model.test() <= 1.0


def test_an_id_resolves_through_the_collection_pattern_and_fetches_only_what_the_import_reads(site, zoo_home):
    site.artifact("tidy-volume", VOLUME)
    first = fetch("bioimageio:tidy-volume")
    assert first.weights == "onnx" and not first.cached and first.bytes_moved > 0
    assert first.path.is_relative_to(zoo_home / "cache" / "packages")
    files = sorted(p.rsplit("/", 1)[1] for p in site.seen)
    assert files == ["rdf.yaml", "test_input.npy", "test_output.npy", "weights.onnx"]    # no TorchScript, no README
    _predicts(first.path)

    site.seen.clear()                        # a second pull reads the description again, and nothing else
    again = fetch("tidy-volume")
    assert again.cached and again.path == first.path and again.weights == "onnx"
    assert [p.rsplit("/", 1)[1] for p in site.seen] == ["rdf.yaml"]
    assert again.bytes_moved == len(site.routes["/artifacts/tidy-volume/files/rdf.yaml"])


def test_after_one_pull_the_id_works_offline_without_opening_a_socket(site, monkeypatch):
    site.artifact("tidy-volume", VOLUME)
    path = pull_bioimageio("tidy-volume")
    site.stop()
    opened = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: opened.append(address))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert pull_bioimageio("bioimageio:tidy-volume") == path
    assert opened == []
    _predicts(path)


def test_an_unreachable_collection_falls_back_to_the_cache_with_a_warning(site, caplog):
    site.artifact("tidy-volume", VOLUME)
    path = pull_bioimageio("tidy-volume")
    site.stop()
    assert pull_bioimageio("tidy-volume") == path
    assert "using the copy of bioimageio:tidy-volume in the cache" in caplog.text


def test_nothing_cached_and_no_network_is_a_clear_error_naming_the_url(site, monkeypatch):
    site.stop()
    with pytest.raises(ZooError, match="nothing is cached for this id") as e:
        pull_bioimageio("tidy-volume")
    assert site.url in str(e.value)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(NotFoundError, match=r"offline .*artifacts/tidy-volume/files/rdf.yaml"):
        pull_bioimageio("tidy-volume")


def test_the_id_map_is_the_fallback_and_serves_a_package_zip_checked_by_its_sha256(site):
    site.package_zip("xy-order", XY)
    pulled = fetch("xy-order")
    assert pulled.url.endswith("/zips/xy-order.zip") and pulled.weights == "onnx"
    assert [p for p in site.seen if p.startswith("/artifacts")] == ["/artifacts/xy-order/files/rdf.yaml"]   # 404 first
    _predicts(pulled.path)
    site.seen.clear()                        # the index pins the same sha256: the zip is not downloaded again
    assert fetch("xy-order").cached and "/zips/xy-order.zip" not in site.seen


def test_draft_ids_come_from_the_draft_map_and_the_published_map_wins(site):
    site.package_zip("xy-order", XY)
    site.routes["/id_map_draft.json"] = json.dumps({"xy-order": {"source": f"{site.url}/nowhere.zip"},
                                                    "xy-draft": json.loads(site.routes["/id_map.json"])["xy-order"]
                                                    }).encode()
    assert fetch("xy-draft").url.endswith("/zips/xy-order.zip")
    assert fetch("xy-order").url.endswith("/zips/xy-order.zip")


def test_a_zip_that_differs_from_the_index_sha256_is_refused_and_nothing_is_cached(site, zoo_home):
    site.package_zip("xy-order", XY, sha256="0" * 64)
    with pytest.raises(IntegrityError, match="differs from the 000000000000"):
        pull_bioimageio("xy-order")
    assert not (zoo_home / "cache" / "packages").exists()
    assert not any((zoo_home / "cache" / ".tmp").iterdir())


def test_a_file_that_differs_from_the_description_sha256_is_refused(site, zoo_home):
    site.artifact("tidy-volume", VOLUME)
    site.routes["/artifacts/tidy-volume/files/weights.onnx"] += b"tampered"
    with pytest.raises(IntegrityError, match="weights.onnx: sha256 differs"):
        pull_bioimageio("tidy-volume")
    assert not (zoo_home / "cache" / "packages").exists()


def test_an_unknown_id_names_where_it_looked_and_the_close_ids(site):
    site.package_zip("xy-order", XY)
    with pytest.raises(NotFoundError) as e:
        pull_bioimageio("xy-ordre")
    text = str(e.value)
    assert "artifacts/xy-ordre/files/rdf.yaml (not found)" in text and "Did you mean xy-order?" in text
    assert "BIOIMAGEIO_COLLECTION_HTTP_PATTERN" in text


def test_weights_named_by_absolute_url_are_downloaded_and_the_description_points_at_them(site):
    def elsewhere(raw):
        raw["weights"]["onnx"]["source"] = f"{site.url}/mirror/model-weights.onnx"
    site.artifact("remote-weights", VOLUME, elsewhere)
    site.routes["/mirror/model-weights.onnx"] = (VOLUME / "weights.onnx").read_bytes()
    pulled = fetch("remote-weights")
    assert "/mirror/model-weights.onnx" in site.seen
    assert "/artifacts/remote-weights/files/weights.onnx" not in site.seen
    _predicts(pulled.path)


def test_a_chosen_format_is_the_one_downloaded(site):
    site.artifact("tidy-volume", VOLUME)
    pulled = fetch("tidy-volume", weights="torchscript")
    assert pulled.weights == "torchscript"
    assert [p.rsplit("/", 1)[1] for p in site.seen if "weights" in p] == ["weights_torchscript.pt"]
    x = np.load(VOLUME / "test_input.npy")
    import zoo

    model = zoo.load(pulled.path, device="cpu")
    got = model.predictor.predict_tensors({model.spec.inputs[0].name: x}, raw=True)
    np.testing.assert_allclose(next(iter(got.values())), np.load(VOLUME / "test_output.npy"), atol=1e-4)


def test_a_refused_format_is_refused_before_any_weights_are_downloaded(site):
    site.artifact("keras-only", CORPUS / "synthetic" / "keras_only_04")
    with pytest.raises(InputError, match="keras_hdf5"):
        pull_bioimageio("keras-only")
    assert not any("keras_weights" in p for p in site.seen)


@pytest.mark.parametrize("bad", ["", "../etc", "a b", "x/../y", "/abs", "bioimageio:"])
def test_ids_that_are_not_ids_are_refused_before_any_request(site, bad):
    with pytest.raises(InputError, match="not a bioimage.io model id"):
        pull_bioimageio(bad)
    assert site.seen == []


def test_references_name_bioimageio_by_prefix():
    assert names_bioimageio("bioimageio:affable-shark")
    assert not names_bioimageio("affable-shark") and not names_bioimageio(Path("bioimageio:x"))


def test_offline_any_cached_import_of_the_asked_format_serves(site, monkeypatch):
    site.artifact("tidy-volume", VOLUME)
    path = pull_bioimageio("tidy-volume")                  # the importer's choice: onnx
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert pull_bioimageio("tidy-volume", weights="onnx") == path
    with pytest.raises(NotFoundError, match="--weights torchscript"):
        pull_bioimageio("tidy-volume", weights="torchscript")


def test_a_pruned_import_is_pulled_again_online_and_named_offline(site, monkeypatch):
    import shutil

    site.artifact("tidy-volume", VOLUME)
    path = pull_bioimageio("tidy-volume")
    shutil.rmtree(path)                                   # e.g. `zoo cache prune`
    assert pull_bioimageio("tidy-volume") == path and path.is_dir()
    shutil.rmtree(path)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(NotFoundError, match="cached import is gone or damaged"):
        pull_bioimageio("tidy-volume")


def test_zoo_pull_and_zoo_load_take_a_bioimageio_id(site, capsys, monkeypatch):
    """The faces: ``zoo pull bioimageio:ID`` imports once; ``zoo.load("bioimageio:ID")`` and
    ``zoo predict bioimageio:ID`` then run it, offline too."""
    import zoo
    from zoo.cli import main

    site.artifact("tidy-volume", VOLUME)
    assert main(["pull", "bioimageio:tidy-volume"]) == 0
    out = capsys.readouterr().out
    assert "downloaded and imported (onnx)" in out, out
    assert main(["pull", "bioimageio:tidy-volume"]) == 0
    assert "checked, already imported" in capsys.readouterr().out
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    model = zoo.load("bioimageio:tidy-volume", device="cpu")
    assert model.spec.graph_only and model.test() <= 1.0
