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
from pathlib import Path
from typing import Sequence

import numpy as np

from zoo import architectures, spec as specs
from zoo.errors import InputError, UnknownArchitectureError
from zoo.hashing import sha256_file
from zoo.imageio import read_image
from zoo.nn.transfer import load_transferable, stages
from zoo.package import build, files, readers
from zoo.runtime import layout
from zoo.spec import Spec, Training

from .callbacks import KeepBest
from .data import Rehearsal
from .fit import (add_shift_check, data_record, make_datamodule, pair_targets, quiet_lightning, sample_image,
                  split_files, train)
from .transfer import Freezing, check_policy

log = logging.getLogger("zoo.trainers")

RGB = ["red", "green", "blue"]


def load_parent(parent, registry=None) -> tuple[Spec, Path, str]:
    """(spec, folder, sha256 of its zoo.yaml) of a verified parent package: a :class:`zoo.model.Model`,
    a package folder or zoo.yaml, or ``NAME[@VERSION]`` in the registry."""
    from zoo.model import Model

    if isinstance(parent, Model):
        if parent.root is None:
            raise InputError(f"{parent.spec.ref} is an in-memory model; fine-tune a package on disk")
        spec, root = parent.spec, parent.root
    else:
        path = Path(parent)
        if path.is_dir() or (path.suffix in (".yaml", ".yml") and path.is_file()):
            root = path if path.is_dir() else path.parent
            spec = specs.load(root)
            if spec.kind != "package":
                raise InputError(f"{parent} is a blueprint (no weights): train it with `zoo train`, or fine-tune a package")
            files.verify(spec, root)
        else:
            from zoo.registry import default_registry

            spec, root = (registry or default_registry()).pull(str(parent))
    if spec.graph_only:
        raise InputError(f"cannot fine-tune {spec.ref}: it is an ONNX graph without trainable weights (imported "
                         "from bioimage.io). Fine-tuning needs a package of an installed architecture (safetensors "
                         "weights); import the bioimage.io package's pytorch_state_dict instead if it has one")
    try:
        architectures.get(spec.architecture_id)
    except UnknownArchitectureError as e:
        raise UnknownArchitectureError(f"cannot fine-tune {spec.ref}: {e}") from None
    return spec, Path(root), sha256_file(Path(root) / specs.SPEC_FILE)


def data_channels(image: np.ndarray, inp) -> int:
    """The number of input channels of a training image: the parent's when it takes the image
    as it is (a grey image for an RGB model that repeats grey), else 1, 3, 4 or 2."""
    try:
        layout.to_tensor(image, None, inp.spatial_axes, inp.n_channels, inp.grey == "repeat")
        return inp.n_channels
    except InputError:
        pass
    for channels in (1, 3, 4, 2):
        try:
            layout.to_tensor(image, None, inp.spatial_axes, channels, False)
            return channels
        except InputError:
            continue
    raise InputError(f"cannot tell the channels of a training image of shape {image.shape} for a model with "
                     f"spatial axes '{inp.spatial_axes}': give channels= (--channels)")


def child_spec(parent: Spec, channels: int, params: dict) -> Spec:
    """The parent's spec with new input channels and architecture parameters; training record,
    weights and test tensors are replaced when the package is built."""
    spec = parent.copy()
    spec.architecture_params.update(params)
    inp, out = spec.inputs[0], spec.outputs[0]
    if channels != inp.n_channels:
        names = ["raw"] if channels == 1 else RGB if channels == 3 else [f"channel{i}" for i in range(channels)]
        if out.channels == inp.channels:          # image-to-image: outputs follow the inputs
            out.channels = list(names)
        inp.channels, inp.grey = names, ("repeat" if channels == 3 else None)
        inp.description = ("2D image, RGB or grey (grey is repeated into the three channels), normalised per "
                           "image and channel" if channels == 3 else
                           f"image with {channels} channel(s), normalised per image and channel")
        spec.architecture_params["channels"] = channels
    return spec


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
             **lightning) -> Path:
    """Fine-tune the package ``parent`` on ``data`` (and ``target``); return the child package's path.

    channels: input channels of the child (default: from the first training image).
    params: architecture parameters to change (those that set the outputs: ``n_rays`` ...).
    freeze: ``none``, ``encoder``, ``all-but-head`` or ``gradual`` (one more stage every
        ``unfreeze_every`` steps, default ``max_steps / number of stages``).
    lr: default ``lr_scale`` times the parent's learning rate, reached after ``warmup`` steps
        (default 5% of ``max_steps``, at least 10). layer_decay: per-stage factor from the head.
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
    """
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping
    parent_spec, parent_root, parent_sha = load_parent(parent, registry)
    if parent_spec.task.split("/")[0] == "classification":
        unused = [k for k, v in (("target", target), ("train_files", train_files), ("channels", channels),
                                 ("params", params), ("rehearsal", rehearsal), ("patch", patch)) if v]
        if unused:
            raise InputError(f"{parent_spec.ref} is a classifier: fine-tune it on labelled images (class folders or "
                             f"DATA/labels.csv); {', '.join(unused)} do not apply")
        from .classification import finetune_classifier

        return finetune_classifier(parent, data, out, val_fraction=val_fraction, name=name, version=version,
                                   description=description, freeze=freeze, unfreeze_every=unfreeze_every, lr=lr,
                                   lr_scale=lr_scale, warmup=warmup, layer_decay=layer_decay, patience=patience,
                                   val_every=val_every, batch_size=batch_size, max_steps=max_steps, seed=seed,
                                   registry=registry, progress=progress, evaluate=evaluate, overwrite=overwrite,
                                   **lightning)
    check_policy(freeze, layer_decay)
    arch = architectures.get(parent_spec.architecture_id)
    train_files, val_files = split_files(data, train_files, val_files, val_fraction, seed)
    pairs = pair_targets(arch, target, train_files, val_files)
    if channels is None:
        channels = data_channels(read_image(train_files[0]), parent_spec.inputs[0])
    spec = child_spec(parent_spec, channels, dict(params or {}))
    if params:
        _output_names(spec)

    pl.seed_everything(seed, workers=True, verbose=False)
    parent_config = parent_spec.training.config if parent_spec.training else {}
    module = arch.training_module()(spec)
    _check_outputs(spec, module.network)
    transfer = load_transferable(module.network, readers.state_dict(parent_root / build.WEIGHTS))
    initial = copy.deepcopy(module.network.state_dict())
    module.lr = lr if lr is not None else lr_scale * float(parent_config.get("lr", module.lr))
    module.warmup_steps = warmup if warmup is not None else max(10, max_steps // 20)
    module.layer_decay = layer_decay
    n_stages = len(stages(module.network))
    if freeze == "gradual" and not unfreeze_every:
        unfreeze_every = max(1, max_steps // n_stages)

    patch = patch or parent_config.get("patch", 64)
    batch_size = batch_size or parent_config.get("batch_size", 8)
    datamodule = make_datamodule(module, train_files, val_files, pairs, patch, batch_size,
                                 min(val_every, max_steps), seed, rehearsal)
    parent_val_loss = _validation_loss(module, datamodule, lightning)
    freezing = Freezing(freeze, unfreeze_every or 0)
    stopping = [EarlyStopping("val_loss", patience=patience, mode="min")] if patience else []
    keep_parent = KeepBest("val_loss", best=parent_val_loss, state=initial)   # fine-tuning must beat the parent
    run = train(module, datamodule, max_steps, [freezing, *stopping, *callbacks], progress=progress,
                keep_best=keep_parent, **lightning)
    if run.selected_step == 0:
        log.warning("fine-tuning never beat the parent's validation loss (%.4g): the package keeps the parent's "
                    "weights (adapted to the new inputs)", parent_val_loss)

    policy = {"freeze": freeze, **({"unfreeze_every": unfreeze_every} if freeze == "gradual" else {}),
              "lr": module.lr, "warmup_steps": module.warmup_steps, "layer_decay": layer_decay,
              "patience": patience, "validate_every": min(val_every, max_steps),
              "parent_channels": parent_spec.inputs[0].n_channels, "channels": channels,
              **({"changed_params": dict(params)} if params else {}),
              "transfer": transfer.to_dict(), "trainable_stages": freezing.history,
              **({"rehearsal": {"fraction": rehearsal.fraction, "images": len(rehearsal.files)}} if rehearsal else {})}
    training = Training(
        data=data_record(train_files, val_files, pairs, data, data_description, data_source, data_license),
        statistics=datamodule.statistics(),
        metrics={"val_loss": run.val_loss, "parent_val_loss": parent_val_loss},
        config={"max_steps": max_steps, "patch": patch, "batch_size": batch_size, "seed": seed,
                **run.record(), **module.hparams_for_record(), "finetune": policy,
                "validation_files": [p.name for p in val_files]},
        parent={"ref": parent_spec.ref, "sha256": parent_sha},
    )
    child = build.build(spec, module.network, out, training, sample_image(spec, sample, val_files),
                        name=name or f"{parent_spec.name}-ft",
                        version=version, description=description or _description(parent_spec, train_files),
                        overwrite=overwrite)
    if evaluate and pairs:
        import zoo

        record_comparison(child, zoo.load(parent_root, runtime="onnx", device="cpu"), val_files, pairs["val_targets"])
    return add_shift_check(child, train_files, val_files)


def _description(parent: Spec, train_files) -> str:
    return (f"{parent.name} fine-tuned on {len(train_files)} image(s). " + parent.description.strip())


def _validation_loss(module, datamodule, lightning: dict) -> float:
    """The loss of the module's current (parent) weights on the validation patches."""
    import pytorch_lightning as pl

    with quiet_lightning():        # the fit that follows states the hardware and tips once
        trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False, **lightning)
        result = trainer.validate(module, datamodule=datamodule, verbose=False)
    return float(result[0]["val_loss"])


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


def record_comparison(child: Path, parent, images, targets) -> dict:
    """Score the child package, ``parent`` (a model, or None) and the classical baseline on the
    same validation images (each fed them in the channels it declares; ``targets``: target files,
    or a classifier's class names); record the numbers in the child (``parent_vs_child``,
    ``finetune_report``) and warn when the child is below either."""
    import zoo
    from zoo.evaluate import compare

    report = compare(zoo.load(child, runtime="onnx", device="cpu"), images, targets, parent=parent)
    comparison = {k: {"child" if who == "model" else who: v for who, v in values.items()}
                  for k, values in report["metrics"].items()}
    summary = {k: v for k, v in report.items() if k != "metrics"}      # the table is parent_vs_child
    build.record_metrics(child, {"finetune_report": summary, **({"parent_vs_child": comparison} if parent else {})})
    for warning in report["warnings"]:
        log.warning(warning)
    return report
