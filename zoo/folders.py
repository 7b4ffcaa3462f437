"""Folder mode's bookkeeping, shared by one process (:mod:`zoo.api.batch`) and Dask workers
(:mod:`zoo.distributed.files`): which files a run takes, what each output is called, the
manifest that makes a re-run skip finished work, the summary's rows, and one file's step.

- ``OUTDIR/manifest.jsonl``: for every finished input, its sha256, the model, the options that
  change an output and the output's sha256. A re-run skips an input whose content, model,
  options and output are unchanged, and redoes it in place when only the input or the options
  changed; an output that is not as the manifest recorded it (edited since, or another model's)
  is never replaced without ``overwrite``.
- ``OUTDIR/summary.csv``: one row per input of the run (:data:`COLUMNS`).

Nothing here runs a model by itself: :func:`predict_one` is handed the prediction and the
shift check, so that this module sits under the api and under the Dask runner alike.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .errors import InputError, ZooError

MANIFEST, SUMMARY = "manifest.jsonl", "summary.csv"
COLUMNS = ["file", "output", "shape", "seconds", "shift_score", "shift_verdict", "warnings", "status", "error"]


@dataclass
class BatchReport:
    out: Path
    rows: list[dict] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)

    @property
    def failures(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "failed"]


def expand_inputs(inputs: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Image files from files, folders (their images, sorted) and glob patterns; and notes on
    what was left out (files in a folder that are not images)."""
    from .imageio import IMAGE_SUFFIXES

    files, notes = [], []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(child)
                elif child.is_dir() and child.suffix.lower() == ".zarr":
                    files.append(child)
                elif child.is_file() and not child.name.startswith(".") and child.name not in (MANIFEST, SUMMARY):
                    notes.append(f"{child}: not an image (suffix {child.suffix or 'none'}), left out")
        elif any(c in text for c in "*?["):
            matched = sorted(Path(p) for p in glob.glob(text, recursive=True))
            if not matched:
                raise InputError(f"{text} matches no file")
            files += [p for p in matched if p.is_file() or p.suffix.lower() == ".zarr"]
        elif path.exists():
            files.append(path)
        else:
            raise InputError(f"image not found: {path}")
    if not files:
        raise InputError(f"no images in {', '.join(map(str, inputs))} (expected TIFF, OME-Zarr, PNG, JPEG or NPY)")
    return list(dict.fromkeys(files)), notes


def output_names(files: Sequence[Path], out: Path, suffix: str) -> dict[Path, Path]:
    """``OUTDIR/<stem><suffix>`` for each input; two inputs with one stem are refused before any work."""
    targets: dict[Path, Path] = {}
    seen: dict[str, Path] = {}
    for f in files:
        stem = f.name.split(".")[0] if f.suffix.lower() != ".zarr" else f.stem
        if stem in seen:
            raise InputError(f"{seen[stem]} and {f} would both be written to {out / (stem + suffix)}: rename one, "
                             "or predict them into different output folders")
        seen[stem] = f
        targets[f] = out / f"{stem}{suffix}"
    return targets


class Manifest:
    """``OUTDIR/manifest.jsonl``: one line per finished input (appended as each one finishes, so
    the cost per file stays constant for 10^5 files; a torn last line after a crash is ignored,
    and the last line about an input wins)."""

    def __init__(self, out: Path):
        self.path = out / MANIFEST
        self.entries: dict[str, dict] = {}
        self._lock = threading.Lock()        # folder mode's lanes record from several threads
        if self.path.is_file():
            for line in self.path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["input"]] = entry
                except (ValueError, KeyError, TypeError):
                    continue           # a line cut by a crash: that input is simply redone

    def record(self, source: Path, digest: str, model_ref: str, target: Path, options: dict | None = None) -> None:
        self.add(source, manifest_entry(digest, model_ref, target, options))

    def add(self, source: Path, entry: dict) -> None:
        """Append ``entry`` (see :func:`manifest_entry`) for ``source``: one line, the last one wins."""
        entry = {"input": str(source), **entry}
        with self._lock, open(self.path, "ab+") as f:      # appended: a torn last line is closed first
            self.entries[str(source)] = entry
            torn = f.seek(0, os.SEEK_END) > 0 and f.seek(-1, os.SEEK_END) >= 0 and f.read(1) != b"\n"
            f.write((b"\n" if torn else b"") + json.dumps(entry).encode() + b"\n")


UNCHANGING_OPTIONS = frozenset({"progress", "tile", "batch_size"})
"""Prediction options that change how an output is computed, not what it is (up to rounding)."""


def output_options(options: dict | None) -> dict:
    """The options that change an output (``--raw``, ``--pixel-size``, ``--diameter``, axes ...),
    as the manifest records them: the ones given, in JSON's terms."""
    given = {k: v for k, v in sorted((options or {}).items()) if k not in UNCHANGING_OPTIONS and v is not None
             and v is not False}
    return json.loads(json.dumps(given, default=str))


def entry_finished(entry: dict | None, digest: str, model_ref: str, target: Path, options: dict | None = None) -> bool:
    """Whether a manifest ``entry`` says ``target`` is finished for this input, model and options
    (an entry from before options were recorded stands for none given)."""
    return same_request(entry, digest, options) and output_recorded(entry, model_ref, target)


def same_request(entry: dict | None, digest: str, options: dict | None = None) -> bool:
    """Whether a manifest ``entry`` was made from this input's content with these options."""
    return bool(entry) and entry.get("sha256") == digest and entry.get("options", {}) == output_options(options)


def output_recorded(entry: dict | None, model_ref: str, target: Path) -> bool:
    """Whether ``target`` exists as ``entry`` recorded it, written by ``model_ref`` (so that redoing
    it loses nothing: not edited since, not another model's)."""
    from .hashing import sha256_file

    return bool(entry) and entry.get("model") == model_ref and target.exists() \
        and (target.is_dir() or entry.get("output_sha256") == sha256_file(target))


def manifest_entry(digest: str, model_ref: str, target: Path, options: dict | None = None) -> dict:
    """The manifest's record of a finished ``target``."""
    from .hashing import sha256_file

    return {"sha256": digest, "model": model_ref, "options": output_options(options), "output": target.name,
            "output_sha256": None if target.is_dir() else sha256_file(target)}


def _digest(path: Path) -> str:
    from .hashing import content_hash, sha256_file

    return content_hash(path) if path.is_dir() else sha256_file(path)


def read_input(path: Path):
    """(sha256, opened image) for the prefetch thread: small images are read whole here."""
    import numpy as np

    from .imageio import open_lazy

    digest = _digest(path)
    image, stated = open_lazy(path)
    if getattr(image, "nbytes", 0) <= 256 << 20 and not isinstance(image, np.ndarray):
        image = np.asarray(image)
    return digest, (image, stated)


def note_rows(notes: list[str]) -> list[dict]:
    """Summary rows of the files left out (``PATH: why``)."""
    return [{**dict.fromkeys(COLUMNS, ""), "file": n.split(": ")[0], "status": "skipped", "error": n.split(": ", 1)[1]}
            for n in notes]


def new_row(source: Path, target: Path) -> dict:
    """A summary row for ``source``, before its prediction."""
    return {**dict.fromkeys(COLUMNS, ""), "file": str(source), "output": str(target)}


def predict_one(model, source, target, digest, opened, manifest, row, overwrite, axes, shift, options,
                 predict_file, check_shift) -> None:
    """One file of a folder run: skipped when ``manifest`` says it is finished, else predicted
    into ``target`` by ``predict_file`` (checked by ``check_shift``) and recorded; ``row`` (see
    :func:`new_row`) gets its status. A bad file fails its row, never the run."""
    given, entry = {**options, "axes": axes}, manifest.entries.get(str(source))
    ours = output_recorded(entry, model.spec.ref, target)     # as this model wrote it: redone in place (hashed once)
    if not overwrite and ours and same_request(entry, digest, given):
        row["status"], row["warnings"] = "skipped", "already done (same input, model, options and output)"
        return
    try:
        if target.exists() and not (overwrite or ours) and entry is not None:
            raise InputError(f"the output {target} is not as this folder's manifest recorded it (edited since, or "
                             f"another model's): pass --overwrite to replace it, or predict into another folder")
        done = predict_file(model, source, target, axes=axes, overwrite=overwrite or ours, opened=opened, **options)
        manifest.record(source, digest, model.spec.ref, target, given)   # at once: a crash in the check loses nothing
        row["shape"] = "x".join(map(str, done.shape))
        row["warnings"] = "; ".join(done.notes)
        if shift:
            found = check_shift(model, done.source, axes=axes, prediction=done.written_labels,
                                source_axes=done.source_axes)
            if found is not None:
                row["shift_score"] = f"{found.shift_score:.3g}"
                row["shift_verdict"] = found.verdict
                if found.shift_warning:
                    row["warnings"] = "; ".join(filter(None, [row["warnings"], *found.messages]))
        row["status"] = "done"
    except (ZooError, OSError, ValueError, MemoryError) as e:
        row["status"], row["error"] = "failed", one_line(e)


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:500] or type(e).__name__


def write_summary(path: Path, rows: list[dict]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, path)
