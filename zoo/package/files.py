"""Which files make up a package, and checking them against the spec's sha256s."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import IntegrityError, storage
from ..hashing import sha256_file
from ..spec import SPEC_FILE, Spec


def _real(path: Path) -> Path:
    """``path`` with its symbolic links followed; a loop of links is a StorageError (ELOOP)."""
    with storage("resolve the package path"):
        try:
            return Path(os.path.realpath(path, strict=True))
        except (FileNotFoundError, NotADirectoryError):   # a missing file: verify names it
            return Path(os.path.realpath(path))


def safe_join(root: Path, relative: str) -> Path:
    """``root / relative``, refusing anything that would land outside ``root``."""
    root = _real(Path(root))
    candidate = _real(root / relative)
    if relative.startswith(("/", "\\")) or ".." in Path(relative).parts or not candidate.is_relative_to(root):
        raise IntegrityError(f"refusing path '{relative}': package files must stay inside the package")
    return candidate


def package_files(spec: Spec) -> list[str]:
    """Relative paths of every file a package consists of (the spec first)."""
    files = [SPEC_FILE] + [f.file for f in spec.package_files()]
    files += [p for p in [spec.documentation, *spec.covers] if p]
    return list(dict.fromkeys(files))


def verify(spec: Spec, root: Path) -> None:
    """Check that every pinned file exists and matches its sha256; the error names the file."""
    for ref in spec.package_files():
        path = safe_join(root, ref.file)
        if not path.is_file():
            raise IntegrityError(f"{spec.ref}: missing file '{ref.file}' in {root}")
        actual = sha256_file(path)
        if actual != ref.sha256:
            raise IntegrityError(f"{spec.ref}: sha256 mismatch for '{ref.file}' in {root}: the spec pins "
                                 f"{ref.sha256[:12]}..., the file has {actual[:12]}.... The file was changed "
                                 "or corrupted; pull the package again (or rebuild it).")
    for extra in [spec.documentation, *spec.covers]:
        if extra and not safe_join(root, extra).is_file():
            raise IntegrityError(f"{spec.ref}: missing file '{extra}' in {root}")
