"""Tracking instance masks over time by minimum-cost assignment (Jaqaman et al., Nature Methods
2008; the linking step of DeepCell's and TrackMate's LAP trackers).

Frame to frame, objects are linked by one linear assignment (scipy's ``linear_sum_assignment``)
over costs from overlap (``1 - IoU``) or, where objects do not overlap, centroid distance
(``1 + d / max_distance``). The matrix is augmented so that any object may instead end (death)
or start (birth) at a fixed cost, so no link is forced. Then:

- **divisions**: an object born at ``t+1`` next to an object that continues from a parent at
  ``t``, the two of comparable size and summing to about the parent's, makes the parent divide:
  its track ends and both become new tracks whose parent it is;
- **gap closing**: a track that ends at ``t`` and one that starts at ``t+2`` within
  ``max_distance`` are joined (one frame missed by the segmentation).

Output: one track id per object (relabelled frames, label = track id) and the tracks with begin,
end and parent (the Cell Tracking Challenge's ``res_track.txt``: ``L B E P``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from .measure import check_labels

FORBIDDEN = 1e9


@dataclass
class Objects:
    """The objects of one frame: ids, centroids, areas."""

    ids: np.ndarray
    centroids: np.ndarray
    areas: np.ndarray

    @classmethod
    def of(cls, labels: np.ndarray) -> "Objects":
        ids, inverse, areas = np.unique(labels.ravel(), return_inverse=True, return_counts=True)
        coords = np.indices(labels.shape).reshape(labels.ndim, -1).astype(np.float64)
        sums = np.stack([np.bincount(inverse, weights=c, minlength=len(ids)) for c in coords], axis=1)
        keep = ids != 0
        return cls(ids[keep], sums[keep] / areas[keep, None], areas[keep].astype(np.float64))


@dataclass
class Track:
    id: int
    begin: int
    end: int
    parent: int = 0
    frames: dict[int, int] = field(default_factory=dict)      # frame -> label in the input frame


@dataclass
class Tracking:
    tracks: list[Track]
    relabelled: np.ndarray          # (T, *spatial) int32: each object's value is its track id

    def rows(self) -> list[dict]:
        return [{"track": t.id, "begin": t.begin, "end": t.end, "parent": t.parent, "n_frames": len(t.frames)}
                for t in self.tracks]

    def divisions(self) -> list[tuple[int, list[int]]]:
        """``(parent track, [child tracks])`` for every division."""
        children: dict[int, list[int]] = {}
        for t in self.tracks:
            if t.parent:
                children.setdefault(t.parent, []).append(t.id)
        return sorted(children.items())

    def write(self, folder: str | Path) -> Path:
        """``res_track.txt`` (CTC), ``tracks.csv`` and ``maskTTT.tif`` relabelled frames in ``folder``."""
        import tifffile

        from .measure import write_table

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        digits = max(3, len(str(len(self.relabelled) - 1)))
        for t, frame in enumerate(self.relabelled):
            tifffile.imwrite(folder / f"mask{t:0{digits}d}.tif", frame.astype(np.uint16 if frame.max() < 65536 else
                                                                                 np.uint32))
        (folder / "res_track.txt").write_text("".join(f"{t.id} {t.begin} {t.end} {t.parent}\n" for t in self.tracks))
        write_table(self.rows(), folder / "tracks.csv")
        return folder


def overlaps(a: np.ndarray, b: np.ndarray, objects_a: Objects, objects_b: Objects) -> np.ndarray:
    """IoU of every object of frame ``a`` with every object of frame ``b``."""
    both = (a > 0) & (b > 0)
    ia = np.searchsorted(objects_a.ids, a[both])
    ib = np.searchsorted(objects_b.ids, b[both])
    inter = np.zeros((len(objects_a.ids), len(objects_b.ids)))
    np.add.at(inter, (ia, ib), 1)
    union = objects_a.areas[:, None] + objects_b.areas[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def link_costs(iou: np.ndarray, a: Objects, b: Objects, max_distance: float) -> np.ndarray:
    """``1 - IoU`` where objects overlap, ``1 + d / max_distance`` within reach, else forbidden."""
    distance = np.linalg.norm(a.centroids[:, None, :] - b.centroids[None, :, :], axis=-1)
    cost = np.where(distance < max_distance, 1.0 + distance / max_distance, FORBIDDEN)
    return np.where(iou > 0, 1.0 - iou, cost)


def assign(cost: np.ndarray, alternative: float) -> list[tuple[int, int]]:
    """Minimum-cost links where every row (column) may stay unlinked at cost ``alternative``:
    the augmented matrix of Jaqaman et al. 2008."""
    from scipy.optimize import linear_sum_assignment

    n, m = cost.shape
    if n == 0 or m == 0:
        return []
    big = np.full((n + m, m + n), FORBIDDEN)
    big[:n, :m] = cost
    big[:n, m:][np.diag_indices(n)] = alternative                 # row i ends
    big[n:, :m][np.diag_indices(m)] = alternative                 # column j starts
    lower = np.where(cost.T < FORBIDDEN, cost.T.min() if cost.size else 0.0, FORBIDDEN)
    big[n:, m:] = np.where(lower < FORBIDDEN, lower, FORBIDDEN)    # the dual block: keeps the matrix feasible
    rows, cols = linear_sum_assignment(big)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if r < n and c < m and cost[r, c] < FORBIDDEN]


def default_max_distance(frames: Sequence[np.ndarray]) -> float:
    """Twice the median equivalent diameter of the objects (at least 5 pixels)."""
    areas = np.concatenate([Objects.of(f).areas for f in frames[: min(len(frames), 5)]] or [np.zeros(0)])
    if not areas.size:
        return 20.0
    ndim = frames[0].ndim
    diameter = (np.median(areas) ** (1 / ndim)) * (2 / np.sqrt(np.pi) if ndim == 2 else (6 / np.pi) ** (1 / 3))
    return max(5.0, 2.0 * float(diameter))


def track(frames: Sequence[np.ndarray], max_distance: float | None = None, gap_closing: bool = True,
          divisions: bool = True, new_object_cost: float = 1.5) -> Tracking:
    """Link the objects of ``frames`` (a time series of label images, 2D or 3D) into tracks."""
    frames = [check_labels(f) for f in frames]
    if not frames:
        raise InputError("no frames to track: give at least one label image")
    if any(f.shape != frames[0].shape for f in frames):
        raise InputError(f"every frame must have the same shape; got {sorted({f.shape for f in frames})}")
    max_distance = float(max_distance or default_max_distance(frames))
    objects = [Objects.of(f) for f in frames]
    # track of each object: per frame, a dict label -> track id
    owner: list[dict[int, int]] = [dict() for _ in frames]
    tracks: dict[int, Track] = {}

    def start(t: int, label: int, parent: int = 0) -> int:
        tid = len(tracks) + 1
        tracks[tid] = Track(tid, t, t, parent, {t: label})
        owner[t][label] = tid
        return tid

    def extend(tid: int, t: int, label: int) -> None:
        tracks[tid].end = t
        tracks[tid].frames[t] = label
        owner[t][label] = tid

    for label in objects[0].ids:
        start(0, int(label))
    for t in range(len(frames) - 1):
        a, b = objects[t], objects[t + 1]
        iou = overlaps(frames[t], frames[t + 1], a, b)
        cost = link_costs(iou, a, b, max_distance)
        links = assign(cost, new_object_cost)
        linked_b = {j: i for i, j in links}
        for i, j in links:
            extend(owner[t][int(a.ids[i])], t + 1, int(b.ids[j]))
        if divisions:
            _divide(t, a, b, cost, linked_b, owner, tracks, start, max_distance)
        for j, label in enumerate(b.ids):
            if int(label) not in owner[t + 1]:
                start(t + 1, int(label))
    if gap_closing:
        _close_gaps(tracks, objects, owner, max_distance, new_object_cost)
    return _finish(frames, tracks)


def _divide(t, a: Objects, b: Objects, cost, linked_b: dict, owner, tracks, start, max_distance) -> None:
    """Unlinked objects at ``t+1`` that are the sister of a linked one: the parent divides."""
    born = [j for j in range(len(b.ids)) if j not in linked_b]
    used: set[int] = set()
    candidates = []
    for j in born:
        for sister, i in linked_b.items():
            if i in used or cost[i, j] >= FORBIDDEN:
                continue
            parent_area, areas = a.areas[i], (b.areas[j], b.areas[sister])
            similar = min(areas) / max(areas) >= 0.4
            conserved = 0.5 <= sum(areas) / parent_area <= 1.7
            near = np.linalg.norm(b.centroids[j] - b.centroids[sister]) < max_distance
            if similar and conserved and near:
                candidates.append((cost[i, j] + cost[i, sister], i, j, sister))
    for _, i, j, sister in sorted(candidates):
        if i in used or int(b.ids[j]) in owner[t + 1]:
            continue
        used.add(i)
        parent = owner[t][int(a.ids[i])]
        sister_label = int(b.ids[sister])
        # the sister was linked to the parent's track: take that frame back, both start anew
        tracks[parent].frames.pop(t + 1, None)
        tracks[parent].end = t
        del owner[t + 1][sister_label]
        start(t + 1, sister_label, parent)
        start(t + 1, int(b.ids[j]), parent)


def _close_gaps(tracks: dict, objects: list[Objects], owner, max_distance: float, alternative: float) -> None:
    """Join a track ending at ``t`` (that did not divide) to one starting at ``t+2`` without a parent."""
    parents = {tr.parent for tr in tracks.values() if tr.parent}
    last = len(objects) - 1
    for t in range(last - 1):
        ends = [tr for tr in tracks.values() if tr.end == t and tr.id not in parents]
        starts = [tr for tr in tracks.values() if tr.begin == t + 2 and not tr.parent]
        if not ends or not starts:
            continue
        def centroid(tr, frame):
            k = int(np.searchsorted(objects[frame].ids, tr.frames[frame]))
            return objects[frame].centroids[k]
        distance = np.array([[np.linalg.norm(centroid(e, t) - centroid(s, t + 2)) for s in starts] for e in ends])
        cost = np.where(distance < max_distance, distance / max_distance, FORBIDDEN)
        for i, j in assign(cost, 1.0):
            early, late = ends[i], starts[j]
            for frame, label in late.frames.items():
                early.frames[frame] = label
                owner[frame][label] = early.id
            early.end = late.end
            for other in tracks.values():
                if other.parent == late.id:
                    other.parent = early.id
            del tracks[late.id]


def _finish(frames: Sequence[np.ndarray], tracks: dict[int, Track]) -> Tracking:
    """Number the tracks 1..n in order of appearance and relabel the frames with them."""
    order = sorted(tracks.values(), key=lambda tr: (tr.begin, min(tr.frames.values())))
    new_id = {tr.id: k + 1 for k, tr in enumerate(order)}
    for tr in order:
        tr.id, tr.parent = new_id[tr.id], new_id.get(tr.parent, 0)
    by_frame: list[dict[int, int]] = [{} for _ in frames]
    for tr in order:
        for frame, label in tr.frames.items():
            by_frame[frame][label] = tr.id
    relabelled = np.zeros((len(frames), *frames[0].shape), np.int32)
    for t, frame in enumerate(frames):
        ids, inverse = np.unique(frame, return_inverse=True)
        relabelled[t] = np.array([by_frame[t].get(int(i), 0) for i in ids], np.int32)[inverse.reshape(frame.shape)]
    return Tracking(order, relabelled)
