"""Registries over any store, chosen by URL, with one verified, content-addressed cache.

    local                 the embedded local registry ($ZOO_HOME/registry)
    /some/folder          a registry folder (read-write)
    http(s)://host/root   a static web server serving the registry layout (read-only)
    hf://ORG              the Hugging Face Hub: one repo per model, a tag ``v<version>`` per version

Pulling resolves the reference against the store's index, then downloads the package's files
into a temporary folder of the cache, checks every sha256 (the index pins zoo.yaml, zoo.yaml
pins the weights and test tensors, the index's ``files`` the card and cover) and only then
renames the folder into place: the cache never holds an unchecked file. A package already
cached moves no bytes; one process downloads while others wait on a lock. Offline
(``--offline``, ``ZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``), the last index seen is used and only
cached packages resolve (for ``hf://``, those in the Hugging Face cache too).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

from .. import spec as specs
from ..errors import InputError, IntegrityError, NotFoundError, SpecError, storage
from ..hashing import sha256_file
from ..package import files
from . import refs
from .base import Store, write_json_atomic
from .local import Check, LocalRegistry, Published, Resolving, file_lock, index_problems, verified

log = logging.getLogger("zoo.registry")


def offline_by_default() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"))


def is_url(text: str) -> bool:
    return "://" in str(text)


def split_ref(text: str) -> tuple[str, str]:
    """``hf://ORG/NAME@1.0`` or ``http://host/root/NAME@^1`` -> (registry URL, ``NAME@...``)."""
    url, _, ref = str(text).rstrip("/").rpartition("/")
    if not url or "://" not in url or url.endswith(":/") or not ref:
        raise InputError(f"'{text}' names no package: expected REGISTRY_URL/NAME[@VERSION], e.g. "
                         "hf://my-lab/stardist-dsb-fluo-2d@0.1.0 or http://host/registry/n2v-w2s")
    return url, ref


class FolderStore:
    """A registry folder seen as a store (the source or destination of a mirror)."""

    def __init__(self, root: str | Path, seed: Path | None = None):
        from ..paths import zoo_cache

        self.registry = LocalRegistry(root, cache=zoo_cache(), seed=seed)
        self.url = str(root)

    writable = True
    reads_offline = False

    def read_index(self) -> dict:
        return self.registry.index()

    def revalidate_index(self, cached: dict | None) -> tuple[dict, dict]:
        return self.read_index(), {}

    def fetch(self, name: str, version: str, rel: str, dest: Path) -> int:
        src = files.safe_join(self.registry.package_dir(name, version), rel)
        if not src.is_file():
            raise NotFoundError(f"{self.url}: {name}@{version} has no file '{rel}'")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return dest.stat().st_size

    def publish(self, src: Path, spec, yaml_sha: str) -> str:
        return self.registry.publish(src).ref


def open_store(url: str | Path):
    """The store a registry URL names (see the module docstring)."""
    text = str(url)
    if text == "local":
        from ..paths import zoo_home
        from . import standard_store

        return FolderStore(zoo_home() / "registry", seed=standard_store())
    if text.startswith(("http://", "https://")):
        from .http import HttpStore

        return HttpStore(text)
    if text.startswith("hf://"):
        from .hf import HfStore

        org = text[len("hf://"):].strip("/")
        if not org or "/" in org:
            raise InputError(f"'{text}': a Hugging Face registry is hf://ORG (one repo per model under ORG)")
        return HfStore(org)
    if "://" in text:
        raise InputError(f"unknown registry URL scheme in '{text}': use a folder, local, http(s):// or hf://")
    return FolderStore(Path(text))


class RemoteRegistry(Resolving):
    """Resolve, search and pull packages of one store into the cache (same API as LocalRegistry)."""

    def __init__(self, store: Store, cache: str | Path | None = None, offline: bool | None = None):
        from ..paths import zoo_cache

        self.store = store
        self.cache = Path(cache) if cache else zoo_cache()
        self.offline = offline_by_default() if offline is None else offline
        self.bytes_moved = 0
        self._index: dict | None = None

    def __repr__(self) -> str:
        return f"RemoteRegistry({self.store.url})"

    @property
    def root(self) -> str:
        return self.store.url

    # ------------------------------------------------------------------ index
    def _index_path(self) -> Path:
        key = hashlib.sha256(self.store.url.encode()).hexdigest()[:16]
        return self.cache / "indexes" / f"{key}.json"

    def index(self) -> dict:
        if self._index is not None:
            return self._index
        path = self._index_path()
        cached = _cached_index(path)
        if self.offline and self.store.reads_offline:   # the Hub's own cache lists versions
            self.store.offline = True
            self._index = self.store.read_index()
            return self._index
        if self.offline:
            if cached is None:
                raise NotFoundError(f"offline, and {self.store.url} was never read: its index is not in the cache "
                                    f"({self.cache}); connect once, or drop --offline / HF_HUB_OFFLINE")
            self._index = cached["index"]
            return self._index
        index, validators = self.store.revalidate_index(cached)       # HTTP: a conditional request
        with storage("keep the registry index in the cache"):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, {"url": self.store.url, "index": index, **validators})
        self._index = index
        return index

    def spec(self, text: str) -> specs.Spec:
        return self.pull(text)[0]

    # ------------------------------------------------------------------ pulling
    def pull(self, text: str) -> tuple[specs.Spec, Path]:
        """(spec, folder) of a verified copy of the package in the cache."""
        name, version = self.resolve(text)
        entry = self.index()[name][version]
        cached = self.cache / "packages" / name / version / entry["sha256"][:16]
        with file_lock(self.cache / ".locks" / f"{name}@{version}.lock"):
            if cached.is_dir():
                try:
                    return verified(cached, entry), cached
                except (IntegrityError, SpecError) as e:
                    if self.offline:
                        raise IntegrityError(f"offline, and the cached {name}@{version} is damaged ({e}); "
                                             "pull it again when online") from None
                    log.warning("cached copy of %s@%s is damaged (%s); pulling it again", name, version, e)
                    shutil.rmtree(cached, ignore_errors=True)
            if self.offline and not self.store.reads_offline:
                raise NotFoundError(f"offline, and {name}@{version} is not in the cache ({self.cache}); pull it once "
                                    "while online, or drop --offline / HF_HUB_OFFLINE")
            self._download(name, version, entry, cached)
        return verified(cached, entry), cached

    def _download(self, name: str, version: str, entry: dict, cached: Path) -> None:
        partial = self.cache / ".partial" / f"{name}@{version}-{entry['sha256'][:16]}"
        tmp = self.cache / ".tmp" / uuid.uuid4().hex
        try:
            with storage(f"download {name}@{version} into the cache"):
                self.bytes_moved += self._fetch_checked(name, version, specs.SPEC_FILE, entry["sha256"], partial, tmp)
                spec = specs.load(tmp)
                pinned = {ref.file: ref.sha256 for ref in spec.package_files()}
                for rel in files.package_files(spec)[1:]:
                    expected = pinned.get(rel) or entry.get("files", {}).get(rel)
                    self.bytes_moved += self._fetch_checked(name, version, rel, expected, partial, tmp)
                verified(tmp, entry)
                cached.parent.mkdir(parents=True, exist_ok=True)
                os.rename(tmp, cached)
                shutil.rmtree(partial, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _fetch_checked(self, name: str, version: str, rel: str, expected: str | None, partial: Path,
                       tmp: Path) -> int:
        """Fetch one file (resuming a partial download) and move it into ``tmp`` once its sha256 is right."""
        staged = files.safe_join(partial, rel)
        moved = 0
        if not (staged.is_file() and expected and sha256_file(staged) == expected):
            moved = self.store.fetch(name, version, rel, staged)
        if expected is None:
            log.warning("%s@%s: '%s' is not pinned by the index; kept without a hash check", name, version, rel)
        else:
            actual = sha256_file(staged)
            if actual != expected:
                staged.unlink(missing_ok=True)
                raise IntegrityError(f"{self.store.url}: {name}@{version} file '{rel}' has sha256 {actual[:12]}..., "
                                     f"but {expected[:12]}... is pinned: the server holds a changed or corrupted "
                                     "file. Nothing was cached; tell the registry's maintainers.")
        target = files.safe_join(tmp, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(staged, target)
        return moved

    # ------------------------------------------------------------------ publishing
    def publish(self, src: str | Path, check: Check | None = None) -> Published:
        """Verify the package at ``src`` (folder or archive), run ``check`` on it, then upload it."""
        if not self.store.writable:
            raise InputError(f"{self.store.url} is read-only (a web server); push to a folder or hf://ORG instead")
        if self.offline:
            raise InputError("cannot publish offline")
        from ..package import archive

        with archive.opened(src) as folder:
            spec = LocalRegistry.check_package(folder, check)
            ref = self.store.publish(folder, spec, sha256_file(folder / specs.SPEC_FILE))
        return Published(ref, Path(src), created=True)


def _cached_index(path: Path) -> dict | None:
    """The last answer kept for a remote index, None when there is none or it is damaged (it is
    only a cache: the index is read again)."""
    try:
        with storage("read the cached registry index"):
            cached = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(cached, dict) and not index_problems(cached.get("index")):
            return cached
    except FileNotFoundError:
        return None
    except (ValueError, RecursionError):
        pass
    log.warning("the cached index %s is damaged; reading the registry's index again", path)
    return None


def search(rows: list[dict], text: str | None = None, task: str | None = None, tag: str | None = None,
           architecture: str | None = None, axes: str | None = None) -> list[dict]:
    """The rows matching every criterion given: words of ``text`` in the name or description, the
    task (or its family, ``segmentation``), a tag, the architecture id, the input axes."""
    def keep(row: dict) -> bool:
        haystack = f"{row['name']} {row.get('description') or ''} {' '.join(row.get('tags') or [])}".lower()
        return ((not text or all(word in haystack for word in text.lower().split()))
                and (not task or (row.get("task") or "") == task or (row.get("task") or "").startswith(task + "/"))
                and (not tag or tag in (row.get("tags") or []))
                and (not architecture or row.get("architecture") == architecture)
                and (not axes or row.get("axes") == axes))
    return rank([row for row in rows if keep(row)], text)


TASK_WORDS = {
    "segmentation": ("segment", "segmentation", "nuclei", "nucleus", "cell", "cells", "instance", "instances", "mask",
                     "masks", "label", "labels", "membrane", "organelle", "stardist", "cellpose", "unet"),
    "restoration": ("denoise", "denoising", "noise", "noisy", "restore", "restoration", "snr", "care", "n2v",
                    "noise2void", "deconvolution"),
    "classification": ("classify", "classification", "classifier", "class", "classes", "type", "types"),
}
"""Words of a query that ask for a task family: `zoo search nuclei` wants segmentation first."""


def rank(rows: list[dict], text: str | None) -> list[dict]:
    """``rows`` ordered by how well they answer ``text``: the task the words ask for first (its
    family or its name), then words in the name or tags before words in the description alone."""
    words = (text or "").lower().split()
    if not words:
        return rows
    wanted = {family for family, vocabulary in TASK_WORDS.items() if any(w in vocabulary for w in words)}

    def score(row: dict) -> tuple:
        task = (row.get("task") or "").lower()
        named = f"{row['name']} {' '.join(row.get('tags') or [])}".lower()
        return (-(task.split("/")[0] in wanted or any(w in task for w in words)),
                -sum(w in named for w in words), row["name"])
    return sorted(rows, key=score)


def registry_for(url: str | Path | None = None, offline: bool | None = None):
    """The registry a URL names; the embedded local registry for None or ``local``."""
    from . import default_registry

    if url is None or str(url) == "local":
        return default_registry()
    store = open_store(url)
    if isinstance(store, FolderStore):
        return store.registry
    return RemoteRegistry(store, offline=offline)


def mirror(source: str | Path, destination: str | Path, progress=print) -> dict:
    """Copy every package version of ``source`` that ``destination`` lacks (hash-checked through the
    cache; an interrupted mirror resumes where it stopped). Returns counts."""
    src, dst = open_store(source), open_store(destination)
    if not dst.writable:
        raise InputError(f"cannot mirror into {destination}: it is read-only")
    reader = src.registry if isinstance(src, FolderStore) else RemoteRegistry(src, offline=False)
    have = dst.read_index()
    counts = {"copied": 0, "skipped": 0}
    for name, versions in sorted(reader.index().items()):
        for version in sorted(versions, key=refs.Version):
            if have.get(name, {}).get(version, {}).get("sha256") == versions[version]["sha256"]:
                counts["skipped"] += 1
                continue
            spec, folder = reader.pull(f"{name}@{version}")
            dst.publish(folder, spec, versions[version]["sha256"])
            counts["copied"] += 1
            progress(f"{spec.ref}: copied")
    return counts
