"""Both runners agree on the package's test tensors; device choice fails clearly or falls back."""
import logging

import numpy as np
import pytest

import zoo
from zoo.errors import InputError
from zoo.runtime import device as devices


def test_torch_and_onnx_agree_on_the_test_tensors(tiny_package):
    x = np.load(tiny_package / "test" / "input.npy")
    outputs = {rt: zoo.load(tiny_package, runtime=rt, device="cpu").predict_tensor(x) for rt in ("torch", "onnx")}
    np.testing.assert_allclose(outputs["torch"], outputs["onnx"], rtol=1e-4, atol=1e-4)


def test_channels_last_changes_nothing_but_layout(tiny_package):
    model = zoo.load(tiny_package, runtime="torch", device="cpu")
    x = np.random.default_rng(0).random((2, 1, 64, 48)).astype(np.float32)
    fast = model.runner(x)
    model.runner._formats = {}
    np.testing.assert_allclose(fast, model.runner(x), rtol=1e-5, atol=1e-5)
    assert fast.flags["C_CONTIGUOUS"]


def test_cuda_without_gpu_is_a_clear_error_and_auto_falls_back_quietly(tiny_package, caplog, monkeypatch):
    """No GPU at all is the normal case (info); a GPU that is present but unusable warns."""
    monkeypatch.setattr(devices, "_gpu_present", lambda: False)
    for runtime in ("torch", "onnx"):
        with pytest.raises(InputError, match="--device cpu"):
            zoo.load(tiny_package, runtime=runtime, device="cuda:0")
    devices._warned.clear()
    with caplog.at_level(logging.INFO, logger="zoo.runtime"):
        model = zoo.load(tiny_package, runtime="onnx", device="auto")
    assert model.runner.provider == "CPUExecutionProvider" and not model.runner.on_gpu
    fallback = [r for r in caplog.records if "running on CPU" in r.getMessage()]
    assert fallback and all(r.levelno == logging.INFO for r in fallback)

    monkeypatch.setattr(devices, "_gpu_present", lambda: True)   # a driver without a usable runtime
    devices._warned.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zoo.runtime"):
        zoo.load(tiny_package, runtime="onnx", device="auto")
    assert any(r.levelno == logging.WARNING and "GPU is present" in r.getMessage() for r in caplog.records)


def test_no_gpu_warning_on_a_cpu_machine(tiny_package, tmp_path):
    """Every command on a CPU-only machine printed 'WARNING ... no CUDA GPU found'."""
    import subprocess
    import sys

    if devices._gpu_present():
        pytest.skip("this machine has a GPU")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((64, 64)).astype(np.float32))
    done = subprocess.run([sys.executable, "-m", "zoo.cli", "predict", str(tiny_package), str(tmp_path / "x.npy"),
                           "-o", str(tmp_path / "y.npy")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr and "no CUDA" not in done.stderr


def test_unknown_device_names_the_choices(tiny_package):
    with pytest.raises(InputError, match="auto, cpu, cuda or cuda:N"):
        zoo.load(tiny_package, device="gpu")


def test_automatic_tiles_fit_the_memory_share(tiny_package):
    from zoo.runtime import memory

    model = zoo.load(tiny_package, device="cpu")
    per_pixel = model.bytes_per_pixel()
    assert 100 < per_pixel < 100_000
    small = memory.choose([4096, 4096], per_pixel, [40, 40], on_gpu=False, available=64 << 20)
    large = memory.choose([4096, 4096], per_pixel, [40, 40], on_gpu=False, available=16 << 30)
    assert small.tile[0] < large.tile[0] <= memory.MAX_TILE[2] and small.batch_size == large.batch_size == 1
    assert small.tile[0] ** 2 * per_pixel * memory.LIVE_FRACTION <= 0.25 * (64 << 20)
    gpu = memory.choose([4096, 4096], per_pixel, [40, 40], on_gpu=True, available=8 << 30)
    assert gpu.batch_size > 1
    tiny = memory.choose([10, 12], per_pixel, [40, 40], on_gpu=False, available=16 << 30)
    assert tiny.tile == [90, 92]      # never larger than the image and its margins
    plans, batch = model.plan_tiles((300, 200))
    assert batch == 1 and all(p.n >= 1 for p in plans)


def test_batch_norm_folding_keeps_the_output():
    import torch

    from zoo.nn.unet import UNet
    from zoo.runtime.runners import fold_batch_norm

    torch.manual_seed(0)
    net = UNet(dims=2, depth=2, base_channels=8, batch_norm=True).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        before = net(x)
        fold_batch_norm(net)
        after = net(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
