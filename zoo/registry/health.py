"""Checking a registry folder and the cache after a crash (``zoo check``).

What must hold, whatever was killed and when:

- the index parses, and every version it lists is complete and verified (its zoo.yaml has the
  sha256 the index pins, every file the sha256 the spec or the index pins);
- every folder in the cache is a verified package whose zoo.yaml hash matches the folder name.

Anything else is a *leftover* of an interrupted operation: staging folders (``.tmp/``), a
package folder that was renamed into place but never indexed, a temporary index file. They are
never visible (nothing lists them) and :func:`repair` removes them; it never touches a listed
version or a verified cached package. Resumable downloads (``.partial/``) are kept.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .. import spec as specs
from ..errors import ZooError
from ..hashing import sha256_file
from ..package import files
from .local import INDEX, verified


@dataclass
class Health:
    checked: int = 0                                     # versions or cached packages verified
    problems: list[str] = field(default_factory=list)     # visible damage: a listed version that is not whole
    leftovers: list[Path] = field(default_factory=list)   # invisible debris of interrupted operations

    @property
    def ok(self) -> bool:
        return not self.problems


def check_registry(root: str | Path, only: tuple[str, str] | None = None) -> Health:
    """``only``: (name, version) to verify, the other listed versions only checked for presence
    (what one interrupted operation can have touched; a full check reads every file)."""
    root, health = Path(root), Health()
    try:
        index = json.loads((root / INDEX).read_text(encoding="utf-8")) if (root / INDEX).is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        health.problems.append(f"{root / INDEX}: unreadable index ({e})")
        return health
    for name, versions in index.items():
        for version, entry in versions.items():
            folder = root / "packages" / name / version
            if only is not None and (name, version) != tuple(only):
                if not (folder / specs.SPEC_FILE).is_file():
                    health.problems.append(f"{name}@{version}: listed, but {folder} has no {specs.SPEC_FILE}")
                continue
            try:
                spec = verified(folder, entry)
                if (spec.name, spec.version) != (name, version):
                    raise ZooError(f"holds {spec.ref}")
                health.checked += 1
            except ZooError as e:
                health.problems.append(f"{name}@{version}: {e}")
    listed = {(n, v) for n, vs in index.items() for v in vs}
    for folder in sorted((root / "packages").glob("*/*")):
        if folder.is_dir() and (folder.parent.name, folder.name) not in listed:
            health.leftovers.append(folder)
    health.leftovers += sorted((root / ".tmp").glob("*")) + sorted(root.glob(f".{INDEX}.*.tmp"))
    return health


def check_cache(cache: str | Path) -> Health:
    cache, health = Path(cache), Health()
    for folder in sorted((cache / "packages").glob("*/*/*")):
        if not folder.is_dir():
            continue
        try:
            spec = specs.load(folder)
            if sha256_file(folder / specs.SPEC_FILE)[:16] != folder.name or \
                    (spec.name, spec.version) != (folder.parent.parent.name, folder.parent.name):
                raise ZooError("its zoo.yaml does not match the folder it is cached under")
            files.verify(spec, folder)
            health.checked += 1
        except ZooError as e:
            health.problems.append(f"{folder}: {e}")
    health.leftovers += sorted((cache / ".tmp").glob("*")) + sorted((cache / "indexes").glob(".*.tmp"))
    return health


def repair(health: Health) -> int:
    """Remove the leftovers (never a listed version); returns how many were removed."""
    for path in health.leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(health.leftovers)
