"""Synthetic fluorescence images with known ground truth (the project's own data: any size,
2D or 3D, free to ship in packages and tests)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def nuclei(shape: Sequence[int] = (96, 96), n: int = 12, seed: int = 0, peak: float = 200.0,
           read_noise: float = 5.0, background: float = 10.0,
           radius: tuple[float, float] = (4.0, 9.0)) -> tuple[np.ndarray, np.ndarray]:
    """(noisy uint16 image, clean float image): Gaussian blobs with Poisson-Gaussian noise."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij", sparse=True)
    clean = np.full(tuple(shape), background)
    for _ in range(n):
        centre = [rng.uniform(0, s) for s in shape]
        r = rng.uniform(*radius)
        clean = clean + peak * np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / (2 * r**2))
    noisy = rng.poisson(clean) + rng.normal(0, read_noise, clean.shape)
    return np.clip(noisy, 0, 65535).astype(np.uint16), clean


def touching_objects(shape: Sequence[int] = (128, 128), n: int = 12, seed: int = 0,
                     radius: tuple[float, float] = (4.0, 10.0), margin: float = 0.0) -> np.ndarray:
    """A label image (int32, 0 = background) of ``n`` random ellipses (2D) or ellipsoids (3D)
    that may touch but never overlap; centres at least ``margin`` from the border."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij", sparse=True)
    labels = np.zeros(tuple(shape), np.int32)
    placed, tries = 0, 0
    while placed < n and tries < 100 * n:
        tries += 1
        centre = [rng.uniform(margin, s - margin) for s in shape]
        axes = rng.uniform(*radius, size=len(shape))
        rotation = np.linalg.qr(rng.normal(size=(len(shape), len(shape))))[0]
        offsets = [g - c for g, c in zip(grids, centre)]
        inside = sum((sum(rotation[i, j] * offsets[j] for j in range(len(shape))) / axes[i]) ** 2
                     for i in range(len(shape))) <= 1
        if inside.any() and (labels[inside] == 0).all():
            placed += 1
            labels[inside] = placed
    return labels


def labelled_nuclei(shape: Sequence[int] = (32, 96, 96), n: int = 30, seed: int = 0, peak: float = 120.0,
                    read_noise: float = 5.0, background: float = 15.0, blur: float = 1.0,
                    radius: tuple[float, float] = (4.0, 8.0)) -> tuple[np.ndarray, np.ndarray]:
    """(noisy uint16 image, labels): touching nuclei of varying brightness, blurred by the optics
    and imaged with Poisson-Gaussian noise; dimmer where they touch, as real nuclei are."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(seed)
    labels = touching_objects(shape, n, seed, radius)
    brightness = np.concatenate([[0.0], rng.uniform(0.5, 1.0, labels.max())])
    edges = find_boundaries(labels, mode="inner")
    clean = background + peak * ndi.gaussian_filter(brightness[labels] * np.where(edges, 0.5, 1.0), blur)
    noisy = rng.poisson(clean) + rng.normal(0, read_noise, clean.shape)
    return np.clip(noisy, 0, 65535).astype(np.uint16), labels


def time_lapse(shape: Sequence[int] = (128, 128), n: int = 10, frames: int = 20, seed: int = 0,
               radius: tuple[float, float] = (5.0, 8.0), speed: float = 1.5, division_rate: float = 0.03,
               miss_rate: float = 0.0, birth_rate: float = 0.0, death_rate: float = 0.0) -> tuple[np.ndarray, list, list]:
    """A 2D time lapse of moving, dividing, touching nuclei with known tracks.

    Returns ``(labels, truth, tracks)``: ``labels`` (T, y, x) int32 whose ids are shuffled every
    frame (a tracker cannot lean on them); ``truth[t]`` maps each label of frame t to its true
    track id; ``tracks`` holds ``(id, begin, end, parent)`` as in the CTC's man_track.txt.
    Nuclei push each other apart and share a border where they touch (every pixel goes to the
    nearest centre relative to radius). ``miss_rate``: chance that a nucleus is missing from one
    frame (a segmentation miss, for gap closing); ``birth_rate``/``death_rate``: nuclei that
    enter or leave the field per frame.
    """
    rng = np.random.default_rng(seed)
    size = np.asarray(shape, np.float64)
    cells: list[dict] = []
    tracks: dict[int, list] = {}

    def new_cell(pos, r, t, parent=0):
        tid = len(tracks) + 1
        tracks[tid] = [tid, t, t, parent]
        cells.append({"id": tid, "pos": np.asarray(pos, np.float64), "r": r, "r_max": r * 1.0,
                      "vel": rng.normal(0, speed, 2), "age": 0})

    for _ in range(n):
        new_cell(rng.uniform(radius[1], size - radius[1]), rng.uniform(*radius), 0)
    yy, xx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    labels = np.zeros((frames, *shape), np.int32)
    truth: list[dict[int, int]] = []
    for t in range(frames):
        if t:
            for cell in list(cells):
                cell["age"] += 1
                if rng.random() < death_rate:
                    cells.remove(cell)
                    continue
                if cell["age"] > 4 and rng.random() < division_rate and cell["r"] >= radius[0]:
                    cells.remove(cell)
                    direction = rng.normal(size=2)
                    direction /= np.linalg.norm(direction)
                    r = cell["r"] / np.sqrt(2)
                    for sign in (1, -1):
                        new_cell(cell["pos"] + sign * direction * r * 0.9, r, t, cell["id"])
                        cells[-1]["r_max"] = cell["r"]
                        cells[-1]["vel"] = sign * direction * speed
                    continue
                cell["vel"] = 0.8 * cell["vel"] + rng.normal(0, speed * 0.5, 2)
                cell["pos"] = cell["pos"] + cell["vel"]
                cell["r"] = min(cell["r_max"], cell["r"] * 1.04)
            if rng.random() < birth_rate:
                new_cell(rng.uniform(radius[1], size - radius[1]), rng.uniform(*radius), t)
            for _ in range(3):                       # push overlapping nuclei apart, keep them inside
                for i, a in enumerate(cells):
                    for b in cells[i + 1:]:
                        d = b["pos"] - a["pos"]
                        dist = float(np.linalg.norm(d)) or 1e-6
                        overlap = 0.9 * (a["r"] + b["r"]) - dist
                        if overlap > 0:
                            a["pos"] -= d / dist * overlap / 2
                            b["pos"] += d / dist * overlap / 2
                for cell in cells:
                    cell["pos"] = np.clip(cell["pos"], cell["r"], size - 1 - cell["r"])
        visible = [c for c in cells if not (t and miss_rate and rng.random() < miss_rate)]
        for c in cells:
            tracks[c["id"]][2] = t
        if not visible:
            truth.append({})
            continue
        relative = np.stack([np.hypot(yy - c["pos"][0], xx - c["pos"][1]) / c["r"] for c in visible])
        nearest = relative.argmin(axis=0)
        inside = relative.min(axis=0) <= 1.0
        ids = rng.permutation(np.arange(1, len(visible) + 1) * 7 + int(rng.integers(0, 1000)))  # shuffled, sparse
        labels[t][inside] = ids[nearest[inside]]
        present = set(np.unique(labels[t]).tolist())
        truth.append({int(ids[k]): c["id"] for k, c in enumerate(visible) if int(ids[k]) in present})
    return labels, truth, [tuple(v) for v in tracks.values()]
