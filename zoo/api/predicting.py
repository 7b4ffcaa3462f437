"""Prediction: arrays and files, the shift check, figures, measurements and classes."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .scaling import pick_channels, plan
from .sharing import as_model

log = logging.getLogger("zoo")


def predict_scaled(model, image, axes, scale, stitch_threshold, options):
    """A prediction in memory at the model's scale (and stitched), back on the image's grid (the
    caller says ``scale.warning``: in a file prediction's notes, or logged)."""
    import numpy as np

    from ..runtime import layout
    from .scaling import predict_rescaled, stitch_stack

    if scale.said:
        log.info("%s", scale.said)
    image = np.asarray(image)
    if scale.factors is not None:
        result = predict_rescaled(model, image, axes, scale.factors, **options)
    else:
        result = model.predict(image, axes=axes, **options)
    if stitch_threshold is not None:
        if not model.makes_instances or options.get("raw"):
            from ..errors import InputError

            raise InputError("--stitch-threshold joins instance labels: a segmentation model, without --raw")
        natural = layout.layout_for(image.shape, axes, model.spec.inputs[0])[0]
        result = stitch_stack(result, natural.output(1).axes, stitch_threshold)
    return result


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
    notes: list = field(default_factory=list)   # what was done to the image (rescaled ...) and warnings
    labels: bool = False                  # the output is instance labels (an instance model, not --raw)

    @property
    def written_labels(self):
        """The instance labels as written, for checks that name objects by their ids: the result
        held in memory, else the streamed output opened lazily (only what is sliced is read);
        None for any other output."""
        if not self.labels:
            return None
        if self.result is not None or not self.streamed:
            return self.result
        from ..imageio import open_lazy

        return open_lazy(self.target)[0]


def predict_file(model, source: str | Path, target: str | Path, *, axes: str | None = None, tile=None,
                 batch_size: int | None = None, blend: int | None = None, raw: bool = False,
                 overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
                 uncertainty: bool = False, ensemble: Sequence = (), tta: bool = True,
                 opened=None, pixel_size=None, diameter: float | None = None, anisotropy: float | None = None,
                 channels=None, stitch_threshold: float | None = None) -> FilePrediction:
    """Predict an image file into ``target``: streamed block by block into .tif, .npy or .zarr,
    else (PNG, ``uncertainty``, or a network whose output is resized) in memory. The output format is checked before any work, and
    an existing ``target`` is replaced only with ``overwrite`` (never the input, a folder, or an
    OME-Zarr another tool wrote). ``opened``: ``(image, axes)`` as :func:`zoo.imageio.open_lazy`
    gives them, when the caller has read the input already (folder mode reads ahead).

    ``pixel_size`` (µm; default: the file's metadata), ``diameter`` (px), ``anisotropy``: bring the
    image to the model's scale and the prediction back (:mod:`zoo.api.scaling`; said in
    ``notes``). ``channels``: the model's channels by name (``"nuclei=0,cyto=1"``).
    ``stitch_threshold``: join a 2D model's per-slice labels across z (or t) by IoU."""
    import numpy as np

    from ..imageio import check_format, check_output, open_lazy, write_image
    from ..runtime.stream import STREAM_SUFFIXES

    model = as_model(model)
    source, target = Path(source), Path(target)
    check_format(target, "int32" if model.makes_instances and not raw else model.spec.outputs[0].dtype)
    options = dict(tile=tile, batch_size=batch_size, blend=blend, progress=progress, raw=raw)
    labels = model.makes_instances and not raw
    check_output(target, overwrite, source)              # before the work (the stream checks again at the end)
    image, stated = opened if opened is not None else open_lazy(source)
    if channels is not None:
        from ..metadata import read

        image, stated = pick_channels(model, image, axes or stated, channels, read(source).channel_names)
        axes = None
    scale = plan(model.spec, source, pixel_size, diameter, anisotropy)
    notes = [n for n in (scale.said, scale.warning and f"warning: {scale.warning}") if n]
    if scale.factors is not None or stitch_threshold is not None:      # in memory: resampled, or stitched
        done = FilePrediction(target, (), None, False, source=image, source_axes=axes or stated, notes=notes,
                              labels=labels)
        result = predict_scaled(model, image, axes or stated, scale, stitch_threshold, options)
        write_image(target, result, output_axes(model, image, axes or stated, result), overwrite=overwrite,
                    source=source, pixel_size=scale.pixel_size)
        done.shape, done.dtype, done.result = tuple(result.shape), str(result.dtype), result
        return done
    if target.suffix.lower() in STREAM_SUFFIXES and not uncertainty and model.predictor.streams:
        shape = model.predict_file(source, target, axes=axes, overwrite=overwrite, opened=(image, stated),
                                   pixel_size=scale.pixel_size, **options)
        return FilePrediction(target, tuple(shape), None, True, source=image, source_axes=stated, notes=notes,
                              labels=labels)
    done = FilePrediction(target, (), None, False, source=image, source_axes=stated, notes=notes, labels=labels)
    if uncertainty:
        from ..trust.uncertainty import predict_with_uncertainty

        members = [model] + [as_model(ref, model.runtime, model.device, model.installed) for ref in ensemble]
        with_uncertainty = predict_with_uncertainty(members, np.asarray(image), axes=axes or stated, tta=tta)
        result = with_uncertainty.prediction
        done.uncertainty = target.with_name(target.stem.split(".")[0] + "_uncertainty.tif")
        write_image(done.uncertainty, with_uncertainty.uncertainty, overwrite=overwrite, source=source)
        done.uncertainty_kind = ("foreground disagreement 0-1" if model.makes_instances
                                 else "standard deviation, output units")
        done.members, done.confidence = with_uncertainty.members, with_uncertainty.confidence
    else:
        result = model.predict(np.asarray(image), axes=axes or stated, **options)
    write_image(target, result, output_axes(model, image, axes or stated, result), overwrite=overwrite,
                source=source, pixel_size=scale.pixel_size)
    done.shape, done.dtype, done.result = tuple(result.shape), str(result.dtype), result
    return done


def output_axes(model, image, axes: str | None, result) -> str | None:
    """The axes of a prediction made from ``image`` (its input layout with the output's channels),
    or None where they cannot be told."""
    from ..errors import ZooError
    from ..runtime.layout import layout_for

    try:
        natural = layout_for(tuple(image.shape), axes, model.spec.inputs[0])[0]
    except ZooError:
        return None
    for n_channels in (1, 2):
        out = natural.output(n_channels).axes
        if len(out) == getattr(result, "ndim", -1):
            return out
    return None


def predict_tensors_files(model, sources: dict, target: str | Path, *, output: str | None = None,
                          axes: str | None = None, tile=None, batch_size: int | None = None, raw: bool = False,
                          overwrite: bool = False) -> dict[str, Path]:
    """A network with several inputs or outputs (an imported bioimage.io model): image files by
    input name -> output files by output name. ``output`` names the one output to write to
    ``target``; without it every output is written, to ``target`` for a single one and
    ``STEM_<name>.SUFFIX`` beside it for several. Predicted in memory."""
    import numpy as np

    from ..errors import InputError
    from ..imageio import check_output, open_lazy, write_image

    model = as_model(model)
    target, names = Path(target), [t.name for t in model.spec.outputs]
    if output is not None and output not in names:
        raise InputError(f"--output-id {output}: {model.spec.ref} has the outputs {', '.join(names)}")
    chosen = [output] if output else names
    targets = {name: target if len(chosen) == 1 else
               target.with_name(f"{target.name.split('.')[0]}_{name}{''.join(target.suffixes)}") for name in chosen}
    for path in targets.values():
        for source in sources.values():
            check_output(path, overwrite, Path(source))
    images = {}
    for name, source in sources.items():
        image, stated = open_lazy(Path(source))
        images[name], axes = np.asarray(image), axes or stated
    results = model.predictor.predict_many(images, axes, tile=tile, batch_size=batch_size, raw=raw)
    for name, path in targets.items():
        write_image(path, results[name], overwrite=overwrite, source=Path(next(iter(sources.values()))))
    return targets


def check_shift(model, source, axes: str | None = None, prediction=None, source_axes: str | None = None):
    """The dataset-shift check of an image (a file, or an array such as ``FilePrediction.source``;
    its centre, at most 1024 px a side, for a large 2D image): a ``ShiftReport``, or None for a
    package without a check. ``prediction``: instance labels already predicted for it, in memory
    or lazily opened (``FilePrediction.written_labels``): object sizes are then checked too, and
    flagged objects named by their ids there (objects cut by the centre's edges left out)."""
    import numpy as np

    model = as_model(model)
    if not model.spec.trust:
        return None
    image, stated = _opened(source, source_axes)
    centre = tuple(slice(max(0, (s - 1024) // 2), max(0, (s - 1024) // 2) + 1024) for s in image.shape)
    if prediction is not None and np.shape(prediction)[:2] != np.shape(image)[:2]:
        prediction = None
    image = np.asarray(image[centre]) if image.ndim <= 3 else np.asarray(image)
    labels = None
    if prediction is not None and model.makes_instances:
        region = centre[:len(np.shape(prediction))]           # of a lazy output, only the centre is read
        labels = _without_cut_objects(np.asarray(prediction[region]), region, np.shape(prediction))
    return model.check_shift(image, axes=axes or stated, prediction=labels)


def _without_cut_objects(labels, region: tuple, shape: tuple):
    """``labels`` (the ``region`` of a label image of ``shape``) without the objects that the
    region's own edges cut (not the image's): their pieces are not the objects' sizes."""
    import numpy as np

    cut = np.zeros(labels.shape, bool)
    for axis, (part, size) in enumerate(zip(region, shape)):
        edge = [slice(None)] * labels.ndim
        for index, cuts in ((0, part.start > 0), (-1, min(part.stop, size) < size)):
            if cuts and labels.shape[axis]:
                edge[axis] = index
                cut[tuple(edge)] = True
    ids = np.unique(labels[cut])
    return np.where(np.isin(labels, ids[ids > 0]), 0, labels) if ids.size else labels


def prediction_figure(model, source, output, figure_path: str | Path, reference=None, raw: bool = False) -> list[str]:
    """A PNG of input | output (| reference) at their aspect ratios, each a file or an array;
    returns the panel titles."""
    from ..imageio import figure, preview

    model = as_model(model)
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

    from ..errors import InputError
    from ..quantify.measure import measure_objects

    labels = np.asarray(_opened(labels)[0])
    image = None if image is None else np.asarray(_opened(image)[0])
    if classifier is not None:
        classifier = as_model(classifier, runtime, device, registry)
        if not classifier.task.per_image:
            raise InputError(f"--classifier {classifier.spec.ref}: a {classifier.spec.task} model, not a classifier")
    rows = measure_objects(labels, image, classifier, margin)
    if model is not None:
        from ..trust.check import flag_rows

        flag_rows(model, rows)      # size_warning: objects far outside the training objects' sizes
    if confidence is not None:
        for row in rows:
            row["confidence"] = confidence.get(row["label"])
    return rows


def _opened(image, axes: str | None = None):
    """(array, axes) of a file (opened lazily) or of an array as it is."""
    if isinstance(image, (str, Path)):
        from ..imageio import open_lazy

        return open_lazy(image)
    return image, axes


def classify(model, paths: Sequence[str | Path], axes: str | None = None) -> list[dict]:
    """A classifier over image files: one row per image (file, class, probability, p_<class>...)."""
    from ..imageio import read_image

    model = as_model(model)
    rows = []
    for path in paths:
        label, probabilities = model.predict(read_image(path), axes=axes)
        rows.append({"file": str(path), "class": label, "probability": round(float(probabilities.max()), 4),
                     **{f"p_{name}": round(float(p), 4) for name, p in zip(model.class_names, probabilities)}})
    return rows
