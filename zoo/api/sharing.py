"""Registries and packages: find, pull, publish and validate."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..loading import load


def registry(url: str | Path | None = None, offline: bool | None = None):
    """The registry ``url`` names (a folder, ``local``, ``http(s)://HOST/ROOT``, ``hf://ORG``); the
    embedded local registry for None."""
    from ..registry.remote import registry_for

    return registry_for(url, offline=offline)


def registry_and_ref(text: str, default=None):
    """(registry, reference) of a reference that may carry its registry (``hf://ORG/NAME@1.0``,
    ``http://host/root/NAME``); ``default`` (or the local registry) otherwise."""
    from ..registry.remote import is_url, split_ref

    if is_url(text):
        url, ref = split_ref(text)
        return registry(url), ref
    return _as_registry(default), text


def _as_registry(value):
    """A registry object as it is; a URL or folder as the registry it names; None as the local one."""
    return registry(value) if value is None or isinstance(value, (str, Path)) else value


def as_model(model_or_ref, runtime: str = "auto", device: str = "auto", registry=None):
    """A Model as it is; a reference loaded as :func:`zoo.load` loads it (the same default runtime)."""
    return model_or_ref if hasattr(model_or_ref, "spec") else load(model_or_ref, runtime, device, registry)


@dataclass
class Pulled:
    spec: Any
    path: Path
    bytes_moved: int | None      # None: an archive (nothing counted)
    how: str                     # "copied" (local registry), "downloaded" (remote), "unpacked" (archive)


def pull(ref: str, registry=None, sha256: str | None = None, weights: str | None = None,
         trust_code: bool = False) -> Pulled:
    """A verified copy of a package in the cache: from a registry, a package archive (``PKG.zip``,
    ``https://HOST/PKG.zip``; ``sha256``: the archive's, checked before unpacking), or a
    bioimage.io model by id (``bioimageio:ID``, imported; ``weights``, ``trust_code``: see
    :func:`zoo.export.bioimageio_import.import_package`)."""
    if isinstance(ref, str) and ref.startswith("bioimageio:"):
        from ..export.bioimageio_pull import fetch

        got = fetch(ref, weights=weights, trust_code=trust_code)
        return Pulled(got.spec, got.path, got.bytes_moved,
                      "checked, already imported" if got.cached else f"downloaded and imported ({got.weights})")
    from ..registry import LocalRegistry
    from ..registry.archives import names_archive, pull_archive

    if names_archive(ref):
        from ..paths import zoo_cache

        spec, path = pull_archive(ref, zoo_cache(), sha256=sha256)
        return Pulled(spec, path, None, "unpacked")
    reg, ref = registry_and_ref(ref, registry)
    spec, path = reg.pull(ref)
    return Pulled(spec, path, reg.bytes_moved, "copied" if isinstance(reg, LocalRegistry) else "downloaded")


def search(text: str | None = None, task: str | None = None, tag: str | None = None,
           architecture: str | None = None, axes: str | None = None, registry=None) -> list[dict]:
    """The index rows of ``registry`` (a registry, its URL or folder; the local one for None) that
    match every criterion given, best first: words of ``text`` in the name, description or tags,
    the task (or its family, ``segmentation``), a tag, the architecture id, the input axes
    (``bcyx``). Each row holds ``name``, ``version``, ``task``, ``description``, ``tags`` ..."""
    from ..registry.remote import search as matching

    return matching(_as_registry(registry).entries(), text=text or None, task=task or None, tag=tag or None,
                    architecture=architecture or None, axes=axes or None)


def lineage(ref: str | Path, registry=None) -> list:
    """The package ``ref`` (a reference or a package folder) followed by the packages it was
    fine-tuned from, each checked against ``registry``: a list of :class:`zoo.lineage.Link`
    (``ref``, ``sha256``, ``status``: package, verified, missing or mismatch)."""
    from ..lineage import chain

    return chain(_as_registry(registry), ref)


def reproduce_test_tensors(spec, root: Path) -> dict[str, float]:
    """Each runtime that can run the package reproduces its test tensors; returns runtime -> max
    error as a multiple of the tolerance (a ReproducibilityError says where it fails)."""
    from ..model import Model, runtimes_of

    return {runtime: Model(spec, root, runtime=runtime, device="cpu", verified=True).test()
            for runtime in runtimes_of(spec)}


def publish(package: str | Path, registry=None, test: bool = True):
    """Publish a package folder or archive: the registry validates the spec and every sha256 and
    stores it atomically; with ``test`` the test tensors are reproduced first (torch and ONNX
    Runtime, ONNX Runtime alone for an imported graph). Returns the registry's ``Published``."""
    return _as_registry(registry).publish(package, check=reproduce_test_tensors if test else None)


@dataclass
class Validated:
    spec: Any
    root: Path | None
    ratios: dict = field(default_factory=dict)     # runtime -> max error / tolerance (packages only)


def validate(target: str | Path, registry=None) -> Validated:
    """Validate a spec file, a package folder or a registry package: the schema, for a package
    every sha256 and the test tensors reproduced by each runtime."""
    from .. import spec as specs

    path = Path(target)
    if path.is_file():
        spec = specs.load(path)
        if spec.kind == "blueprint" or path.name != specs.SPEC_FILE:
            return Validated(spec, None)
        root = path.parent
    elif path.is_dir():
        spec, root = specs.load(path), path
    else:
        spec, root = _as_registry(registry).pull(str(target))
    if spec.kind != "package":
        return Validated(spec, root)
    from ..package import files

    files.verify(spec, root)
    return Validated(spec, root, reproduce_test_tensors(spec, root))
