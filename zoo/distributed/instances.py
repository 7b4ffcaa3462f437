"""Instance labels of a chunked image, made consistent across chunk seams.

1. Each chunk predicts and labels its region grown by ``overlap`` pixels on every side (so an
   object up to that size on a seam is seen whole by both neighbours), writes its own region
   with local ids (those present in it first, 1..m) and keeps, for each seam, its labels in the
   ``2 overlap`` wide strip across it.
2. For each seam, a task matches the two neighbours' strips: objects whose pixels there agree
   (IoU >= 0.5) are one object.
3. The client joins the matches (union-find over (chunk, id)) and numbers the objects of each
   image 1..n in chunk order; each chunk then rewrites its own region through its table.

Only counts and pairs of ids reach the client; the strips go from worker to worker.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .. import opnames
from ..runtime import ops
from . import chunks

MATCH_IOU = 0.5


def _owned_first(labels: np.ndarray, own: tuple) -> tuple[np.ndarray, int]:
    """Ids renumbered: objects present in ``own`` 1..m, the others (seen in the overlap only) after."""
    inside = np.unique(labels[own])
    inside = inside[inside > 0]
    every = np.unique(labels)
    outside = np.setdiff1d(every[every > 0], inside)
    table = np.zeros(int(every.max()) + 1 if every.size else 1, np.int64)
    table[inside] = np.arange(1, len(inside) + 1)
    table[outside] = np.arange(len(inside) + 1, len(inside) + 1 + len(outside))
    return table[labels], len(inside)


def label_chunk(job: chunks.Job, overlap: int) -> dict:
    """Worker task: label one chunk (step 1); returns its count and its seam strips."""
    from .plugin import model_on_worker

    model = model_on_worker(job.name)
    ext = tuple((max(0, lo - overlap), min(p.size, hi + overlap)) for (lo, hi), p in zip(job.region, job.plans))
    values = chunks.pixel_outputs(model, job, chunks.blended(model, job, ext))
    instance_ops = [op for op in model.spec.outputs[0].postprocessing if opnames.is_instance_op(op.op)]
    labels = ops.apply(instance_ops, values, {}, "labels", ops.POSTPROCESSING)[0, 0]
    own = tuple(slice(lo - e0, hi - e0) for (lo, hi), (e0, _) in zip(job.region, ext))
    labels, m = _owned_first(labels, own)
    chunks.write(job, labels[own][np.newaxis, np.newaxis].astype(np.int32))
    faces = {}
    for axis, ((lo, hi), (e0, e1), plan) in enumerate(zip(job.region, ext, job.plans)):
        for side, seam in ((-1, lo), (1, hi)):
            if 0 < seam < plan.size:
                strip = list(own)
                strip[axis] = slice(max(e0, seam - overlap) - e0, min(e1, seam + overlap) - e0)
                faces[(axis, side)] = labels[tuple(strip)]
    return {"m": m, "faces": faces}


def count(result: dict) -> int:
    return result["m"]


def match_faces(a: dict, b: dict, axis: int) -> list[tuple[int, int]]:
    """Step 2: (id in chunk a, id in chunk b) of the objects the two see as one across their seam
    (``b`` follows ``a`` along ``axis``)."""
    sa, sb = a["faces"][(axis, 1)], b["faces"][(axis, -1)]
    both = (sa > 0) & (sb > 0)
    if not both.any():
        return []
    pairs, inter = np.unique(np.stack([sa[both], sb[both]]), axis=1, return_counts=True)
    ids_a, area_a = np.unique(sa[sa > 0], return_counts=True)
    ids_b, area_b = np.unique(sb[sb > 0], return_counts=True)
    union = area_a[np.searchsorted(ids_a, pairs[0])] + area_b[np.searchsorted(ids_b, pairs[1])] - inter
    keep = inter / union >= MATCH_IOU
    return [(int(x), int(y)) for x, y in pairs[:, keep].T]


def relabel_chunk(job: chunks.Job, table: np.ndarray) -> None:
    """Step 3, on a worker: the chunk's local ids -> the image's ids, in place."""
    import zarr

    from pathlib import Path

    array = zarr.open_array(str(Path(job.partial) / "0"), mode="r")
    region = tuple(slice(lo, hi) for lo, hi in job.region)
    local = job.out_layout.read(array, job.b, region)        # 1, *region
    chunks.write(job, table[local][np.newaxis].astype(np.int32))


def numbering(jobs: list, counts: list[int], links: list[tuple[int, int, int, int]]) -> list[np.ndarray]:
    """Step 3, on the client: per chunk, a table local id -> the image's id (1..n per image, in
    chunk order), where ``links`` are (chunk, id, chunk, id) of one object."""
    parent: dict = {}

    def find(node):
        root = node
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(node, node) != root:
            parent[node], node = root, parent[node]
        return root

    for ka, a, kb, b in links:
        ra, rb = find((ka, a)), find((kb, b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    tables, numbers, image, next_id = [], {}, None, 0
    for k, (job, m) in enumerate(zip(jobs, counts)):
        if job.b != image:
            image, next_id = job.b, 0
        table = np.zeros(m + 1, np.int64)
        for i in range(1, m + 1):
            root = find((k, i))
            if root not in numbers:
                next_id += 1
                numbers[root] = next_id
            table[i] = numbers[root]
        tables.append(table)
    return tables


def label(client, jobs: list, grid: chunks.Grid, overlap: int,
          progress: Callable[[int, int], None] | None = None) -> None:
    """Steps 1-3 over every chunk of ``jobs`` (ordered by image, then chunk index)."""
    from distributed import wait

    results = client.map(label_chunk, jobs, overlap=overlap, pure=False)
    counts = client.gather(client.map(count, results, pure=False))
    if progress:
        progress(len(jobs), len(jobs))
    where = {(j.b, j.index): k for k, j in enumerate(jobs)}
    seams, matched = [], []
    for k, job in enumerate(jobs):
        for axis in range(len(grid.shape)):
            after = job.index[:axis] + (job.index[axis] + 1,) + job.index[axis + 1:]
            if after[axis] < grid.shape[axis]:
                k2 = where[(job.b, after)]
                seams.append((k, k2))
                matched.append(client.submit(match_faces, results[k], results[k2], axis, pure=False))
    links = [(k, a, k2, b) for (k, k2), pairs in zip(seams, client.gather(matched)) for a, b in pairs]
    tables = numbering(jobs, counts, links)
    del results, matched
    done = client.map(relabel_chunk, jobs, tables, pure=False)
    wait(done)
    client.gather(done)          # raises a task's error
