"""Folder mode: one model over many images (``zoo predict NAME DIR|GLOB... -o OUTDIR``).

The model is loaded once; the next image is read (and hashed) in a background thread while the
current one runs. Each output is named after its input (``OUTDIR/<stem>.tif``). ``OUTDIR``
holds two more files:

- ``manifest.jsonl``: for every finished input, its sha256, the model and the output's sha256.
  A re-run skips an input whose content, model and output are unchanged (``overwrite`` redoes
  it), so an interrupted run resumes where it stopped.
- ``summary.csv``: one row per input of this run: file, output, shape, seconds, shift score and
  verdict, warnings, status (done, skipped, failed) and the error.

A bad file is reported and the others go on; the caller gets the failures in the report.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

from ..errors import InputError, ZooError
from ..folders import (COLUMNS, MANIFEST, SUMMARY, BatchReport, Manifest, entry_finished, expand_inputs,  # noqa: F401
                       manifest_entry, new_row, note_rows, one_line, output_names, predict_one, read_input,
                       write_summary)

log = logging.getLogger("zoo")


def predict(model, image, axes: str | None = None, out: str | Path | None = None, *, pixel_size=None,
            diameter: float | None = None, anisotropy: float | None = None, channels=None,
            stitch_threshold: float | None = None, client=None, cluster: str | None = None, **options):
    """``model`` (a Model or a reference ``load`` takes) on an image array in its natural layout;
    returns the same layout (labels for instance models unless ``raw=True``). A dict of arrays
    by input name for a model with several inputs gives a dict by output name.

    Files instead of an array (a path, a folder, a glob, or a list of them) need ``out``, a
    folder: the model runs over every image into it and a
    :class:`zoo.api.batch.BatchReport` comes back (see :func:`zoo.api.batch.predict_files`).
    ``pixel_size``, ``diameter``, ``anisotropy``, ``channels``, ``stitch_threshold``: see
    :func:`predict_file`.

    ``client`` (a ``dask.distributed.Client``) or ``cluster`` (``"local:2"``,
    ``"tcp://HOST:8786"``, ``"scheduler.json"``: a cluster started, or joined, for this call)
    runs it on Dask workers instead (:func:`zoo.api.distributed.predict_on_cluster`): an array
    comes back as an array (``scratch=``: a folder the workers can read for staging it); one
    file goes into an OME-Zarr ``out``, several into the folder ``out``."""
    if client is not None or cluster is not None:
        if client is not None and cluster is not None:
            raise InputError("give client= (a dask.distributed Client) or cluster= (a spec such as 'local:2'), not both")
        from .distributed import predict_on_cluster

        extra = dict(pixel_size=pixel_size, diameter=diameter, anisotropy=anisotropy, channels=channels,
                     stitch_threshold=stitch_threshold)
        return predict_on_cluster(model, image, client if client is not None else cluster, axes=axes, out=out,
                                  **{k: v for k, v in extra.items() if v is not None}, **options)
    if isinstance(image, (str, Path)) or (isinstance(image, (list, tuple)) and image
                                          and all(isinstance(i, (str, Path)) for i in image)):
        if out is None:
            raise InputError("predicting files needs out=FOLDER for the outputs (or read the image and pass the array)")
        extra = dict(pixel_size=pixel_size, diameter=diameter, anisotropy=anisotropy, channels=channels,
                     stitch_threshold=stitch_threshold)
        return predict_files(model, [image] if isinstance(image, (str, Path)) else image, out, axes=axes,
                             **{k: v for k, v in extra.items() if v is not None}, **options)
    from .predicting import predict_scaled
    from .scaling import pick_channels, plan
    from .sharing import as_model

    model = as_model(model)
    if channels is not None:
        image, axes = pick_channels(model, image, axes, channels)
    if pixel_size is None and diameter is None and anisotropy is None and stitch_threshold is None:
        return model.predict(image, axes=axes, **options)
    scale = plan(model.spec, None, pixel_size, diameter, anisotropy)
    if scale.warning:
        log.warning("%s", scale.warning)
    return predict_scaled(model, image, axes, scale, stitch_threshold, options)


LANE_FILE_BYTES = 16 << 20
"""Folder mode runs images side by side, one thread each (lanes), when every file is at most this
big: a small image keeps a pool of threads waiting more than working."""


def predict_files(model, inputs: Iterable[str | Path], out: str | Path, *, suffix: str = ".tif",
                  axes: str | None = None, overwrite: bool = False, shift: bool = True,
                  on_file: Callable[[int, int, Path], None] | None = None, lanes: int | None = None,
                  **options) -> BatchReport:
    """``model`` over every image ``inputs`` name (files, folders, globs), into ``out``; see the
    module docstring. ``options`` go to :func:`zoo.api.predict_file` (tile, batch_size, raw,
    progress ...). ``on_file(done, total, path)`` is called before each file.

    ``lanes``: images predicted at once, one thread each. By default as many as the threads
    allowed (``ZOO_THREADS``, else the cores) when every file is small (:data:`LANE_FILE_BYTES`)
    and the network runs on the CPU in ONNX Runtime; else 1, where each image gets every thread.
    Rows, manifest and outputs are the same either way."""
    from .predicting import check_shift, predict_file
    from .sharing import as_model

    if lanes is not None and (not isinstance(lanes, int) or lanes < 1):
        raise InputError(f"lanes (images predicted at once) must be 1 or more, got {lanes!r}")
    model = as_model(model)
    files, notes = expand_inputs(inputs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file: with several images -o names a folder for the outputs")
    targets = output_names(files, out, suffix)
    out.mkdir(parents=True, exist_ok=True)
    manifest, report = Manifest(out), BatchReport(out)

    def step(source: Path, reading: Callable[[], tuple]) -> dict:
        row = new_row(source, targets[source])
        started = time.perf_counter()
        try:
            digest, opened = reading()
        except (ZooError, OSError, ValueError) as e:
            digest, opened, row["status"], row["error"] = None, None, "failed", one_line(e)
        if opened is not None:
            predict_one(model, source, targets[source], digest, opened, manifest, row, overwrite, axes,
                        shift, options, predict_file, check_shift)
        row["seconds"] = f"{time.perf_counter() - started:.3f}"
        return row

    lanes = default_lanes(files) if lanes is None else lanes
    with contextlib.ExitStack() as stack:
        if lanes > 1 and not stack.enter_context(model.lanes()):
            lanes = 1
        if lanes > 1:
            options.pop("progress", None)      # small images: the files' bar is the progress; tiles would interleave
        pool = stack.enter_context(ThreadPoolExecutor(lanes))
        if lanes == 1:                  # one image at a time, the next one read while it runs
            pending = pool.submit(read_input, files[0])
            for k, source in enumerate(files):
                if on_file:
                    on_file(k, len(files), source)
                reading, pending = pending.result, (pool.submit(read_input, files[k + 1]) if k + 1 < len(files)
                                                    else None)
                report.rows.append(step(source, reading))
        else:                           # several at once, each read by its own lane; rows kept in order
            window: deque = deque()
            for k, source in enumerate(files):
                if on_file:
                    on_file(k, len(files), source)
                window.append(pool.submit(step, source, partial(read_input, source)))
                if len(window) >= 2 * lanes:
                    report.rows.append(window.popleft().result())
            report.rows += [f.result() for f in window]
    report.rows += note_rows(notes)
    write_summary(out / SUMMARY, report.rows)
    return report


def default_lanes(files: list[Path]) -> int:
    """As many lanes as threads allowed, when every file is small (see :func:`predict_files`)."""
    if len(files) < 2 or any(not f.is_file() or f.stat().st_size > LANE_FILE_BYTES for f in files):
        return 1
    from ..runtime.device import cores

    threads = int(os.environ.get("ZOO_THREADS") or 0) or cores()
    return max(1, min(threads, len(files)))
