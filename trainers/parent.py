"""What every fine-tuning does with its parent, whatever the task: load and verify the parent
package, derive the child's spec, train the child so that it must beat the parent's weights,
and record the child beside the parent and the classical baseline."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from zoo import architectures, spec as specs
from zoo.errors import InputError, UnknownArchitectureError
from zoo.hashing import sha256_file
from zoo.package import build, files
from zoo.runtime import layout
from zoo.spec import Spec

from .callbacks import KeepBest
from .loop import Run, train, validation_scores
from .options import TrainingOptions
from .policy import FinetunePolicy

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
        layout.tensor_for(image, None, inp)
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


def train_child(module, datamodule, policy: FinetunePolicy, options: TrainingOptions, parent_state: dict | None,
                callbacks=(), selection=None, selection_items=None, **trainer) -> tuple[Run, float | None, object]:
    """Train a child under ``policy`` (resolved by :meth:`FinetunePolicy.apply`) and ``options``
    (early stopping with their patience); return (run, the parent's validation loss, the freezing
    callback with its history). With ``parent_state`` (the parent's weights adapted to the child),
    those weights are scored first (by ``selection``'s metric, default the validation loss) and
    fine-tuning must beat them: when it never does, the child keeps them (``selected_step`` 0).
    ``trainer``: further options of :func:`zoo.trainers.loop.train` and Lightning's Trainer."""
    from .selection import Selection

    selection = selection or Selection()
    parent_scores = validation_scores(module, datamodule, options.lightning, selection, selection_items) \
        if parent_state is not None else None
    parent_val_loss = parent_scores["val_loss"] if parent_scores else None
    freezing = policy.freezing()
    keep = KeepBest(selection.monitor, best=parent_scores[selection.monitor], state=parent_state, mode=selection.mode,
                    loss=parent_val_loss) if parent_scores is not None else None
    run = train(module, datamodule, options.max_steps,
                [freezing, *options.early_stopping(selection.monitor, selection.mode), *callbacks],
                progress=options.progress, keep_best=keep, selection=selection, selection_items=selection_items,
                seed=options.seed, **trainer, **options.lightning)
    return run, parent_val_loss, freezing


def record_comparison(child: Path, parent, images, targets) -> dict:
    """Score the child package, ``parent`` (a model, or None) and the classical baseline on the
    same validation images (each fed them in the channels it declares; ``targets``: target files,
    or a classifier's class names); record the numbers in the child (``parent_vs_child``,
    ``finetune_report``) and warn when the child is below either."""
    from zoo.loading import load
    from zoo.evaluate import compare

    report = compare(load(child, runtime="onnx", device="cpu"), images, targets, parent=parent)
    comparison = {k: {"child" if who == "model" else who: v for who, v in values.items()}
                  for k, values in report["metrics"].items()}
    summary = {k: v for k, v in report.items() if k != "metrics"}      # the table is parent_vs_child
    build.record_metrics(child, {"finetune_report": summary, **({"parent_vs_child": comparison} if parent else {})})
    for warning in report["warnings"]:
        log.warning(warning)
    return report
