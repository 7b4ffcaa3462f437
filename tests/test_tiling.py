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
    p = plan_axis(size=1000, tile=256, halo=30, step=4, minimum=16)
    assert p.halo == 32 and p.blend == 8 and p.core % 4 == 0 and p.tile <= 256 and p.n * p.core >= 1000
    assert p.n * p.core - 1000 < p.n * 4            # cores are even: little padding wasted
    p = plan_axis(size=5, tile=256, halo=0, step=4, minimum=16)
    assert p.tile >= 16 and p.n == 1 and p.blend == 0


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


@pytest.mark.parametrize("size, tile, halo, step, blend", [(1000, 256, 30, 4, None), (97, 40, 8, 1, 6), (5, 64, 0, 4, 0),
                                                          (513, 128, 16, 8, 16)])
def test_blend_weights_add_up_to_one(size, tile, halo, step, blend):
    p = plan_axis(size, tile, halo, step, minimum=1, blend=blend)
    total = np.zeros(size)
    for i in range(p.n):
        lo, hi = p.kept(i)
        w = p.weights(i)
        assert len(w) == hi - lo and w.min() > 0 and w.max() <= 1
        total[lo:hi] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_blending_hides_seams_that_cropping_shows():
    """A 'network' whose output depends on the tile (a per-tile offset, like a model whose context
    exceeds the halo): cropped tiles jump at seams, blended ones ramp."""
    rng = np.random.default_rng(0)
    x = np.zeros((1, 1, 200, 200), np.float32)

    def tile_dependent(t):
        return t + rng.uniform(-1, 1, size=(t.shape[0], 1, 1, 1)).astype(np.float32)

    kw = dict(tile=[64, 64], halo=[8, 8], step=[4, 4], minimum=[16, 16])
    cropped = predict_tiled(tile_dependent, x, blend=0, **kw)
    blended = predict_tiled(tile_dependent, x, blend=16, **kw)

    def jump(y):
        return max(np.abs(np.diff(y[0, 0], axis=0)).max(), np.abs(np.diff(y[0, 0], axis=1)).max())

    assert jump(cropped) > 0.2
    assert jump(blended) < jump(cropped) / 8


def test_single_z_slice_and_one_pixel_images():
    torch.manual_seed(0)
    runner = TorchRunner(UNet(dims=3, in_channels=1, out_channels=1, depth=1, base_channels=2).eval(), "cpu")
    x = np.random.default_rng(0).normal(size=(1, 1, 1, 40, 30)).astype(np.float32)
    kw = dict(halo=[4, 8, 8], step=[2, 2, 2], minimum=[4, 4, 4])
    whole = predict_tiled(runner, x, tile=[512] * 3, **kw)
    tiled = predict_tiled(runner, x, tile=[16, 24, 24], **kw)
    assert whole.shape == x.shape
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-4 * np.abs(whole).max())
    one = predict_tiled(runner, np.ones((1, 1, 1, 1, 1), np.float32), tile=[16] * 3, **kw)
    assert one.shape == (1, 1, 1, 1, 1) and np.isfinite(one).all()


def test_tiles_are_read_lazily_and_never_cover_the_image_twice():
    """The reader is asked only for regions inside the image, each tile once."""
    x = np.random.default_rng(0).random((1, 1, 300, 200)).astype(np.float32)
    asked = []

    def read(b, region):
        assert all(0 <= s.start < s.stop <= n for s, n in zip(region, x.shape[2:]))
        asked.append(region)
        return x[(b, slice(None)) + region]

    from zoo.runtime.tiling import plan, run_tiles
    plans = plan(x.shape[2:], [96, 96], [16, 16], [4, 4], [16, 16])
    out = {}
    run_tiles(lambda t: t * 3, read, lambda region, v: out.setdefault(region[0].start, v), x.shape, plans)
    assert len(asked) == plans[0].n * plans[1].n
    np.testing.assert_allclose(np.concatenate([out[k] for k in sorted(out)], axis=2), 3 * x, rtol=1e-6)
