"""The `zoo` command, run as a user runs it (a real subprocess), on good and bad input."""
import os
import subprocess
import sys

import numpy as np
import tifffile

from conftest import N2V_BLUEPRINT, synthetic_nuclei


def zoo_cli(*args, env_home, check=True):
    env = {**os.environ, "ZOO_HOME": str(env_home), "ZOO_CACHE": str(env_home / "cache")}
    result = subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True,
                            env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"zoo {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def assert_clean_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("WARNING ")]
    assert lines and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_push_list_info_pull_validate_predict(tmp_path, tiny_package):
    home = tmp_path / "home"
    out = zoo_cli("push", tiny_package, env_home=home)
    assert "n2v-tiny@0.1.0 published" in out.stdout
    lines = zoo_cli("list", env_home=home).stdout.strip().splitlines()
    assert any(line.split("\t")[0] == "n2v-tiny" for line in lines)
    assert all(line.split("\t")[0] and "@" not in line.split("\t")[0] for line in lines)
    info = zoo_cli("info", "n2v-tiny", env_home=home).stdout
    assert "n2v-tiny@0.1.0" in info and "restoration/denoising" in info and "val_loss" in info
    assert "kind: package" in zoo_cli("info", "n2v-tiny", "--yaml", env_home=home).stdout
    pulled = zoo_cli("pull", "n2v-tiny@^0.1", env_home=home).stdout
    assert pulled.startswith("n2v-tiny@0.1.0\t") and str(home / "cache") in pulled
    validated = zoo_cli("validate", "n2v-tiny", env_home=home).stdout
    assert "torch reproduces" in validated and "onnx reproduces" in validated

    noisy, _ = synthetic_nuclei(shape=(300, 260), seed=7)
    tifffile.imwrite(tmp_path / "in.tif", noisy)
    for runtime in ("onnx", "torch"):
        zoo_cli("predict", "n2v-tiny", tmp_path / "in.tif", "-o", tmp_path / f"{runtime}.tif", "--runtime", runtime,
                "--tile", 128, "--figure", tmp_path / "fig.png", env_home=home)
    a, b = tifffile.imread(tmp_path / "onnx.tif"), tifffile.imread(tmp_path / "torch.tif")
    assert a.shape == noisy.shape and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.ptp(a))
    assert (tmp_path / "fig.png").stat().st_size > 1000


def test_predict_stacks_with_axes_into_ome_zarr_and_png_into_tiff(tmp_path, tiny_package):
    from PIL import Image

    from zoo.omezarr import open_omezarr

    home = tmp_path / "home"
    stack = np.stack([synthetic_nuclei(shape=(80, 96), seed=s)[0] for s in range(6)]).reshape(2, 3, 80, 96)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")   # no axes in the file
    assert_clean_error(zoo_cli("predict", tiny_package, tmp_path / "stack.tif", "-o", tmp_path / "o.zarr",
                               env_home=home, check=False), "expects a 2D image", "--axes")
    out = zoo_cli("predict", tiny_package, tmp_path / "stack.tif", "-o", tmp_path / "o.zarr", "--axes", "tzyx",
                  "--tile", 64, env_home=home)
    assert "streamed" in out.stdout
    array, axes = open_omezarr(tmp_path / "o.zarr")
    assert axes == "tzyx" and array.shape == stack.shape and np.isfinite(array[...]).all()
    Image.fromarray(stack[0, 0]).save(tmp_path / "slice.png")
    zoo_cli("predict", tiny_package, tmp_path / "slice.png", "-o", tmp_path / "slice.tif", env_home=home)
    assert tifffile.imread(tmp_path / "slice.tif").shape == (80, 96)


def test_validate_spec_file_and_folder(tmp_path, tiny_package):
    home = tmp_path / "home"
    assert "valid blueprint spec" in zoo_cli("validate", N2V_BLUEPRINT, env_home=home).stdout
    assert "valid package" in zoo_cli("validate", tiny_package, env_home=home).stdout


def test_train_command_writes_a_package(tmp_path, image_folder):
    home = tmp_path / "home"
    out = zoo_cli("train", N2V_BLUEPRINT, "--data", image_folder, "--out", tmp_path / "pkg", "--max-steps", 3,
                  "--batch-size", 2, "--patch", 32, "--name", "n2v-cli", env_home=home)
    assert "package written" in out.stdout
    assert "valid package" in zoo_cli("validate", tmp_path / "pkg", env_home=home).stdout


def test_train_care_by_name_with_targets_then_evaluate(tmp_path):
    home = tmp_path / "home"
    for folder in ("low", "high"):
        (tmp_path / folder).mkdir()
    for i in range(3):
        noisy, clean = synthetic_nuclei(shape=(64, 64), seed=20 + i)
        tifffile.imwrite(tmp_path / "low" / f"s{i}.tif", noisy)
        tifffile.imwrite(tmp_path / "high" / f"s{i}.tif", clean.astype(np.float32))
    assert_clean_error(zoo_cli("train", "care", "--data", tmp_path / "low", "--out", tmp_path / "pkg",
                               env_home=home, check=False), "--target")
    zoo_cli("train", "care", "--data", tmp_path / "low", "--target", tmp_path / "high", "--out", tmp_path / "pkg",
            "--max-steps", 2, "--batch-size", 2, "--patch", 32, "--val-fraction", 0.34, env_home=home)
    out = zoo_cli("evaluate", tmp_path / "pkg", "--data", tmp_path / "low", "--target", tmp_path / "high",
                  "--out", tmp_path / "eval", env_home=home).stdout
    assert "PSNR" in out and "SSIM" in out
    rows = (tmp_path / "eval" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("image,psnr_input") and len(rows) == 5 and rows[-1].startswith("mean,")
    assert (tmp_path / "eval" / "figure.png").stat().st_size > 1000


def test_errors_are_clear_and_traceback_free(tmp_path, tiny_package, package_copy):
    home = tmp_path / "home"
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: [\n")
    assert_clean_error(zoo_cli("validate", bad_yaml, env_home=home, check=False), "malformed YAML at line")
    schema = tmp_path / "schema.yaml"
    schema.write_text(N2V_BLUEPRINT.read_text().replace("axes: bcyx", "axes: bxy", 1))
    assert_clean_error(zoo_cli("validate", schema, env_home=home, check=False), "inputs[0].axes: 'bxy'")
    assert_clean_error(zoo_cli("pull", "no-such-model", env_home=home, check=False), "no package named 'no-such-model'")
    assert_clean_error(zoo_cli("predict", tiny_package, tmp_path / "missing.tif", "-o", tmp_path / "o.tif",
                               env_home=home, check=False), "image not found")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((64, 64, 3), np.uint8))
    assert_clean_error(zoo_cli("predict", tiny_package, tmp_path / "rgb.tif", "-o", tmp_path / "o.tif",
                               env_home=home, check=False), "single-channel")
    tifffile.imwrite(tmp_path / "4d.tif", np.zeros((2, 3, 64, 64), np.uint8), photometric="minisblack")
    assert_clean_error(zoo_cli("predict", tiny_package, tmp_path / "4d.tif", "-o", tmp_path / "o.tif",
                               env_home=home, check=False), "expects a 2D image")
    (tmp_path / "corrupt.tif").write_bytes(b"II*\0garbage")
    assert_clean_error(zoo_cli("predict", tiny_package, tmp_path / "corrupt.tif", "-o", tmp_path / "o.tif",
                               env_home=home, check=False), "could not read")
    assert_clean_error(zoo_cli("predict", tiny_package, tmp_path / "4d.tif", "-o", tmp_path / "o.tif",
                               "--device", "cuda", env_home=home, check=False), "cuda")
    tifffile.imwrite(tmp_path / "grey.tif", synthetic_nuclei(shape=(64, 64))[0])
    assert_clean_error(zoo_cli("predict", tiny_package, tmp_path / "grey.tif", "-o", tmp_path / "o.png",
                               env_home=home, check=False), "write it as .tif")

    zoo_cli("push", tiny_package, env_home=home)
    from zoo import spec as specs

    changed = specs.load(package_copy)
    changed.description = "Changed, same version."
    specs.write(changed, package_copy)
    assert_clean_error(zoo_cli("push", package_copy, env_home=home, check=False), "already published")
    (package_copy / "weights" / "model.onnx").write_bytes(b"x")
    assert_clean_error(zoo_cli("push", package_copy, env_home=home, check=False), "sha256 mismatch", "model.onnx")


def test_help_for_every_command(tmp_path):
    for command in ["list", "info", "pull", "push", "validate", "predict", "evaluate", "train"]:
        assert "usage: zoo " + command in zoo_cli(command, "--help", env_home=tmp_path).stdout
