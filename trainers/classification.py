"""Training a classifier: labelled images (class folders or a CSV), split by group, never by crop.

Examples come from ``DATA/<class>/*.png`` or from a CSV (``file,label[,group][,split]``). The
validation images that choose the kept weights are whole groups (e.g. every crop of one source
image), so crops of one field of view never sit on both sides. A ``split`` column can hold a
test split out of training altogether; ``fit_classifier`` then reports its metrics.
"""
from __future__ import annotations

import copy
import csv
import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from zoo import architectures, spec as specs
from zoo.classification.canvas import centre_fit, geometry, rescale
from zoo.errors import InputError
from zoo.hashing import fingerprint_files
from zoo.imageio import IMAGE_SUFFIXES, read_image
from zoo.images import intensity_statistics, normalise, read_raw
from zoo.nn.transfer import load_transferable
from zoo.package import build, readers
from zoo.spec import Spec, TensorSpec, Training

from .data import StepData
from .dispatch import Trainer
from .loop import add_shift_check, train
from .options import TrainingOptions
from .checkpoints import open_run
from .fit import refuse_existing, run_and_resume, run_identity
from .runlog import attach_curves
from .selection import choose
from .parent import child_spec, data_channels, load_parent, record_comparison, train_child
from .policy import FinetunePolicy, parent_config

log = logging.getLogger("zoo.trainers")


@dataclass(frozen=True)
class Example:
    path: Path
    label: str
    group: str
    split: str = ""


def read_examples(data: str | Path, labels: str | Path | None = None, group_column: str | None = None,
                  split_column: str | None = None) -> list[Example]:
    """Labelled images from class folders under ``data``, or from the CSV ``labels`` (columns
    ``file`` relative to ``data``, ``label``, and the named group and split columns)."""
    data = Path(data)
    if labels is None and (data / "labels.csv").is_file():
        labels = data / "labels.csv"
    if labels is not None:
        with open(labels, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        needed = {"file", "label"} | {c for c in (group_column, split_column) if c}
        missing = needed - set(rows[0] if rows else [])
        if missing:
            raise InputError(f"{labels}: missing column(s) {', '.join(sorted(missing))}; expected file, label"
                             f"{' and ' + ', '.join(sorted(needed - {'file', 'label'})) if needed - {'file', 'label'} else ''}")
        examples = [Example(data / r["file"], r["label"], r[group_column] if group_column else r["file"],
                            r[split_column] if split_column else "") for r in rows]
    else:
        if not data.is_dir():
            raise InputError(f"{data} is not a folder: give a folder with one sub-folder per class, or --labels CSV")
        examples = [Example(p, folder.name, p.stem) for folder in sorted(data.iterdir()) if folder.is_dir()
                    for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if len({e.label for e in examples}) < 2:
        raise InputError(f"{data}: found {len(examples)} images in {len({e.label for e in examples})} class(es); a "
                         "classifier needs at least two classes (one sub-folder per class, or a label column)")
    return examples


def split_by_group(examples: Sequence[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Whole groups to validation until it holds ``val_fraction`` of the examples."""
    groups = sorted({e.group for e in examples})
    order = np.random.default_rng(seed).permutation(len(groups))
    target, held, count = val_fraction * len(examples), set(), 0
    sizes = Counter(e.group for e in examples)
    for i in order:
        if count >= target:
            break
        held.add(groups[i])
        count += sizes[groups[i]]
    train = [e for e in examples if e.group not in held]
    val = [e for e in examples if e.group in held]
    if not train or not val:
        raise InputError(f"cannot split {len(examples)} images in {len(groups)} groups into training and validation; "
                         "give more groups (source images) or a split column")
    return train, val


def class_weights(labels: Sequence[int], n_classes: int) -> list[float]:
    """Inverse class frequency ``N / (K * n_k)``: every class weighs the same in the loss, and the
    average weight over the training images is one."""
    counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(np.float64)
    if np.any(counts == 0):
        raise InputError(f"every class needs training images; counts per class: {counts.astype(int).tolist()}")
    return (counts.sum() / (n_classes * counts)).tolist()


class CropDataset(Dataset):
    """Normalised images placed on the canvas; with ``augment``: flips, quarter turns, a scale
    jitter of +-10%, a shift of up to an eighth of the canvas and a small intensity jitter.

    Training reads sample positions from a :class:`zoo.trainers.data.StepSampler`: position
    ``i`` is image ``permutation(epoch)[i % n]`` with ``epoch = i // n`` (a new shuffle each pass
    over the images) augmented from its own random stream (seed, i), so that a resumed run sees
    what the uninterrupted one would have seen."""

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[int], scale: float, size: Sequence[int],
                 augment: bool, seed: int = 0):
        self.images, self.labels = list(images), list(labels)
        self.scale, self.size, self.augment, self.seed = scale, list(size), augment, seed
        self._fixed = None if augment else [centre_fit(rescale(x, scale), self.size) for x in self.images]
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def _image_at(self, i: int) -> int:
        epoch, j = divmod(int(i), len(self.images))
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng((self.seed, 2, epoch)).permutation(len(self.images)))
        return int(self._order[1][j])

    def __getitem__(self, i: int):
        if self._fixed is not None:
            return torch.from_numpy(self._fixed[i]), self.labels[i]
        rng = np.random.default_rng((self.seed, 1, int(i)))
        k = self._image_at(i)
        x = rescale(self.images[k], self.scale * float(rng.uniform(0.9, 1.1)))
        if rng.random() < 0.5:
            x = x[..., ::-1]
        x = np.rot90(x, int(rng.integers(4)), axes=(-2, -1))
        shift = [int(rng.integers(-s // 8, s // 8 + 1)) for s in self.size]
        x = centre_fit(np.roll(centre_fit(x, [s + 2 * abs(d) for s, d in zip(self.size, shift)]), shift, (-2, -1)),
                       self.size)
        x = x * np.float32(rng.uniform(0.9, 1.1)) + np.float32(rng.uniform(-0.05, 0.05))
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), self.labels[k]


class ClassificationDataModule(StepData, pl.LightningDataModule):
    def __init__(self, train: CropDataset, val: CropDataset, batch_size: int, seed: int):
        super().__init__()
        self.train, self.val, self.batch_size, self.seed = train, val, batch_size, seed
        self.steps_per_epoch = max(1, len(train) // batch_size)

    def train_dataloader(self):
        return self.step_loader(self.train, self.batch_size)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=64)

    def selection_items(self):
        """The validation examples that score the weights: (canvas, class index) pairs."""
        return [(self.val[i][0].numpy(), int(self.val.labels[i])) for i in range(len(self.val))]


def _canvas(inp: TensorSpec) -> tuple[float, list[int]]:
    op = next((o for o in inp.preprocessing if o.op == "fit_canvas"), None)
    if op is None:
        raise InputError("a classifier's input needs a 'fit_canvas' preprocessing op (scale and canvas size)")
    return geometry(op.params)


def prepare(blueprint: Spec, classes: Sequence[str], channels: int, canvas: int | None, scale: float | None) -> Spec:
    """The blueprint with this data's classes and channels, and the canvas asked for."""
    spec = blueprint.copy()
    spec.architecture_params.update(n_classes=len(classes), channels=channels)
    inp, out = spec.inputs[0], spec.outputs[0]
    if channels != inp.n_channels:
        inp.channels = ["red", "green", "blue"] if channels == 3 else [f"c{i}" for i in range(channels)]
    op = next(o for o in inp.preprocessing if o.op == "fit_canvas")
    op.params = {"scale": float(scale if scale is not None else op.params.get("scale", 1.0)),
                 "size": [int(canvas)] * 2 if canvas else op.params["size"]}
    out.channels = list(classes)
    return spec


def _load(examples: Sequence[Example], tensor: TensorSpec) -> list[np.ndarray]:
    """Each image normalised as prediction will (every preprocessing op before the canvas)."""
    before = TensorSpec(**{**tensor.__dict__, "preprocessing": [o for o in tensor.preprocessing if o.op != "fit_canvas"]})
    return [normalise(read_raw(e.path, tensor), before) for e in examples]


@dataclass
class Data:
    """A classifier's examples, split, with their data module."""

    pool: list[Example]            # every image that trains or selects the weights
    train: list[Example]
    val: list[Example]
    test: list[Example]            # held out from training altogether (scored at the end)
    classes: list[str]


def split_examples(data, labels, group_column, split_column, train_split: str, test_split: str | None,
                   val_fraction: float, seed: int) -> Data:
    examples = read_examples(data, labels, group_column, split_column)
    pool = [e for e in examples if not split_column or e.split == train_split]
    test = [e for e in examples if split_column and test_split and e.split == test_split]
    if not pool:
        raise InputError(f"no training images: no row has {split_column} = {train_split}")
    train, val = split_by_group(pool, val_fraction, seed)
    return Data(pool, train, val, test, sorted({e.label for e in pool}))


def datamodule(spec: Spec, data: Data, batch_size: int, seed: int) -> ClassificationDataModule:
    inp = spec.inputs[0]
    index = {c: i for i, c in enumerate(data.classes)}
    scale, size = _canvas(inp)
    log.info("classes %s: %s training, %s validation images", data.classes, Counter(e.label for e in data.train),
             Counter(e.label for e in data.val))
    return ClassificationDataModule(
        CropDataset(_load(data.train, inp), [index[e.label] for e in data.train], scale, size, True, seed),
        CropDataset(_load(data.val, inp), [index[e.label] for e in data.val], scale, size, False), batch_size, seed)


def _training(spec: Spec, data: Data, source: dict, run, module, config: dict, metrics: dict,
              parent: dict | None, group_column: str | None, val_fraction: float) -> Training:
    description = source.get("description") or f"{len(data.pool)} labelled images"
    return Training(
        data={"description": description, **{k: source[k] for k in ("source", "license") if source.get(k)},
              "fingerprint": fingerprint_files([e.path for e in data.pool]), "n_train": len(data.train),
              "n_validation": len(data.val)},
        statistics=intensity_statistics([read_raw(e.path, spec.inputs[0]) for e in data.train[:200]]),
        metrics={**run.metrics(), **metrics},
        config={**config, **run.record(), **module.hparams_for_record(),
                "split": {"by": group_column or "file", "val_fraction": val_fraction},
                "class_counts": {c: sum(e.label == c for e in data.train) for c in data.classes},
                "augmentation": "flips, quarter turns, scale +-10%, shift, intensity +-10%"},
        parent=parent)


def _data_identity(split: Data, labels) -> dict:
    """The data a classifier's run trains on, as a resume checks it: its images and labels."""
    files = [e.path for e in split.pool] + ([Path(labels)] if labels else [])
    import hashlib

    assignment = hashlib.sha256("\n".join(f"{e.path.name}\t{e.label}\t{e.group}" for e in split.pool).encode())
    return {"fingerprint": fingerprint_files(files) + ":" + assignment.hexdigest()[:16],
            "n_train": len(split.train), "n_validation": len(split.val)}


def _write(spec: Spec, network, out, training: Training, data: Data, test_split: str | None, **naming) -> Path:
    path = build.build(spec, network, out, training, read_raw(data.val[0].path, spec.inputs[0])[None], **naming)
    add_shift_check(path, [e.path for e in data.train], [e.path for e in data.val])
    if data.test:
        from zoo.classification.evaluate import score_package

        score_package(path, data.test, f"{test_split} split ({len(data.test)} images, never trained on)")
    return path


def fit_classifier(blueprint: str | Path | Spec, data: str | Path, out: str | Path, *, labels: str | Path | None = None,
                   group_column: str | None = None, split_column: str | None = None, train_split: str = "train",
                   test_split: str | None = None, val_fraction: float = 0.15, canvas: int | None = None,
                   scale: float | None = None, name: str | None = None, version: str = "0.1.0",
                   description: str | None = None, batch_size: int = 32, max_steps: int = 1500, lr: float | None = None,
                   val_every: int = 100, seed: int = 0, progress: bool = True, data_description: str | None = None,
                   data_source: str | None = None, data_license: str | None = None, overwrite: bool = False,
                   run_dir=None, max_time=None, resume=None, checkpoint_every: int | None = None,
                   select: str = "metric", **lightning) -> Path | None:
    """Train a classifier; return the package path. With ``split_column``, only rows whose split
    is ``train_split`` train (and select the weights); rows of ``test_split`` are scored at the
    end, by the written package, into its metrics and model card. The weights kept are those
    with the best macro-F1 on the validation images (``select="loss"``: the lowest validation
    loss), checked every ``val_every`` steps. Checkpoints and resume as for :func:`zoo.trainers.fit.fit`."""
    split = split_examples(data, labels, group_column, split_column, train_split, test_split, val_fraction, seed)
    spec = blueprint if isinstance(blueprint, Spec) else specs.load(blueprint)
    spec = prepare(spec, split.classes, data_channels(read_image(split.pool[0].path), spec.inputs[0]), canvas, scale)
    options = TrainingOptions(max_steps=max_steps, batch_size=batch_size, seed=seed, val_every=val_every,
                              progress=progress, lightning=lightning)
    refuse_existing(out, overwrite)
    pl.seed_everything(options.seed, workers=True, verbose=False)
    index = {c: i for i, c in enumerate(split.classes)}
    weights = class_weights([index[e.label] for e in split.train], len(split.classes))
    module = architectures.get(spec.architecture_id).training_module()(
        spec, class_weights=weights, **({"lr": lr} if lr is not None else {}))
    dm = datamodule(spec, split, options.batch_size, options.seed)
    selection, items = choose(spec, dm, select, classifier=True)
    run_dir, resume = run_and_resume(out, run_dir, resume)
    identity = run_identity(spec, "fit_classifier", _data_identity(split, labels), options,
                            module=module.hparams_for_record(), select=selection.monitor)
    plan = open_run(run_dir, identity, checkpoint_every or options.validate_every, resume, overwrite)
    run = train(module, dm, options.max_steps, progress=options.progress, val_every=options.validate_every,
                run_dir=run_dir, max_time=max_time, plan=plan, selection=selection, selection_items=items,
                seed=options.seed, **options.lightning)
    if not run.writes:
        return None
    training = _training(spec, split, {"description": data_description, "source": data_source,
                                       "license": data_license}, run, module,
                         {"max_steps": options.max_steps, "batch_size": options.batch_size, "seed": options.seed},
                         {}, None, group_column, val_fraction)
    path = _write(spec, module.network, out, training, split, test_split, name=name, version=version,
                  description=description, overwrite=overwrite)
    attach_curves(path, run_dir)
    return path


def finetune_classifier(parent, data: str | Path, out: str | Path, *, labels: str | Path | None = None,
                        group_column: str | None = None, split_column: str | None = None, train_split: str = "train",
                        test_split: str | None = None, val_fraction: float = 0.15, name: str | None = None,
                        version: str = "0.1.0", description: str | None = None, freeze: str = "none",
                        unfreeze_every: int | None = None, lr: float | None = None, lr_scale: float = 0.5,
                        warmup: int | None = None, layer_decay: float | None = None, patience: int | None = 5,
                        val_every: int = 50, batch_size: int | None = None, max_steps: int = 500, seed: int = 0,
                        registry=None, progress: bool | str = True, evaluate: bool = True, overwrite: bool = False,
                        **lightning) -> Path:
    """Fine-tune a classifier package on labelled images. Other classes than the parent's (or in
    another order) get a new head; the body keeps the parent's weights, under the same freeze
    and learning-rate policies as :func:`zoo.trainers.finetune.finetune`. The parent's canvas
    and scale are kept, so the child sees images as the parent did. With ``evaluate``, the child's
    validation accuracy is recorded beside the parent's (same classes only) and the majority
    class's."""
    policy = FinetunePolicy(freeze, unfreeze_every, lr, lr_scale, warmup, layer_decay)
    options = TrainingOptions(max_steps=max_steps, batch_size=batch_size, seed=seed, val_every=val_every,
                              patience=patience, progress=progress, lightning=lightning)
    return finetune_from(load_parent(parent, registry), data, out, policy, options, labels=labels,
                         group_column=group_column, split_column=split_column, train_split=train_split,
                         test_split=test_split, val_fraction=val_fraction, name=name, version=version,
                         description=description, evaluate=evaluate, overwrite=overwrite)


def finetune_from(parent: tuple[Spec, Path, str], data: str | Path, out: str | Path, policy: FinetunePolicy,
                  options: TrainingOptions, *, labels: str | Path | None = None, group_column: str | None = None,
                  split_column: str | None = None, train_split: str = "train", test_split: str | None = None,
                  val_fraction: float = 0.15, name: str | None = None, version: str = "0.1.0",
                  description: str | None = None, evaluate: bool = True, overwrite: bool = False, run_dir=None,
                  max_time=None, resume=None, checkpoint_every: int | None = None,
                  select: str = "metric") -> Path | None:
    """:func:`finetune_classifier` of a loaded parent (:func:`zoo.trainers.parent.load_parent`):
    ``options.batch_size`` None takes the parent's."""
    parent_spec, parent_root, parent_sha = parent
    policy.check()
    split = split_examples(data, labels, group_column, split_column, train_split, test_split, val_fraction,
                           options.seed)
    channels = data_channels(read_image(split.pool[0].path), parent_spec.inputs[0])
    spec = prepare(child_spec(parent_spec, channels, {}), split.classes, channels, None, None)
    refuse_existing(out, overwrite)
    pl.seed_everything(options.seed, workers=True, verbose=False)
    index = {c: i for i, c in enumerate(split.classes)}
    module = architectures.get(spec.architecture_id).training_module()(
        spec, class_weights=class_weights([index[e.label] for e in split.train], len(split.classes)))
    state = readers.state_dict(parent_root / build.WEIGHTS)
    new_head = list(parent_spec.outputs[0].channels or []) != split.classes
    if new_head:                                   # other classes: the parent's head means nothing here
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    transfer = load_transferable(module.network, state)
    initial = copy.deepcopy(module.network.state_dict())
    policy = policy.apply(module, parent_spec, options.max_steps)
    if options.batch_size is None:
        options = replace(options, batch_size=int(parent_config(parent_spec).get("batch_size", 32)))
    dm = datamodule(spec, split, options.batch_size, options.seed)
    selection, items = choose(spec, dm, select, classifier=True)
    run_dir, resume = run_and_resume(out, run_dir, resume)
    identity = run_identity(spec, "finetune_classifier", _data_identity(split, labels), options, parent=parent_sha,
                            policy=policy.record(), select=selection.monitor)
    plan = open_run(run_dir, identity, checkpoint_every or options.validate_every, resume, overwrite)
    # the same classes: fine-tuning must beat the parent; a new head has nothing to beat
    run, _, freezing = train_child(module, dm, policy, options, None if new_head else initial,
                                   selection=selection, selection_items=items, val_every=options.validate_every,
                                   run_dir=run_dir, max_time=max_time, plan=plan)
    if not run.writes:
        return None
    record = policy.record()
    record.pop("unfreeze_every", None)             # a classifier's record has never named it
    record = {**record, "patience": options.patience, "parent_classes": list(parent_spec.outputs[0].channels or []),
              "classes": split.classes, "new_head": new_head, "transfer": transfer.to_dict(),
              "trainable_stages": freezing.history}
    training = _training(spec, split, {"description": f"{len(split.pool)} labelled images from {data}"}, run, module,
                         {"max_steps": options.max_steps, "batch_size": options.batch_size, "seed": options.seed,
                          "finetune": record}, {}, {"ref": parent_spec.ref, "sha256": parent_sha}, group_column,
                         val_fraction)
    child = _write(spec, module.network, out, training, split, test_split, name=name or f"{parent_spec.name}-ft",
                   version=version, description=description or f"{parent_spec.name} fine-tuned on {len(split.pool)} "
                   f"labelled images ({', '.join(split.classes)}). " + parent_spec.description.strip(),
                   overwrite=overwrite)
    if evaluate:
        from zoo.loading import load

        parent_model = None if new_head else load(parent_root, runtime="onnx", device="cpu")
        record_comparison(child, parent_model, [e.path for e in split.val], [e.label for e in split.val])
    attach_curves(child, run_dir)
    return child


TRAINER = Trainer(
    kind="a classifier",
    learns_from="labelled images (class folders, or a labels CSV with --labels)",
    fit="zoo.trainers.classification:fit_classifier",
    finetune="zoo.trainers.classification:finetune_from",
)
