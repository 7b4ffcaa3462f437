"""Package archives (``.zip``, ``.tar``, ``.tar.gz``...): packing, and unpacking what a stranger sent.

Every member is checked before a single byte is written:

- its name is a plain relative path: no absolute path, drive letter, backslash, ``..`` or empty part,
  no part longer than a file system allows (255 bytes) and no path longer than 1024 bytes;
- it is a file or a folder: symbolic links, hard links, devices and FIFOs are refused;
- no two members share a name (compared case-insensitively: macOS and Windows would merge them),
  and no name is both a file and a folder;
- the member count, each member's size, the total size and the compression ratio stay under
  :class:`Limits` (zip bombs).

Declared sizes can lie, so the bytes actually written are counted too, and unpacking stops at
the limit. Nothing is written outside the destination, which holds the whole archive or nothing.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
import tempfile
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import IntegrityError, SpecError, storage
from ..spec import SPEC_FILE

SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_CHUNK = 1 << 20
MAX_PART_BYTES = 255       # a file or folder name: the limit of nearly every file system
MAX_NAME_BYTES = 1024      # a member's whole path, well inside PATH_MAX once unpacked under the cache


@dataclass(frozen=True)
class Limits:
    """What an archive may hold. The compression ratio (unpacked bytes over packed bytes, per zip
    member and over the whole archive) applies above ``ratio_floor`` unpacked bytes, so that a
    small, very regular file (an all-zero mask) is not taken for a bomb. Weights barely compress
    (about 1.1x); a ratio of 100 is a bomb."""

    max_members: int = 10_000
    max_member_bytes: int = 4 << 30
    max_total_bytes: int = 8 << 30
    max_ratio: float = 100.0
    ratio_floor: int = 1 << 20


@dataclass(frozen=True)
class _Member:
    name: str          # normalised relative path
    is_dir: bool
    size: int          # declared uncompressed size
    packed: int | None  # compressed size (None for tar: its members share one compressed stream)
    handle: object     # ZipInfo or TarInfo


def is_archive(path: str | Path) -> bool:
    name = str(path).lower()
    return Path(path).is_file() and name.endswith(SUFFIXES)


def _shown(name: str, keep: int = 120) -> str:
    """A member's name short enough for a one-line message."""
    return name if len(name) <= keep else f"{name[:keep]}... ({len(name)} characters)"


def _refuse(archive: Path, member: str, why: str) -> IntegrityError:
    return IntegrityError(f"refusing archive {archive.name}: member '{_shown(member)}' {why}. Nothing was unpacked; "
                          "a package archive holds plain files under relative paths (make one with `zoo pack`).")


def _normalised(archive: Path, raw: str) -> str:
    """The member's name as a safe relative POSIX path, or an error naming it."""
    if not raw or "\x00" in raw:
        raise _refuse(archive, raw, "has an empty or NUL-bearing name")
    if "\\" in raw:
        raise _refuse(archive, raw, "has a backslash in its name (a Windows path)")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise _refuse(archive, raw, "has an absolute path")
    parts = [p for p in PurePosixPath(raw).parts if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, raw, "climbs out with '..'")
    if not parts:
        raise _refuse(archive, raw, "names no file")
    longest = max(len(p.encode()) for p in parts)
    if longest > MAX_PART_BYTES:
        raise _refuse(archive, raw, f"has a name part of {longest} bytes, more than the {MAX_PART_BYTES} a file "
                                    "system allows")
    name = "/".join(parts)
    if len(name.encode()) > MAX_NAME_BYTES:
        raise _refuse(archive, raw, f"has a path of {len(name.encode())} bytes, more than the {MAX_NAME_BYTES} allowed")
    return name


def _zip_members(archive: Path, z: zipfile.ZipFile) -> list[_Member]:
    members = []
    for info in z.infolist():
        mode = info.external_attr >> 16
        if info.flag_bits & 0x1:
            raise _refuse(archive, info.filename, "is encrypted")
        if stat.S_ISLNK(mode):
            raise _refuse(archive, info.filename, "is a symbolic link")
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):   # no type bits: a plain entry
            raise _refuse(archive, info.filename, "is not a regular file or folder")
        members.append(_Member(_normalised(archive, info.filename), info.is_dir(), info.file_size,
                               info.compress_size, info))
    return members


def _tar_members(archive: Path, t: tarfile.TarFile) -> list[_Member]:
    members = []
    for info in t.getmembers():
        if info.issym():
            raise _refuse(archive, info.name, f"is a symbolic link (to '{info.linkname}')")
        if info.islnk():
            raise _refuse(archive, info.name, f"is a hard link (to '{info.linkname}')")
        if not (info.isfile() or info.isdir()):
            raise _refuse(archive, info.name, "is a device, FIFO or other special file")
        members.append(_Member(_normalised(archive, info.name), info.isdir(), info.size, None, info))
    return members


def _check(archive: Path, members: list[_Member], limits: Limits) -> None:
    if len(members) > limits.max_members:
        raise _refuse(archive, members[limits.max_members].name,
                      f"is one of {len(members)} members, more than the {limits.max_members} allowed")
    seen: dict[str, _Member] = {}
    total, packed = 0, archive.stat().st_size
    for m in members:
        key = m.name.casefold()
        if key in seen and not (m.is_dir and seen[key].is_dir):       # a folder may be listed twice
            twice = "appears twice" if m.is_dir == seen[key].is_dir else "is both a file and a folder"
            raise _refuse(archive, m.name, f"{twice} (also as '{seen[key].name}')")
        seen[key] = m
        if m.is_dir:
            continue
        if m.size > limits.max_member_bytes:
            raise _refuse(archive, m.name, f"unpacks to {m.size} bytes, more than the {limits.max_member_bytes} allowed")
        if m.packed is not None and m.size > limits.ratio_floor and m.size > limits.max_ratio * max(m.packed, 1):
            raise _refuse(archive, m.name, f"unpacks {m.size / max(m.packed, 1):.0f}x its packed size, more than the "
                                           f"{limits.max_ratio:.0f}x allowed (a zip bomb?)")
        total += m.size
        if total > limits.max_total_bytes:
            raise _refuse(archive, m.name, f"takes the unpacked total past the {limits.max_total_bytes} bytes allowed")
        if total > limits.ratio_floor and total > limits.max_ratio * packed:
            raise _refuse(archive, m.name, f"takes the unpacked total to {total / packed:.0f}x the archive's size, more "
                                           f"than the {limits.max_ratio:.0f}x allowed (a zip bomb?)")
    files = {m.name.casefold(): m.name for m in members if not m.is_dir}
    for m in members:             # a file may not also be a folder ('a' and 'a/b')
        for parent in PurePosixPath(m.name.casefold()).parents:
            if str(parent) in files:
                raise _refuse(archive, m.name, f"lies under '{files[str(parent)]}', which is a file")


def _copy_limited(source, target: Path, name: str, archive: Path, declared: int) -> None:
    """Stream one member to ``target``, refusing it once it holds more bytes than it declared
    (declared sizes were checked against the limits; a forged header may lie)."""
    left = declared
    with open(target, "xb") as out:
        while chunk := source.read(_CHUNK):
            left -= len(chunk)
            if left < 0:
                raise _refuse(archive, name, f"holds more bytes than the {declared} it declares")
            out.write(chunk)


def extract(archive: str | Path, dest: str | Path, limits: Limits = Limits()) -> Path:
    """Unpack ``archive`` into the new folder ``dest`` (which must not exist), all or nothing."""
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise FileExistsError(dest)
    staging = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.partial")
    try:
        with _open(archive) as (kind, handle), storage(f"unpack {archive.name}"):
            try:
                _unpack(archive, kind, handle, staging, limits)
            except _CORRUPT as e:
                raise _corrupt(archive, e) from None
        os.rename(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _unpack(archive: Path, kind: str, handle, staging: Path, limits: Limits) -> None:
    members = _zip_members(archive, handle) if kind == "zip" else _tar_members(archive, handle)
    _check(archive, members, limits)
    staging.mkdir(parents=True)
    for m in members:
        target = staging.joinpath(*m.name.split("/"))
        if m.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with (handle.open(m.handle) if kind == "zip" else handle.extractfile(m.handle)) as source:
            _copy_limited(source, target, m.name, archive, m.size)


_CORRUPT = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error)


@contextlib.contextmanager
def _open(archive: Path):
    name = archive.name.lower()
    if not name.endswith(SUFFIXES):
        raise IntegrityError(f"{archive} is not a package archive: expected one of {', '.join(SUFFIXES)}")
    try:
        handle = zipfile.ZipFile(archive) if name.endswith(".zip") else tarfile.open(archive, "r:*")
    except (*_CORRUPT, OSError) as e:
        raise _corrupt(archive, e) from None
    with handle:
        yield ("zip" if name.endswith(".zip") else "tar"), handle


def _corrupt(archive: Path, e: Exception) -> IntegrityError:
    return IntegrityError(f"{archive} is not a readable archive ({type(e).__name__}: {e}); download it again "
                          "or ask its author for a new copy. Nothing was unpacked.")


def package_root(folder: Path) -> Path:
    """The package inside an unpacked archive: ``zoo.yaml`` at the top or in its one top folder."""
    if (folder / SPEC_FILE).is_file():
        return folder
    entries = [p for p in folder.iterdir()]
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / SPEC_FILE).is_file():
        return entries[0]
    raise SpecError(f"no {SPEC_FILE} at the top of the archive (nor in a single top folder): not a zoo package. "
                    "A bioimage.io package (rdf.yaml) is imported with `zoo import bioimageio`.")


@contextlib.contextmanager
def opened(source: str | Path, limits: Limits = Limits()):
    """The package folder of ``source``: the folder itself, or an archive unpacked into a temporary
    folder (removed afterwards)."""
    source = Path(source)
    if not is_archive(source):
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="zoo-archive-") as tmp:
        yield package_root(extract(source, Path(tmp) / "package", limits))


def write_zip(entries: dict[str, Path], out: str | Path) -> Path:
    """A zip of ``{name in the archive: file}``, in name order with fixed times and modes, so that
    the same files always give the same bytes; written beside ``out`` and renamed into place."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        with storage(f"write {out}"), zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for name in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, Path(entries[name]).read_bytes())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def pack(package: str | Path, out: str | Path) -> Path:
    """A zip of the package's own files (those the spec lists), verified first; the same package
    always gives the same bytes."""
    from ..spec import load
    from .files import package_files, safe_join, verify

    package = Path(package)
    spec = load(package)
    verify(spec, package)
    return write_zip({rel: safe_join(package, rel) for rel in package_files(spec)}, out)
