"""Training data: image folders, a by-image train/validation split, normalised random patches."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from zoo.errors import InputError, NotFoundError
from zoo.imageio import IMAGE_SUFFIXES, read_image
from zoo.runtime import layout, ops
from zoo.spec import TensorSpec


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise NotFoundError(f"training data folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise InputError(f"no images in {folder}: expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    return paths


def split_by_image(paths: Sequence[Path], val_fraction: float, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Split whole images (never patches) into training and validation sets, reproducibly."""
    paths = sorted(paths)
    if len(paths) < 2:
        raise InputError(f"need at least 2 images for a train/validation split, got {len(paths)}")
    shuffled = paths[:]
    random.Random(seed).shuffle(shuffled)
    n_val = min(max(1, round(val_fraction * len(paths))), len(paths) - 1)
    return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])


def read_raw(path: Path, tensor: TensorSpec) -> np.ndarray:
    """An image as float32 ``c, *spatial`` in the model's input layout (not yet normalised)."""
    x, _ = layout.to_tensor(read_image(path), None, tensor.spatial_axes, tensor.n_channels)
    if x.shape[0] != 1:
        raise InputError(f"{path}: training images must be single images, got a batch of {x.shape[0]}")
    return x[0]


def normalise(raw: np.ndarray, tensor: TensorSpec) -> np.ndarray:
    """Apply the spec's preprocessing, exactly as prediction will."""
    return ops.apply(tensor.preprocessing, raw[None], {}, tensor.name, ops.PREPROCESSING)[0]


def intensity_statistics(images: Sequence[np.ndarray]) -> dict:
    """Mean, std and percentiles of raw training intensities (recorded for dataset-shift checks)."""
    sample = np.concatenate([img.ravel()[:: max(1, img.size // 250_000)] for img in images]).astype(np.float64)
    qs = [0.1, 1, 50, 99, 99.9]
    values = np.percentile(sample, qs)
    return {"mean": float(sample.mean()), "std": float(sample.std()),
            "percentiles": {f"p{q:g}": float(v) for q, v in zip(qs, values)}}


def _augment(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flips along every spatial axis and a random 90-degree rotation in yx."""
    for axis in range(1, patch.ndim):
        if rng.random() < 0.5:
            patch = np.flip(patch, axis)
    if patch.shape[-1] == patch.shape[-2]:
        patch = np.rot90(patch, int(rng.integers(4)), axes=(-2, -1))
    return np.ascontiguousarray(patch)


class PatchDataset(Dataset):
    """Random patches from a list of normalised images (``c, *spatial``).

    With ``fixed=True`` (validation) patch positions are drawn once, so every epoch sees the same.
    """

    def __init__(self, images: list[np.ndarray], patch: Sequence[int], length: int, augment: bool,
                 seed: int = 0, fixed: bool = False):
        for img in images:
            if any(s < p for s, p in zip(img.shape[1:], patch)):
                raise InputError(f"an image of shape {img.shape[1:]} is smaller than the patch size {tuple(patch)}; "
                                 "use a smaller --patch")
        self.images, self.patch, self.length, self.augment = images, list(patch), length, augment
        self.seed = seed
        self._fixed = [self._draw(np.random.default_rng(seed + i)) for i in range(length)] if fixed else None
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return self.length

    def _draw(self, rng: np.random.Generator) -> tuple[int, tuple[int, ...]]:
        k = int(rng.integers(len(self.images)))
        shape = self.images[k].shape[1:]
        return k, tuple(int(rng.integers(s - p + 1)) for s, p in zip(shape, self.patch))

    def _stream(self) -> np.random.Generator:
        """A random stream per process (each DDP rank and data-loader worker draws different patches)."""
        if self._rng is None:
            worker = torch.utils.data.get_worker_info()
            dist = torch.distributed
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            self._rng = np.random.default_rng((self.seed, rank, worker.id if worker else 0))
        return self._rng

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = self._stream()
        k, corner = self._fixed[i] if self._fixed else self._draw(rng)
        region = (slice(None),) + tuple(slice(c, c + p) for c, p in zip(corner, self.patch))
        patch = self.images[k][region]
        if self.augment:
            patch = _augment(patch, rng)
        return torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))


class ImageFolderDataModule(pl.LightningDataModule):
    """Single images (no targets), for self-supervised training: patches of normalised images."""

    def __init__(self, tensor: TensorSpec, train_files: Sequence[Path], val_files: Sequence[Path],
                 patch: Sequence[int], batch_size: int = 16, steps_per_epoch: int = 200,
                 val_patches: int = 64, seed: int = 0):
        super().__init__()
        self.tensor, self.train_files, self.val_files = tensor, list(train_files), list(val_files)
        self.patch, self.batch_size, self.seed = list(patch), batch_size, seed
        self.steps_per_epoch, self.val_patches = steps_per_epoch, val_patches
        self.raw_train = [read_raw(p, tensor) for p in self.train_files]
        self.train_images = [normalise(x, tensor) for x in self.raw_train]
        self.val_images = [normalise(read_raw(p, tensor), tensor) for p in self.val_files]

    def statistics(self) -> dict:
        return intensity_statistics(self.raw_train)

    def train_dataloader(self) -> DataLoader:
        ds = PatchDataset(self.train_images, self.patch, self.steps_per_epoch * self.batch_size,
                          augment=True, seed=self.seed)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        ds = PatchDataset(self.val_images, self.patch, self.val_patches, augment=False,
                          seed=self.seed + 10_000, fixed=True)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False, num_workers=0)
