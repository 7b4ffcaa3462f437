"""What every registry store is: the written contract between a registry and where its packages
live (a folder, a static web server, the Hugging Face Hub). A store lists versions and fetches
files; resolving, caching and verifying are the registry's (:class:`zoo.registry.remote.RemoteRegistry`)."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class Store(Protocol):
    url: str
    writable: bool          # publish() works (a web server is read-only)
    reads_offline: bool     # its own cache lists versions without a connection (the Hub's)

    def read_index(self) -> dict:
        """``{name: {version: entry}}``: every version the store holds."""

    def revalidate_index(self, cached: dict | None) -> tuple[dict, dict]:
        """(index, validators): the index, re-read only if it changed since ``cached`` (a previous
        answer with its validators, e.g. an HTTP ETag); stores that cannot tell re-read it."""

    def fetch(self, name: str, version: str, rel: str, dest: Path) -> int:
        """Copy one file of a package to ``dest``; returns the bytes moved."""

    def publish(self, src: Path, spec, yaml_sha: str) -> str:
        """Store a verified package folder; returns its reference (``name@version``)."""


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file: all of it or, on any error, nothing."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
