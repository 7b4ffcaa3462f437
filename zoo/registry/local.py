"""The local registry: a folder with the registry layout, read-write.

    index.json                        {name: {version: {sha256 of zoo.yaml, task, tags, ...}}}
    packages/<name>/<version>/...     the package files

Publishing validates and verifies a package (and runs the check the api passes: reproducing
its test tensors), then copies it into a temporary
folder and renames it into place under a lock, updating the index atomically; a version that
exists with other content is refused. Pulling copies a package into the content-addressed
cache and verifies every sha256 there before anything is loaded.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import architectures, spec as specs
from ..errors import IntegrityError, NotFoundError, SpecError, VersionConflictError, ZooError, storage
from ..hashing import sha256_bytes, sha256_file
from ..package import archive, files
from .. import opnames
from . import refs
from .base import write_json_atomic

log = logging.getLogger("zoo.registry")

INDEX = "index.json"
REBUILD_HINT = ("restore it from a mirror, or move it aside and run `zoo check --repair` to rebuild it from the "
                "package folders that verify")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_VERSION_KEY = re.compile(r"[0-9][0-9A-Za-z.+!-]*")      # a folder name: no space, no '/'
_SHA256 = re.compile(r"[0-9a-f]{64}")


Check = Callable[[specs.Spec, Path], object]
"""A check run on a package before it is published (it raises to refuse)."""


@dataclass(frozen=True)
class Published:
    ref: str
    path: Path
    created: bool   # False when the identical version was already there


def _copy_package(spec: specs.Spec, src: Path, dst: Path) -> None:
    for rel in files.package_files(spec):
        source = files.safe_join(src, rel)
        if not source.is_file():
            raise IntegrityError(f"{spec.ref}: '{rel}' is missing from {src}: that copy is incomplete "
                                 "(`zoo check` reports it; publish the version again)")
        target = files.safe_join(dst, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def _write_index(path: Path, index: dict) -> None:
    """Write the index atomically, its mtime in a later whole second than the index it replaces:
    web servers send Last-Modified in whole seconds, and a change within the second a client read
    the index would otherwise be answered '304 Not Modified' for ever."""
    before = path.stat().st_mtime_ns // 10**9 if path.exists() else None
    write_json_atomic(path, index)
    if before is not None and path.stat().st_mtime_ns // 10**9 <= before:
        later = (before + 1) * 10**9
        os.utime(path, ns=(later, later))


def _json_kind(value) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def index_problems(index) -> list[str]:
    """What makes ``index`` (parsed JSON) no registry index: ``{name: {version: {"sha256": ...}}}``
    with names and versions that are safe folder names."""
    if not isinstance(index, dict):
        return [f"expected an object {{name: {{version: entry}}}}, got {_json_kind(index)}"]
    problems = []
    for name, versions in index.items():
        if not _NAME.fullmatch(name):
            problems.append(f"{name!r} is not a package name")
        elif not isinstance(versions, dict):
            problems.append(f"{name}: expected an object of versions, got {_json_kind(versions)}")
        else:
            for version, entry in versions.items():
                if not (_VERSION_KEY.fullmatch(version) and refs.is_version(version)):
                    problems.append(f"{name}: {version!r} is not a version")
                elif not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                          and _SHA256.fullmatch(entry["sha256"])):
                    problems.append(f"{name}@{version}: expected an object holding the sha256 of its zoo.yaml, "
                                    f"got {_json_kind(entry)}")
    return problems


def checked_index(index, where: str, hint: str) -> dict:
    """``index`` if it is a registry index; a one-line ZooError naming ``where`` and its first problems."""
    problems = index_problems(index)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ZooError(f"{where} is not a valid registry index: {'; '.join(problems[:3])}{more}; {hint}")
    return index


def load_index(path: Path) -> dict | None:
    """The registry index at ``path``, None when there is none; a ZooError when it is unreadable."""
    try:
        with storage("read the registry index"):
            data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ZooError(f"the registry index {path} is a folder, not a file; {REBUILD_HINT}") from None
    try:
        index = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise ZooError(f"the registry index {path} is corrupt ({e}); {REBUILD_HINT}") from None
    return checked_index(index, f"the registry index {path}", REBUILD_HINT)


def _read_spec(root: Path) -> tuple[specs.Spec, str]:
    """(spec, sha256 of its bytes) from one read of ``root/zoo.yaml``: what is hashed is what is used."""
    path = root / specs.SPEC_FILE
    if not path.is_file():
        raise SpecError(f"no {specs.SPEC_FILE} in {root}: expected a package folder")
    data = specs.read_yaml_file(path)
    return specs.load_bytes(data, source=str(path)), sha256_bytes(data)


def stored(folder: Path) -> tuple[specs.Spec, str]:
    """(spec, zoo.yaml sha256) of a version folder ``packages/<name>/<version>`` that holds that very
    version, every pinned file verified; a ZooError otherwise."""
    spec, yaml_sha = _read_spec(folder)
    if (spec.name, spec.version) != (folder.parent.name, folder.name):
        raise IntegrityError(f"{folder} holds {spec.ref}")
    files.verify(spec, folder)
    return spec, yaml_sha


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock between processes (fcntl; on Windows a no-op: single-writer assumption)."""
    with storage("take the lock"):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    with handle:
        try:
            import fcntl
        except ImportError:
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Resolving:
    """Version resolution and listing over ``self.index()``, for every kind of registry."""

    def versions(self, name: str) -> list[str]:
        return list(self.index().get(name, {}))

    def resolve(self, text: str) -> tuple[str, str]:
        """(name, version) of a reference: ``NAME``, ``NAME@1.2.0``, ``NAME@^1.2``, ``NAME@latest``."""
        ref = refs.parse(text)
        versions = self.versions(ref.name)
        if not versions:
            known = ", ".join(sorted(self.index())) or "none"
            raise NotFoundError(f"no package named '{ref.name}' in the registry {self.root} (packages: {known}). "
                                "See `zoo list`.")
        return ref.name, refs.resolve(ref, versions)

    def entries(self) -> list[dict]:
        """One row per package: name, latest version, all versions, task, description, tags, axes."""
        return entries_of(self.index())

    def names_taking(self, n_channels: int) -> list[str]:
        """Packages whose latest version takes images of ``n_channels`` channels (e.g. 3: RGB)."""
        return [row["name"] for row in self.entries()
                if self.spec(f"{row['name']}@{row['latest']}").inputs[0].n_channels == n_channels]


class LocalRegistry(Resolving):
    def __init__(self, root: str | Path, cache: str | Path | None = None, seed: str | Path | None = None):
        self.root = Path(root)
        self.cache = Path(cache) if cache else self.root.parent / "cache"
        self.seed = Path(seed) if seed else None
        self._seeded = False
        self.bytes_moved = 0          # bytes the last pull copied into the cache (0: it was cached)

    def __repr__(self) -> str:
        return f"LocalRegistry({self.root})"

    # ------------------------------------------------------------------ locking and index
    @contextlib.contextmanager
    def _lock(self):
        with file_lock(self.root / ".lock"):
            yield

    def _read_index(self) -> dict:
        return load_index(self.root / INDEX) or {}

    def index(self) -> dict:
        self._ensure_seeded()
        index = self._read_index()
        if not index and self.version_folders():
            log.warning("the registry index %s lists no version, yet %s holds version folders: run `zoo check`",
                        self.root / INDEX, self.root / "packages")
        return index

    def version_folders(self) -> list[Path]:
        """Every ``packages/<name>/<version>`` folder, listed in the index or not."""
        with storage("list the registry's packages"):
            return sorted(p for p in (self.root / "packages").glob("*/*") if p.is_dir())

    def _index_to_extend(self, adding: Path) -> dict:
        """The index, to add ``adding`` to (under the lock); refused when it lists nothing while other
        versions are stored: a new index would hide them, the index was lost, not the versions."""
        index = self._read_index()
        lost = [] if index else [p for p in self.version_folders() if p != adding]
        if lost:
            raise ZooError(f"the registry index {self.root / INDEX} lists no version, yet {len(lost)} version "
                           f"folder(s) are stored in {self.root / 'packages'}: run `zoo check --repair` to rebuild "
                           "the index from those that verify, then publish again")
        return index

    def package_dir(self, name: str, version: str) -> Path:
        return self.root / "packages" / name / version

    # ------------------------------------------------------------------ reading
    def spec(self, text: str) -> specs.Spec:
        name, version = self.resolve(text)
        return specs.load(self.package_dir(name, version))

    # ------------------------------------------------------------------ publishing
    def publish(self, src: str | Path, check: Check | None = None) -> Published:
        """Validate and verify the package at ``src`` (a folder or a package archive, unpacked under
        :mod:`zoo.package.archive`'s rules), run ``check`` on it, then add it. The registry never
        runs a model: the api passes the check that reproduces the test tensors
        (:func:`zoo.api.publish`)."""
        with archive.opened(src) as folder:
            self.check_package(folder, check)
            spec, yaml_sha = _read_spec(folder)
            return self._add(spec, folder, yaml_sha)

    @staticmethod
    def check_package(src: Path, check: Check | None = None) -> specs.Spec:
        """A package fit to publish: valid spec, installed architecture, known ops, every sha256
        right, and whatever ``check(spec, folder)`` adds (it raises to refuse)."""
        spec, _ = _read_spec(src)
        if spec.kind != "package":
            raise SpecError(f"{spec.name} is a blueprint, not a package: train it first (`zoo train`)", source=str(src))
        if not spec.graph_only:
            architectures.get(spec.architecture_id)
        opnames.check_known(spec)
        files.verify(spec, src)
        if check is not None:
            check(spec, src)
        return spec

    def _add(self, spec: specs.Spec, src: Path, yaml_sha: str) -> Published:
        dest = self.package_dir(spec.name, spec.version)
        with self._lock(), storage(f"publish {spec.ref} into the registry"):
            index = self._index_to_extend(dest)
            alias = refs.alias_of(spec.version, index.get(spec.name, {}))
            if alias not in (None, spec.version):
                raise VersionConflictError(
                    f"{spec.ref}: the registry holds {spec.name}@{alias}, the same version spelled otherwise "
                    f"(resolution cannot tell them apart); versions are immutable. Bump the version in "
                    f"{src / specs.SPEC_FILE} (e.g. {_next_patch(spec.version)}) and push again.")
            existing = index.get(spec.name, {}).get(spec.version)
            if existing:
                if existing["sha256"] != yaml_sha:
                    raise VersionConflictError(
                        f"{spec.ref} is already published with different content; versions are immutable. "
                        f"Bump the version in {src / specs.SPEC_FILE} (e.g. {_next_patch(spec.version)}) and push again.")
                return Published(spec.ref, dest, created=False)
            tmp = self.root / ".tmp" / uuid.uuid4().hex
            try:
                _copy_package(spec, src, tmp)
                self._verified(tmp, yaml_sha)     # the copy is exactly what was checked
                if dest.exists():          # left over by an interrupted publish, never indexed
                    shutil.rmtree(dest)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.rename(tmp, dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            index.setdefault(spec.name, {})[spec.version] = {
                **index_entry(spec, dest, yaml_sha), "published": _utc(time.time()),
            }
            _write_index(self.root / INDEX, index)
        log.info("published %s to %s", spec.ref, self.root)
        return Published(spec.ref, dest, created=True)

    def reindex(self, folders: list[Path]) -> list[str]:
        """List again the version folders that verify and that the index lacks (after the index was
        lost or damaged; an unreadable index is kept beside, as ``index.json.damaged-<time>``).
        Returns the references listed; nothing is deleted."""
        path, added = self.root / INDEX, []
        with self._lock(), storage("rebuild the registry index"):
            try:
                index = load_index(path) or {}
            except ZooError:
                os.replace(path, path.with_name(f"{INDEX}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"))
                index = {}
            for folder in folders:
                try:
                    spec, yaml_sha = stored(folder)
                except ZooError as e:           # changed since it was checked: left as it is
                    log.warning("%s is not listed again: %s", folder, e)
                    continue
                if spec.version in index.get(spec.name, {}):
                    continue
                published = _utc((folder / specs.SPEC_FILE).stat().st_mtime)
                index.setdefault(spec.name, {})[spec.version] = {**index_entry(spec, folder, yaml_sha),
                                                                 "published": published}
                added.append(spec.ref)
            if added:
                _write_index(path, index)
        for ref in added:
            log.warning("%s: verified in %s but not listed; listed again", ref, self.root)
        return added

    def _ensure_seeded(self) -> None:
        """Add the shipped standard packages that this registry does not hold yet (hash-checked)."""
        if self._seeded or self.seed is None or not (self.seed / INDEX).is_file():
            self._seeded = True
            return
        self._seeded = True
        shipped = json.loads((self.seed / INDEX).read_text(encoding="utf-8"))
        present = self._read_index()
        if not present and self.version_folders():       # the index was lost: `zoo check --repair` first
            return
        for name, versions in shipped.items():
            for version in versions:
                if version in present.get(name, {}):
                    continue
                src = self.seed / "packages" / name / version
                spec, yaml_sha = _read_spec(src)
                if yaml_sha != versions[version]["sha256"]:
                    raise IntegrityError(f"shipped package {name}@{version} does not match its index entry "
                                         f"({src}); reinstall bioimage-zoo")
                files.verify(spec, src)
                self._add(spec, src, yaml_sha)

    # ------------------------------------------------------------------ pulling
    def pull(self, text: str) -> tuple[specs.Spec, Path]:
        """Resolve a reference and return (spec, folder) of a verified copy in the cache."""
        name, version = self.resolve(text)
        entry = self.index()[name][version]
        expected = entry["sha256"]
        cached = self.cache / "packages" / name / version / expected[:16]
        self.bytes_moved = 0
        if cached.is_dir():
            try:
                return verified(cached, entry), cached
            except (IntegrityError, SpecError) as e:
                log.warning("cached copy of %s@%s is damaged (%s); pulling it again", name, version, e)
                shutil.rmtree(cached, ignore_errors=True)
        src = self.package_dir(name, version)
        spec = self._verified_spec_only(src, expected)
        tmp = self.cache / ".tmp" / uuid.uuid4().hex
        try:
            with storage(f"copy {name}@{version} into the cache"):
                _copy_package(spec, src, tmp)
                verified(tmp, entry)
                self.bytes_moved = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
                cached.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.rename(tmp, cached)
                except OSError:
                    if not cached.is_dir():   # another process won the race: theirs is as good
                        raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return verified(cached, entry), cached

    @staticmethod
    def _verified_spec_only(root: Path, expected_sha: str) -> specs.Spec:
        path = root / specs.SPEC_FILE
        if not path.is_file():
            raise IntegrityError(f"missing {specs.SPEC_FILE} in {root}")
        data = specs.read_yaml_file(path)
        actual = sha256_bytes(data)
        if actual != expected_sha:
            raise IntegrityError(f"sha256 mismatch for '{specs.SPEC_FILE}' in {root}: the index pins "
                                 f"{expected_sha[:12]}..., the file has {actual[:12]}....")
        return specs.load_bytes(data, source=str(path))

    def _verified(self, root: Path, expected_sha: str) -> specs.Spec:
        spec = self._verified_spec_only(root, expected_sha)
        files.verify(spec, root)
        return spec


def entries_of(index: dict) -> list[dict]:
    """One row per package of an index: name, latest version, versions, task, description, tags, axes."""
    rows = []
    for name, versions in sorted(index.items()):
        latest = refs.resolve(refs.Ref(name), list(versions))
        rows.append({"name": name, "latest": latest, "versions": sorted(versions, key=refs.Version),
                     **{k: versions[latest].get(k) for k in ("task", "architecture", "description", "tags", "axes")}})
    return rows


def verified(root: Path, entry: dict) -> specs.Spec:
    """The spec of a package folder whose zoo.yaml (pinned by the index entry), the files it pins
    and the other files the entry pins (card, cover) all match."""
    spec = LocalRegistry._verified_spec_only(root, entry["sha256"])
    files.verify(spec, root)
    for rel, sha in entry.get("files", {}).items():
        path = files.safe_join(root, rel)
        if not path.is_file() or sha256_file(path) != sha:
            raise IntegrityError(f"{spec.ref}: '{rel}' in {root} is missing or does not match the sha256 the index pins")
    return spec


def index_entry(spec: specs.Spec, root: Path, yaml_sha: str) -> dict:
    """What the index says of a version: the sha256 of its zoo.yaml (which pins weights and test
    tensors), of its other files (card, cover), and what search looks at."""
    pinned = {ref.file for ref in spec.package_files()}
    return {"sha256": yaml_sha, "task": spec.task, "architecture": spec.architecture_id, "tags": spec.tags,
            "axes": spec.inputs[0].axes, "description": spec.description.strip().split("\n")[0][:200],
            "files": {rel: sha256_file(files.safe_join(root, rel)) for rel in files.package_files(spec)[1:]
                      if rel not in pinned}}


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _next_patch(version: str) -> str:
    v = refs.Version(version)
    major, minor, patch = (list(v.release) + [0, 0])[:3]
    return f"{major}.{minor}.{patch + 1}"
