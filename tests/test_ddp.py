"""Several processes (issue 27.7): `zoo train --devices 2 --strategy ddp` on CPU (gloo). Only
rank 0 writes the package, the selection metric is the one over the whole validation split
(each rank scores its share, the counts are summed), and a run stopped by its time budget is
resumed under DDP."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import labelled_nuclei_folder
from zoo import spec as specs

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return {**os.environ, "ZOO_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    from zoo import architectures

    root = tmp_path_factory.mktemp("ddp")
    labelled_nuclei_folder(root)
    bp = specs.load(architectures.get("unet-seg").blueprint_path(2))
    bp.architecture_params.update(base_channels=8, depth=2)
    return root, specs.write(bp, root / "unet-tiny.yaml")


def _train(root: Path, blueprint: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "zoo", "train", str(blueprint), "--data", str(root / "images"),
               "--target", str(root / "labels"), "--out", str(out), "--max-steps", "12", "--batch-size", "2",
               "--patch", "48", "--val-fraction", "0.4", "--val-every", "4", "--checkpoint-every", "4",
               "--device", "cpu", "--devices", "2", "--strategy", "ddp", *extra]
    return subprocess.run(command, env=_env(), capture_output=True, text=True, cwd=root, timeout=600)


def test_two_processes_write_one_package_with_the_metric_of_the_whole_validation_split(seg):
    import torch

    from zoo import architectures
    from zoo.trainers.fit import make_datamodule, pair_targets, split_files
    from zoo.trainers.selection import Selection, TaskMetric, finish

    root, blueprint = seg
    out = root / "pkg"
    done = _train(root, blueprint, out)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("package written") == 1, done.stdout
    training = specs.load(out).training
    assert training.config["selection"]["by"] == "val_ap50"
    pointer = json.loads((root / "pkg.run" / "checkpoints" / "latest.json").read_text())
    assert pointer["world_size"] == 2 and pointer["finished"] is True and pointer["step"] == 12

    # the recorded AP@0.5 is the package's weights scored on every validation patch, not rank 0's half
    spec = specs.load(out)
    arch = architectures.get(spec.architecture_id)
    module = arch.training_module()(spec)
    from zoo.package import readers

    module.network.load_state_dict(readers.state_dict(out / "weights" / "model.safetensors"))
    module.eval()
    train_files, val_files = split_files(root / "images", None, None, 0.4, 0)
    pairs = pair_targets(arch, root / "labels", train_files, val_files)
    items = make_datamodule(module, train_files, val_files, pairs, 48, 2, 4, 0).selection_items()
    metric = TaskMetric(Selection("val_ap50", "max", "instance"), spec, items)
    with torch.no_grad():
        whole = finish("instance", metric.counts(module, items).numpy())
        half = finish("instance", metric.counts(module, items[0::2]).numpy())
    assert training.metrics["val_ap50"] == pytest.approx(whole, abs=1e-9), (whole, half)


@pytest.mark.slow
def test_a_ddp_run_stopped_by_its_budget_resumes_under_ddp(seg):
    root, blueprint = seg
    out = root / "stopped"
    first = _train(root, blueprint, out, "--max-time", "1s")
    assert first.returncode == 0, first.stderr[-4000:]
    pointer = json.loads((root / "stopped.run" / "checkpoints" / "latest.json").read_text())
    assert 0 < pointer["step"] < 12 and pointer["finished"] is False
    done = _train(root, blueprint, out, "--resume", str(root / "stopped.run"), "--overwrite")
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("package written") == 1
    assert f"resuming {root / 'stopped.run'} from step {pointer['step']} of 12" in done.stderr
    config = specs.load(out).training.config
    assert config["steps_run"] == 12 and config["resumed_from_step"] == pointer["step"]
