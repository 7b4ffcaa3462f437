"""Hardening II, the registry's part (issue 20): a lost index is damage that a repair rebuilds, never a
reason to delete versions (2); one spelling per version (3); the HTTP index revalidated by content (5);
YAML bombs refused before they expand (6); storage failures, damaged indexes and missing files as
one-line errors (13)."""
from __future__ import annotations

import errno
import functools
import hashlib
import http.server
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from zoo import cli
from zoo import spec as specs
from zoo.errors import SpecError, VersionConflictError, ZooError
from zoo.registry import LocalRegistry
from zoo.registry.health import check_registry, repair
from zoo.registry.http import HttpStore
from zoo.registry.remote import RemoteRegistry

NAME = "n2v-tiny"


# ----------------------------------------------------------------------------- helpers
def with_version(src: Path, dst: Path, version: str) -> Path:
    """A copy of the package at ``src`` whose zoo.yaml says ``version`` (written as text: any spelling)."""
    shutil.copytree(src, dst)
    data = yaml.safe_load((dst / "zoo.yaml").read_text())
    data["version"] = version
    (dst / "zoo.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return dst


@pytest.fixture
def registry(tmp_path, tiny_package) -> LocalRegistry:
    """A registry folder holding n2v-tiny 0.1.0 and 0.2.0."""
    reg = LocalRegistry(tmp_path / "reg", cache=tmp_path / "cache")
    reg.publish(tiny_package)
    reg.publish(with_version(tiny_package, tmp_path / "v2", "0.2.0"))
    return reg


def zoo(*args, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the command line, run in this process."""
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line and not line.startswith("WARNING ")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for fragment in fragments:
        assert fragment in err, err


def run_zoo(*args, home: Path, timeout: float = 20, preexec_fn=None) -> subprocess.CompletedProcess:
    """The command line in a subprocess: one that hangs fails the test at ``timeout`` instead of the suite."""
    env = {**os.environ, "ZOO_HOME": str(home), "ZOO_CACHE": str(home / "cache")}
    try:
        return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=timeout, preexec_fn=preexec_fn)
    except subprocess.TimeoutExpired:
        pytest.fail(f"zoo {' '.join(map(str, args))} was still running after {timeout} s")


def assert_clean_exit(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert_one_line_error(result.returncode, result.stderr, *fragments)


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class ETagHandler(Quiet):
    """A static server that validates index.json by its sha256 (ETag) alone: no Last-Modified."""

    def do_GET(self):
        if self.path != "/index.json":
            return super().do_GET()
        self.server.log.append(self.headers.get("If-None-Match"))
        data = Path(self.translate_path(self.path)).read_bytes()
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def serve():
    """serve(folder, handler) -> the URL of a loopback HTTP server for ``folder``."""
    servers = []

    def start(folder: Path, handler=Quiet) -> str:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
        httpd.log = []
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def bomb(indent: int, levels: int = 9) -> str:
    """'Billion laughs': ``levels`` lines of aliases that expand to 9**levels strings."""
    pad = " " * indent
    lines = [f"{pad}l0: &l0 [{', '.join(['lol'] * 9)}]"]
    lines += [f"{pad}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines)


def bomb_spec(package: Path) -> str:
    """The package's zoo.yaml with a billion-laughs bomb among its architecture params."""
    data = yaml.safe_load((package / "zoo.yaml").read_text())
    data["architecture"]["params"] = {"placeholder": 1}
    text = yaml.safe_dump(data, sort_keys=False)
    return text.replace("    placeholder: 1", bomb(4))


def bomb_package(tiny_package: Path, dst: Path) -> Path:
    shutil.copytree(tiny_package, dst)
    (dst / "zoo.yaml").write_text(bomb_spec(dst))
    return dst


def list_by_hand(root: Path, folder: Path, version: str) -> None:
    """List ``folder`` (already under packages/NAME/VERSION) in the index as a zoo of old would have."""
    index_path = root / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    sha = hashlib.sha256((folder / "zoo.yaml").read_bytes()).hexdigest()
    index.setdefault(NAME, {})[version] = {"sha256": sha, "task": "restoration/denoising", "tags": []}
    index_path.write_text(json.dumps(index))


# ----------------------------------------------------------------------------- 2: a lost index
@pytest.mark.parametrize("loss", ["missing", "empty"])
def test_a_lost_index_is_damage_and_repair_lists_the_versions_again(registry, zoo_home, loss, capsys):
    index = registry.root / "index.json"
    index.unlink() if loss == "missing" else index.write_text("{}")
    code, out, _ = zoo("--registry", registry.root, "check", capsys=capsys)
    assert code == 1 and "0 verified, 1 damaged" in out and "index" in out, out
    code, out, _ = zoo("--registry", registry.root, "check", "--repair", capsys=capsys)
    for version in ("0.1.0", "0.2.0"):
        assert (registry.root / "packages" / NAME / version / "zoo.yaml").is_file()
    code, out, _ = zoo("--registry", registry.root, "check", capsys=capsys)
    assert code == 0 and "2 verified, 0 damaged, 0 left over" in out, out
    assert LocalRegistry(registry.root).versions(NAME) == ["0.1.0", "0.2.0"]
    assert registry.pull(f"{NAME}@0.1.0")[0].version == "0.1.0"


def test_an_unreadable_index_is_rebuilt_and_kept_beside(registry):
    index = registry.root / "index.json"
    index.write_text('{"n2v-tiny": {"0.1.0": ')
    health = check_registry(registry.root)
    assert not health.ok and "corrupt" in health.problems[0]
    repair(health)
    assert json.loads(index.read_text())[NAME].keys() == {"0.1.0", "0.2.0"}
    assert [p.read_text() for p in registry.root.glob("index.json.damaged-*")] == ['{"n2v-tiny": {"0.1.0": ']
    assert check_registry(registry.root).ok and check_registry(registry.root).checked == 2


def test_a_verified_version_missing_from_the_index_is_listed_again_not_deleted(registry):
    index_path = registry.root / "index.json"
    index = json.loads(index_path.read_text())
    del index[NAME]["0.2.0"]
    index_path.write_text(json.dumps(index))
    repair(check_registry(registry.root))
    assert (registry.root / "packages" / NAME / "0.2.0" / "zoo.yaml").is_file()
    assert sorted(json.loads(index_path.read_text())[NAME]) == ["0.1.0", "0.2.0"]


def test_publishing_beside_a_lost_index_is_refused(registry, tiny_package, tmp_path):
    (registry.root / "index.json").unlink()
    with pytest.raises(ZooError, match="zoo check --repair"):
        registry.publish(with_version(tiny_package, tmp_path / "v3", "0.3.0"))
    assert not (registry.root / "index.json").exists()
    assert sorted(p.name for p in (registry.root / "packages" / NAME).iterdir()) == ["0.1.0", "0.2.0"]


# ----------------------------------------------------------------------------- 3: version aliases
@pytest.mark.parametrize("version", ["1.0.0-a1", "1.0.0-alpha1", "1.0.0-rc1", "1.0.0-b.1", "1.0.0\n"])
def test_only_the_canonical_spelling_of_a_version_is_valid(tiny_package, tmp_path, version, capsys):
    package = with_version(tiny_package, tmp_path / "pkg", version)
    with pytest.raises(SpecError, match="is not a version"):
        specs.load(package)
    code, _, err = zoo("validate", package, capsys=capsys)
    assert code == 2 and "is not a version" in err, err


def test_a_version_resolution_cannot_tell_from_a_published_one_is_refused(tiny_package, tmp_path):
    reg = LocalRegistry(tmp_path / "reg", cache=tmp_path / "cache")
    reg.publish(tiny_package)
    old = with_version(tiny_package, reg.root / "packages" / NAME / "1.0.0-a1", "1.0.0-a1")   # spelled as once allowed
    list_by_hand(reg.root, old, "1.0.0-a1")
    before = (reg.root / "index.json").read_bytes()
    with pytest.raises(VersionConflictError, match="1.0.0-a1"):
        reg.publish(with_version(tiny_package, tmp_path / "alias", "1.0.0-alpha.1"))
    assert (reg.root / "index.json").read_bytes() == before
    assert not (reg.root / "packages" / NAME / "1.0.0-alpha.1").exists()


# ----------------------------------------------------------------------------- 5: a stale HTTP index
def test_a_version_published_in_the_second_the_index_was_read_is_seen(registry, tiny_package, tmp_path, serve):
    url = serve(registry.root)
    time.sleep(1.02 - time.time() % 1)                 # the start of a second: all that follows fits in it
    registry.publish(with_version(tiny_package, tmp_path / "v3", "0.3.0"))
    first = RemoteRegistry(HttpStore(url), cache=tmp_path / "client")
    assert "0.3.0" in first.versions(NAME)
    registry.publish(with_version(tiny_package, tmp_path / "v4", "0.4.0"))
    assert "0.4.0" in RemoteRegistry(HttpStore(url), cache=tmp_path / "client").versions(NAME)


def test_the_index_is_revalidated_by_its_etag(registry, tiny_package, tmp_path, serve):
    url = serve(registry.root, ETagHandler)
    RemoteRegistry(HttpStore(url), cache=tmp_path / "client").index()
    store = HttpStore(url)
    assert RemoteRegistry(store, cache=tmp_path / "client").versions(NAME) == ["0.1.0", "0.2.0"]
    assert store.requests == 1 and store.bytes == 0               # 304: the same sha256
    registry.publish(with_version(tiny_package, tmp_path / "v3", "0.3.0"))
    assert "0.3.0" in RemoteRegistry(HttpStore(url), cache=tmp_path / "client").versions(NAME)


# ----------------------------------------------------------------------------- 6: YAML bombs
def test_the_yaml_reader_refuses_aliases_depth_and_size():
    for text, says in [("a: &x [1]\nb: *x\n", "anchors and aliases"), ("a: " + "[" * 1000 + "]" * 1000, "nested"),
                       ("a: " + "x" * (2 << 20), "larger than")]:
        with pytest.raises(SpecError, match=says):
            specs.parse_yaml(text)
    assert specs.parse_yaml("a: [1, {b: 2}]") == {"a": [1, {"b": 2}]}


def test_a_bomb_in_a_package_folder_or_archive_is_refused_fast(tiny_package, tmp_path):
    package = bomb_package(tiny_package, tmp_path / "bomb")
    assert_clean_exit(run_zoo("validate", package, home=tmp_path / "home"), "anchors and aliases")
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(package.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(package).as_posix())
    assert_clean_exit(run_zoo("pull", archive, home=tmp_path / "home"), "anchors and aliases")


def test_a_bomb_in_a_registry_is_refused_fast_over_http_and_from_a_folder(tiny_package, tmp_path, serve):
    root = tmp_path / "reg"
    folder = bomb_package(tiny_package, root / "packages" / NAME / "0.1.0")
    list_by_hand(root, folder, "0.1.0")
    assert_clean_exit(run_zoo("pull", f"{serve(root)}/{NAME}", home=tmp_path / "home"), "anchors and aliases")
    assert_clean_exit(run_zoo("--registry", root, "info", NAME, home=tmp_path / "home"), "anchors and aliases")


def test_a_bomb_in_a_bioimageio_description_is_refused_before_it_is_validated(tmp_path):
    rdf = tmp_path / "bio" / "rdf.yaml"
    rdf.parent.mkdir()
    rdf.write_text(f"format_version: 0.5.4\ntype: model\nname: bomb\nconfig:\n{bomb(2)}\n")
    result = run_zoo("--offline", "import", "bioimageio", rdf, "--out", tmp_path / "out", home=tmp_path / "home")
    assert_clean_exit(result, "aliases expand to more than")    # descriptions may alias; a bomb never expands


def test_a_deeply_nested_spec_is_a_clear_error(tiny_package, tmp_path):
    package = shutil.copytree(tiny_package, tmp_path / "deep")
    (package / "zoo.yaml").write_text((package / "zoo.yaml").read_text() + "deep: " + "[" * 1000 + "]" * 1000 + "\n")
    assert_clean_exit(run_zoo("validate", package, home=tmp_path / "home"), "nested more than")


# ----------------------------------------------------------------------------- 13: clean errors
def test_a_sha256_with_a_trailing_newline_is_named_as_not_a_sha256(package_copy, capsys):
    data = yaml.safe_load((package_copy / "zoo.yaml").read_text())
    data["weights"]["onnx"]["sha256"] += "\n"
    (package_copy / "zoo.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    code, _, err = zoo("validate", package_copy, capsys=capsys)
    assert code == 2 and "is not a sha256: expected exactly 64 lower-case hex digits" in err, err


@pytest.mark.parametrize("index, says", [
    ([], "got a list"),
    ({NAME: {"0.1.0": "not an entry"}}, "got a string"),
    ({NAME: ["0.1.0"]}, "got a list"),
    ({NAME: {"one.two": {"sha256": "0" * 64}}}, "'one.two' is not a version"),
    ({"../../etc": {"0.1.0": {"sha256": "0" * 64}}}, "is not a package name"),
])
def test_a_damaged_index_is_a_one_line_error(registry, zoo_home, index, says, capsys, serve):
    (registry.root / "index.json").write_text(json.dumps(index))
    for command in (["list"], ["pull", NAME]):
        code, _, err = zoo("--registry", registry.root, *command, capsys=capsys)
        assert_one_line_error(code, err, "is not a valid registry index", says)
    with pytest.raises(ZooError, match="is not a valid registry index"):
        RemoteRegistry(HttpStore(serve(registry.root)), cache=registry.cache).entries()


def test_a_listed_version_with_missing_files_is_a_one_line_error(registry, zoo_home, capsys):
    (registry.root / "packages" / NAME / "0.2.0" / "weights" / "model.onnx").unlink()
    code, _, err = zoo("--registry", registry.root, "pull", f"{NAME}@0.2.0", capsys=capsys)
    assert_one_line_error(code, err, "weights/model.onnx", "missing")
    assert not list((registry.cache / "packages").glob(f"{NAME}/0.2.0/*"))


def test_symbolic_link_loops_in_a_registry_are_clear(registry, zoo_home, capsys):
    weights = registry.root / "packages" / NAME / "0.2.0" / "weights" / "model.onnx"
    weights.unlink()
    weights.symlink_to(weights.name)
    code, out, err = zoo("--registry", registry.root, "check", capsys=capsys)
    assert code == 1 and f"damaged: {NAME}@0.2.0" in out and "loop" in out and "Traceback" not in err
    assert_one_line_error(*zoo("--registry", registry.root, "pull", f"{NAME}@0.2.0", capsys=capsys)[::2], "loop")
    index = registry.root / "index.json"
    index.unlink()
    index.symlink_to(index.name)
    for command in (["list"], ["pull", NAME], ["check"]):
        assert_one_line_error(*zoo("--registry", registry.root, *command, capsys=capsys)[::2], "loop", "index.json")


def _small_file_limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))      # the package's weights are ~90 kB


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.name != ".lock"] if folder.exists() else []


def test_the_file_size_limit_during_push_and_pull_is_clear_and_leaves_nothing(registry, tiny_package, tmp_path):
    target = tmp_path / "target"
    result = run_zoo("--registry", target, "push", "--no-test", tiny_package, home=tmp_path / "home",
                     timeout=120, preexec_fn=_small_file_limit)
    assert_clean_exit(result, "ulimit -f", "EFBIG")
    assert _files_under(target) == []
    result = run_zoo("--registry", registry.root, "pull", NAME, home=tmp_path / "home", timeout=120,
                     preexec_fn=_small_file_limit)
    assert_clean_exit(result, "ulimit -f", "EFBIG")
    assert _files_under(tmp_path / "home" / "cache" / "packages") == []
    assert _files_under(tmp_path / "home" / "cache" / ".tmp") == []


def _refuse_under(root: Path, path) -> None:
    """Fail as a read-only folder does (this runs as root, whom permissions do not stop)."""
    if Path(path).resolve().is_relative_to(root.resolve()):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))


def test_a_read_only_registry_or_cache_is_a_one_line_error(registry, tiny_package, tmp_path, zoo_home, capsys,
                                                             monkeypatch):
    import builtins

    from zoo.registry import local

    target = tmp_path / "read-only"
    target.mkdir()
    real_open, real_copy = builtins.open, shutil.copyfile
    monkeypatch.setattr(local, "open", lambda path, *a, **k: _refuse_under(target, path) or real_open(path, *a, **k),
                        raising=False)
    code, _, err = zoo("--registry", target, "push", "--no-test", tiny_package, capsys=capsys)
    assert_one_line_error(code, err, "no permission", "EACCES")
    monkeypatch.delattr(local, "open")
    monkeypatch.setattr(shutil, "copyfile",
                        lambda src, dst, **k: _refuse_under(zoo_home / "cache", dst) or real_copy(src, dst, **k))
    code, _, err = zoo("--registry", registry.root, "pull", NAME, capsys=capsys)
    assert_one_line_error(code, err, "no permission", "EACCES")
    assert _files_under(zoo_home / "cache" / "packages") == []
