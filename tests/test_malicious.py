"""Malicious packages: archives that try to write outside their folder or exhaust the disk, pickle
payloads in every weights slot, ONNX graphs that read files outside the package, specs that name
code. Each is refused with an error naming the problem, and nothing happens on the way."""
from __future__ import annotations

import functools
import http.server
import io
import os
import pickle
import shutil
import stat
import sys
import tarfile
import threading
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.errors import IntegrityError, SpecError, UnknownArchitectureError, ZooError
from zoo.hashing import sha256_file
from zoo.package import archive as archives
from zoo.package import files
from zoo.registry import LocalRegistry, standard_store
from zoo.registry.archives import pull_archive

from test_cli import assert_clean_error, zoo_cli


# ----------------------------------------------------------------------------- archive makers
def _zip(path: Path, members: list[tuple], compression=zipfile.ZIP_DEFLATED) -> Path:
    """``members``: (name, bytes) or (name, bytes, unix mode)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # zipfile warns about duplicate names: that is the point
        with zipfile.ZipFile(path, "w", compression) as z:
            for name, data, *mode in members:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = compression
                info.external_attr = (mode[0] if mode else stat.S_IFREG | 0o644) << 16
                z.writestr(info, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo | tuple]) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                t.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return path


def _link(name: str, target: str, kind) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _special(name: str, kind) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


@pytest.fixture(scope="module")
def genuine(tiny_package) -> list[tuple[str, bytes]]:
    """The files of a real package, as (name, bytes): what the malicious archives are built around."""
    spec = zoo.spec.load(tiny_package)
    return [(rel, (tiny_package / rel).read_bytes()) for rel in files.package_files(spec)]


ESCAPE = f"zoo-escape-{uuid.uuid4().hex}"       # a name that must never appear anywhere


def _escaped(*roots: Path) -> list[Path]:
    """Files called ESCAPE under the test's folders and the system temp folder."""
    import tempfile

    found = []
    for root in {*roots, Path(tempfile.gettempdir())}:
        found += [p for p in Path(root).rglob(f"{ESCAPE}*")] if Path(root).is_dir() else []
    return found


def _bad_archives(tmp: Path, genuine) -> dict[str, tuple[Path, str]]:
    """name -> (archive, words the refusal must contain). Every one also holds the genuine package."""
    z = lambda name, extra: _zip(tmp / f"{name}.zip", genuine + extra)        # noqa: E731
    t = lambda name, extra: _tar(tmp / f"{name}.tar.gz", genuine + extra)     # noqa: E731
    absolute = str(tmp / f"{ESCAPE}-abs")
    zeros = bytes(64 << 20)
    return {
        "zip ../": (z("dotdot", [(f"../../{ESCAPE}", b"x")]), "climbs out"),
        "zip deep ../": (z("deepdotdot", [(f"weights/../../../{ESCAPE}", b"x")]), "climbs out"),
        "zip absolute": (z("absolute", [(absolute, b"x")]), "absolute path"),
        "zip drive letter": (z("drive", [(f"C:/{ESCAPE}", b"x")]), "absolute path"),
        "zip backslash": (z("backslash", [(f"..\\..\\{ESCAPE}", b"x")]), "backslash"),
        "zip symlink": (z("symlink", [(f"{ESCAPE}-link", b"/etc/passwd", stat.S_IFLNK | 0o777)]), "symbolic link"),
        "zip symlink over a package file": (
            _zip(tmp / "symlink-weights.zip", [m for m in genuine if m[0] != "weights/model.onnx"]
                 + [("weights/model.onnx", b"/etc/passwd", stat.S_IFLNK | 0o777)]), "symbolic link"),
        "zip device": (z("device", [(f"{ESCAPE}-dev", b"", stat.S_IFCHR | 0o644)]), "not a regular file"),
        "zip duplicate zoo.yaml": (z("duplicate", [("zoo.yaml", b"name: evil\n")]), "appears twice"),
        "zip duplicate by case": (z("case", [("ZOO.yaml", b"name: evil\n")]), "appears twice"),
        "zip file and folder": (z("fileandfolder", [("zoo.yaml/inner", b"x")]), "which is a file"),
        "zip bomb (ratio)": (z("bomb", [("weights/padding.bin", zeros)]), "zip bomb"),
        "zip too many members": (z("many", [(f"m/{k}", b"") for k in range(10_001)]), "more than the 10000"),
        "zip empty name": (z("emptyname", [("/", b"x")]), "absolute path"),
        "tar ../": (t("dotdot", [(f"../{ESCAPE}", b"x")]), "climbs out"),
        "tar absolute": (t("absolute", [(absolute, b"x")]), "absolute path"),
        "tar symlink": (t("symlink", [_link(f"{ESCAPE}-link", "/etc/passwd", tarfile.SYMTYPE)]), "symbolic link"),
        "tar symlink then write through it": (
            t("symlinkwrite", [_link("sub", "../..", tarfile.SYMTYPE), (f"sub/{ESCAPE}", b"x")]), "symbolic link"),
        "tar hard link": (t("hardlink", [_link(f"{ESCAPE}-hard", "/etc/passwd", tarfile.LNKTYPE)]), "hard link"),
        "tar device": (t("device", [_special(f"{ESCAPE}-chr", tarfile.CHRTYPE)]), "device"),
        "tar fifo": (t("fifo", [_special(f"{ESCAPE}-fifo", tarfile.FIFOTYPE)]), "device, FIFO"),
        "tar duplicate zoo.yaml": (t("duplicate", [("zoo.yaml", b"name: evil\n")]), "appears twice"),
        "tar bomb (ratio)": (t("bomb", [("weights/padding.bin", zeros)]), "zip bomb"),
    }


@pytest.fixture(scope="module")
def bad_archives(tmp_path_factory, genuine):
    return _bad_archives(tmp_path_factory.mktemp("bad"), genuine)


CASE_NAMES = ["zip ../", "zip deep ../", "zip absolute", "zip drive letter", "zip backslash", "zip symlink",
              "zip symlink over a package file", "zip device", "zip duplicate zoo.yaml", "zip duplicate by case",
              "zip file and folder", "zip bomb (ratio)", "zip too many members", "zip empty name", "tar ../",
              "tar absolute", "tar symlink", "tar symlink then write through it", "tar hard link", "tar device",
              "tar fifo", "tar duplicate zoo.yaml", "tar bomb (ratio)"]


def test_the_genuine_package_as_zip_and_tar_publishes_and_pulls(tiny_package, genuine, tmp_path):
    """The control: the refusals below are about the malice, not about archives."""
    packed = archives.pack(tiny_package, tmp_path / "n2v-tiny.zip")
    assert archives.pack(tiny_package, tmp_path / "again.zip").read_bytes() == packed.read_bytes()
    nested = _tar(tmp_path / "nested.tar.gz", [(f"n2v-tiny/{n}", d) for n, d in genuine])
    for source in (packed, nested):
        registry = LocalRegistry(tmp_path / f"reg-{source.name}", cache=tmp_path / "cache")
        published = registry.publish(source)
        assert published.created and (published.path / "zoo.yaml").is_file()
        spec, folder = pull_archive(source, tmp_path / f"cache-{source.name}")
        assert spec.name == "n2v-tiny" and folder.is_dir()
        zoo.load(folder).test()


@pytest.mark.parametrize("case", CASE_NAMES)
def test_malicious_archives_are_refused_by_push_and_pull(case, bad_archives, tmp_path):
    assert sorted(CASE_NAMES) == sorted(bad_archives), "CASE_NAMES must name every archive built"
    source, words = bad_archives[case]
    registry = LocalRegistry(tmp_path / "registry", cache=tmp_path / "cache")
    with pytest.raises(IntegrityError, match="refusing archive") as pushed:
        registry.publish(source)
    assert words in str(pushed.value), str(pushed.value)
    assert registry.index() == {} and not (tmp_path / "registry" / "packages").exists()
    with pytest.raises(IntegrityError, match="refusing archive") as pulled:
        pull_archive(source, tmp_path / "cache")
    assert words in str(pulled.value)
    assert not list((tmp_path / "cache").rglob("zoo.yaml")), "nothing half-unpacked may stay in the cache"
    assert not _escaped(tmp_path, source.parent, Path.cwd()), "a member landed outside the package"
    assert not list(Path("/etc").glob(f"{ESCAPE}*"))


def test_a_member_larger_than_it_declares_is_cut_off(tiny_package, genuine, tmp_path):
    """A forged header: the central directory promises 10 bytes, the data holds 5 MB."""
    source = _zip(tmp_path / "forged.zip", genuine + [("weights/big.bin", bytes(5 << 20))], zipfile.ZIP_STORED)
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as z:
        info = z.getinfo("weights/big.bin")
    central = data.rfind(b"PK\x01\x02", 0, len(data))
    while central >= 0 and data[central + 46: central + 46 + len(b"weights/big.bin")] != b"weights/big.bin":
        central = data.rfind(b"PK\x01\x02", 0, central)
    data[central + 24: central + 28] = (10).to_bytes(4, "little")          # uncompressed size
    data[info.header_offset + 22: info.header_offset + 26] = (10).to_bytes(4, "little")
    source.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as refused:
        pull_archive(source, tmp_path / "cache")
    assert "forged.zip" in str(refused.value)
    assert not list((tmp_path / "cache").rglob("big.bin"))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_archive_is_named_not_a_traceback(damage, tiny_package, tmp_path):
    packed = archives.pack(tiny_package, tmp_path / "pkg.zip")
    data = packed.read_bytes()
    packed.write_bytes(os.urandom(4096) if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(IntegrityError, match="not a readable archive"):
        LocalRegistry(tmp_path / "registry").publish(packed)


def test_zoo_push_and_pull_of_a_malicious_archive_on_the_command_line(bad_archives, tmp_path):
    source, _ = bad_archives["zip ../"]
    for command in ("push", "pull"):
        assert_clean_error(zoo_cli(command, source, env_home=tmp_path / "home", check=False), "climbs out")


def test_pull_checks_the_published_sha256_before_unpacking(tiny_package, tmp_path):
    packed = archives.pack(tiny_package, tmp_path / "pkg.zip")
    with pytest.raises(IntegrityError, match="not the 000000000000"):
        pull_archive(packed, tmp_path / "cache", sha256="0" * 64)
    spec, folder = pull_archive(packed, tmp_path / "cache", sha256=sha256_file(packed))
    assert spec.name == "n2v-tiny"
    weights = folder / "weights" / "model.onnx"
    good = weights.read_bytes()
    weights.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))          # the cached copy damaged: a new pull repairs it
    assert pull_archive(packed, tmp_path / "cache")[1] == folder and weights.read_bytes() == good


# ----------------------------------------------------------------------------- archives and stores over HTTP
@pytest.fixture
def static_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    httpd.root, httpd.url = root, f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_archives_downloaded_over_http_are_refused_the_same_way(static_server, bad_archives, tiny_package,
                                                                 zoo_home):
    for case in ("zip ../", "tar symlink", "zip bomb (ratio)"):
        source, words = bad_archives[case]
        shutil.copyfile(source, static_server.root / source.name)
        with pytest.raises(IntegrityError, match=words.replace("(", r"\(")):
            zoo.load(f"{static_server.url}/{source.name}")
    assert not list((zoo_home / "cache").rglob("zoo.yaml"))
    archives.pack(tiny_package, static_server.root / "good.zip")
    assert zoo.load(f"{static_server.url}/good.zip").spec.name == "n2v-tiny"


def _registry_with(tmp_path: Path, tiny_package: Path, edit) -> Path:
    """A registry folder holding the tiny package after ``edit(index_entry, spec_text) -> spec_text``."""
    import json

    root = tmp_path / "evil-registry"
    LocalRegistry(root, cache=tmp_path / "pubcache").publish(tiny_package)
    index = json.loads((root / "index.json").read_text())
    entry = index["n2v-tiny"]["0.1.0"]
    spec_path = root / "packages" / "n2v-tiny" / "0.1.0" / "zoo.yaml"
    spec_path.write_text(edit(entry, spec_path.read_text()))
    entry["sha256"] = sha256_file(spec_path)
    (root / "index.json").write_text(json.dumps(index))
    return root


@pytest.mark.parametrize("where", ["index", "spec"])
def test_a_store_naming_paths_outside_the_package_is_refused(where, static_server, tiny_package, tmp_path):
    from zoo.registry.http import HttpStore
    from zoo.registry.remote import RemoteRegistry

    def edit(entry, text):
        if where == "index":
            entry["files"][f"../../../{ESCAPE}"] = "0" * 64
            return text
        return text.replace("file: weights/model.onnx", f"file: ../../../{ESCAPE}")

    root = _registry_with(tmp_path, tiny_package, edit)
    shutil.copytree(root, static_server.root, dirs_exist_ok=True)
    registry = RemoteRegistry(HttpStore(static_server.url), cache=tmp_path / "cache", offline=False)
    with pytest.raises(ZooError, match="refusing path|not a plain relative path") as refused:
        registry.pull("n2v-tiny")
    assert ESCAPE in str(refused.value) or "path" in str(refused.value)
    assert not _escaped(tmp_path / "cache") and not list((tmp_path / "cache" / "packages").rglob("*"))


def test_a_folder_store_whose_weights_are_a_symlink_out_is_refused(tiny_package, tmp_path):
    root = _registry_with(tmp_path, tiny_package, lambda entry, text: text)
    secret = tmp_path / f"{ESCAPE}-secret"
    secret.write_bytes((tiny_package / "weights" / "model.onnx").read_bytes())   # even with the right bytes
    target = root / "packages" / "n2v-tiny" / "0.1.0" / "weights" / "model.onnx"
    target.unlink()
    target.symlink_to(secret)
    with pytest.raises(IntegrityError, match="refusing path 'weights/model.onnx'"):
        LocalRegistry(root, cache=tmp_path / "cache").pull("n2v-tiny")


# ----------------------------------------------------------------------------- pickles in every weights slot
class _Payload:
    """Unpickling this creates a folder: the side effect the tests look for."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _pickle_bytes(marker: Path, kind: str) -> bytes:
    if kind == "torch":
        import torch

        buffer = io.BytesIO()
        torch.save({"weight": _Payload(marker)}, buffer)
        return buffer.getvalue()
    if kind == "npy":
        buffer = io.BytesIO()
        np.save(buffer, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
        return buffer.getvalue()
    if kind == "npz":
        buffer = io.BytesIO()
        np.savez(buffer, mean=np.array([_Payload(marker)], dtype=object))
        return buffer.getvalue()
    return pickle.dumps(_Payload(marker))


TRUSTED = "stardist-dsb-fluo-2d@0.1.1"      # a standard package with every slot, trust files included


def _slots(spec) -> list[str]:
    return [f.file for f in spec.package_files()]


@pytest.fixture(scope="module")
def trusted_package(tmp_path_factory):
    name, version = TRUSTED.split("@")
    return standard_store() / "packages" / name / version


def test_every_weights_slot_is_covered(trusted_package):
    slots = _slots(zoo.spec.load(trusted_package))
    assert {"weights/model.safetensors", "weights/model.onnx", "trust/shift.npz", "trust/encoder.onnx"} <= set(slots)
    assert sum(s.endswith(".npy") for s in slots) >= 2


@pytest.mark.parametrize("kind", ["pickle", "torch", "npy", "npz"])
def test_a_pickle_in_any_weights_slot_is_never_unpickled(kind, trusted_package, tmp_path):
    slots = _slots(zoo.spec.load(trusted_package))
    for slot in slots:
        package = tmp_path / f"pkg-{slot.replace('/', '_')}"
        shutil.copytree(trusted_package, package)
        marker = tmp_path / f"unpickled-{slot.replace('/', '_')}"
        old = sha256_file(package / slot)
        (package / slot).write_bytes(_pickle_bytes(marker, kind))
        spec_text = (package / "zoo.yaml").read_text()
        (package / "zoo.yaml").write_text(spec_text.replace(old, sha256_file(package / slot)))   # hashes re-pinned
        attempts = [
            lambda: zoo.load(package).test(),
            lambda: zoo.load(package, runtime="torch").test(),
            lambda: zoo.load(package).check_shift(np.random.default_rng(0).random((64, 64), np.float32)),
            lambda: LocalRegistry(tmp_path / f"reg-{kind}", cache=tmp_path / "c").publish(package),
        ]
        refusals = 0
        for attempt in attempts:
            try:
                attempt()
            except ZooError:
                refusals += 1
            except Exception as e:               # anything else is a traceback from deep inside a reader
                raise AssertionError(f"{kind} in {slot}: {type(e).__name__}: {e}") from e
            assert not marker.exists(), f"a {kind} payload in {slot} was unpickled"
        assert refusals >= 1, f"a {kind} payload in {slot} went unnoticed by every reader"


def test_a_pickled_state_dict_in_a_bioimageio_import_is_never_unpickled(tmp_path):
    """bioimage.io's pytorch_state_dict is read with torch.load(weights_only=True): a payload fails."""
    import yaml

    from zoo.export.bioimageio import export

    name, version = "unet-dsb-2d", "0.2.0"
    rdf_path, _ = export(standard_store() / "packages" / name / version, tmp_path / "export")
    rdf = yaml.safe_load(rdf_path.read_text())
    marker = tmp_path / "unpickled-state-dict"
    state = rdf_path.parent / rdf["weights"]["pytorch_state_dict"]["source"]
    state.write_bytes(_pickle_bytes(marker, "torch"))
    rdf["weights"]["pytorch_state_dict"]["sha256"] = sha256_file(state)
    rdf_path.write_text(yaml.safe_dump(rdf, sort_keys=False))
    from zoo.export.bioimageio_import import import_package

    with pytest.raises(ZooError):
        import_package(rdf_path, tmp_path / "pkg", weights="pytorch_state_dict")
    assert not marker.exists()


# ----------------------------------------------------------------------------- ONNX external data
@pytest.mark.parametrize("slot", ["weights/model.onnx", "trust/encoder.onnx"])
@pytest.mark.parametrize("location", ["outside", "inside"])
def test_onnx_with_external_data_is_refused_wherever_the_data_lies(slot, location, trusted_package, tmp_path):
    """Outside: ``../../secret``, ONNX Runtime would read it. Inside: still refused; a package graph
    is one self-contained, pinned file."""
    import onnx

    package = tmp_path / "pkg"
    shutil.copytree(trusted_package, package)
    model = onnx.load(str(package / slot))
    secret = tmp_path / f"{ESCAPE}-weights.bin"
    old = sha256_file(package / slot)
    onnx.save(model, str(package / slot), save_as_external_data=True, all_tensors_to_one_file=True,
              location="external.bin", size_threshold=0)
    if location == "outside":
        (package / slot).parent.joinpath("external.bin").rename(secret)
        relative = os.path.relpath(secret, (package / slot).parent)
        model = onnx.load(str(package / slot), load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = relative
        onnx.save(model, str(package / slot))
    (package / "zoo.yaml").write_text((package / "zoo.yaml").read_text().replace(old, sha256_file(package / slot)))
    image = np.random.default_rng(0).random((64, 64), np.float32)
    with pytest.raises(IntegrityError, match="external file"):
        model = zoo.load(package)
        model.predict(image)
        model.check_shift(image)


# ----------------------------------------------------------------------------- specs that name code
PROBE = f"zoo_evil_probe_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def probe_module(tmp_path, monkeypatch):
    """A module on sys.path that creates a marker when imported: importing it is the attack."""
    marker = tmp_path / "imported"
    (tmp_path / f"{PROBE}.py").write_text(f"import os\nos.mkdir({str(marker)!r})\ndef build(**kw):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop(PROBE, None)


def _with_spec(tiny_package, tmp_path, edit) -> Path:
    package = tmp_path / "pkg"
    shutil.copytree(tiny_package, package)
    (package / "zoo.yaml").write_text(edit((package / "zoo.yaml").read_text()))
    return package


@pytest.mark.parametrize("case, edit, error", [
    ("architecture as a module path", lambda t: t.replace("id: n2v", f"id: {PROBE}:build"), SpecError),
    ("architecture as a dotted name", lambda t: t.replace("id: n2v", f"id: {PROBE}.build"), SpecError),
    ("architecture named like a module", lambda t: t.replace("id: n2v", f"id: {PROBE}"), UnknownArchitectureError),
    ("YAML python tag", lambda t: t.replace("name: n2v-tiny", f"name: !!python/object/apply:{PROBE}.build []"),
     SpecError),
    ("YAML python module tag", lambda t: t + f"\nevil: !!python/module:{PROBE}\n", SpecError),
    ("import_from field", lambda t: t.replace("architecture:\n", f"architecture:\n  import_from: {PROBE}\n"),
     SpecError),
    ("callable field", lambda t: t + f"\ncallable: {PROBE}:build\n", SpecError),
    ("op as a module path", lambda t: t.replace("op: percentile_normalize", f"op: {PROBE}:build", 1), ZooError),
])
def test_a_spec_that_names_code_is_refused_without_importing_it(case, edit, error, tiny_package, tmp_path,
                                                                 probe_module):
    package = _with_spec(tiny_package, tmp_path, edit)
    assert (package / "zoo.yaml").read_text() != (tiny_package / "zoo.yaml").read_text(), case
    with pytest.raises(error):
        LocalRegistry(tmp_path / "registry").publish(package)
    with pytest.raises(ZooError):
        zoo.load(package, runtime="torch")
    assert not probe_module.exists() and PROBE not in sys.modules
