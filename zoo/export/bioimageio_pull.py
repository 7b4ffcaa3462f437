"""``zoo pull bioimageio:<id>`` and ``zoo.load("bioimageio:<id>")``: a model of the bioimage.io
Model Zoo by its id (e.g. ``affable-shark``), imported into the verified cache.

The id is resolved as bioimageio.spec resolves it (``load_description("affable-shark")``), with
the URLs from its settings (``bioimageio.spec.settings``, read at each call; set through the
environment before bioimageio.spec is imported, or assigned in a running process):

1. ``collection_http_pattern`` (``BIOIMAGEIO_COLLECTION_HTTP_PATTERN``, default
   ``https://hypha.aicell.io/bioimage-io/artifacts/{bioimageio_id}/files/rdf.yaml``) names the
   description; the files it lists by relative path sit beside it;
2. when that fails, the collection index ``id_map`` (``BIOIMAGEIO_ID_MAP``; with
   ``resolve_draft``, ``id_map_draft`` too): ``{id: {"source": URL, "sha256": ...}}``, the
   source being a description or a package ``.zip``.

What is downloaded: the description, its test tensors and the chosen weights (with their
architecture source for a state dict), each checked against the sha256 the description pins (a
zip against the index's sha256) before anything reads it; other weight formats, covers and
documentation are not. The chosen format is the importer's choice (``weights`` picks one); a
file the description names by absolute URL is downloaded too and the local description names it
by file name. The import then runs offline on those files
(:func:`zoo.export.bioimageio_import.import_package`), and the zoo package it writes is moved
into the cache beside pulled packages (``packages/<name>/<version>/<zoo.yaml sha256>``), with a
note of where it came from (``bioimageio/<id>/<weights>.json``). Nothing is written to the cache
before every check passed.

Afterwards the id works offline: with ``--offline`` / ``ZOO_OFFLINE=1`` (or when the network is
unreachable) the cached import is used, its files verified against its zoo.yaml; online, the
description (or the index entry) is read again and the cached import reused when it has not
changed, so a second pull moves only the description's bytes.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
import shutil
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

from .. import spec as specs
from ..errors import InputError, IntegrityError, NotFoundError, ZooError
from ..hashing import sha256_file
from ..package import archive, files

log = logging.getLogger("zoo.export")

PREFIX = "bioimageio:"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9._-]+)*")


@dataclass
class BioimageioPull:
    id: str
    path: Path                 # the imported zoo package in the cache
    spec: specs.Spec
    url: str | None            # where the description came from (None: offline, from the cache)
    weights: str | None        # the weight format imported (None: the importer's choice, from the cache)
    bytes_moved: int           # bytes downloaded by this call
    cached: bool               # the cached import was reused


def names_bioimageio(ref) -> bool:
    """Whether a reference names a bioimage.io model by id (``bioimageio:affable-shark``)."""
    return isinstance(ref, str) and ref.startswith(PREFIX)


def pull_bioimageio(model_id: str, *, weights: str | None = None, trust_code: bool = False,
                    cache: str | Path | None = None, offline: bool | None = None) -> Path:
    """The folder of the zoo package imported from the bioimage.io model ``model_id`` (with or
    without the ``bioimageio:`` prefix), pulled into the verified cache (see the module
    docstring). ``weights`` picks the weight format; ``trust_code`` lets a state dict's own
    architecture source run once, at import; ``offline`` (default: ZOO_OFFLINE /
    HF_HUB_OFFLINE) uses the cache alone."""
    return fetch(model_id, weights=weights, trust_code=trust_code, cache=cache, offline=offline).path


def fetch(model_id: str, *, weights: str | None = None, trust_code: bool = False,
          cache: str | Path | None = None, offline: bool | None = None) -> BioimageioPull:
    """:func:`pull_bioimageio`, telling what it did (for the CLI's report)."""
    from ..paths import zoo_cache
    from ..registry.local import file_lock
    from ..registry.remote import offline_by_default

    model_id = _checked_id(model_id)
    cache = Path(cache) if cache else zoo_cache()
    offline = offline_by_default() if offline is None else offline
    note = _note_path(cache, model_id, weights)
    with file_lock(cache / ".locks" / f"bioimageio-{_key(model_id)}.lock"):
        if offline:
            return _from_cache(model_id, cache, note, weights, reason="offline (--offline, ZOO_OFFLINE or "
                               "HF_HUB_OFFLINE)")
        tmp = cache / ".tmp" / uuid.uuid4().hex
        try:
            known = (_read_note(note) or {}).get("fingerprint")
            try:
                found = _resolve(model_id, tmp / "download", known)
            except _Unreachable as e:
                if note.is_file():
                    log.warning("%s; using the copy of bioimageio:%s in the cache", e, model_id)
                    return _from_cache(model_id, cache, note, weights, reason=str(e))
                raise ZooError(f"bioimageio:{model_id}: {e}; check the network (nothing is cached for this id yet)") \
                    from None
            cached = _reusable(note, cache, found.fingerprint)
            if cached is not None:
                spec, path, fmt = cached
                return BioimageioPull(model_id, path, spec, found.url, fmt, found.bytes, True)
            if found.rdf is None:              # the index says "unchanged", but the cached import is damaged
                found = _resolve(model_id, tmp / "download-again", None)
            path, spec, fmt, moved = _import(model_id, found, tmp, cache, weights, trust_code)
            _write_note(note, {"id": model_id, "url": found.url, "fingerprint": found.fingerprint,
                               "weights": fmt, "package": path.relative_to(cache).as_posix()})
            return BioimageioPull(model_id, path, spec, found.url, fmt, found.bytes + moved, False)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- ids and the cache
def _checked_id(model_id: str) -> str:
    text = str(model_id)
    text = text[len(PREFIX):] if text.startswith(PREFIX) else text
    text = text.strip()
    if not _ID.fullmatch(text) or ".." in text.split("/"):
        raise InputError(f"'{model_id}' is not a bioimage.io model id: expected e.g. bioimageio:affable-shark "
                         "(letters, digits, '.', '_', '-', parts separated by '/')")
    return text


def _key(model_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model_id)[:80]
    return f"{safe}-{hashlib.sha256(model_id.encode()).hexdigest()[:8]}"


def _note_path(cache: Path, model_id: str, weights: str | None) -> Path:
    return cache / "bioimageio" / _key(model_id) / f"{weights or 'default'}.json"


def _write_note(path: Path, data: dict) -> None:
    from ..registry.base import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)


def _read_note(note: Path) -> dict | None:
    try:
        data = json.loads(note.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("package"), str) else None


def _cached_package(cache: Path, data: dict) -> tuple[specs.Spec, Path]:
    path = files.safe_join(cache, data["package"])
    spec = specs.load(path)
    files.verify(spec, path)
    return spec, path


def _reusable(note: Path, cache: Path, fingerprint: str) -> tuple[specs.Spec, Path, str | None] | None:
    """(spec, folder, weight format) of the cached import, when it came from this very
    description and is intact."""
    data = _read_note(note)
    if data is None or data.get("fingerprint") != fingerprint:
        return None
    try:
        return (*_cached_package(cache, data), data.get("weights"))
    except ZooError as e:
        log.warning("the cached import of %s is damaged (%s); importing it again", data.get("id"), e)
        return None


def _from_cache(model_id: str, cache: Path, note: Path, weights: str | None, reason: str) -> BioimageioPull:
    """The cached import of ``model_id``: the one pulled with these ``weights``, else any pulled
    import of the same format (``weights``), else, without ``weights``, any import of the id."""
    data = _read_note(note)
    if data is None:
        others = (_read_note(p) for p in sorted(note.parent.glob("*.json")) if p != note)
        data = next((d for d in others if d and (weights is None or d.get("weights") == weights)), None)
    if data is None:
        from bioimageio.spec import settings

        raise NotFoundError(f"bioimageio:{model_id} is not in the cache, and it cannot be downloaded: {reason}. "
                            f"Pull it once online (it is looked up at "
                            f"{settings.collection_http_pattern.format(bioimageio_id=model_id)}"
                            f"{', then in ' + settings.id_map if settings.id_map else ''})"
                            + (f" with --weights {weights}" if weights else ""))
    try:
        spec, path = _cached_package(cache, data)
    except ZooError as e:
        raise NotFoundError(f"bioimageio:{model_id}: the cached import is gone or damaged ({e}), and it cannot be "
                            f"downloaded again: {reason}. Pull it again online") from None
    return BioimageioPull(model_id, path, spec, None, data.get("weights"), 0, True)


# ----------------------------------------------------------------------------- resolving
class _Unreachable(Exception):
    """The network or the server failed (not: the id is unknown)."""


@dataclass
class _Found:
    url: str                   # the description's URL, or the package zip's
    fingerprint: str           # sha256 of the description's bytes, or the index's sha256 of the zip
    folder: Path               # where the description (and, for a zip, every file) now is
    rdf: Path | None           # None: not downloaded, the index pins the cached import's sha256
    bytes: int
    base: str | None           # URL of the folder holding the description's files (None: a zip)


def _get(url: str, dest: Path) -> int:
    """Download ``url`` to ``dest``; NotFoundError for 403/404/410, _Unreachable for the rest."""
    from ..registry.http import HttpStore

    try:
        return HttpStore(url.rsplit("/", 1)[0]).fetch_url(url, dest)
    except NotFoundError:
        raise
    except ZooError as e:
        raise _Unreachable(str(e)) from None


def _resolve(model_id: str, work: Path, known: str | None) -> _Found:
    """The description of ``model_id``, as bioimageio.spec resolves it (see the module docstring);
    a package zip whose index sha256 is ``known`` (the cached import's) is not downloaded again."""
    from bioimageio.spec import settings

    tried = []
    work.mkdir(parents=True, exist_ok=True)
    if settings.collection_http_pattern:
        url = settings.collection_http_pattern.format(bioimageio_id=model_id)
        dest = work / "description" / (url.split("?")[0].rsplit("/", 1)[-1] or "rdf.yaml")
        try:
            moved = _get(url, dest)
        except NotFoundError:
            tried.append(f"{url} (not found)")
        except _Unreachable as e:
            tried.append(f"{url} ({e})")
        else:
            return _Found(url, sha256_file(dest), dest.parent, dest, moved, url.split("?")[0].rsplit("/", 1)[0])
    maps = ([settings.id_map_draft] if settings.resolve_draft and settings.id_map_draft else []) + \
        ([settings.id_map] if settings.id_map else [])
    entries: dict = {}
    moved = 0
    unreachable = []
    for k, map_url in enumerate(maps):
        dest = work / f"id_map_{k}.json"
        try:
            moved += _get(map_url, dest)
            data = json.loads(dest.read_text(encoding="utf-8"))
        except NotFoundError:
            tried.append(f"{map_url} (not found)")
            continue
        except _Unreachable as e:
            unreachable.append(f"{map_url} ({e})")
            continue
        except ValueError as e:
            raise ZooError(f"{map_url} is not a bioimage.io id map (invalid JSON: {e})") from None
        if not isinstance(data, dict):
            raise ZooError(f"{map_url} is not a bioimage.io id map (expected {{id: {{source, sha256}}}})")
        entries.update(data)                  # the published map wins over drafts, as in bioimageio.spec
    if model_id in entries:
        entry = entries[model_id]
        source = entry.get("source") if isinstance(entry, dict) else None
        if not isinstance(source, str) or not source.startswith(("http://", "https://")):
            raise ZooError(f"the id map's entry for {model_id} names no http(s) source: {entry!r}")
        return _from_index(source, entry.get("sha256"), work, moved, known)
    if unreachable and not entries:
        raise _Unreachable(f"bioimage.io cannot be reached: {'; '.join(tried + unreachable)}")
    close = difflib.get_close_matches(model_id, [str(k) for k in entries], n=3)
    raise NotFoundError(f"bioimageio:{model_id} is not a bioimage.io model id: looked up {'; '.join(tried)}"
                        + (f"; not in {', '.join(m for m in maps)}" if entries else "")
                        + (f". Did you mean {' or '.join(close)}?" if close else "")
                        + " (the URLs are bioimageio.spec's settings: BIOIMAGEIO_COLLECTION_HTTP_PATTERN, "
                          "BIOIMAGEIO_ID_MAP)")


def _from_index(source: str, sha256: str | None, work: Path, moved: int, known: str | None) -> _Found:
    if sha256 and known and str(sha256).lower() == known:
        return _Found(source, known, work, None, moved, None)
    name = source.split("?")[0].rsplit("/", 1)[-1] or "rdf.yaml"
    dest = work / "description" / name
    moved += _get(source, dest)
    actual = sha256_file(dest)
    if sha256 and actual != str(sha256).lower():
        raise IntegrityError(f"{source}: sha256 {actual[:12]}... differs from the {str(sha256)[:12]}... the bioimage.io "
                             "id map pins: it was changed or corrupted in transit. Nothing was cached.")
    if name.lower().endswith(".zip") or dest.read_bytes()[:4] == b"PK\x03\x04":
        from .bioimageio_import import find_description

        folder = archive.extract(dest, work / "package")
        inner = [p for p in folder.iterdir()]
        if not any(p.is_file() for p in inner) and len(inner) == 1:
            folder = inner[0]                 # a zip holding one top folder
        return _Found(source, str(sha256 or actual).lower(), folder, find_description(folder), moved, None)
    return _Found(source, actual, dest.parent, dest, moved, source.split("?")[0].rsplit("/", 1)[0])


# ----------------------------------------------------------------------------- downloading and importing
def _needed(raw: dict, fmt: str) -> list[tuple[list, str | None]]:
    """(where in the raw description, sha256) of each file the import of ``fmt`` reads: the test
    tensors, the weights and a state dict's architecture source. A location is a key path into
    ``raw`` whose value is the file's source (a string)."""
    out: list[tuple[list, str | None]] = []
    v04 = str(raw.get("format_version", "")).startswith("0.4")
    if v04:
        out += [(["test_inputs", k], None) for k in range(len(raw.get("test_inputs") or []))]
        out += [(["test_outputs", k], None) for k in range(len(raw.get("test_outputs") or []))]
    else:
        for kind in ("inputs", "outputs"):
            for k, t in enumerate(raw.get(kind) or []):
                if isinstance(t.get("test_tensor"), dict):
                    out.append(([kind, k, "test_tensor", "source"], t["test_tensor"].get("sha256")))
    entry = (raw.get("weights") or {}).get(fmt) or {}
    out.append((["weights", fmt, "source"], entry.get("sha256")))
    arch = entry.get("architecture") if fmt == "pytorch_state_dict" else None
    if isinstance(arch, dict) and arch.get("source"):
        out.append((["weights", fmt, "architecture", "source"], arch.get("sha256")))
    elif isinstance(arch, str) and ".py:" in arch:             # 0.4: "file.py:Callable"
        out.append((["weights", fmt, "architecture"], entry.get("architecture_sha256")))
    return out


def _at(raw, where: list):
    for key in where:
        raw = raw[key]
    return raw


def _set(raw, where: list, value) -> None:
    _at(raw, where[:-1])[where[-1]] = value


def _download_needed(found: _Found, raw: dict, fmt: str) -> tuple[int, bool]:
    """Fetch what the import of ``fmt`` reads into ``found.folder``, each checked against its
    sha256; files named by absolute URL are renamed in ``raw``. Returns (bytes, raw changed)."""
    moved, changed = 0, False
    for where, sha256 in _needed(raw, fmt):
        value = str(_at(raw, where))
        source, callable_ = (value.rsplit(":", 1) if where[-1] == "architecture" else (value, None))
        if "://" in source:
            name = f"remote-{len(where)}-{source.split('?')[0].rsplit('/', 1)[-1]}"
            url, rel = source, name
            _set(raw, where, f"{name}:{callable_}" if callable_ else name)
            changed = True
        elif found.base is None:              # a zip: everything is already here
            rel, url = source, None
        else:
            rel = source.removeprefix("./")
            url = f"{found.base}/{urllib.parse.quote(rel)}"
        target = files.safe_join(found.folder, rel)
        if url is not None and not target.is_file():
            try:
                moved += _get(url, target)
            except NotFoundError:
                raise NotFoundError(f"{'.'.join(map(str, where))}: the description names {source}, and {url} is not "
                                    "on the server (HTTP 404): the bioimage.io package is incomplete") from None
            except _Unreachable as e:
                raise ZooError(f"{'.'.join(map(str, where))}: downloading {url} failed ({e}); run the same command "
                               "again to resume") from None
        if not target.is_file():
            raise InputError(f"{'.'.join(map(str, where))}: {source} is not in the package")
        if sha256 and sha256_file(target) != str(sha256).lower():
            raise IntegrityError(f"{url or source}: sha256 differs from the {str(sha256)[:12]}... the description "
                                 "pins: it was changed or corrupted. Nothing was cached.")
    return moved, changed


def _import(model_id: str, found: _Found, tmp: Path, cache: Path, weights: str | None,
            trust_code: bool) -> tuple[Path, specs.Spec, str, int]:
    import yaml

    from .bioimageio_import import choose_weights, import_package, read_description

    descr, raw = read_description(found.rdf)     # validated, nothing downloaded
    fmt = choose_weights(descr, raw, weights, trust_code)
    moved, changed = _download_needed(found, raw, fmt)
    rdf = found.rdf
    if changed:
        rdf = found.rdf.with_name("bioimageio.yaml" if found.rdf.name != "bioimageio.yaml" else "rdf.yaml")
        rdf.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
        found.rdf.unlink()
    out = tmp / "imported"
    options = {"trust_code": True} if trust_code else {}
    import_package(rdf, out, name=re.sub(r"[^a-z0-9._-]+", "-", model_id.lower()).strip("-.")[:64],
                   weights=fmt, offline=True, **options)
    spec = specs.load(out)
    files.verify(spec, out)
    target = cache / "packages" / spec.name / spec.version / sha256_file(out / specs.SPEC_FILE)[:16]
    if target.is_dir():
        try:
            files.verify(spec, target)
        except ZooError:
            log.warning("cached copy of %s is damaged; replacing it", spec.ref)
            shutil.rmtree(target, ignore_errors=True)
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(out, target)
    log.info("bioimageio:%s imported with its %s weights as %s (%s)", model_id, fmt, spec.ref, target)
    return target, spec, fmt, moved
