"""Every training writes a run folder (issue 27.1, 27.5): metrics as CSV, the training curves as
a PNG that the package's card shows, and a time budget that stops a run and keeps its best
weights."""
from __future__ import annotations

import csv
from datetime import timedelta

import pytest


def test_a_training_writes_metrics_and_curves_that_the_card_shows(image_folder, tiny_blueprint, tmp_path):
    from zoo import spec as specs
    from zoo.trainers.fit import fit

    out = fit(tiny_blueprint, image_folder, tmp_path / "pkg", max_steps=12, steps_per_epoch=4, batch_size=4,
              patch=32, progress=False, val_fraction=0.4)
    run = tmp_path / "pkg.run"
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("train_loss") for r in rows) and sum(bool(r.get("val_loss")) for r in rows) == 3
    assert (run / "training_curves.png").stat().st_size > 5000
    spec = specs.load(out)
    assert "training_curves.png" in spec.covers and (out / "training_curves.png").is_file()
    assert "![training curves](training_curves.png)" in (out / "README.md").read_text()


def test_a_time_budget_stops_the_run_and_keeps_its_best_weights(image_folder, tiny_blueprint, tmp_path):
    from zoo import spec as specs
    from zoo.trainers.fit import fit

    out = fit(tiny_blueprint, image_folder, tmp_path / "pkg", max_steps=100_000, steps_per_epoch=2, batch_size=4,
              patch=32, progress=False, val_fraction=0.4, max_time=timedelta(seconds=4),
              run_dir=tmp_path / "my-run")
    steps = specs.load(out).training.config["steps_run"]
    assert 2 <= steps < 100_000 and (tmp_path / "my-run" / "metrics.csv").is_file()


@pytest.mark.parametrize("text, seconds", [("2h", 7200), ("90m", 5400), ("1d12h", 129600), ("45s", 45),
                                           ("01:30:00", 5400)])
def test_budgets_are_read_as_people_write_them(text, seconds):
    from zoo.cli.training import max_time

    assert max_time(text).total_seconds() == seconds


def test_a_budget_that_is_not_one_is_a_clear_error(capsys):
    from zoo.cli import main

    with pytest.raises(SystemExit):
        main(["train", "n2v", "--data", ".", "--out", "x", "--max-time", "soon"])
    assert "'soon' is not a time budget" in capsys.readouterr().err
