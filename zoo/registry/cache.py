"""The package cache on disk: what it holds, and pruning it.

    packages/<name>/<version>/<sha256 of zoo.yaml, 16 hex>/   verified package folders
    indexes/<url hash>.json                                   the last index read from each remote
    .partial/, .tmp/                                          interrupted downloads (never loaded)
    .locks/                                                   one lock file per package being pulled
"""
from __future__ import annotations

import shutil
from pathlib import Path

from . import refs


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def listing(cache: Path) -> list[dict]:
    """One row per cached package version: name, version, sha256 prefix, bytes, folder."""
    rows = []
    for folder in sorted((cache / "packages").glob("*/*/*")):
        if folder.is_dir():
            name, version = folder.parent.parent.name, folder.parent.name
            rows.append({"name": name, "version": version, "sha256": folder.name, "bytes": _size(folder),
                         "path": str(folder)})
    return rows


def prune(cache: Path, keep_latest: bool = True) -> tuple[int, list[str]]:
    """Remove interrupted downloads and, per package, every cached version but the newest (all of
    them without ``keep_latest``). Returns (bytes freed, what was removed)."""
    removed, freed = [], 0
    doomed = [d for d in (cache / ".partial", cache / ".tmp") if d.is_dir() and any(d.iterdir())]
    by_name: dict[str, list[dict]] = {}
    for row in listing(cache):
        if refs.is_version(row["version"]):         # a folder the zoo did not write is left alone
            by_name.setdefault(row["name"], []).append(row)
    for rows in by_name.values():
        rows.sort(key=lambda r: refs.version_of(r["version"]))
        doomed += [Path(r["path"]) for r in (rows[:-1] if keep_latest else rows)]
    for path in doomed:
        if path.exists():
            freed += _size(path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    for folder in sorted((cache / "packages").glob("*/*"), reverse=True):    # empty version/name folders
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return freed, removed
