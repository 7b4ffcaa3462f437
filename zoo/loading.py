"""One path from a reference to a ready model (as timm's ``create_model``): a name in a registry,
a registry URL, a package folder or a package archive -> a verified :class:`zoo.model.Model`.
Re-exported as ``zoo.load`` and ``zoo.api.load``; the server and trainers load through it too."""
from __future__ import annotations

from pathlib import Path


def load(ref: str | Path, runtime: str = "auto", device: str = "auto", registry=None, precision: str | None = None):
    """A ready :class:`zoo.model.Model` for ``NAME[@VERSION]``, ``REGISTRY_URL/NAME[@VERSION]``
    (``hf://ORG/...``, ``https://host/root/...``), a package folder/zoo.yaml, or a package archive
    (``PKG.zip``, ``https://host/PKG.zip``, unpacked safely into the cache), or a bioimage.io
    model by id (``bioimageio:affable-shark``: downloaded, imported and cached once).

    Names are resolved in the local registry (``registry`` or the default one) and pulled into
    the cache; every file's sha256 is verified before anything is loaded. ``runtime="auto"``: the
    fastest for the package here (:mod:`zoo.runtime.calibration`); ``precision``: fp16, bf16 or int8
    (:mod:`zoo.runtime.precision`; default float32)."""
    from .model import Model, from_path
    from .registry import default_registry

    path = Path(ref)
    if path.is_dir() or (path.suffix in (".yaml", ".yml") and path.is_file()):
        return _knowing(from_path(path, runtime=runtime, device=device, precision=precision),
                        registry or default_registry())
    if isinstance(ref, str) and ref.startswith("bioimageio:"):     # bioimageio:affable-shark, imported once
        from .export.bioimageio_pull import pull_bioimageio

        return _knowing(from_path(pull_bioimageio(ref), runtime=runtime, device=device, precision=precision),
                        registry or default_registry())
    from .registry.archives import names_archive, pull_archive
    from .registry.remote import is_url, registry_for, split_ref

    if names_archive(ref):               # PKG.zip, https://host/PKG.zip
        from .paths import zoo_cache

        spec, root = pull_archive(ref, zoo_cache())
        return _knowing(Model(spec, root, runtime=runtime, device=device, precision=precision, verified=True),
                        default_registry())
    if is_url(ref):                      # hf://ORG/NAME@1.0, https://host/root/NAME
        url, ref = split_ref(str(ref))
        registry = registry_for(url)
    reg = registry or default_registry()
    spec, root = reg.pull(str(ref))
    return _knowing(Model(spec, root, runtime=runtime, device=device, precision=precision, verified=True), reg)


def _knowing(model, registry):
    """``model``, told which registry its hints may name packages from."""
    model.installed = registry
    return model
