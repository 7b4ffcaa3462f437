"""Many files on Dask: the folder mode of :mod:`zoo.api.batch`, with the files spread over the workers.

Each file is one task: the worker reads and hashes it, skips it when the manifest's entry (sent
with the task) says it is finished, otherwise predicts it and writes its output itself (under
a temporary name, renamed when complete), exactly as single-process folder mode does
(:func:`zoo.folders.predict_one`). The client only appends the manifest's lines and writes
``summary.csv``; a re-run, after an interruption too, skips what is finished (a worker also
leaves each finished file's entry in a hidden receipt beside the output, which the client
folds into the manifest, so that files finished after the client was killed are kept).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Iterable

from ..errors import InputError, ZooError
from ..folders import (SUMMARY, BatchReport, Manifest, expand_inputs, new_row, note_rows, one_line, output_names,
                       predict_one, read_input, write_summary)


class _Held(Manifest):
    """The one manifest entry a task needs, held in memory (the client appends it to the file)."""

    def __init__(self, source: Path, entry: dict | None):
        self.path = None
        self.entries = {str(source): entry} if entry else {}

    def add(self, source: Path, entry: dict) -> None:
        self.entries[str(source)] = {"input": str(source), **entry}


def predict_one_file(name: str, source: Path, target: Path, entry: dict | None, overwrite: bool,
                     axes: str | None, shift: bool, options: dict) -> tuple[dict, dict | None]:
    """Worker task: one file into ``target``; (its summary row, its new manifest entry or None)."""
    from ..api.predicting import check_shift, predict_file
    from .plugin import model_on_worker

    row = new_row(source, target)
    started = time.perf_counter()
    held = _Held(source, entry)
    try:
        model = model_on_worker(name)
        digest, opened = read_input(source)
    except (ZooError, OSError, ValueError) as e:
        row["status"], row["error"] = "failed", one_line(e)
    else:
        predict_one(model, source, target, digest, opened, held, row, overwrite, axes, shift, options,
                    predict_file, check_shift)
    row["seconds"] = f"{time.perf_counter() - started:.3f}"
    entry = held.entries.get(str(source)) if row["status"] == "done" else None
    if entry is not None:          # in case the client is gone before it appends the entry
        partial = receipt(target).with_suffix(".partial")
        partial.write_text(json.dumps(entry))
        os.replace(partial, receipt(target))
    return row, entry


def receipt(target: Path) -> Path:
    """Where a worker leaves a finished file's manifest entry until the client has appended it."""
    return target.with_name(f".{target.name}.receipt.json")


def _fold_receipts(manifest: Manifest, out: Path) -> None:
    """Entries of files finished after the client stopped (a killed client): into the manifest."""
    for path in sorted(out.glob(".*.receipt.json")):
        try:
            entry = json.loads(path.read_text())
            manifest.add(Path(entry.pop("input")), entry)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass                   # unreadable: that file is redone
        path.unlink(missing_ok=True)


def predict_files(client, name: str, inputs: Iterable[str | Path], out: str | Path, *, suffix: str = ".tif",
                  axes: str | None = None, overwrite: bool = False, shift: bool = True,
                  on_file: Callable[[int, int, Path], None] | None = None, **options) -> BatchReport:
    """Every image ``inputs`` names into the folder ``out``, on the workers of ``client`` (the
    plugin ``name`` holds the model there); see :func:`zoo.api.batch.predict_files`."""
    from distributed import as_completed

    files, notes = expand_inputs(inputs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file: with several images -o names a folder for the outputs")
    targets = output_names(files, out, suffix)
    out.mkdir(parents=True, exist_ok=True)
    manifest, report = Manifest(out), BatchReport(out)
    _fold_receipts(manifest, out)
    futures = client.map(predict_one_file, [name] * len(files), files, [targets[f] for f in files],
                         [manifest.entries.get(str(f)) for f in files], overwrite=overwrite, axes=axes, shift=shift,
                         options=options, pure=False)
    where = {f.key: k for k, f in enumerate(futures)}
    rows: list = [None] * len(files)
    try:
        for done, future in enumerate(as_completed(futures), start=1):
            k = where[future.key]
            try:
                rows[k], entry = future.result()
            except Exception as e:   # noqa: BLE001 - e.g. KilledWorker: this file failed, the others go on
                rows[k], entry = {**new_row(files[k], targets[files[k]]), "status": "failed",
                                  "error": one_line(e)}, None
            if entry is not None:
                manifest.add(files[k], {key: v for key, v in entry.items() if key != "input"})
                receipt(targets[files[k]]).unlink(missing_ok=True)
            if on_file:
                on_file(done, len(files), files[k])
    finally:
        client.cancel([f for f in futures if not f.done()])
        report.rows = [r for r in rows if r is not None] + note_rows(notes)
        write_summary(out / SUMMARY, report.rows)
    return report
