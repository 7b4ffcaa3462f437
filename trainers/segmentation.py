"""Training for instance segmentation: images with label images (0 = background).

Each architecture turns a label image into its dense training targets once per image, on the
whole image (so an object cut by a patch border keeps its true distances and flows), and says
how its target channels change under flips and 90-degree rotations; patches are then augmented
consistently. The network's heads and losses live in the architecture's module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from zoo.errors import InputError
from zoo.imageio import read_image
from zoo.images import intensity_statistics, normalise, read_raw
from zoo.spec import TensorSpec

from .base import ZooModule
from .data import PatchDataset, Rehearsal, StepData, mixed_weights

# How a target channel transforms with the image (see ``transform_targets``):
#   ("scalar",)            a value per pixel (probability, class, weight)
#   ("vector", axis)       the component along spatial axis ``axis`` of a vector field (flows)
#   ("ray", k, n)          the distance along ray k of n rays at angles 2*pi*k/n in the yx plane
Role = tuple


def transform_targets(targets: np.ndarray, roles: Sequence[Role], flips: Sequence[int], k: int) -> np.ndarray:
    """Make the channels of ``targets`` (``C, *spatial``) fit an image that was flipped along
    the spatial ``flips`` axes and then rotated by ``np.rot90(k, axes=(-2, -1))``.

    Flipping axis a negates vector component a; flipping y maps ray angle t to -t, flipping x
    to pi - t. A quarter turn maps a displacement (dy, dx) to (-dx, dy): ray angle t to
    t - pi/2."""
    dims = targets.ndim - 1
    out = targets.copy()
    vectors = {r[1]: i for i, r in enumerate(roles) if r[0] == "vector"}
    rays = [i for i, r in enumerate(roles) if r[0] == "ray"]
    n = len(rays)
    ray_index = np.arange(n)
    y_axis, x_axis = dims - 2, dims - 1
    for axis in flips:
        if axis in vectors:
            out[vectors[axis]] *= -1
        if n and axis == y_axis:
            ray_index = ray_index[(-np.arange(n)) % n]
        elif n and axis == x_axis:
            ray_index = ray_index[(n // 2 - np.arange(n)) % n]
    for _ in range(k % 4):
        if y_axis in vectors and x_axis in vectors:
            vy, vx = out[vectors[y_axis]].copy(), out[vectors[x_axis]].copy()
            out[vectors[y_axis]], out[vectors[x_axis]] = -vx, vy
        if n:
            ray_index = ray_index[(np.arange(n) + n // 4) % n]
    if n:
        out[rays] = out[rays][ray_index]
    return out


class SegmentationPatches(PatchDataset):
    """(image, targets) patches with flips and quarter turns applied to both consistently;
    ``foreground`` of the patches are required to hold objects (up to 8 draws)."""

    def __init__(self, images, roles: Sequence[Role], *args, **kwargs):
        super().__init__(images, *args, **kwargs)
        self.roles = list(roles)

    @staticmethod
    def foreground_threshold(image: np.ndarray) -> float:
        return 0.5                                           # the last array is the object mask

    def __getitem__(self, i: int):
        rng = self._stream(i)
        k_image, corner = self._fixed[i] if self._fixed else self._draw(rng)
        image, targets, _ = (self._cut(a, corner) for a in self.images[k_image])
        if self.augment:
            flips = [a for a in range(image.ndim - 1) if rng.random() < 0.5]
            k = int(rng.integers(4)) if image.shape[-1] == image.shape[-2] else 0
            for a in flips:
                image, targets = np.flip(image, a + 1), np.flip(targets, a + 1)
            image, targets = np.rot90(image, k, axes=(-2, -1)), np.rot90(targets, k, axes=(-2, -1))
            targets = transform_targets(targets, self.roles, flips, k)
        return (torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)))


def read_labels(path: Path, spatial_shape: tuple[int, ...]) -> np.ndarray:
    labels = np.asarray(read_image(path))
    if labels.dtype.kind not in "iu":
        raise InputError(f"{path}: a label image must hold integers (0 = background), got {labels.dtype}")
    if labels.shape != tuple(spatial_shape):
        raise InputError(f"{path}: labels of shape {labels.shape} do not match their image "
                         f"(spatial shape {tuple(spatial_shape)})")
    return labels.astype(np.int32)


class SegmentationDataModule(StepData, pl.LightningDataModule):
    """Patches of normalised images with their architecture's targets, computed from label
    images (``targets(labels) -> C, *spatial`` float32)."""

    def __init__(self, tensor: TensorSpec, train_files: Sequence[Path], val_files: Sequence[Path],
                 patch: Sequence[int], targets, roles: Sequence[Role], batch_size: int = 8,
                 steps_per_epoch: int = 200, val_patches: int = 64, seed: int = 0,
                 train_targets: Sequence[Path] | None = None, val_targets: Sequence[Path] | None = None,
                 foreground: float = 0.9, rehearsal: Rehearsal | None = None):
        super().__init__()
        if train_targets is None or val_targets is None:
            raise InputError("segmentation learns from label images: give the folder of labels (--target), "
                             "one label image of the same name per image")
        self.patch, self.batch_size, self.seed, self.roles = list(patch), batch_size, seed, list(roles)
        self.steps_per_epoch, self.val_patches, self.foreground = steps_per_epoch, val_patches, foreground
        self.raw_train = [read_raw(p, tensor) for p in train_files]
        self.train_images = [self._example(x, tensor, t, targets) for x, t in zip(self.raw_train, train_targets)]
        self.val_images = [self._example(read_raw(p, tensor), tensor, t, targets) for p, t in zip(val_files, val_targets)]
        self.val_label_paths = list(val_targets)
        if rehearsal is not None:
            if rehearsal.targets is None:
                raise InputError("rehearsal images for segmentation need their label images")
            self.train_images += [self._example(read_raw(p, tensor), tensor, t, targets)
                                  for p, t in zip(rehearsal.files, rehearsal.targets)]
        self.weights = mixed_weights(len(self.raw_train), rehearsal)

    @staticmethod
    def _example(raw: np.ndarray, tensor: TensorSpec, label_path: Path, targets):
        labels = read_labels(label_path, raw.shape[1:])
        return normalise(raw, tensor), targets(labels).astype(np.float32), (labels > 0)[None].astype(np.float32)

    def statistics(self) -> dict:
        return intensity_statistics(self.raw_train)

    def train_dataloader(self) -> DataLoader:
        ds = SegmentationPatches(self.train_images, self.roles, self.patch, self.steps_per_epoch * self.batch_size,
                                 augment=True, seed=self.seed, foreground=self.foreground, weights=self.weights)
        return self.step_loader(ds, self.batch_size)

    def _validation_patches(self) -> SegmentationPatches:
        return SegmentationPatches(self.val_images, self.roles, self.patch, self.val_patches, augment=False,
                                   seed=self.seed + 10_000, fixed=True, foreground=self.foreground)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._validation_patches(), batch_size=self.batch_size, shuffle=False, num_workers=0)

    def selection_items(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The validation patches with their label images cut at the same place (AP@0.5)."""
        ds = self._validation_patches()
        labels = [read_labels(p, image.shape[1:])[None] for p, (image, _, _) in zip(self.val_label_paths,
                                                                                       self.val_images)]
        return [(ds._cut(self.val_images[k][0], corner), ds._cut(labels[k], corner)[0]) for k, corner in ds._fixed]


class SegmentationModule(ZooModule):
    """Base of the segmentation architectures' modules: ``targets`` (label image -> dense
    targets), ``roles`` (how the target channels transform) and ``loss`` on the logits."""

    paired = True
    datamodule = SegmentationDataModule

    def targets(self, labels: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def roles(self) -> list[Role]:
        raise NotImplementedError

    def head_loss(self, heads: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, batch, generator: torch.Generator | None = None) -> torch.Tensor:
        image, target = batch
        layout = getattr(self, "_layout", {}).get(image.ndim)
        logits = self.network.logits(image.contiguous(memory_format=layout) if layout else image)
        return self.head_loss(self.network.split(logits), target)

    @property
    def dims(self) -> int:
        return len(self.spec.inputs[0].spatial_axes)
