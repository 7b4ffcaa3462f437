"""Hardening II, the prediction and reading side (issue 20): outputs never delete what the zoo did
not write (1); offline opens no socket (4); declared sizes checked before allocating (7); values
that are not real numbers refused on every path (8); the remaining clean-error cases (13)."""
from __future__ import annotations

import resource
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

import zoo
from zoo.errors import InputError, IntegrityError, ZooError
from zoo.omezarr import create_omezarr, written_by_zoo
from zoo.package import files
from zoo.registry.archives import pull_archive
from conftest import synthetic_nuclei
from test_hardening_registry import assert_clean_exit, assert_one_line_error, run_zoo, zoo as zoo_cli


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, synthetic_nuclei(shape=(96, 80), seed=3)[0])
    return path


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: what must survive a refused write."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- 1: outputs never lose data
@pytest.mark.parametrize("output", ["d.zarr", "existing_dir.tif", "existing_dir.npy"])
def test_an_output_naming_an_ordinary_folder_never_deletes_it(tmp_path, tiny_package, output, capsys):
    """The folder holds the input and another file; streamed and in-memory, API and CLI: refused, untouched."""
    folder = tmp_path / output
    folder.mkdir()
    source = folder / "in.tif"
    tifffile.imwrite(source, synthetic_nuclei(shape=(64, 64), seed=1)[0])
    (folder / "notes.txt").write_text("a week of work")
    before = tree(folder)
    model = zoo.load(tiny_package)
    for overwrite in (False, True):
        with pytest.raises(InputError, match="holds the input|is a folder|not an OME-Zarr written by the zoo"):
            model.predict_file(source, folder, overwrite=overwrite)
        code, _, err = zoo_cli("predict", tiny_package, source, "-o", f"{folder}/", *(["--overwrite"] * overwrite),
                               capsys=capsys)
        assert_one_line_error(code, err, "choose another output path")
    assert tree(folder) == before


def test_a_folder_that_does_not_hold_the_input_is_still_not_replaced(tmp_path, tiny_package, image):
    folder = tmp_path / "results.zarr"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    model = zoo.load(tiny_package)
    with pytest.raises(InputError, match="not an OME-Zarr written by the zoo"):
        model.predict_file(image, folder, overwrite=True)
    with pytest.raises(InputError, match="not an OME-Zarr written by the zoo"):
        zoo.imageio.write_image(folder, np.zeros((4, 4), np.float32), overwrite=True)
    assert tree(folder) == {"keep.txt": b"x"}


def test_an_ome_zarr_someone_else_wrote_is_not_replaced(tmp_path, tiny_package, image):
    from zoo.omezarr import WRITER_KEY

    theirs = tmp_path / "theirs.zarr"
    create_omezarr(theirs, (8, 8), np.uint8, "yx")[...] = 1        # valid OME-Zarr, then without the zoo's mark
    import zarr

    del zarr.open_group(str(theirs), mode="r+").attrs[WRITER_KEY]
    assert not written_by_zoo(theirs)
    before = tree(theirs)
    with pytest.raises(InputError, match="not an OME-Zarr written by the zoo"):
        zoo.load(tiny_package).predict_file(image, theirs, overwrite=True)
    assert tree(theirs) == before


@pytest.mark.parametrize("suffix", [".tif", ".npy", ".zarr"])
def test_an_existing_output_is_replaced_only_with_overwrite(tmp_path, tiny_package, image, suffix, capsys):
    target = tmp_path / f"out{suffix}"
    args = ["predict", tiny_package, image, "-o", target]
    assert zoo_cli(*args, capsys=capsys)[0] == 0
    assert suffix != ".zarr" or written_by_zoo(target)
    before = tree(target) if target.is_dir() else target.read_bytes()
    code, _, err = zoo_cli(*args, capsys=capsys)
    assert_one_line_error(code, err, "exists", "--overwrite")
    assert (tree(target) if target.is_dir() else target.read_bytes()) == before
    assert zoo_cli(*args, "--overwrite", capsys=capsys)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.tif", target.name])   # no leftovers


def test_an_image_written_in_memory_replaces_an_existing_one_only_with_overwrite(tmp_path):
    """The in-memory writer (PNG labels, uncertainty maps) follows the same rule."""
    target = tmp_path / "labels.png"
    zoo.imageio.write_image(target, np.ones((4, 4), np.int32))
    before = target.read_bytes()
    with pytest.raises(InputError, match="exists"):
        zoo.imageio.write_image(target, np.full((4, 4), 7, np.int32))
    assert target.read_bytes() == before
    zoo.imageio.write_image(target, np.full((4, 4), 7, np.int32), overwrite=True)
    assert zoo.imageio.read_image(target).max() == 7 and sorted(p.name for p in tmp_path.iterdir()) == ["labels.png"]


def test_an_output_inside_nothing_it_may_replace_is_refused_before_the_work(tmp_path, tiny_package, image):
    """The check comes first: a refused target costs no prediction."""
    (tmp_path / "out.tif").mkdir()
    model = zoo.load(tiny_package)
    calls = []
    real = model.runner
    model._runner = lambda batch: calls.append(1) or real(batch)
    with pytest.raises(InputError, match="is a folder"):
        model.predict_file(image, tmp_path / "out.tif")
    assert calls == []


# ----------------------------------------------------------------------------- 4: offline means offline
@pytest.fixture
def no_sockets(monkeypatch):
    """Any attempt to open a connection fails the test (a guard, not a mock of the work)."""
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise AssertionError(f"a connection to {address} was opened offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    return attempts


def _exported_with_url_weights(tmp_path) -> Path:
    """A real bioimage.io export of a standard package whose onnx weights are named by URL."""
    from zoo.export.bioimageio import export
    from zoo.registry import standard_store

    rdf_path, _ = export(standard_store() / "packages" / "n2v-w2s-2d" / "0.1.0", tmp_path / "export")
    rdf = yaml.safe_load(rdf_path.read_text())
    rdf["weights"]["onnx"]["source"] = "https://example.org/weights/model.onnx"
    rdf_path.write_text(yaml.safe_dump(rdf, sort_keys=False))
    return rdf_path


def test_offline_import_opens_no_socket(tmp_path, zoo_home, monkeypatch, no_sockets, capsys):
    rdf = _exported_with_url_weights(tmp_path)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    for args in (["--offline"], []):
        code, _, err = zoo_cli(*args, "import", "bioimageio", rdf, "--out", tmp_path / "pkg", "--weights", "onnx",
                               capsys=capsys)
        assert_one_line_error(code, err, "https://example.org/weights/model.onnx", "offline")
    assert no_sockets == [] and not (tmp_path / "pkg").exists()


def test_offline_archive_urls_are_refused_without_a_socket(tmp_path, no_sockets):
    with pytest.raises(ZooError, match="offline"):
        pull_archive("http://127.0.0.1:9/pkg.zip", tmp_path / "cache", offline=True)
    assert no_sockets == []


# ----------------------------------------------------------------------------- 7: declared sizes
def _npy_declaring(path: Path, shape, descr="<f4") -> Path:
    """An .npy whose header declares ``shape`` of ``descr``, followed by a few bytes of data."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
        f.write(bytes(64))
    return path


def _tiff_declaring(path: Path, side: int) -> Path:
    """A ~200-byte uncompressed TIFF whose one strip claims ``side`` x ``side`` uint8 pixels."""
    import struct

    entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 10 + 4), (277, 3, 1, 1), (278, 4, 1, side), (279, 4, 1, 16),
               (284, 3, 1, 1)]
    body = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        body += struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3
                                                         else struct.pack("<I", value))
    path.write_bytes(body + struct.pack("<I", 0) + bytes(16))
    return path


@pytest.mark.parametrize("case", ["npy 1e10 values", "npy void dtype", "tiff 100000^2"])
def test_declared_sizes_are_refused_before_allocating(tmp_path, tiny_package, case, capsys):
    path = {"npy 1e10 values": lambda: _npy_declaring(tmp_path / "big.npy", (100_000, 100_000)),
            "npy void dtype": lambda: _npy_declaring(tmp_path / "void.npy", (8, 8), "|V16"),
            "tiff 100000^2": lambda: _tiff_declaring(tmp_path / "big.tif", 100_000)}[case]()
    assert path.stat().st_size < 400
    says = "not real numbers" if "void" in case else "declares shape"
    for output in ("o.tif", "o.npy"):
        code, _, err = zoo_cli("predict", tiny_package, path, "-o", tmp_path / output, capsys=capsys)
        assert_one_line_error(code, err, says)
    with pytest.raises(InputError, match=says):
        zoo.imageio.read_image(path)


def test_a_package_test_tensor_declaring_a_huge_size_is_refused_by_name(package_copy):
    _npy_declaring(package_copy / "test" / "input.npy", (100_000, 100_000))
    with pytest.raises(IntegrityError, match="input.npy.*declares shape"):
        zoo.package.readers.array(package_copy / "test" / "input.npy")


# ----------------------------------------------------------------------------- 8: not real numbers
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("suffix", [".tif", ".npy"])
def test_nan_and_infinite_pixels_are_refused_on_every_path(tmp_path, tiny_package, value, suffix, capsys):
    image = synthetic_nuclei(shape=(80, 80), seed=2)[0].astype(np.float32)
    image[40, 17] = value
    source = tmp_path / f"in{suffix}"
    tifffile.imwrite(source, image) if suffix == ".tif" else np.save(source, image)
    model = zoo.load(tiny_package)
    with pytest.raises(InputError, match="NaN|infinit"):
        model.predict_file(source, tmp_path / "out.tif")
    with pytest.raises(InputError, match="NaN|infinit"):
        model.predict(image)
    for output in ("out.tif", "out.npy", "out.zarr"):
        code, _, err = zoo_cli("predict", tiny_package, source, "-o", tmp_path / output, capsys=capsys)
        assert_one_line_error(code, err)
        assert "NaN" in err or "infinit" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]     # nothing written


def test_complex_images_are_refused_not_silently_made_real(tmp_path, tiny_package, capsys):
    image = (synthetic_nuclei(shape=(64, 64), seed=2)[0] * (1 + 1j)).astype(np.complex64)
    for source in (tmp_path / "c.npy", tmp_path / "c.tif"):
        np.save(source, image) if source.suffix == ".npy" else tifffile.imwrite(source, image)
        for output in ("o.tif", "o.npy"):
            code, _, err = zoo_cli("predict", tiny_package, source, "-o", tmp_path / output, capsys=capsys)
            assert_one_line_error(code, err, "complex", "not real numbers")
        with pytest.raises(InputError, match="not real numbers"):
            zoo.imageio.read_image(source)            # what the in-memory path reads


@pytest.mark.parametrize("tensor", [np.array(["not a number"] * 4), np.ones((1, 1, 8, 8), np.complex64)])
def test_non_numeric_test_tensors_fail_validation(package_copy, tensor, capsys):
    from zoo.hashing import sha256_file

    path = package_copy / "test" / "input.npy"
    np.save(path, tensor)
    data = yaml.safe_load((package_copy / "zoo.yaml").read_text())
    data["test"]["inputs"][0]["sha256"] = sha256_file(path)      # a consistent package, only the tensor is odd
    (package_copy / "zoo.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    code, _, err = zoo_cli("validate", package_copy, capsys=capsys)
    assert code != 0 and "not real numbers" in err and "Traceback" not in err, err


# ----------------------------------------------------------------------------- 13: clean errors
def test_a_symbolic_link_loop_in_a_folder_package_is_a_one_line_error(package_copy, capsys):
    weights = package_copy / "weights" / "model.onnx"
    weights.unlink()
    weights.symlink_to(weights.name)
    code, _, err = zoo_cli("validate", package_copy, capsys=capsys)
    assert_one_line_error(code, err, "loop")


def _package_zip(tiny_package: Path, out: Path, extra: list[tuple[str, bytes]]) -> Path:
    spec = zoo.spec.load(tiny_package)
    with zipfile.ZipFile(out, "w") as z:
        for rel in files.package_files(spec):
            z.write(tiny_package / rel, rel)
        for name, data in extra:
            z.writestr(name, data)
    return out


@pytest.mark.parametrize("extra, says", [
    ([("a" * 300, b"x")], "name part of 300 bytes"),
    ([("/".join(["d" * 200] * 26) + "/f", b"x")], "more than the 1024"),
    ([("zoo.yaml/", b"")], "both a file and a folder"),
])
def test_archive_member_names_no_file_system_holds_are_one_line_errors(tiny_package, tmp_path, extra, says):
    archive = _package_zip(tiny_package, tmp_path / "odd.zip", extra)
    assert_clean_exit(run_zoo("pull", archive, home=tmp_path / "home", timeout=60), says)


def test_files_an_archive_does_not_list_are_left_out_of_the_cache(tiny_package, tmp_path, caplog):
    archive = _package_zip(tiny_package, tmp_path / "extra.zip", [("notes/secret.txt", b"unpinned"),
                                                                  ("run.sh", b"echo hi")])
    spec, folder = pull_archive(archive, tmp_path / "cache")
    listed = set(files.package_files(spec))
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == listed
    assert "notes/secret.txt" in caplog.text and "run.sh" in caplog.text


def _small_file_limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_the_file_size_limit_during_predict_is_clear_and_leaves_nothing(tmp_path, tiny_package):
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, synthetic_nuclei(shape=(256, 256), seed=1)[0])   # 256 KiB of float32 out
    for output in ("out.tif", "out.png"):
        args = ["predict", tiny_package, source, "-o", tmp_path / output] + (["--raw"] * (output == "out.png"))
        result = run_zoo(*args, home=tmp_path / "home", timeout=120, preexec_fn=_small_file_limit)
        if output == "out.tif":
            assert_clean_exit(result, "ulimit -f", "EFBIG")
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == ["in.tif"]


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """``zoo info | head``: the reader has gone before the first write (its end of the pipe is closed)."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    home = tmp_path / "home"
    try:
        result = subprocess.run([sys.executable, "-m", "zoo", "info", "n2v-w2s"], stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=60,
                                env={**os.environ, "ZOO_HOME": str(home), "ZOO_CACHE": str(home / "cache")})
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.returncode == 141, result
