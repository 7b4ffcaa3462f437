"""The run folder every training writes (issue 27.1): Lightning's metrics as CSV (always) and
TensorBoard events (when tensorboard is installed), and the training curves as a PNG that the
package's model card shows.

The run folder sits beside the package (``OUT.run/``) unless named, so that a package stays
what it was and a run can be looked at while it trains (``metrics.csv`` grows every few steps).
"""
from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

log = logging.getLogger("zoo.trainers")

CURVES = "training_curves.png"


def run_folder(out: str | Path, run_dir: str | Path | None = None) -> Path:
    """Where a run that writes the package ``out`` logs: ``run_dir``, or ``OUT.run`` beside it."""
    out = Path(out)
    return Path(run_dir) if run_dir is not None else out.parent / f"{out.name}.run"


def loggers(run_dir: Path, keep: bool = False) -> list:
    """Lightning loggers writing into ``run_dir``: CSV, and TensorBoard where it is installed.
    ``keep``: a resumed run appends to the run's ``metrics.csv`` (Lightning's CSV logger deletes it)."""
    from pytorch_lightning.loggers import CSVLogger

    run_dir.mkdir(parents=True, exist_ok=True)
    csv_logger = CSVLogger(str(run_dir), name="", version="")
    if keep:
        csv_logger._experiment = _AppendingWriter(csv_logger.log_dir)
    found = [csv_logger]
    try:
        from pytorch_lightning.loggers import TensorBoardLogger
        import tensorboard  # noqa: F401  (TensorBoardLogger needs it or tensorboardX)

        found.append(TensorBoardLogger(str(run_dir), name="", version="tensorboard"))
    except ImportError:
        pass
    return found


def _AppendingWriter(log_dir: str):
    """Lightning's CSV writer that keeps an existing ``metrics.csv`` and its columns."""
    from pytorch_lightning.loggers.csv_logs import ExperimentWriter

    class AppendingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            path = Path(self.metrics_file_path)
            if path.is_file():
                with open(path, newline="") as f:
                    self.metrics_keys = sorted(next(csv.reader(f), []))

    return AppendingWriter(log_dir)


def read_metrics(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` from the run's ``metrics.csv``."""
    path = run_dir / "metrics.csv"
    series: dict[str, list[tuple[int, float]]] = {}
    if not path.is_file():
        return series
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    series.setdefault(key.replace("_epoch", "").replace("_step", ""), []).append((step, float(value)))
    return series


def write_curves(run_dir: Path) -> Path | None:
    """``run_dir/training_curves.png``: training loss per step and validation loss (and any other
    validation metric) per validation; None when nothing was logged or matplotlib (not a
    dependency of the package) is missing."""
    series = read_metrics(run_dir)
    losses = {k: v for k, v in series.items() if k.endswith("loss") and v}
    if not losses:
        return None
    try:
        import matplotlib
    except ImportError:     # an optional dependency (the `bench` extra): the run must not fail for a figure
        log.warning("no %s: matplotlib is not installed (pip install matplotlib); the curves are in %s",
                    CURVES, run_dir / "metrics.csv")
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = {k: v for k, v in series.items() if k.startswith("val_") and not k.endswith("loss") and v}
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(9 if others else 5, 3.2), squeeze=False)
    for name, points in sorted(losses.items()):
        steps, values = zip(*points)
        axes[0][0].plot(steps, values, "-" if len(points) > 30 else "o-", label=name, lw=1, ms=3)
    axes[0][0].set(xlabel="step", ylabel="loss", title="loss")
    axes[0][0].legend(fontsize=8)
    for name, points in sorted(others.items()):
        steps, values = zip(*points)
        axes[0][1].plot(steps, values, "o-", label=name, lw=1, ms=3)
    if others:
        axes[0][1].set(xlabel="step", title="validation")
        axes[0][1].legend(fontsize=8)
    fig.tight_layout()
    path = run_dir / CURVES
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def attach_curves(package: Path, run_dir: Path) -> None:
    """Copy the curves into the package and list them among its covers, so the card shows them."""
    curves = write_curves(run_dir)
    if curves is None:
        return
    from zoo.package import build

    shutil.copyfile(curves, Path(package) / CURVES)

    def change(spec):
        if CURVES not in spec.covers:
            spec.covers = [*spec.covers, CURVES]

    build.amend(package, change)
