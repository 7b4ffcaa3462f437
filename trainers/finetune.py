"""``finetune``: adapt a pretrained package to a few of the user's own images (transfer learning).

The child starts from the parent's weights: tensors that fit are copied, the first convolution
is adapted to a new number of input channels, the output head is re-initialised when the
number of outputs changes (``params``, e.g. ``{"n_rays": 64}``). Training uses a lower learning
rate than the parent's with a linear warm-up, an optional freeze policy and layer-wise
learning-rate decay, early stopping on the validation images, and optionally "rehearsal" of
the parent's own training data. The child package records its lineage: the parent's
``name@version`` and zoo.yaml sha256, the policy, and the parent's and the child's metrics on
the same validation images.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from zoo import architectures
from zoo.errors import InputError
from zoo.imageio import read_image
from zoo.nn.transfer import load_transferable
from zoo.package import build, readers
from zoo.spec import Spec, Training

from . import dispatch
from .data import Rehearsal
from .checkpoints import open_run
from .fit import (data_record, make_datamodule, pair_targets, refuse_existing, run_and_resume, run_identity,
                  sample_image, split_files)
from .loop import add_shift_check
from .options import TrainingOptions
from .runlog import attach_curves
from .parent import child_spec, data_channels, load_parent, record_comparison, train_child
from .policy import FinetunePolicy, parent_config
from .selection import choose

log = logging.getLogger("zoo.trainers")



def _check_outputs(spec: Spec, network) -> None:
    """The network's output channels must be those the spec names (a changed head)."""
    import torch

    inp = spec.inputs[0]
    n = len(inp.spatial_axes)
    probe = [max(m, st) for m, st in zip(inp.shape_min or [8] * n, inp.shape_step or [8] * n)]
    with torch.no_grad():
        got = network.eval()(torch.zeros(1, inp.n_channels, *probe)).shape[1]
    network.train()
    expected = spec.outputs[0].n_channels
    if got != expected:
        raise InputError(f"with {spec.architecture_params} the network has {got} output channels but the "
                         f"parent's spec names {expected}; the architecture '{spec.architecture_id}' cannot "
                         "describe this change of outputs")


def _output_names(spec: Spec) -> None:
    """Let the architecture rename its output channels for changed parameters (e.g. rays)."""
    arch = architectures.get(spec.architecture_id)
    if arch.describe_outputs:
        architectures.import_target(arch.describe_outputs)(spec.architecture_params, spec.outputs[0])


def finetune(parent, data: str | Path | None, out: str | Path, *, target: str | Path | None = None,
             train_files: Sequence[Path] | None = None, val_files: Sequence[Path] | None = None,
             val_fraction: float = 0.15, name: str | None = None, version: str = "0.1.0",
             description: str | None = None, channels: int | None = None, params: dict | None = None,
             freeze: str = "none", unfreeze_every: int | None = None, lr: float | None = None,
             lr_scale: float = 0.5, warmup: int | None = None, layer_decay: float | None = None,
             patience: int | None = 5, val_every: int = 50, rehearsal: Rehearsal | None = None,
             patch: int | Sequence[int] | None = None, batch_size: int | None = None, max_steps: int = 500,
             seed: int = 0, registry=None, evaluate: bool = True, progress: bool | str = True,
             data_description: str | None = None, data_source: str | None = None, data_license: str | None = None,
             sample: str | Path | None = None, overwrite: bool = False, callbacks: Sequence = (),
             labels: str | Path | None = None, group_column: str | None = None, split_column: str | None = None,
             train_split: str = "train", test_split: str | None = None, run_dir=None, max_time=None,
             resume=None, checkpoint_every: int | None = None, select: str = "metric", device: str | None = None,
             **lightning) -> Path | None:
    """Fine-tune the package ``parent`` on ``data`` (and ``target``); return the child package's path.

    The one way in for fine-tuning, whatever the task: the parent's architecture names its
    trainer (:mod:`zoo.trainers.dispatch`). A classifier parent is fine-tuned by
    :func:`zoo.trainers.classification.finetune_from` on labelled images (class folders or
    ``labels``, with ``group_column``, ``split_column``, ``train_split``, ``test_split``); a dense
    one by :func:`finetune_dense`. An option that does not apply to the parent's task is refused.

    channels: input channels of the child (default: from the first training image).
    params: architecture parameters to change (those that set the outputs: ``n_rays`` ...).
    freeze: ``none``, ``encoder``, ``all-but-head`` or ``gradual`` (one more stage every
        ``unfreeze_every`` steps, default ``max_steps / number of stages``).
    lr: default ``lr_scale`` times the parent's learning rate, reached after ``warmup`` steps
        (default 5% of ``max_steps``, at least 10). layer_decay: per-stage factor from the head.
        (The policy: :class:`zoo.trainers.policy.FinetunePolicy`.)
    patience: validations without improvement before stopping (None: never); one every ``val_every`` steps.
        The weights kept are those with the lowest validation loss, the parent's own included:
        when fine-tuning never beats it, the child keeps the parent's weights (``selected_step`` 0).
    rehearsal: images of the parent's training data mixed into training (a fraction of patches).
    name: default the parent's name with ``-ft``.
    patch, batch_size: default the parent's. The other options are those of ``fit``.
    progress: a progress bar (True), plain lines on stderr (``"lines"``) or nothing (False).
    evaluate: with targets, score the child, the parent package (each fed the validation images
        in the channels it declares) and the classical baseline on the validation images; the
        numbers land in the child's ``training.metrics`` (``finetune_report``, ``parent_vs_child``)
        and a warning is logged when the child scores below either.
    run_dir, max_time, resume, checkpoint_every, select, device: as for
        :func:`zoo.trainers.fit.fit` (the parent's weights compete by the selection's metric).
    """
    from .fit import device_options

    if device is not None:
        lightning["accelerator"], lightning["devices"] = device_options(device, lightning.get("accelerator", "auto"),
                                                                        lightning.get("devices", "auto"))
    given = dict(locals())
    policy = FinetunePolicy(freeze, unfreeze_every, lr, lr_scale, warmup, layer_decay)
    options = TrainingOptions(max_steps=max_steps, batch_size=batch_size, seed=seed, val_every=val_every,
                              patience=patience, progress=progress, lightning=lightning)
    loaded = load_parent(parent, registry)
    trainer = dispatch.trainer_for(loaded[0])
    common = ("parent", "data", "out", "registry", "lightning", "device", "device_options", "freeze", "unfreeze_every", "lr", "lr_scale",
              "warmup", "layer_decay", "max_steps", "batch_size", "seed", "val_every", "patience", "progress")
    task_options = {k: v for k, v in given.items() if k not in common}
    return dispatch.call(trainer.finetune, trainer, loaded[0].ref, task_options, dispatch.defaults_of(finetune),
                         loaded, data, out, policy, options)


def finetune_dense(parent: tuple[Spec, Path, str], data, out, policy: FinetunePolicy, options: TrainingOptions, *,
                   target=None, train_files=None, val_files=None, val_fraction: float = 0.15, name=None,
                   version: str = "0.1.0", description=None, channels=None, params=None, rehearsal=None, patch=None,
                   evaluate: bool = True, data_description=None, data_source=None, data_license=None, sample=None,
                   overwrite: bool = False, callbacks: Sequence = (), run_dir=None, max_time=None, resume=None,
                   checkpoint_every: int | None = None, select: str = "metric") -> Path | None:
    """Restoration and segmentation: patches of the user's images (and targets), the parent's
    patch and batch size unless given, rehearsal of the parent's data (see :func:`finetune`)."""
    import pytorch_lightning as pl

    parent_spec, parent_root, parent_sha = parent
    policy.check()
    arch = architectures.get(parent_spec.architecture_id)
    train_files, val_files = split_files(data, train_files, val_files, val_fraction, options.seed)
    pairs = pair_targets(arch, target, train_files, val_files)
    if channels is None:
        channels = data_channels(read_image(train_files[0]), parent_spec.inputs[0])
    spec = child_spec(parent_spec, channels, dict(params or {}))
    if params:
        _output_names(spec)

    refuse_existing(out, overwrite)
    record_data = data_record(train_files, val_files, pairs, data, data_description, data_source, data_license)

    pl.seed_everything(options.seed, workers=True, verbose=False)
    module = arch.training_module()(spec)
    _check_outputs(spec, module.network)
    transfer = load_transferable(module.network, readers.state_dict(parent_root / build.WEIGHTS))
    initial = copy.deepcopy(module.network.state_dict())
    policy = policy.apply(module, parent_spec, options.max_steps)

    patch = patch or parent_config(parent_spec).get("patch", 64)
    options = replace(options, batch_size=options.batch_size or parent_config(parent_spec).get("batch_size", 8))
    datamodule = make_datamodule(module, train_files, val_files, pairs, patch, options.batch_size,
                                 options.validate_every, options.seed, rehearsal)
    selection, items = choose(spec, datamodule, select)
    run_dir, resume = run_and_resume(out, run_dir, resume)
    identity = run_identity(spec, "finetune", record_data, options, parent=parent_sha, patch=patch,
                            policy=policy.record(), select=selection.monitor,
                            rehearsal=[p.name for p in rehearsal.files] if rehearsal else None)
    plan = open_run(run_dir, identity, checkpoint_every or options.validate_every, resume, overwrite)
    # fine-tuning must beat the parent
    run, parent_val_loss, freezing = train_child(module, datamodule, policy, options, initial, callbacks,
                                                 selection=selection, selection_items=items, run_dir=run_dir,
                                                 max_time=max_time, val_every=options.validate_every, plan=plan)
    if not run.writes:
        return None
    if run.selected_step == 0:
        log.warning("fine-tuning never beat the parent's validation loss (%.4g): the package keeps the parent's "
                    "weights (adapted to the new inputs)", parent_val_loss)

    record = {**policy.record(), "patience": options.patience, "validate_every": options.validate_every,
              "parent_channels": parent_spec.inputs[0].n_channels, "channels": channels,
              **({"changed_params": dict(params)} if params else {}),
              "transfer": transfer.to_dict(), "trainable_stages": freezing.history,
              **({"rehearsal": {"fraction": rehearsal.fraction, "images": len(rehearsal.files)}} if rehearsal else {})}
    training = Training(
        data=record_data,
        statistics=datamodule.statistics(),
        metrics={**run.metrics(), "parent_val_loss": parent_val_loss},
        config={"max_steps": options.max_steps, "patch": patch, "batch_size": options.batch_size,
                "seed": options.seed, **run.record(), **module.hparams_for_record(), "finetune": record,
                "validation_files": [p.name for p in val_files]},
        parent={"ref": parent_spec.ref, "sha256": parent_sha},
    )
    child = build.build(spec, module.network, out, training, sample_image(spec, sample, val_files),
                        name=name or f"{parent_spec.name}-ft",
                        version=version, description=description or _description(parent_spec, train_files),
                        overwrite=overwrite)
    if evaluate and pairs:
        from zoo.loading import load

        record_comparison(child, load(parent_root, runtime="onnx", device="cpu"), val_files, pairs["val_targets"])
    attach_curves(child, run_dir)
    return add_shift_check(child, train_files, val_files)


def _description(parent: Spec, train_files) -> str:
    return (f"{parent.name} fine-tuned on {len(train_files)} image(s). " + parent.description.strip())


def validation_metrics(model, images: Sequence[Path], targets: Sequence[Path]) -> dict:
    """The numbers a parent and its child are compared by: AP/F1/PQ of instance segmentation,
    PSNR/SSIM of restoration, on the same images."""
    from zoo.evaluate import scores

    measured = scores(model, images, targets, baseline=False)
    keys = ("ap50", "ap75", "ap90", "f1_50", "pq50") if model.makes_instances else \
        ("psnr_input", "psnr_output", "ssim_input", "ssim_output")
    return {k: measured[k] for k in keys}


def compare_on_validation(child: Path, spec: Spec, parent_state: dict, images, targets) -> dict:
    """:func:`record_comparison` against the parent's weights as they were before fine-tuning,
    adapted to the child's inputs and head (a benchmark's step 0)."""
    from zoo.model import Model
    from zoo.runtime.runners import TorchRunner, fold_batch_norm

    network = architectures.get(spec.architecture_id).build_network(spec.architecture_params)
    network.load_state_dict(parent_state)
    parent = Model.with_runner(spec, TorchRunner(fold_batch_norm(network.eval()), device="cpu"))
    return record_comparison(child, parent, images, targets)
