"""Training data: normalised random patches with foreground-aware sampling and flip/rot90
augmentation, rehearsal of a parent's data, and Lightning's data module for image-to-image
training. Image folders (single or paired by name), the by-image split, reading and normalising
an image and its intensity statistics are numpy-only and live in :mod:`zoo.images` (re-exported
here)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from zoo.errors import InputError
from zoo.images import (intensity_statistics, list_images, match_targets, normalise, read_raw,  # noqa: F401
                        split_by_image)
from zoo.spec import TensorSpec


def _augment(patches: tuple[np.ndarray, ...], rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """The same random flips along every spatial axis and 90-degree rotation in yx for all."""
    for axis in range(1, patches[0].ndim):
        if rng.random() < 0.5:
            patches = tuple(np.flip(p, axis) for p in patches)
    if patches[0].shape[-1] == patches[0].shape[-2]:
        k = int(rng.integers(4))
        patches = tuple(np.rot90(p, k, axes=(-2, -1)) for p in patches)
    return patches


class PatchDataset(Dataset):
    """Random patches from normalised images (``c, *spatial``), or from (image, target) pairs
    cut at the same place.

    ``foreground``: the probability that a patch is required to hold foreground (at least 10% of
    its pixels above the image's 80th percentile; up to 8 draws), so that sparse images do not
    train on background alone. With ``fixed=True`` (validation) positions are drawn once.
    ``weights``: how often each image is drawn (default: equally often).
    Sample ``i`` is drawn from its own random stream (seed, i): any index is valid, and training
    reads the indices a :class:`StepSampler` gives.
    """

    def __init__(self, images: list[np.ndarray | tuple[np.ndarray, ...]], patch: Sequence[int], length: int,
                 augment: bool, seed: int = 0, fixed: bool = False, foreground: float = 0.0,
                 weights: Sequence[float] | None = None):
        self.images = [img if isinstance(img, tuple) else (img,) for img in images]
        if weights is not None and len(weights) != len(self.images):
            raise ValueError(f"{len(weights)} sampling weights for {len(self.images)} images")
        self.weights = None if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
        for group in self.images:
            shape = group[0].shape[1:]
            if any(g.shape[1:] != shape for g in group):
                raise InputError(f"an image and its target differ in size: {[g.shape[1:] for g in group]}")
            if any(s < p for s, p in zip(shape, patch)):
                raise InputError(f"an image of shape {shape} is smaller than the patch size {tuple(patch)}; "
                                 "use a smaller --patch")
        self.patch, self.length, self.augment = list(patch), length, augment
        self.seed, self.foreground = seed, foreground
        self._thresholds = [self.foreground_threshold(g[-1]) for g in self.images] if foreground > 0 else None
        self._fixed = [self._draw(np.random.default_rng(seed + i)) for i in range(length)] if fixed else None
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return self.length

    @staticmethod
    def foreground_threshold(image: np.ndarray) -> float:
        """Pixels of the group's last array above this value are foreground: its 80th percentile."""
        return float(np.percentile(image[:, ::4, ::4] if image.ndim == 3 else image, 80))

    def _draw(self, rng: np.random.Generator) -> tuple[int, tuple[int, ...]]:
        k = int(rng.integers(len(self.images)) if self.weights is None else rng.choice(len(self.images), p=self.weights))
        shape = self.images[k][0].shape[1:]
        tries = 8 if self._thresholds is not None and rng.random() < self.foreground else 1
        for _ in range(tries):
            corner = tuple(int(rng.integers(s - p + 1)) for s, p in zip(shape, self.patch))
            if tries == 1 or np.mean(self._cut(self.images[k][-1], corner) > self._thresholds[k]) >= 0.1:
                break
        return k, corner

    def _cut(self, image: np.ndarray, corner: tuple[int, ...]) -> np.ndarray:
        return image[(slice(None),) + tuple(slice(c, c + p) for c, p in zip(corner, self.patch))]

    def _stream(self, i: int) -> np.random.Generator:
        """The random stream of sample ``i``: a function of the seed and the sample's position in
        the run (:class:`StepSampler` gives every rank and step its own positions), so that a
        resumed run draws the patches the uninterrupted one would have drawn."""
        return np.random.default_rng((self.seed, int(i)))

    def __getitem__(self, i: int):
        rng = self._stream(i)
        k, corner = self._fixed[i] if self._fixed else self._draw(rng)
        patches = tuple(self._cut(image, corner) for image in self.images[k])
        if self.augment:
            patches = _augment(patches, rng)
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)) for p in patches)
        return tensors[0] if len(tensors) == 1 else tensors


@dataclass(frozen=True)
class Rehearsal:
    """Images of the parent's own training data mixed into fine-tuning, so that the child does
    not forget the parent's domain: ``fraction`` of the training patches come from them."""

    files: Sequence[Path]
    fraction: float
    targets: Sequence[Path] | None = None

    def __post_init__(self):
        if not 0 < self.fraction < 1:
            raise InputError(f"the rehearsal fraction must be between 0 and 1 (exclusive), got {self.fraction}")
        if not self.files:
            raise InputError("rehearsal needs at least one image of the parent's training data")


def mixed_weights(n_own: int, rehearsal: Rehearsal | None) -> list[float] | None:
    """Per-image sampling weights: the own images share ``1 - fraction``, rehearsal ``fraction``."""
    if rehearsal is None:
        return None
    n = len(rehearsal.files)
    return [(1 - rehearsal.fraction) / n_own] * n_own + [rehearsal.fraction / n] * n


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 outside distributed training)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class StepSampler(torch.utils.data.Sampler):
    """The training samples of a whole run, step by step: on rank ``r`` of ``world``, step ``s``
    reads the sample positions ``(s * world + r) * batch_size + j``. The data a step sees is thus
    a function of the step alone, and a run resumed at step ``start`` (:meth:`StepData.plan`)
    reads exactly what the uninterrupted run read from there on. Lightning sees one epoch of
    ``steps`` batches; validation runs every N steps (``val_check_interval``)."""

    def __init__(self, batch_size: int, steps: int, start: int = 0):
        super().__init__()
        self.batch_size, self.steps, self.start = batch_size, steps, start

    def __iter__(self):
        rank, world = rank_and_world()
        start, self.start = self.start, 0          # a resume offsets the first pass only
        for step in range(start, self.steps):
            base = (step * world + rank) * self.batch_size
            yield from range(base, base + self.batch_size)

    def __len__(self) -> int:
        return self.steps * self.batch_size


class StepLoader(DataLoader):
    """A data loader over a :class:`StepSampler`. Lightning treats it as resumable (it has a
    state): where it resumes is the checkpoint's step, which :meth:`StepData.plan` hands over."""

    def state_dict(self) -> dict:
        return {"sampler": "step"}

    def load_state_dict(self, state: dict) -> None:
        pass


class StepData:
    """What a data module needs to feed a run step by step: ``plan(steps, start)`` before
    fitting, then ``step_loader(dataset)`` in ``train_dataloader`` (unplanned: one pass of
    ``steps_per_epoch`` steps)."""

    total_steps: int | None = None
    start_step: int = 0

    def plan(self, steps: int, start: int = 0) -> None:
        """The run's length in steps, and the step a resumed run starts from."""
        self.total_steps, self.start_step = int(steps), int(start)

    def step_loader(self, dataset, batch_size: int) -> DataLoader:
        return StepLoader(dataset, batch_size=batch_size,
                          sampler=StepSampler(batch_size, self.total_steps or getattr(self, "steps_per_epoch", 1),
                                              self.start_step), num_workers=0)


class RestorationDataModule(StepData, pl.LightningDataModule):
    """Patches of normalised images for image-to-image training: images alone (self-supervised)
    or (image, target) pairs. Targets are normalised with the input's own ops, per image."""

    def __init__(self, tensor: TensorSpec, train_files: Sequence[Path], val_files: Sequence[Path],
                 patch: Sequence[int], batch_size: int = 16, steps_per_epoch: int = 200,
                 val_patches: int = 64, seed: int = 0, train_targets: Sequence[Path] | None = None,
                 val_targets: Sequence[Path] | None = None, foreground: float = 0.5,
                 rehearsal: Rehearsal | None = None):
        super().__init__()
        if (train_targets is None) != (val_targets is None):
            raise InputError("give targets for both the training and the validation images, or for neither")
        self.tensor, self.train_files, self.val_files = tensor, list(train_files), list(val_files)
        self.patch, self.batch_size, self.seed = list(patch), batch_size, seed
        self.steps_per_epoch, self.val_patches, self.foreground = steps_per_epoch, val_patches, foreground
        self.raw_train = [read_raw(p, tensor) for p in self.train_files]
        self.train_images = self._pairs([normalise(x, tensor) for x in self.raw_train], train_targets)
        self.val_images = self._pairs([normalise(read_raw(p, tensor), tensor) for p in self.val_files], val_targets)
        if rehearsal is not None:
            if (rehearsal.targets is None) != (train_targets is None):
                raise InputError("rehearsal images need targets exactly when the training images have them")
            self.train_images += self._pairs([normalise(read_raw(p, tensor), tensor) for p in rehearsal.files],
                                             rehearsal.targets)
        self.weights = mixed_weights(len(self.train_files), rehearsal)

    def _pairs(self, images: list[np.ndarray], targets: Sequence[Path] | None) -> list:
        if targets is None:
            return images
        return [(x, normalise(read_raw(t, self.tensor), self.tensor)) for x, t in zip(images, targets)]

    def statistics(self) -> dict:
        return intensity_statistics(self.raw_train)

    def train_dataloader(self) -> DataLoader:
        ds = PatchDataset(self.train_images, self.patch, self.steps_per_epoch * self.batch_size,
                          augment=True, seed=self.seed, foreground=self.foreground, weights=self.weights)
        return self.step_loader(ds, self.batch_size)

    def _validation_patches(self) -> PatchDataset:
        return PatchDataset(self.val_images, self.patch, self.val_patches, augment=False,
                            seed=self.seed + 10_000, fixed=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._validation_patches(), batch_size=self.batch_size, shuffle=False, num_workers=0)

    def selection_items(self) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """The validation patches with their targets (PSNR), or None without targets."""
        if not self.val_images or not isinstance(self.val_images[0], tuple):
            return None
        ds = self._validation_patches()
        return [tuple(ds._cut(a, corner) for a in self.val_images[k]) for k, corner in ds._fixed]
