"""Streaming memory does not grow with the image: the stitching band counts against the tile budget."""
import numpy as np

from zoo.runtime import memory, tiling


def test_a_wide_image_gets_shorter_tiles_not_a_wider_band():
    per_pixel, available = 4000.0, 16 << 30
    budget = min(available * memory.CPU_SHARE, memory.CPU_CAP)
    narrow = memory.choose([4096, 4096], per_pixel, [40, 40], on_gpu=False, available=available, out_channels=33)
    wide = memory.choose([16384, 16384], per_pixel, [40, 40], on_gpu=False, available=available, out_channels=33)
    for spatial, choice in (([4096, 4096], narrow), ([16384, 16384], wide)):
        band = memory.BAND_COPIES * 4 * 33 * spatial[1] * choice.tile[0]
        activations = choice.tile[0] * choice.tile[1] * per_pixel * memory.LIVE_FRACTION
        assert band + activations <= budget * 1.01, (spatial, choice)
    assert wide.tile[0] < narrow.tile[0]
    # one output channel on a 4096-wide image: the band hardly matters
    plain = memory.choose([4096, 4096], per_pixel, [40, 40], on_gpu=False, available=available)
    single = memory.choose([4096, 4096], per_pixel, [40, 40], on_gpu=False, available=available, out_channels=1)
    assert single.tile[0] >= 0.9 * plain.tile[0]


def test_the_band_is_allocated_once_per_image():
    """The band buffer is made at its final height: no array grows row by row of tiles."""
    x = np.random.default_rng(0).random((1, 1, 203, 150)).astype(np.float32)
    plans = tiling.plan(x.shape[2:], [64, 64], [8, 8], [4, 4], [16, 16])
    sizes = []
    original = tiling._Band.add

    def add(self, b, region, values):
        before = None if self.data is None else self.data.shape
        original(self, b, region, values)
        if before is not None and before != self.data.shape:
            sizes.append((before, self.data.shape))

    tiling._Band.add = add
    try:
        out = tiling.predict_planned(lambda t: t * 2, x, plans)
    finally:
        tiling._Band.add = original
    np.testing.assert_allclose(out, 2 * x, rtol=1e-6)
    assert sizes == []
