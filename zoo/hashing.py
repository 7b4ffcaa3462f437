"""sha256 of files and folders."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from .errors import storage

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with storage("hash"), open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(path: Path) -> str:
    """A file's sha256, or a folder's (a Zarr store): over its files' relative names and hashes."""
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def fingerprint_files(paths: Iterable[str | Path]) -> str:
    """One sha256 over (file name, content hash) pairs, order-independent: a data set's identity."""
    digest = hashlib.sha256()
    for name, file_hash in sorted((Path(p).name, content_hash(Path(p))) for p in paths):
        digest.update(f"{name}\0{file_hash}\n".encode())
    return digest.hexdigest()
