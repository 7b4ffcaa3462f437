"""Tiled prediction equals whole-image prediction where the halo covers the receptive field."""
import numpy as np
import pytest
import torch

from zoo.nn.unet import UNet
from zoo.runtime.runners import TorchRunner
from zoo.runtime.tiling import plan_axis, predict_tiled


@pytest.fixture(scope="module")
def runner2d():
    torch.manual_seed(0)
    net = UNet(dims=2, in_channels=1, out_channels=2, depth=2, base_channels=4, batch_norm=True)
    for m in net.modules():  # non-trivial running statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return TorchRunner(net, device="cpu")


@pytest.mark.parametrize("shape, tile", [((1, 1, 200, 173), 96), ((2, 1, 64, 300), 128), ((1, 1, 37, 45), 64)])
def test_tiled_equals_whole_2d(runner2d, shape, tile):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    kw = dict(halo=[32, 32], step=[4, 4], minimum=[16, 16])
    whole = predict_tiled(runner2d, x, tile=[4096, 4096], **kw)
    tiled = predict_tiled(runner2d, x, tile=[tile, tile], batch_size=3, **kw)
    assert whole.shape == (shape[0], 2) + shape[2:]
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-4 * np.abs(whole).max())


def test_too_small_halo_shows_seams(runner2d):
    """The check above can fail: without a halo, tiles differ from the whole image."""
    x = np.random.default_rng(1).normal(size=(1, 1, 128, 128)).astype(np.float32)
    kw = dict(step=[4, 4], minimum=[16, 16])
    whole = predict_tiled(runner2d, x, tile=[4096, 4096], halo=[32, 32], **kw)
    seamy = predict_tiled(runner2d, x, tile=[32, 32], halo=[0, 0], **kw)
    assert np.abs(seamy - whole).max() > 1e-2


def test_tiled_equals_whole_3d():
    torch.manual_seed(0)
    runner = TorchRunner(UNet(dims=3, in_channels=1, out_channels=1, depth=1, base_channels=2).eval(), "cpu")
    x = np.random.default_rng(0).normal(size=(1, 1, 20, 36, 30)).astype(np.float32)
    kw = dict(halo=[8, 8, 8], step=[2, 2, 2], minimum=[4, 4, 4])
    whole = predict_tiled(runner, x, tile=[512] * 3, **kw)
    tiled = predict_tiled(runner, x, tile=[24, 28, 24], batch_size=2, **kw)
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-4 * np.abs(whole).max())


def test_plan_respects_step_and_minimum():
    core, halo, n = plan_axis(size=1000, tile=256, halo=30, step=4, minimum=16)
    assert halo == 32 and core % 4 == 0 and core + 2 * halo <= 256 and n * core >= 1000
    core, halo, n = plan_axis(size=5, tile=256, halo=0, step=4, minimum=16)
    assert core + 2 * halo >= 16 and n == 1


def test_progress_reports_every_tile(runner2d):
    seen = []
    x = np.zeros((1, 1, 100, 100), np.float32)
    predict_tiled(runner2d, x, tile=[80, 80], halo=[8, 8], step=[4, 4], minimum=[16, 16], batch_size=2,
                  progress=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] == 4


def test_bad_batch_size_and_shrinking_networks_are_clear_errors(runner2d):
    from zoo.errors import InputError, ZooError

    x = np.zeros((1, 1, 64, 64), np.float32)
    kw = dict(tile=[64, 64], halo=[8, 8], step=[4, 4], minimum=[16, 16])
    with pytest.raises(InputError, match="batch size"):
        predict_tiled(runner2d, x, batch_size=0, **kw)
    with pytest.raises(ZooError, match="same batch and spatial size"):
        predict_tiled(lambda t: t[:, :, 1:-1, 1:-1], x, **kw)


def test_one_pixel_axis_pads_only_that_axis_by_edge():
    x = np.random.default_rng(0).random((1, 1, 1, 50)).astype(np.float32)
    out = predict_tiled(lambda t: t * 2, x, tile=[16, 32], halo=[4, 4], step=[1, 1], minimum=[1, 1])
    np.testing.assert_allclose(out, 2 * x)
