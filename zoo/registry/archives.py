"""Pulling a package archive (``.zip``, ``.tar.gz``...) from a file or an ``http(s)://`` URL.

The archive is downloaded outside the cache, checked against ``sha256`` when one is given,
unpacked member by member under :mod:`zoo.package.archive`'s rules, and its files verified
against the sha256s its zoo.yaml pins; only then is it renamed into the cache, where it sits
beside packages pulled from registries (``packages/<name>/<version>/<zoo.yaml sha256>``).

The cache keeps the package's own files alone (those its spec lists), as a registry pull does:
nothing pins the bytes of other files in the archive, so they could be neither verified nor told
apart under a folder named by the zoo.yaml's sha256. They are left out, with a warning naming them.
Offline (``--offline``, ``ZOO_OFFLINE=1``), an archive URL is refused, never downloaded.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path

from .. import spec as specs
from ..errors import IntegrityError, NotFoundError
from ..hashing import sha256_file
from ..package import archive as archives
from ..package import files
from .local import file_lock

log = logging.getLogger("zoo.registry")


def names_archive(text: str | Path) -> bool:
    """Whether a reference is a package archive: a local archive file, or a URL ending like one."""
    text = str(text)
    if text.startswith(("http://", "https://")):
        return text.lower().split("?")[0].endswith(archives.SUFFIXES)
    return archives.is_archive(text)


def pull_archive(source: str | Path, cache: Path, sha256: str | None = None,
                 limits: archives.Limits = archives.Limits(), offline: bool | None = None) -> tuple[specs.Spec, Path]:
    """(spec, folder) of a verified copy in ``cache`` of the package archive at ``source``;
    ``offline`` (default: ZOO_OFFLINE / HF_HUB_OFFLINE) refuses to download one."""
    from .remote import offline_by_default

    text = str(source)
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    with file_lock(cache / ".locks" / f"archive-{key}.lock"):
        local = _fetched(text, cache, key, offline_by_default() if offline is None else offline)
        try:
            if sha256 is not None:
                actual = sha256_file(local)
                if actual != sha256.lower():
                    raise IntegrityError(f"{text}: the archive has sha256 {actual[:12]}..., not the {sha256[:12]}... "
                                         "you gave: it was changed or corrupted. Nothing was cached.")
            elif local != Path(text):
                log.warning("%s: no --sha256 given, so only the sha256s inside its zoo.yaml are checked "
                            "(they prove the files are whole, not who wrote them)", text)
            tmp = cache / ".tmp" / uuid.uuid4().hex
            try:
                unpacked = archives.package_root(archives.extract(local, tmp / "unpacked", limits))
                spec = specs.load(unpacked)
                files.verify(spec, unpacked)
                root = _listed_only(spec, unpacked, tmp / "package", text)
                cached = cache / "packages" / spec.name / spec.version / sha256_file(root / specs.SPEC_FILE)[:16]
                if cached.is_dir() and not _intact(spec, cached):
                    log.warning("cached copy of %s is damaged; replacing it", spec.ref)
                    shutil.rmtree(cached, ignore_errors=True)
                if not cached.is_dir():
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(root, cached)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            if local != Path(text):
                local.unlink(missing_ok=True)
    files.verify(spec, cached)
    return spec, cached


def _listed_only(spec: specs.Spec, unpacked: Path, dest: Path, text: str) -> Path:
    """``dest`` holding the package's own files, moved out of ``unpacked``; the other files stay
    behind (and are removed with it), with a warning naming them."""
    for rel in files.package_files(spec):
        target = files.safe_join(dest, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(files.safe_join(unpacked, rel), target)
    left = sorted(p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file())
    if left:
        log.warning("%s: left out of the cache %d file(s) that %s does not list (nothing pins their bytes): %s",
                    text, len(left), specs.SPEC_FILE, ", ".join(left[:10]) + (", ..." if len(left) > 10 else ""))
    return dest


def _intact(spec: specs.Spec, folder: Path) -> bool:
    try:
        files.verify(spec, folder)
        return True
    except IntegrityError:
        return False


def _fetched(text: str, cache: Path, key: str, offline: bool) -> Path:
    """The archive as a local file: the file itself, or a download into ``cache/.partial``."""
    if not text.startswith(("http://", "https://")):
        path = Path(text)
        if not path.is_file():
            raise NotFoundError(f"{text}: no such archive")
        return path
    if offline:
        raise NotFoundError(f"offline (--offline, ZOO_OFFLINE or HF_HUB_OFFLINE), so {text} is not downloaded: "
                            "download the archive while online and pull the file, or drop --offline")
    from .http import HttpStore

    dest = cache / ".partial" / f"archive-{key}{''.join(Path(text.split('?')[0]).suffixes[-2:])}"
    HttpStore(text.rsplit("/", 1)[0]).fetch_url(text, dest)
    return dest
