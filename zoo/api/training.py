"""Training, fine-tuning and held-out evaluation."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .sharing import as_model


def blueprint_path(name: str | Path, dims: int = 2) -> Path:
    """A blueprint file, or the one an installed architecture ships (``care``, ``n2v`` ...)."""
    path = Path(name)
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        return path
    from .. import architectures

    return architectures.get(str(name)).blueprint_path(dims)


def train(blueprint: str | Path, data: str | Path, out: str | Path, *, dims: int = 2,
          on_step: Callable[[int, int, dict], None] | None = None, **options) -> Path | None:
    """Train a blueprint (a file, or an architecture id and ``dims``) on ``data`` and write a
    package to ``out``; the blueprint's task picks the trainer (dense or classifier), see
    :func:`zoo.trainers.fit.fit` for the options (``resume``, ``checkpoint_every``, ``select``,
    ``device``, ``max_time`` ...; docs/training.md). ``on_step``: see :func:`finetune`. Under
    several processes (DDP) only rank 0 writes the package; the other ranks return None."""
    from ..trainers.fit import fit

    return fit(blueprint_path(blueprint, dims), data, out, **_with_step_hook(options, on_step))


def finetune(parent, data: str | Path, out: str | Path, *,
             on_step: Callable[[int, int, dict], None] | None = None, **options) -> Path | None:
    """Fine-tune the package ``parent`` on a few of your own images and write the child to
    ``out``, with its lineage (see :func:`zoo.trainers.finetune.finetune` for the options).

    ``on_step(step, max_steps, losses)`` is called after every training step (``losses``: the
    latest ``train_loss`` and ``val_loss`` logged, as floats) from the thread that trains: a
    progress bar or a live loss curve. An exception it raises stops the training at once and
    propagates (a cancel button); the package is not written then."""
    from ..trainers.finetune import finetune as run

    return run(parent, data, out, **_with_step_hook(options, on_step))


def _with_step_hook(options: dict, on_step) -> dict:
    """``options`` with a Lightning callback that calls ``on_step`` after each training step."""
    if on_step is None:
        return options
    import pytorch_lightning as pl

    class StepHook(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("train_loss", "val_loss")}
            if "train_loss" not in losses and outputs is not None:
                loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
                if loss is not None:
                    losses["train_loss"] = float(loss)
            on_step(int(trainer.global_step), int(trainer.max_steps), losses)

    return {**options, "callbacks": [*options.get("callbacks", ()), StepHook()]}


def evaluate(model, data: str | Path, target: str | Path, out: str | Path, axes: str | None = None) -> dict:
    """Held-out metrics of ``model`` on image/target pairs, written under ``out``: PSNR/SSIM
    before and after (restoration), AP/F1/PQ beside the classical baseline (segmentation).
    Returns ``{"kind", "summary", "files"}``."""
    import json

    from ..images import list_images, match_targets

    model = as_model(model)
    images = list_images(data)
    targets = match_targets(images, target)
    out = Path(out)
    if model.makes_instances:
        from ..segmentation.evaluate import evaluate_segmentation, write_table

        results = evaluate_segmentation(model, images, targets)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(results, indent=1))
        table = write_table(results, out / "metrics.md")
        return {"kind": "segmentation", "summary": table, "n_images": len(images),
                "files": [out / "metrics.json", out / "metrics.md"]}
    from ..restoration.evaluate import evaluate_pairs, summary, write_figure, write_table

    rows = evaluate_pairs(model, images, targets, axes=axes)
    files = [write_table(rows, out / "metrics.csv"),
             write_figure(model, images[0], targets[0], out / "figure.png", axes=axes)]
    return {"kind": "restoration", "summary": summary(rows), "files": files}


def compare(model, parent, data: str | Path, target: str | Path, out: str | Path, axes: str | None = None) -> dict:
    """``model`` and ``parent`` and the classical baseline, scored on the same pairs, each fed
    the channels it declares; written to ``out/comparison.json`` (the report's ``path``)."""
    from ..evaluate import compare as run, write_comparison
    from ..images import list_images, match_targets

    images = list_images(data)
    report = run(as_model(model), images, match_targets(images, target), parent=as_model(parent), axes=axes)
    report["path"] = write_comparison(report, Path(out) / "comparison.json")
    return report
