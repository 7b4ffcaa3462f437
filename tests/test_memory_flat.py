"""Streaming memory does not grow with the image: the stitching band counts against the tile budget."""
from pathlib import Path

import numpy as np

from zoo.runtime import memory, tiling


def test_a_wide_image_gets_shorter_tiles_not_a_wider_band():
    per_pixel, available = 4000.0, 16 << 30
    budget = min(available * memory.CPU_SHARE, memory.CPU_CAP)
    narrow = memory.choose([4096, 4096], per_pixel, [40, 40], on_gpu=False, available=available, out_channels=8)
    wide = memory.choose([16384, 16384], per_pixel, [40, 40], on_gpu=False, available=available, out_channels=8)
    for spatial, choice in (([4096, 4096], narrow), ([16384, 16384], wide)):
        band = memory.BAND_COPIES * 4 * 8 * spatial[1] * choice.tile[0]
        activations = choice.tile[0] * choice.tile[1] * per_pixel * memory.LIVE_FRACTION
        assert band + activations <= budget * 1.01, (spatial, choice)
    assert memory.useful_side([40, 40]) <= wide.tile[0] < narrow.tile[0]
    # one output channel on a 4096-wide image: the band hardly matters
    plain = memory.choose([4096, 4096], per_pixel, [40, 40], on_gpu=False, available=available)
    single = memory.choose([4096, 4096], per_pixel, [40, 40], on_gpu=False, available=available, out_channels=1)
    assert single.tile[0] >= 0.9 * plain.tile[0]


def test_tiles_never_shrink_into_mostly_halo_while_free_memory_holds_the_band():
    """StarDist's 33 channels on a 16384 px wide image shrank its tiles to 184 px (margins 64):
    ~10x the work of 512 px tiles. Below the side where half of a tile is its core the band may
    use the free memory's share instead; only where that is short do tiles shrink further."""
    per_pixel, margins = 4000.0, [64, 64]
    floor = memory.useful_side(margins)
    core = (floor - 2 * 64) ** 2 / floor ** 2
    assert 0.5 <= core < 0.51
    roomy = memory.choose([16384, 16384], per_pixel, margins, on_gpu=False, available=16 << 30, out_channels=33)
    assert roomy.tile == [floor, floor] and "kept at" in roomy.reason
    band = memory.BAND_COPIES * 4 * 33 * 16384 * floor
    assert band + floor ** 2 * per_pixel * memory.LIVE_FRACTION <= (16 << 30) * memory.CPU_SHARE
    tight = memory.choose([16384, 16384], per_pixel, margins, on_gpu=False, available=4 << 30, out_channels=33)
    assert tight.tile[0] < floor                                         # 1 GiB share: the band must shrink
    assert memory.BAND_COPIES * 4 * 33 * 16384 * tight.tile[0] <= (4 << 30) * memory.CPU_SHARE


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


def test_the_tiles_do_not_depend_on_the_image_size():
    """The network's activations (most of the peak memory) scale with the tile: a larger image
    must not get larger tiles. An even split made them grow with the image (764, 900 and 992 px
    for 2048, 4096 and 8192 px images with 1024 px allowed: 1.7x the activations); now every tile
    but the last of each axis has the largest size the memory allows, and the last is shorter."""
    sizes = {}
    for size, tile in ((200, 64), (450, 64), (1000, 64)):
        plans = tiling.plan([size, size], [tile, tile], [8, 8], [4, 4], [16, 16], ragged=True)
        sizes[size] = {p.core_of(i) + 2 * p.margin for p in plans for i in range(p.n)}
        assert max(sizes[size]) == tile - (tile - 2 * plans[0].margin) % 4, sizes
    assert len({max(s) for s in sizes.values()}) == 1, sizes
    # the work is that of an even split: the same number of tiles, no more pixels than the step adds
    for size in (200, 450, 1000):
        even = tiling.plan_axis(size, 64, 8, 4, 16)
        ragged = tiling.plan_axis(size, 64, 8, 4, 16, ragged=True)
        assert ragged.n == even.n
        covered = sum(ragged.core_of(i) for i in range(ragged.n))
        assert size <= covered < size + 4 or ragged.last == 0


def test_a_ragged_plan_predicts_as_an_even_one():
    """Same ramps, same kept ranges: a network that sees all its context gives the same image."""
    x = np.random.default_rng(1).random((2, 1, 203, 163)).astype(np.float32)
    for batch in (1, 3):
        plans = tiling.plan(x.shape[2:], [64, 64], [8, 8], [4, 4], [16, 16], ragged=True)
        assert plans[0].last and plans[1].last
        seen = []

        def run(t):
            seen.append(t.shape)
            return t * 2 + 1

        out = tiling.predict_planned(run, x, plans, batch_size=batch)
        np.testing.assert_allclose(out, 2 * x + 1, rtol=1e-6)
        assert {s[2:] for s in seen} == {(64, 64), (plans[0].last + 2 * plans[0].margin, 64),
                                         (64, plans[1].last + 2 * plans[1].margin),
                                         (plans[0].last + 2 * plans[0].margin, plans[1].last + 2 * plans[1].margin)}


def test_the_last_core_is_only_as_long_as_it_must_be():
    """A near-full last core was read at the full tile size (past the image's end) to keep ONNX
    Runtime to one input shape, whose memory pattern held memory per shape; with the pattern off
    (see test_fast_path) the last tile is as short as the step allows, whatever its length."""
    x = np.random.default_rng(2).random((1, 1, 190, 190)).astype(np.float32)
    plans = tiling.plan(x.shape[2:], [64, 64], [8, 8], [4, 4], [16, 16], ragged=True)
    assert plans[0].core == 40 and plans[0].n == 5 and plans[0].last == 32       # 30 px left: 32 on the step
    seen = []

    def run(t):
        seen.append(t.shape)
        return t * 2 + 1

    np.testing.assert_allclose(tiling.predict_planned(run, x, plans), 2 * x + 1, rtol=1e-6)
    assert {s[2:] for s in seen} == {(64, 64), (56, 64), (64, 56), (56, 56)}
    network_pixels = sum(np.prod(s[2:]) for s in seen)
    assert network_pixels == (4 * 64 + 56) ** 2 < 25 * 64 * 64     # not 25 tiles of 64^2
    short = tiling.plan_axis(203, 64, 8, 4, 16, ragged=True)
    assert short.last and 2 * short.last < short.core
    assert tiling.plan_axis(200, 64, 8, 4, 16, ragged=True).last == 0           # an exact fit: every core full


def test_a_package_gets_the_same_tiles_at_every_size(monkeypatch):
    """n2v-cbmi-2d with the default tile choice (1024 px allowed): 764, 900 and 992 px tiles at
    2048, 4096 and 8192 px before, so its peak memory grew 1.26x from 4096 to 16384 px."""
    import zoo

    monkeypatch.setattr(memory, "available_cpu_bytes", lambda: 16 << 30)
    predictor = zoo.load("n2v-cbmi-2d", runtime="onnx").predictor
    largest = {}
    for size in (2048, 4096, 8192, 16384):
        plans, batch = predictor.plan_tiles([size, size])
        assert batch == 1
        largest[size] = tuple(p.tile for p in plans)
    assert len(set(largest.values())) == 1, largest


def test_tiles_stay_below_a_power_of_two():
    """ONNX Runtime's arena rounds chunks up to a power of two: a 1024 px tile took 865 MiB on
    n2v-cbmi-2d where 992 px took 690 MiB, so sides at or just above 2**k move just below it."""
    assert memory.below_power_of_two(1024) == 992
    assert memory.below_power_of_two(1050) == 992
    assert memory.below_power_of_two(1100) == 1100
    assert memory.below_power_of_two(512) == 480
    assert memory.below_power_of_two(700) == 700
    choice = memory.choose([16384, 16384], 256.0, [40, 40], on_gpu=False, available=16 << 30, out_channels=1)
    assert choice.tile == [992, 992]
    # a small image is still one tile of its own size
    assert memory.choose([1000, 1000], 256.0, [12, 12], on_gpu=False, available=16 << 30).tile == [1024, 1024]


def test_the_instance_labeller_holds_no_more_than_its_budget():
    """What the band labeller holds (window and the next band) fits its budget at any width; it
    counted the window alone, so a 16384 px wide 3-channel output held 485 MiB for 256 MiB."""
    from zoo.runtime import stream
    from zoo.runtime.layout import Layout

    budget = stream._LABEL_BAND_BYTES
    for width, channels in ((4096, 3), (16384, 3), (16384, 1)):
        layout = Layout(axes="cyx", spatial="yx", shape=(channels, 65536, width))
        held = stream._label_held_rows(layout, stream.MAX_OBJECT_SIZE, budget) * stream._label_row_bytes(layout)
        assert held <= budget, (width, channels, held / 2**20)
    # a 4096^2 3-channel output is held whole: larger images label in about its memory
    layout = Layout(axes="cyx", spatial="yx", shape=(3, 4096, 4096))
    assert stream._label_held_rows(layout, stream.MAX_OBJECT_SIZE, budget) == 4096


def test_many_channel_outputs_are_predicted_in_column_strips(monkeypatch, tmp_path):
    """StarDist's 33-channel band and labelling window grew with the width (~1.1 GB and ~0.8 GB
    at 16384 px): past ~5000 px it is predicted in column strips, so its tiles (chosen with the
    band) stop depending on the width, and a strip's raw outputs equal the whole width's."""
    import tifffile

    import zoo
    from zoo.runtime import stream

    monkeypatch.setattr(memory, "available_cpu_bytes", lambda: 16 << 30)
    model = zoo.load("stardist-dsb-fluo-2d", runtime="onnx")
    width = stream.strip_width((16384, 16384), 33)
    assert 4096 < width < 6000 and stream.strip_width((4096, 4096), 33) is None
    assert stream.strip_width((16384, 16384), 3) is None and stream.strip_width((64, 16384, 16384), 33) is None
    tiles = {size: tuple(p.tile for p in model.plan_tiles([size, size], band_width=width)[0])
             for size in (8192, 16384, 65536)}
    assert len(set(tiles.values())) == 1, tiles
    plans, _ = model.plan_tiles([16384, 16384], band_width=width)
    parts = stream.strips(plans[-1], stream.strip_width((16384, 16384), 33), stream.MAX_OBJECT_SIZE)
    assert parts[0][0] == 0 and parts[-1][1] == 16384 and all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    assert all(lo % plans[-1].core == 0 for lo, _ in parts) and len(parts) >= 4

    image = tifffile.imread(Path(__file__).parents[1] / "samples" / "dsb_fluo_nuclei.tif")[:200, :400]
    tifffile.imwrite(tmp_path / "in.tif", image)
    whole, strips = [], []
    stream.predict_file(model, tmp_path / "in.tif", tmp_path / "whole.npy", tile=192, raw=True,
                        progress=lambda done, total: whole.append((done, total)))
    monkeypatch.setattr(stream, "_STRIP_ROW_BYTES", 100 * 33 * 4)
    monkeypatch.setattr(stream, "MIN_STRIP_TILES", 1)
    stream.predict_file(model, tmp_path / "in.tif", tmp_path / "strips.npy", tile=192, raw=True,
                        progress=lambda done, total: strips.append((done, total)))
    assert np.array_equal(np.load(tmp_path / "whole.npy"), np.load(tmp_path / "strips.npy"))
    # one progress over every strip: counting up to a total that includes the context tiles run again
    done = [d for d, _ in strips]
    assert done == sorted(done) and len({t for _, t in strips}) == 1 and strips[-1][0] == strips[-1][1]
    assert strips[-1][1] > whole[-1][1] == whole[-1][0]


def test_instance_labelling_memory_stops_growing_with_the_width(monkeypatch, tmp_path):
    """Labelling works with ~45 B per pixel of its window besides the 3-channel outputs it holds,
    and the window and the stitching band spanned the whole width: unet-dsb-2d peaked 1.21x (and
    cellpose-dsb-2d 1.3x) at 16384^2 against 4096^2. Past LABEL_STRIP_WIDTH columns the image is
    labelled in strips, so what numpy holds at 3x that width is what it holds at the width itself."""
    import tracemalloc

    import tifffile

    import zoo
    from zoo.runtime import stream

    monkeypatch.setattr(memory, "available_cpu_bytes", lambda: 16 << 30)
    model = zoo.load("unet-dsb-2d", runtime="onnx")
    sample = tifffile.imread(Path(__file__).parents[1] / "samples" / "dsb_fluo_nuclei.tif")[:128]
    peaks = {}
    for width in (stream.LABEL_STRIP_WIDTH, 3 * stream.LABEL_STRIP_WIDTH):
        tifffile.imwrite(tmp_path / "in.tif", np.tile(sample, (1, -(-width // sample.shape[1])))[:, :width])
        tracemalloc.start()
        try:
            model.predict_file(tmp_path / "in.tif", tmp_path / f"labels{width}.tif")
            peaks[width] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    narrow, wide = peaks.values()
    assert wide < 1.2 * narrow, {w: p / 2**20 for w, p in peaks.items()}
    labels = tifffile.imread(tmp_path / f"labels{3 * stream.LABEL_STRIP_WIDTH}.tif")
    assert labels.max() == len(np.unique(labels)) - 1 > 1000       # numbered 1..n across the strips
