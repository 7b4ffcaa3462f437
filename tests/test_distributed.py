"""Prediction on Dask (issue 25): a real LocalCluster on loopback, 2 workers x 1 thread.

One image in chunks equals the single-process streamed prediction; instance labels of objects
on every chunk seam are one object each; a folder spread over the workers gives the folder
mode's outputs, summary and resumption; ``--cluster`` on the command line; clear errors."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

import distributed  # noqa: F401  (the dask extra, installed by scripts/setup.sh: a missing one fails, never skips)

import zoo  # noqa: E402
from zoo.distributed import cluster  # noqa: E402
from zoo.distributed.chunks import Grid  # noqa: E402
from zoo.errors import InputError  # noqa: E402
from zoo.omezarr import create_omezarr, open_omezarr  # noqa: E402

from conftest import REPO, synthetic_nuclei  # noqa: E402

DENOISER, SEGMENTER = "n2v-w2s", "unet-dsb-2d"


def _load(ref):
    """The model as the workers load a reference (ONNX Runtime): the same runtime on both sides."""
    return zoo.load(ref, runtime="onnx")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One ZOO_HOME for the module: the workers, started with it, pull into their cache there."""
    home = tmp_path_factory.mktemp("dask_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(home))
        mp.setenv("ZOO_CACHE", str(home / "cache"))
        yield home


@pytest.fixture(scope="module")
def client(home):
    c = cluster.client_for("local:2")
    yield c
    cluster.close(c)


def _zarr(path: Path, image: np.ndarray, axes: str = "yx") -> Path:
    array = create_omezarr(path, image.shape, image.dtype, axes, chunks=(64,) * image.ndim)
    array[...] = image
    return path


def _read(path: Path) -> np.ndarray:
    return np.asarray(open_omezarr(path)[0][...])


def test_an_ome_zarr_in_chunks_equals_the_single_process_prediction(client, tmp_path):
    from zoo.api.distributed import predict_distributed

    image = synthetic_nuclei(shape=(300, 260), n=40, seed=5)[0]
    source = _zarr(tmp_path / "in.zarr", image)
    model = _load(DENOISER)
    plans, _ = model.predictor.plan_tiles(image.shape, 128, 4)
    assert min(Grid.of(plans, 100).shape) >= 2                   # seams along both axes
    single = model.predict_file(source, tmp_path / "single.zarr", tile=128, batch_size=4)
    shape = predict_distributed(DENOISER, source, tmp_path / "dask.zarr", client=client, tile=128, batch_size=4,
                                chunk=100)
    assert shape == single == image.shape
    got, want = _read(tmp_path / "dask.zarr"), _read(tmp_path / "single.zarr")
    assert got.dtype == want.dtype and np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    assert not list(tmp_path.glob(".*partial*"))                 # nothing left beside the output


@pytest.mark.parametrize("axes", ["tyx", pytest.param("zyx", marks=pytest.mark.slow)])
def test_a_time_lapse_and_a_volume_in_chunks_equal_one_process(client, tmp_path, axes):
    """Frames of a time-lapse (each normalised on its own) through a 2D model; a volume through a 3D one."""
    from zoo.api.distributed import predict_distributed
    from zoo.synthetic import labelled_nuclei

    if axes == "tyx":
        ref, tile, chunk = DENOISER, 96, 64
        image = np.stack([synthetic_nuclei(shape=(160, 150), n=15, seed=s)[0] for s in range(3)])
    else:
        ref, tile, chunk = "care-synth-3d", 64, 40
        image = labelled_nuclei((32, 80, 80), n=12, seed=1)[0]
    source = _zarr(tmp_path / "in.zarr", image, axes)
    _load(ref).predict_file(source, tmp_path / "single.zarr", tile=tile, batch_size=2)
    predict_distributed(ref, source, tmp_path / "dask.zarr", client=client, tile=tile, batch_size=2, chunk=chunk)
    got, want = _read(tmp_path / "dask.zarr"), _read(tmp_path / "single.zarr")
    assert got.shape == image.shape and np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def _seam_discs(shape, bounds, radius=7):
    """An image with a bright disc centred on every seam (and every seam crossing), and the centres."""
    ys, xs = bounds
    centres = [(y, x) for y in ys[1:-1] for x in xs[1:-1]]                         # crossings
    centres += [(y, (a + b) // 2) for y in ys[1:-1] for a, b in zip(xs[:-1], xs[1:])]
    centres += [((a + b) // 2, x) for x in xs[1:-1] for a, b in zip(ys[:-1], ys[1:])]
    grid = np.mgrid[:shape[0], :shape[1]]
    image = np.full(shape, 20.0)
    for cy, cx in centres:
        image += 180.0 * (((grid[0] - cy) ** 2 + (grid[1] - cx) ** 2) <= radius ** 2)
    noisy = np.random.default_rng(0).normal(image, 4.0)
    return np.clip(noisy, 0, 65535).astype(np.uint16), centres


def test_instances_on_every_seam_are_one_object_each(client, tmp_path):
    from zoo.api.distributed import predict_distributed

    model = _load(SEGMENTER)
    shape = (256, 256)
    plans, _ = model.predictor.plan_tiles(shape, 160, 4)
    grid = Grid.of(plans, 96)
    assert min(grid.shape) >= 2
    image, centres = _seam_discs(shape, grid.bounds)
    source = _zarr(tmp_path / "in.zarr", image)
    predict_distributed(SEGMENTER, source, tmp_path / "labels.zarr", client=client, tile=160, batch_size=4,
                        chunk=96, max_object_size=32)
    labels = _read(tmp_path / "labels.zarr")
    single = model.predict(image, tile=160)
    ids = [labels[c] for c in centres]
    assert all(ids) and len(set(ids)) == len(centres)           # each disc found, none merged with another
    for (cy, cx), i in zip(centres, ids):                        # one id over each disc, across its seams
        disc = labels[cy - 4:cy + 5, cx - 4:cx + 5]
        assert set(np.unique(disc)) == {i}
    assert len(np.unique(labels)) - 1 == len(np.unique(single)) - 1 == len(centres)
    assert labels.max() == len(centres)                          # numbered 1..n


def test_a_folder_over_two_workers_gives_the_folder_mode_outputs_and_resumes(client, tmp_path):
    from zoo.api.distributed import predict_distributed

    actin = tifffile.imread(REPO / "samples" / "hagen_actin_lowsnr.tif")
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(4):
        tifffile.imwrite(raw / f"f{k}.tif", actin[40 * k:40 * k + 96, :112])
    (raw / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 40)
    single = zoo.predict(_load(DENOISER), [raw], out=tmp_path / "single")
    report = predict_distributed(DENOISER, [raw], tmp_path / "dask", client=client)
    statuses = {Path(r["file"]).name: r["status"] for r in report.rows}
    assert statuses == {f"f{k}.tif": "done" for k in range(4)} | {"broken.tif": "failed"}
    assert [r["file"] for r in report.rows] == [r["file"] for r in single.rows]
    for k in range(4):
        got, want = (tifffile.imread(tmp_path / d / f"f{k}.tif") for d in ("dask", "single"))
        np.testing.assert_allclose(got, want, atol=1e-5)
    with open(tmp_path / "dask" / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 5
    again = predict_distributed(DENOISER, [raw], tmp_path / "dask", client=client)
    assert again.count("skipped") == 4 and again.count("failed") == 1


def test_the_command_line_takes_a_cluster(client, tmp_path, capsys):
    from zoo.cli import main

    image = synthetic_nuclei(shape=(200, 180), n=20, seed=1)[0]
    source = _zarr(tmp_path / "in.zarr", image)
    code = main(["predict", DENOISER, str(source), "-o", str(tmp_path / "out.zarr"), "--tile", "128",
                 "--runtime", "onnx", "--cluster", client.scheduler.address])
    assert code == 0, capsys.readouterr()
    want = _load(DENOISER).predict(image, tile=128)
    np.testing.assert_allclose(_read(tmp_path / "out.zarr"), want, atol=1e-4)
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(2):
        tifffile.imwrite(raw / f"f{k}.tif", image[:96, 40 * k:40 * k + 96])
    code = main(["predict", DENOISER, str(raw), "-o", str(tmp_path / "many"), "--cluster", client.scheduler.address])
    assert code == 0 and "2 predicted, 0 skipped, 0 failed" in capsys.readouterr().out
    # what `dask scheduler --scheduler-file` writes (Client.write_scheduler_file fails on some metrics' keys)
    (tmp_path / "scheduler.json").write_text('{"address": "%s"}' % client.scheduler.address)
    code = main(["predict", DENOISER, str(source), "-o", str(tmp_path / "out.tif"), "--cluster",
                 str(tmp_path / "scheduler.json")])
    assert code == 2 and "OME-Zarr" in capsys.readouterr().err


@pytest.mark.parametrize("spec, says", [("local:0", "at least 1"), ("local:999", "at most"), ("lokal", "expected"),
                                        ("missing.json", "no scheduler file"), ("tcp://127.0.0.1:9", "could not reach")])
def test_bad_cluster_specs_are_clear_errors(spec, says, home):
    with pytest.raises(InputError, match=says):
        cluster.client_for(spec, timeout=2)


def test_a_model_the_workers_cannot_load_is_one_clear_error(client, tmp_path):
    from zoo.api.distributed import predict_distributed

    with pytest.raises(InputError, match="could not load no-such-model"):
        predict_distributed("no-such-model", [tmp_path], tmp_path / "out", client=client)
    with pytest.raises(InputError, match="OME-Zarr"):
        predict_distributed(DENOISER, REPO / "samples" / "hagen_actin_lowsnr.tif", tmp_path / "out.tif", client=client)


def test_threads_and_gpus_per_worker(monkeypatch):
    assert cluster.local_shape(2, n_cores=2) == (2, 1) and cluster.local_shape(3, n_cores=8) == (3, 2)
    assert cluster.local_shape(None, n_cores=4) == (4, 1) and cluster.local_shape(1, n_cores=2, threads=1) == (1, 1)
    with pytest.raises(InputError, match="allows 1 to 2"):
        cluster.local_shape(2, n_cores=4, threads=3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert cluster.visible_gpus() == ["2", "5"]
    assert cluster.gpu_worker_env(cluster.visible_gpus()) == [{"CUDA_VISIBLE_DEVICES": "2"},
                                                              {"CUDA_VISIBLE_DEVICES": "5"}]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(InputError, match="no GPU"):
        cluster.client_for("cuda")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_a_worker_killed_mid_run_leaves_a_complete_equal_output(client, tmp_path):
    """SIGKILL one of the two workers after the first chunk: its tasks rerun (on the other, or on
    the worker its nanny restarts) and the output equals a single-process prediction."""
    import signal

    from zoo.api.distributed import predict_distributed

    image = synthetic_nuclei(shape=(512, 384), n=60, seed=7)[0]
    source = _zarr(tmp_path / "in.zarr", image)
    model = _load(DENOISER)
    model.predict_file(source, tmp_path / "single.zarr", tile=128, batch_size=4)
    pids = client.run(os.getpid)
    killed = []

    def kill_one(done, total):
        if not killed:
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    predict_distributed(DENOISER, source, tmp_path / "dask.zarr", client=client, tile=128, batch_size=4,
                        chunk=96, progress=kill_one)
    assert killed
    got, want = _read(tmp_path / "dask.zarr"), _read(tmp_path / "single.zarr")
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    client.wait_for_workers(2, timeout=60)                       # the nanny brought it back


def test_a_killed_client_leaves_no_output_and_a_rerun_resumes(client, tmp_path, caplog):
    """SIGKILL the client after a few chunks: nothing appears under the output's name, and a re-run
    keeps the finished chunks (it says how many) and completes an output equal to one process's."""
    import logging
    import re
    import subprocess
    import sys
    import time

    from zoo.api.distributed import predict_distributed

    image = synthetic_nuclei(shape=(512, 384), n=60, seed=8)[0]
    source, target = _zarr(tmp_path / "in.zarr", image), tmp_path / "dask.zarr"
    options = dict(tile=128, batch_size=4, chunk=96)
    script = (f"from zoo.api.distributed import predict_distributed\n"
              f"predict_distributed({DENOISER!r}, {str(source)!r}, {str(target)!r}, "
              f"client={client.scheduler.address!r}, **{options!r})\n")
    child = subprocess.Popen([sys.executable, "-c", script])
    marks = tmp_path / ".dask.zarr.partial-dask" / ".zoo-done"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and child.poll() is None and len(list(marks.glob("*")) if marks.is_dir() else []) < 2:
        time.sleep(0.05)
    child.kill()
    child.wait()
    assert not target.exists()
    kept = len(list(marks.iterdir()))
    assert kept >= 2
    with caplog.at_level(logging.INFO, logger="zoo.distributed"):
        predict_distributed(DENOISER, source, target, client=client, **options)
    resumed = int(re.search(r"(\d+) finished before", caplog.text).group(1))
    assert resumed >= kept
    want = _load(DENOISER).predict_file(source, tmp_path / "single.zarr", tile=128, batch_size=4)
    assert want == image.shape
    got, want = _read(target), _read(tmp_path / "single.zarr")
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    assert not (tmp_path / ".dask.zarr.partial-dask").exists()


def test_a_folder_rerun_after_the_client_was_killed_redoes_nothing_finished(client, tmp_path):
    """Files finished by the workers after the client died are kept (their receipts join the
    manifest): the re-run skips every output that exists and fails none."""
    import subprocess
    import sys
    import time

    from zoo.api.distributed import predict_distributed

    actin = tifffile.imread(REPO / "samples" / "hagen_actin_lowsnr.tif")
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    for k in range(12):
        tifffile.imwrite(raw / f"f{k:02d}.tif", actin[60 * k:60 * k + 128, :256])
    script = (f"from zoo.api.distributed import predict_distributed\n"
              f"predict_distributed({DENOISER!r}, [{str(raw)!r}], {str(out)!r}, client={client.scheduler.address!r})\n")
    child = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and child.poll() is None and len(list(out.glob("f*.tif"))) < 3:
        time.sleep(0.05)
    child.kill()
    child.wait()
    time.sleep(1.0)                                   # tasks already running finish on the workers
    finished = {p.name for p in out.glob("f*.tif")}
    assert 3 <= len(finished) < 12
    report = predict_distributed(DENOISER, [raw], out, client=client)
    assert report.count("failed") == 0 and report.count("done") + report.count("skipped") == 12
    assert {Path(r["output"]).name for r in report.rows if r["status"] == "skipped"} >= finished
    assert not list(out.glob(".*receipt*")) and not list(out.glob(".*partial*"))


def _chunk_tasks(stream) -> int:
    """How many chunks the workers finished (wrote) while ``stream`` recorded."""
    return sum(str(t["key"][0] if isinstance(t["key"], tuple) else t["key"]).startswith("finish-")
               for t in stream.data)


def test_the_api_predicts_an_array_and_files_on_the_cluster_it_is_given(client, tmp_path):
    """``zoo.predict(..., client=...)``: an array comes back from the workers' chunks equal to
    ``model.predict`` (here a Model loaded from a package folder no registry lists: the workers
    load that folder; one pulled by name reaches them by name); a folder goes into a folder."""
    import shutil

    from distributed import get_task_stream

    from zoo.api.distributed import worker_ref

    model = _load(DENOISER)
    assert worker_ref(model) == {"model_ref": model.spec.ref, "registry": None, "runtime": "onnx", "device": "auto"}
    loose = zoo.load(shutil.copytree(model.root, tmp_path / "package"))
    assert worker_ref(loose)["model_ref"] == str(tmp_path / "package")
    image = synthetic_nuclei(shape=(200, 180), n=20, seed=3)[0]
    want = model.predict(image, tile=96)
    with get_task_stream(client) as stream:
        got = zoo.predict(loose, image, client=client, tile=96, chunk=64)
    assert _chunk_tasks(stream) >= 4                              # it ran in chunks on the workers
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())

    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(2):
        tifffile.imwrite(raw / f"f{k}.tif", image[:96, 40 * k:40 * k + 96])
    report = zoo.predict(DENOISER, raw, out=tmp_path / "many", cluster=client.scheduler.address)
    assert report.count("done") == 2 and (tmp_path / "many" / "summary.csv").is_file()
    with pytest.raises(InputError, match="not both"):
        zoo.predict(DENOISER, image, client=client, cluster="local:1")
    with pytest.raises(InputError, match="comes back as an array"):
        zoo.predict(DENOISER, image, client=client, out=tmp_path / "x.zarr")


def test_the_api_starts_a_local_cluster_for_one_call(home, tmp_path):
    """``cluster="local:1"``: a LocalCluster started for the call, used, and closed after it."""
    import psutil

    import dask

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    profiling = dask.config.get("distributed.worker.profile.enabled")        # as the module's own cluster left it
    image = synthetic_nuclei(shape=(160, 150), n=15, seed=2)[0]
    got = zoo.predict(DENOISER, image, cluster="local:1", tile=96, scratch=tmp_path)
    want = _load(DENOISER).predict(image, tile=96)
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    assert not list(tmp_path.iterdir())                          # the staged files are gone
    started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    left = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            and "resource_tracker" not in " ".join(p.cmdline())]      # Python's own, kept until this process ends
    assert not left, [p.cmdline() for p in left]
    assert dask.config.get("distributed.worker.profile.enabled") is profiling  # its settings are undone too


@pytest.mark.parametrize("size, core, halo, blend, per_chunk", [(8192, 684, 32, 8, 3), (300, 44, 32, 8, 2),
                                                               (1000, 64, 16, 32, 2), (77, 16, 8, 4, 1),
                                                               (5000, 128, 8, 64, 5)])
def test_every_tile_is_run_by_exactly_one_chunk_and_reaches_only_its_neighbours(size, core, halo, blend, per_chunk):
    """No seam runs a tile twice (issue 25.6): the chunks' own tiles partition the plan's tiles in
    2D; what a chunk's tiles add beyond its region lies in a neighbouring chunk, and with its
    own region covers every pixel those tiles keep (a core with no interior, core == 2 blend, too)."""
    from zoo.distributed.chunks import Grid, extent, owned_tiles, spills
    from zoo.runtime.tiling import AxisPlan

    plan = AxisPlan(size=size, core=core, halo=halo, blend=blend, n=-(-size // core))
    plans = (plan, AxisPlan(size=size // 2 + 1, core=core, halo=halo, blend=blend, n=-(-(size // 2 + 1) // core)))
    grid = Grid.of(plans, per_chunk * core)
    assert max(grid.shape) >= 2
    seen = []
    for index in grid.indices():
        region = grid.region(index)
        owned = [owned_tiles(p, lo, hi) for p, (lo, hi) in zip(plans, region)]
        assert all(len(t) >= 1 for t in owned)
        seen += [(a, b) for a in owned[0] for b in owned[1]]
        ext = extent(plans, region)
        covered = np.zeros([e1 - e0 for e0, e1 in ext], int)
        covered[tuple(slice(lo - e0, hi - e0) for (lo, hi), (e0, _) in zip(region, ext))] += 1
        for offset, where in spills(plans, region):
            neighbour = tuple(i + o for i, o in zip(index, offset))
            assert all(0 <= n < s for n, s in zip(neighbour, grid.shape))
            target = grid.region(neighbour)
            for (t0, t1), w, (e0, _) in zip(target, where, ext):
                assert t0 <= w.start + e0 and w.stop + e0 <= t1       # the piece lies inside that neighbour
            covered[where] += 1
        assert (covered == 1).all()
    assert sorted(seen) == [(a, b) for a in range(plans[0].n) for b in range(plans[1].n)]


def test_the_run_ends_on_one_tile_chunks():
    """The last chunks submitted (the first axis's last) are one tile tall, so that no worker idles
    a whole chunk's time at the end while the other runs the last (issue 25.6, 16384^2 at tile 992:
    18 tiles a side, 9 chunk rows of 2 -> 8 of 2 and 2 of 1); an axis whose last chunk is short
    already, and every other axis, keep their chunks."""
    from zoo.distributed.chunks import owned_tiles
    from zoo.runtime.tiling import AxisPlan

    plan = AxisPlan(size=16384, core=912, halo=32, blend=8, n=18)
    grid = Grid.of((plan, plan), 1824)
    rows = [len(owned_tiles(plan, lo, hi)) for lo, hi in zip(grid.bounds[0], grid.bounds[0][1:])]
    cols = [len(owned_tiles(plan, lo, hi)) for lo, hi in zip(grid.bounds[1], grid.bounds[1][1:])]
    assert rows == [2] * 8 + [1, 1] and cols == [2] * 9
    odd = AxisPlan(size=8192, core=912, halo=32, blend=8, n=9)
    assert Grid.of((odd, odd), 1824).shape == (5, 5)


def test_workers_started_here_keep_mallocs_defaults_and_run_no_profiler(client):
    """Dask's nannies set MALLOC_TRIM_THRESHOLD_, which fixes glibc's mmap threshold: every tile-sized
    array is then mapped and unmapped again (+17% CPU on the same tiles, measured); and each worker's
    profiler samples every stack 10 ms apart for a dashboard that is off."""
    import dask

    seen = client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("ZOO_THREADS"),
                               dask.config.get("distributed.worker.profile.enabled")))
    assert len(seen) == 2 and set(seen.values()) == {(None, "1", False)}
