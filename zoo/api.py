"""The application layer: one function for each thing a user does with the zoo.

Every face (the ``zoo`` command, the HTTP server, the napari plugin, the Dask runner) parses its
input, calls one function here and shows the result; nothing below this layer knows about faces.
The functions are re-exported from :mod:`zoo` (``zoo.load``, ``zoo.predict``, ``zoo.publish``
...). Imports are lazy, so that ``import zoo`` stays fast.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .loading import load    # one path from a reference to a ready model, shared with the server

__all__ = ["registry", "load", "pull", "publish", "validate", "predict", "predict_file", "check_shift",
           "prediction_figure", "measure", "classify", "train", "finetune", "evaluate", "compare", "export",
           "import_model", "bump", "serve", "Pulled", "Validated", "FilePrediction"]


# ----------------------------------------------------------------------------- registries
def registry(url: str | Path | None = None, offline: bool | None = None):
    """The registry ``url`` names (a folder, ``local``, ``http(s)://HOST/ROOT``, ``hf://ORG``); the
    embedded local registry for None."""
    from .registry.remote import registry_for

    return registry_for(url, offline=offline)


def registry_and_ref(text: str, default=None):
    """(registry, reference) of a reference that may carry its registry (``hf://ORG/NAME@1.0``,
    ``http://host/root/NAME``); ``default`` (or the local registry) otherwise."""
    from .registry.remote import is_url, split_ref

    if is_url(text):
        url, ref = split_ref(text)
        return registry(url), ref
    return _as_registry(default), text


def _as_registry(value):
    """A registry object as it is; a URL or folder as the registry it names; None as the local one."""
    return registry(value) if value is None or isinstance(value, (str, Path)) else value


def _model(model_or_ref, runtime: str = "onnx", device: str = "auto", registry=None):
    return model_or_ref if hasattr(model_or_ref, "spec") else load(model_or_ref, runtime, device, registry)


@dataclass
class Pulled:
    spec: Any
    path: Path
    bytes_moved: int | None      # None: an archive (nothing counted)
    how: str                     # "copied" (local registry), "downloaded" (remote), "unpacked" (archive)


def pull(ref: str, registry=None, sha256: str | None = None) -> Pulled:
    """A verified copy of a package in the cache: from a registry, or a package archive (``PKG.zip``,
    ``https://HOST/PKG.zip``; ``sha256``: the archive's, checked before unpacking)."""
    from .registry import LocalRegistry
    from .registry.archives import names_archive, pull_archive

    if names_archive(ref):
        from .paths import zoo_cache

        spec, path = pull_archive(ref, zoo_cache(), sha256=sha256)
        return Pulled(spec, path, None, "unpacked")
    reg, ref = registry_and_ref(ref, registry)
    spec, path = reg.pull(ref)
    return Pulled(spec, path, reg.bytes_moved, "copied" if isinstance(reg, LocalRegistry) else "downloaded")


def reproduce_test_tensors(spec, root: Path) -> dict[str, float]:
    """Each runtime that can run the package reproduces its test tensors; returns runtime -> max
    error as a multiple of the tolerance (a ReproducibilityError says where it fails)."""
    from .model import Model, runtimes_of

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
    from . import spec as specs

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
    from .package import files

    files.verify(spec, root)
    return Validated(spec, root, reproduce_test_tensors(spec, root))


# ----------------------------------------------------------------------------- prediction
def predict(model, image, axes: str | None = None, **options):
    """``model`` (a Model or a reference ``load`` takes) on an image array in its natural layout;
    returns the same layout (labels for instance models unless ``raw=True``)."""
    return _model(model).predict(image, axes=axes, **options)


@dataclass
class FilePrediction:
    target: Path
    shape: tuple
    dtype: str | None
    streamed: bool
    uncertainty: Path | None = None       # OUT_uncertainty.tif, with ``uncertainty=True``
    uncertainty_kind: str = ""
    members: int = 0
    confidence: dict | None = None        # per-object confidence (instance models with uncertainty)
    result: Any = None                    # the prediction when it was made in memory
    source: Any = None                    # the input as opened (lazily): the shift check, figure and
    source_axes: str | None = None        # measurements reuse it, so a prediction opens its input once


def predict_file(model, source: str | Path, target: str | Path, *, axes: str | None = None, tile=None,
                 batch_size: int | None = None, blend: int | None = None, raw: bool = False,
                 overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
                 uncertainty: bool = False, ensemble: Sequence = (), tta: bool = True) -> FilePrediction:
    """Predict an image file into ``target``: streamed block by block into .tif, .npy or .zarr,
    else (PNG, or ``uncertainty``) in memory. The output format is checked before any work, and
    an existing ``target`` is replaced only with ``overwrite`` (never the input, a folder, or an
    OME-Zarr another tool wrote)."""
    import numpy as np

    from .imageio import check_format, check_output, open_lazy, write_image
    from .runtime.stream import STREAM_SUFFIXES

    model = _model(model)
    source, target = Path(source), Path(target)
    check_format(target, "int32" if model.makes_instances and not raw else model.spec.outputs[0].dtype)
    options = dict(tile=tile, batch_size=batch_size, blend=blend, progress=progress, raw=raw)
    check_output(target, overwrite, source)              # before the work (the stream checks again at the end)
    image, stated = open_lazy(source)
    if target.suffix.lower() in STREAM_SUFFIXES and not uncertainty:
        shape = model.predict_file(source, target, axes=axes, overwrite=overwrite, opened=(image, stated), **options)
        return FilePrediction(target, tuple(shape), None, True, source=image, source_axes=stated)
    done = FilePrediction(target, (), None, False, source=image, source_axes=stated)
    if uncertainty:
        from .trust.uncertainty import predict_with_uncertainty

        members = [model] + [_model(ref, model.runtime, model.device, model.installed) for ref in ensemble]
        with_uncertainty = predict_with_uncertainty(members, np.asarray(image), axes=axes or stated, tta=tta)
        result = with_uncertainty.prediction
        done.uncertainty = target.with_name(target.stem.split(".")[0] + "_uncertainty.tif")
        write_image(done.uncertainty, with_uncertainty.uncertainty, overwrite=overwrite, source=source)
        done.uncertainty_kind = ("foreground disagreement 0-1" if model.makes_instances
                                 else "standard deviation, output units")
        done.members, done.confidence = with_uncertainty.members, with_uncertainty.confidence
    else:
        result = model.predict(np.asarray(image), axes=axes or stated, **options)
    write_image(target, result, overwrite=overwrite, source=source)
    done.shape, done.dtype, done.result = tuple(result.shape), str(result.dtype), result
    return done


def check_shift(model, source, axes: str | None = None, prediction=None, source_axes: str | None = None):
    """The dataset-shift check of an image (a file, or an array such as ``FilePrediction.source``;
    its centre, at most 1024 px a side, for a large 2D image): a ``ShiftReport``, or None for a
    package without a check. ``prediction``: instance labels already predicted for it (object
    sizes are then checked too)."""
    import numpy as np

    model = _model(model)
    if not model.spec.trust:
        return None
    image, stated = _opened(source, source_axes)
    centre = tuple(slice(max(0, (s - 1024) // 2), max(0, (s - 1024) // 2) + 1024) for s in image.shape)
    if prediction is not None and np.shape(prediction)[:2] != np.shape(image)[:2]:
        prediction = None
    image = np.asarray(image[centre]) if image.ndim <= 3 else np.asarray(image)
    labels = (np.asarray(prediction)[centre[:np.ndim(prediction)]]
              if prediction is not None and model.makes_instances else None)
    return model.check_shift(image, axes=axes or stated, prediction=labels)


def prediction_figure(model, source, output, figure_path: str | Path, reference=None, raw: bool = False) -> list[str]:
    """A PNG of input | output (| reference) at their aspect ratios, each a file or an array;
    returns the panel titles."""
    from .imageio import figure, preview

    model = _model(model)
    labels = "labels" if model.makes_instances and not raw else None
    panels = [("input", source, None), (model.spec.outputs[0].name, output, labels)]
    if reference is not None:
        panels.append(("reference", reference, labels))
    flat = [(title, preview(_opened(image)[0]), *([kind] if kind else [])) for title, image, kind in panels]
    figure(figure_path, flat)
    return [panel[0] for panel in flat]


def measure(labels, image=None, classifier=None, margin: float = 0.0, model=None, confidence: dict | None = None,
            runtime: str = "onnx", device: str = "auto", registry=None) -> list[dict]:
    """One row per object of ``labels`` (arrays or files): centroid, size, bounding box,
    intensities, shape; ``classifier`` (a Model or reference) adds each object's class; the
    segmentation ``model`` flags objects far outside its training objects' sizes; ``confidence``
    (label -> value) adds a column."""
    import numpy as np

    from .errors import InputError
    from .quantify.measure import measure_objects

    labels = np.asarray(_opened(labels)[0])
    image = None if image is None else np.asarray(_opened(image)[0])
    if classifier is not None:
        classifier = _model(classifier, runtime, device, registry)
        if not classifier.task.per_image:
            raise InputError(f"--classifier {classifier.spec.ref}: a {classifier.spec.task} model, not a classifier")
    rows = measure_objects(labels, image, classifier, margin)
    if model is not None:
        from .trust.check import flag_rows

        flag_rows(model, rows)      # size_warning: objects far outside the training objects' sizes
    if confidence is not None:
        for row in rows:
            row["confidence"] = confidence.get(row["label"])
    return rows


def _opened(image, axes: str | None = None):
    """(array, axes) of a file (opened lazily) or of an array as it is."""
    if isinstance(image, (str, Path)):
        from .imageio import open_lazy

        return open_lazy(image)
    return image, axes


def classify(model, paths: Sequence[str | Path], axes: str | None = None) -> list[dict]:
    """A classifier over image files: one row per image (file, class, probability, p_<class>...)."""
    from .imageio import read_image

    model = _model(model)
    rows = []
    for path in paths:
        label, probabilities = model.predict(read_image(path), axes=axes)
        rows.append({"file": str(path), "class": label, "probability": round(float(probabilities.max()), 4),
                     **{f"p_{name}": round(float(p), 4) for name, p in zip(model.class_names, probabilities)}})
    return rows


# ----------------------------------------------------------------------------- training
def blueprint_path(name: str | Path, dims: int = 2) -> Path:
    """A blueprint file, or the one an installed architecture ships (``care``, ``n2v`` ...)."""
    path = Path(name)
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        return path
    from . import architectures

    return architectures.get(str(name)).blueprint_path(dims)


def train(blueprint: str | Path, data: str | Path, out: str | Path, *, dims: int = 2, **options) -> Path:
    """Train a blueprint (a file, or an architecture id and ``dims``) on ``data`` and write a
    package to ``out``; the blueprint's task picks the trainer (dense or classifier), see
    :func:`zoo.trainers.fit.fit` for the options."""
    from .trainers.fit import fit

    return fit(blueprint_path(blueprint, dims), data, out, **options)


def finetune(parent, data: str | Path, out: str | Path, **options) -> Path:
    """Fine-tune the package ``parent`` on a few of your own images and write the child to
    ``out``, with its lineage (see :func:`zoo.trainers.finetune.finetune` for the options)."""
    from .trainers.finetune import finetune as run

    return run(parent, data, out, **options)


def evaluate(model, data: str | Path, target: str | Path, out: str | Path, axes: str | None = None) -> dict:
    """Held-out metrics of ``model`` on image/target pairs, written under ``out``: PSNR/SSIM
    before and after (restoration), AP/F1/PQ beside the classical baseline (segmentation).
    Returns ``{"kind", "summary", "files"}``."""
    import json

    from .images import list_images, match_targets

    model = _model(model)
    images = list_images(data)
    targets = match_targets(images, target)
    out = Path(out)
    if model.makes_instances:
        from .segmentation.evaluate import evaluate_segmentation, write_table

        results = evaluate_segmentation(model, images, targets)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(results, indent=1))
        table = write_table(results, out / "metrics.md")
        return {"kind": "segmentation", "summary": table, "n_images": len(images),
                "files": [out / "metrics.json", out / "metrics.md"]}
    from .restoration.evaluate import evaluate_pairs, summary, write_figure, write_table

    rows = evaluate_pairs(model, images, targets, axes=axes)
    files = [write_table(rows, out / "metrics.csv"),
             write_figure(model, images[0], targets[0], out / "figure.png", axes=axes)]
    return {"kind": "restoration", "summary": summary(rows), "files": files}


def compare(model, parent, data: str | Path, target: str | Path, out: str | Path, axes: str | None = None) -> dict:
    """``model`` and ``parent`` and the classical baseline, scored on the same pairs, each fed
    the channels it declares; written to ``out/comparison.json`` (the report's ``path``)."""
    from .evaluate import compare as run, write_comparison
    from .images import list_images, match_targets

    images = list_images(data)
    report = run(_model(model), images, match_targets(images, target), parent=_model(parent), axes=axes)
    report["path"] = write_comparison(report, Path(out) / "comparison.json")
    return report


# ----------------------------------------------------------------------------- exchange
def export(package, fmt: str, out: str | Path, registry=None, **options):
    """Export a package (folder or reference) as ``bioimageio`` (returns (rdf, report)) or
    ``triton`` (returns the model repository folder)."""
    reg, ref = registry_and_ref(str(package), registry)
    root = Path(ref) if Path(ref).is_dir() else reg.pull(ref)[1]
    if fmt == "bioimageio":
        from .export.bioimageio import export as to_bioimageio

        return to_bioimageio(root, out)
    from .export.triton import export as to_triton

    return to_triton(root, out, **options)


def import_model(fmt: str, source: str | Path, out: str | Path, **options) -> Path:
    """A package from what the field publishes: ``bioimageio`` (a folder, rdf.yaml or zip) or
    ``onnx`` (a graph trained anywhere, see docs/publishing.md)."""
    if fmt == "onnx":
        from .export.onnx_import import import_onnx

        return import_onnx(source, out, **options)
    from .export.bioimageio_import import import_package

    return import_package(source, out, **options)


def bump(package: str | Path, out: str | Path, version: str, **changes) -> Path:
    """The next version of a package, written beside it, with what changed recomputed."""
    from .package.bump import bump as run

    return run(package, out, version, **changes)


def serve(refs: Sequence[str], **options) -> None:
    """Serve ``refs`` over HTTP until interrupted (see :func:`zoo.serve.server.serve`)."""
    from .serve.server import serve as run

    run(list(refs), **options)
