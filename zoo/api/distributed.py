"""Prediction on Dask: ``zoo predict ... --cluster SPEC``, ``predict_distributed`` in Python, and
``zoo.predict(..., client=...)`` (:func:`predict_on_cluster`) for arrays and files."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import InputError

SCALE_OPTIONS = ("pixel_size", "diameter", "anisotropy", "channels", "stitch_threshold")


def _one_image(inputs, out: Path) -> Path | None:
    """The single image of ``inputs`` when it is one image predicted into one output, else None."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if len(items) != 1 or any(c in str(items[0]) for c in "*?["):
        return None
    path = Path(items[0])
    if path.is_dir() and path.suffix.lower() != ".zarr":
        return None
    return path if out.suffix else None


def predict_distributed(model_ref: str | Path, inputs, out: str | Path, client=None, *, registry: str | Path | None = None,
                        runtime: str = "onnx", device: str = "auto", axes: str | None = None,
                        overwrite: bool = False, chunk: int | None = None,
                        progress: Callable[[int, int], None] | None = None,
                        on_file: Callable[[int, int, Path], None] | None = None, planner=None, **options):
    """Predict on Dask workers. ``client``: a ``distributed.Client``, or a spec for
    :func:`zoo.distributed.cluster.client_for` (``"local:2"``, ``"tcp://HOST:PORT"``,
    ``"SCHEDULER.json"``; None: ``local``), closed afterwards when started here.

    Every worker loads ``model_ref`` once (``registry``: a folder or URL the workers read; default
    their local registry) and verifies it. One image into an ``out`` ending in ``.zarr`` is cut
    into chunks written by the workers (:mod:`zoo.distributed.image`; returns the output's
    shape); files, folders and globs go into the folder ``out`` (:mod:`zoo.distributed.files`;
    returns a :class:`zoo.api.batch.BatchReport`). ``options``: tile, batch_size, blend, raw
    (and for files, the scale options of :func:`zoo.api.predict_file`). ``planner``: the Model
    ``model_ref`` names, when it is loaded here already (it plans the tiles; else it is loaded)."""
    from ..distributed import cluster, plugin

    out = Path(out)
    single = _one_image(inputs, out)
    if single is not None and any(options.get(k) is not None for k in SCALE_OPTIONS):
        raise InputError("one image on a cluster is predicted at its own scale and channels: without --pixel-size, "
                         "--diameter, --anisotropy, --channels or --stitch-threshold (or predict it without --cluster)")
    if single is not None and not single.exists():
        raise InputError(f"image not found: {single}")
    if single is not None and out.suffix.lower() != ".zarr":
        raise InputError(f"with --cluster one image is cut into chunks that the workers write into an OME-Zarr: "
                         f"give -o {out.with_suffix('.zarr').name} (not {out.name})")
    if single is not None:
        from ..imageio import check_output

        check_output(out, overwrite, single)          # before a cluster starts (again when complete)
    given = client is not None and not isinstance(client, (str, Path))
    client = client if given else cluster.client_for(str(client or "local"))
    try:
        name = plugin.register(client, model_ref, registry, runtime, device)
        if single is None:
            from ..distributed.files import predict_files

            return predict_files(client, name, inputs if isinstance(inputs, (list, tuple)) else [inputs], out,
                                 axes=axes, overwrite=overwrite, on_file=on_file, **options)
        from ..distributed.image import predict_image

        if planner is None:
            from ..loading import load
            from ..registry.remote import registry_for

            planner = load(model_ref, runtime=runtime, device="cpu",
                           registry=None if registry is None else registry_for(registry))
        return predict_image(client, planner, name, single, out, axes=axes, overwrite=overwrite, chunk=chunk,
                             progress=progress, **{k: v for k, v in options.items() if k not in SCALE_OPTIONS})
    finally:
        if not given:
            cluster.close(client)


def worker_ref(model) -> dict:
    """How the workers load ``model`` (a reference, or a Model): ``model_ref``, ``registry``, ``runtime``
    and ``device`` for :func:`predict_distributed`.

    A Model pulled through a registry is loaded there by its ``name@version`` (each worker pulls
    it into its own cache and checks every sha256); any other Model by its package folder, which
    the workers must see (they verify it as they load it)."""
    if isinstance(model, (str, Path)):
        return {"model_ref": str(model)}
    if model.root is None:
        raise InputError(f"{model.spec.ref} is held in memory only (no package folder), so Dask workers cannot load "
                         "it: save or publish its package and pass its name or folder")
    kw = {"runtime": model.runtime, "device": model.device}
    installed = model.installed
    cache, root = getattr(installed, "cache", None), getattr(installed, "root", None)
    if cache is not None and root is not None and Path(model.root).resolve().is_relative_to(Path(cache).resolve()) \
            and _lists(installed, model.spec):
        from ..registry import default_registry

        default = installed is None or str(root) == str(default_registry().root)
        return {"model_ref": model.spec.ref, "registry": None if default else str(root), **kw}
    return {"model_ref": str(model.root), **kw}


def _lists(registry, spec) -> bool:
    """Whether ``registry`` lists ``spec``'s name and version (a model it was pulled from)."""
    try:
        return spec.version in registry.index().get(spec.name, {})
    except Exception:        # noqa: BLE001 - unreadable or offline: the package folder is used instead
        return False


def predict_on_cluster(model, image, client, *, axes: str | None = None, out: str | Path | None = None,
                       scratch: str | Path | None = None, **options):
    """``zoo.predict(model, image, client=...)``: ``image`` predicted on the Dask workers of
    ``client`` (a ``distributed.Client`` or a spec, see :func:`predict_distributed`).

    - An array: saved under ``scratch`` (a folder every worker can read; default the system's
      temporary folder, which suits a local cluster), predicted there in chunks into an OME-Zarr
      by the workers, and returned in the array's layout, as ``model.predict`` returns it (the
      staged files are removed).
    - Files: as :func:`predict_distributed` (one image into an ``out`` ending in ``.zarr``; a
      folder, a glob or several files into the folder ``out``)."""
    import numpy as np

    how = worker_ref(model)
    if not isinstance(model, (str, Path)):
        how["planner"] = model
    if isinstance(image, (str, Path)) or (isinstance(image, (list, tuple)) and image
                                          and all(isinstance(i, (str, Path)) for i in image)):
        if out is None:
            raise InputError("predicting files on a cluster needs out=: a folder for the outputs, or an OME-Zarr "
                             "(out='result.zarr') for one image cut into chunks")
        return predict_distributed(inputs=image, out=out, client=client, axes=axes, **how, **options)
    if isinstance(image, dict):
        raise InputError("several input tensors are not predicted on a cluster: call predict without client=")
    if out is not None:
        raise InputError("an array predicted on a cluster comes back as an array: leave out out= (or save the "
                         "image as OME-Zarr and predict the file into out='result.zarr')")
    import shutil
    import tempfile

    from ..omezarr import open_omezarr

    staging = Path(tempfile.mkdtemp(prefix="zoo-dask-", dir=None if scratch is None else str(scratch)))
    try:
        np.save(staging / "input.npy", np.asarray(image))
        predict_distributed(inputs=staging / "input.npy", out=staging / "output.zarr", client=client, axes=axes,
                            **how, **options)
        return np.asarray(open_omezarr(staging / "output.zarr")[0][...])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
