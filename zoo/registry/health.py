"""Checking a registry folder and the cache after a crash (``zoo check``).

What must hold, whatever was killed and when:

- the index parses, and every version it lists is complete and verified (its zoo.yaml has the
  sha256 the index pins, every file the sha256 the spec or the index pins);
- the index is there and lists something whenever version folders are stored;
- every folder in the cache is a verified package whose zoo.yaml hash matches the folder name.

Anything else is a *leftover* of an interrupted operation: staging folders (``.tmp/``), a
package folder that was renamed into place but never indexed, a temporary index file. They are
never visible (nothing lists them) and :func:`repair` removes them, except a version folder
that verifies: that one it lists again in the index (rebuilding a lost or damaged index so).
It never deletes a listed version, a version folder that verifies, or, while the index is lost
or damaged, any version folder; nor a verified cached package. Resumable downloads
(``.partial/``) are kept.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .. import spec as specs
from ..errors import ZooError, storage
from ..hashing import sha256_file
from ..package import files
from .local import INDEX, LocalRegistry, load_index, stored, verified


@dataclass
class Health:
    checked: int = 0                                     # versions or cached packages verified
    problems: list[str] = field(default_factory=list)     # visible damage: a listed version that is not whole
    leftovers: list[Path] = field(default_factory=list)   # invisible debris of interrupted operations
    unlisted: list[Path] = field(default_factory=list)    # leftovers that are whole versions: listed again
    root: Path | None = None                              # the registry checked (None: the cache)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_registry(root: str | Path, only: tuple[str, str] | None = None) -> Health:
    """``only``: (name, version) to verify, the other listed versions only checked for presence
    (what one interrupted operation can have touched; a full check reads every file)."""
    root = Path(root)
    health = Health(root=root)
    try:
        index = load_index(root / INDEX)
    except ZooError as e:
        health.problems.append(str(e))
        index = None
    for name, versions in (index or {}).items():
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
    _check_unlisted(root, index, health)
    with storage("list the registry's leftovers"):
        health.leftovers += sorted((root / ".tmp").glob("*")) + sorted(root.glob(f".{INDEX}.*.tmp"))
    return health


def _check_unlisted(root: Path, index: dict | None, health: Health) -> None:
    """Version folders the index does not list: whole ones are to be listed again; the others are
    leftovers while the index can be trusted, and damage to keep when it is lost or unreadable."""
    listed = {(n, v) for n, vs in (index or {}).items() for v in vs}
    unlisted = [f for f in LocalRegistry(root).version_folders() if (f.parent.name, f.name) not in listed]
    if not index and unlisted and health.ok:          # (an unreadable index is reported already)
        state = "is missing" if index is None else "lists no version"
        health.problems.append(f"the registry index {root / INDEX} {state}, yet {len(unlisted)} version folder(s) "
                               "are stored: `zoo check --repair` lists again those that verify")
    for folder in unlisted:
        try:
            stored(folder)
            health.unlisted.append(folder)
            health.leftovers.append(folder)
        except ZooError as e:
            if index:
                health.leftovers.append(folder)
            else:
                health.problems.append(f"{folder}: not listed, and kept while the index is rebuilt: {e}")


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
    """List again the unlisted versions that verify (each logged) and remove the other leftovers
    (never a listed version); returns how many were removed."""
    if health.unlisted:
        LocalRegistry(health.root).reindex(health.unlisted)
    doomed = [path for path in health.leftovers if path not in health.unlisted]
    with storage("remove a leftover"):
        for path in doomed:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return len(doomed)
