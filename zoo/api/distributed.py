"""Prediction on Dask: ``zoo predict ... --cluster SPEC`` and ``predict_distributed`` in Python."""
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
                        on_file: Callable[[int, int, Path], None] | None = None, **options):
    """Predict on Dask workers. ``client``: a ``distributed.Client``, or a spec for
    :func:`zoo.distributed.cluster.client_for` (``"local:2"``, ``"tcp://HOST:PORT"``,
    ``"SCHEDULER.json"``; None: ``local``), closed afterwards when started here.

    Every worker loads ``model_ref`` once (``registry``: a folder or URL the workers read; default
    their local registry) and verifies it. One image into an ``out`` ending in ``.zarr`` is cut
    into chunks written by the workers (:mod:`zoo.distributed.image`; returns the output's
    shape); files, folders and globs go into the folder ``out`` (:mod:`zoo.distributed.files`;
    returns a :class:`zoo.api.batch.BatchReport`). ``options``: tile, batch_size, blend, raw
    (and for files, the scale options of :func:`zoo.api.predict_file`)."""
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
        from ..loading import load
        from ..registry.remote import registry_for

        planner = load(model_ref, runtime=runtime, device="cpu",
                       registry=None if registry is None else registry_for(registry))
        return predict_image(client, planner, name, single, out, axes=axes, overwrite=overwrite, chunk=chunk,
                             progress=progress, **{k: v for k, v in options.items() if k not in SCALE_OPTIONS})
    finally:
        if not given:
            cluster.close(client)
