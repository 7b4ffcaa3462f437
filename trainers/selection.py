"""Which weights a run keeps (issue 27.3): those that score best on the validation split by the
task's own metric, or by the validation loss when asked.

- instance segmentation: AP at IoU 0.5 (``val_ap50``: TP / (TP + FP + FN), objects matched
  one-to-one), the package's own post-processing (StarDist NMS, Cellpose flows, watershed)
  run on the network's outputs for the fixed validation patches;
- classification: macro-F1 over the classes (``val_macro_f1``) on the validation images;
- restoration with targets (CARE, Noise2Noise): PSNR (``val_psnr``, CSBDeep's normalised PSNR,
  mean over the validation patches). Noise2Void has no clean targets: it selects by loss, and
  the record says why.

:class:`TaskMetric` scores every validation and logs the metric beside the loss (so the run
folder's curves show it); under several processes each rank scores its share of the
validation items and the counts are summed over the ranks before the metric is formed, so
every rank sees the same number. :class:`zoo.trainers.callbacks.KeepBest` then keeps the best.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch

from zoo.errors import InputError

SELECT = ("metric", "loss")
METRICS = {"instance": ("val_ap50", "AP@0.5"), "classification": ("val_macro_f1", "macro-F1"),
           "restoration": ("val_psnr", "PSNR")}


@dataclass(frozen=True)
class Selection:
    """How the kept weights are chosen: ``monitor`` (a logged metric), ``mode`` (max or min),
    ``kind`` (the task's metric family, None for the loss) and why."""

    monitor: str = "val_loss"
    mode: str = "min"
    kind: str | None = None
    reason: str = "asked for (--select loss)"

    def record(self) -> dict:
        return {"by": self.monitor, "mode": self.mode, "why": self.reason}


def task_kind(spec, classifier: bool = False) -> str | None:
    """instance, classification, restoration, or None (a task without a metric here)."""
    from zoo.opnames import makes_instances

    if classifier or spec.task.startswith("classification"):
        return "classification"
    if makes_instances(spec):
        return "instance"
    if spec.task.startswith("restoration"):
        return "restoration"
    return None


def choose(spec, datamodule, select: str = "metric", classifier: bool = False) -> tuple[Selection, list | None]:
    """The selection for ``spec`` trained on ``datamodule`` and the validation items its metric
    scores (None when it selects by loss)."""
    if select not in SELECT:
        raise InputError(f"--select takes {' or '.join(SELECT)}, got {select!r}")
    if select == "loss":
        return Selection(), None
    kind = task_kind(spec, classifier)
    if kind is None:
        return Selection(reason=f"the task '{spec.task}' has no selection metric here"), None
    items = datamodule.selection_items()
    if not items:
        return Selection(reason="no clean targets to score PSNR against (self-supervised): the validation loss "
                                "is the selection criterion"), None
    name, words = METRICS[kind]
    return Selection(name, "max", kind, f"the task's metric ({words} on the validation split)"), items


class TaskMetric(pl.Callback):
    """Scores the task's metric at the end of every validation and logs it (see the module)."""

    def __init__(self, selection: Selection, spec, items: list, batch_size: int = 16):
        self.selection, self.spec, self.items, self.batch_size = selection, spec, items, batch_size

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        mine = self.items[trainer.global_rank::trainer.world_size]
        totals = self.counts(module, mine, trainer)
        if trainer.world_size > 1:
            totals = trainer.strategy.reduce(totals, reduce_op="sum")
        module.log(self.selection.monitor, float(finish(self.selection.kind, totals.cpu().numpy())),
                   on_epoch=True, prog_bar=True, sync_dist=False)

    def outputs(self, module, trainer, batch: list[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(np.stack(batch)).to(module.device)
        context = trainer.precision_plugin.forward_context() if trainer is not None else torch.no_grad()
        with torch.no_grad(), context:
            y = module(x)
        return y.float().cpu().numpy()

    def counts(self, module, items: list, trainer=None) -> torch.Tensor:
        """Sums over ``items`` from which :func:`finish` forms the metric (summable over ranks)."""
        kind = self.selection.kind
        if kind == "classification":
            n = int(self.spec.architecture_params.get("n_classes", len(self.spec.outputs[0].channels or [])))
            totals = np.zeros((n, 3), np.float64)             # per class: tp, fp, fn
        else:
            totals = np.zeros(3 if kind == "instance" else 2, np.float64)
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            y = self.outputs(module, trainer, [x for x, _ in chunk])
            for out, (_, reference) in zip(y, chunk):
                totals += score_one(kind, self.spec, out, reference, totals.shape)
        return torch.tensor(totals, dtype=torch.float64, device=module.device)


def score_one(kind: str, spec, output: np.ndarray, reference, shape) -> np.ndarray:
    """One validation item's contribution to the sums of :meth:`TaskMetric.counts`."""
    if kind == "classification":
        row = np.zeros(shape)
        predicted = int(np.argmax(output))
        if predicted == reference:
            row[reference, 0] = 1
        else:
            row[predicted, 1], row[reference, 2] = 1, 1
        return row
    if kind == "restoration":
        from zoo.restoration.metrics import normalized_psnr

        value = normalized_psnr(output, reference)
        return np.array([value if math.isfinite(value) else 100.0, 1.0])
    from zoo import opnames
    from zoo.runtime import ops
    from zoo.segmentation.metrics import counts

    labels = ops.apply(opnames.output_ops(spec), output[None], {}, spec.outputs[0].name, ops.POSTPROCESSING)[0, 0]
    row = counts(reference.astype(np.int32), labels.astype(np.int32), thresholds=(0.5,))[0]
    return np.array([row["tp"], row["fp"], row["fn"]], np.float64)


def finish(kind: str, totals: np.ndarray) -> float:
    """The metric from summed counts."""
    if kind == "classification":
        tp, fp, fn = totals[:, 0], totals[:, 1], totals[:, 2]
        seen = (tp + fp + fn) > 0
        return float(np.mean(2 * tp[seen] / (2 * tp[seen] + fp[seen] + fn[seen]))) if seen.any() else 0.0
    if kind == "restoration":
        return float(totals[0] / max(totals[1], 1))
    tp, fp, fn = totals
    return float(tp / (tp + fp + fn)) if tp + fp + fn else 1.0
