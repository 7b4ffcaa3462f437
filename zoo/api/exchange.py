"""Other formats and services: export, import, new versions and serving."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .sharing import registry_and_ref


def export(package, fmt: str, out: str | Path, registry=None, **options):
    """Export a package (folder or reference) as ``bioimageio`` (returns (rdf, report)) or
    ``triton`` (returns the model repository folder)."""
    reg, ref = registry_and_ref(str(package), registry)
    root = Path(ref) if Path(ref).is_dir() else reg.pull(ref)[1]
    if fmt == "bioimageio":
        from ..export.bioimageio import export as to_bioimageio

        return to_bioimageio(root, out)
    from ..export.triton import export as to_triton

    return to_triton(root, out, **options)


def import_model(fmt: str, source: str | Path, out: str | Path, **options) -> Path:
    """A package from what the field publishes: ``bioimageio`` (a folder, rdf.yaml or zip) or
    ``onnx`` (a graph trained anywhere, see docs/publishing.md)."""
    if fmt == "onnx":
        from ..export.onnx_import import import_onnx

        return import_onnx(source, out, **options)
    from ..export.bioimageio_import import import_package

    return import_package(source, out, **options)


def bump(package: str | Path, out: str | Path, version: str, **changes) -> Path:
    """The next version of a package, written beside it, with what changed recomputed."""
    from ..package.bump import bump as run

    return run(package, out, version, **changes)


def serve(refs: Sequence[str], **options) -> None:
    """Serve ``refs`` over HTTP until interrupted (see :func:`zoo.serve.server.serve`)."""
    from ..serve.server import serve as run

    run(list(refs), **options)
