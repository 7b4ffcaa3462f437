"""Score a model on (image, target) pairs whatever its task (:func:`scores`), and compare it with
its parent and the classical baseline on the same data (:func:`compare`), each fed the data in
the channels it declares. Restoration's own table and figure are :mod:`zoo.restoration.evaluate`."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError
from .imageio import read_image
from .restoration.evaluate import evaluate_pairs, summary

LUMINANCE = (0.2125, 0.7154, 0.0721)      # ITU-R BT.709 weights of R, G, B (as skimage's rgb2gray)

# the number a comparison is decided by, per kind of model: (key, name, baseline's key, the baseline)
HEADLINES = {"instances": ("ap50", "AP@0.5", "baseline_ap50", "Otsu threshold + watershed"),
             "restoration": ("psnr_output", "PSNR (dB)", "psnr_input", "the unrestored input"),
             "classification": ("accuracy", "accuracy", "baseline_accuracy", "always the most frequent class")}


def _colour_axis(image: np.ndarray, n_spatial: int) -> int | None:
    """The axis holding RGB(A) colour of an image with ``n_spatial`` spatial axes, or None."""
    if image.ndim != n_spatial + 1:
        return None
    if image.shape[-1] in (3, 4) and image.shape[0] > 4:
        return image.ndim - 1
    if image.shape[0] in (3, 4) and image.shape[-1] > 4:
        return 0
    return None


def fit_channels(image: np.ndarray, spec, axes: str | None = None) -> tuple[np.ndarray, str]:
    """``image`` in the channels ``spec``'s input declares, and the conversion applied ('' for none):
    RGB(A) made grey by luminance for a grey model, grey repeated into every channel of a
    multi-channel one. Images with explicit ``axes`` are left as they are."""
    inp, image = spec.inputs[0], np.asarray(image)
    n = len(inp.spatial_axes)
    colour = None if axes else _colour_axis(image, n)
    if inp.n_channels == 1 and colour is not None:
        rgb = np.moveaxis(image, colour, -1)[..., :3].astype(np.float32)
        return rgb @ np.float32(LUMINANCE), "RGB made grey by luminance (0.2125 R + 0.7154 G + 0.0721 B)"
    if inp.n_channels > 1 and image.ndim == n and not axes:
        return np.repeat(image[..., None], inp.n_channels, axis=-1), f"grey repeated into its {inp.n_channels} channels"
    return image, ""


class Converting:
    """A model that first converts each image to the channels it declares (:func:`fit_channels`);
    ``conversions`` names those applied."""

    def __init__(self, model):
        self.model, self.conversions = model, set()

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict(self, image: np.ndarray, axes: str | None = None, **options) -> np.ndarray:
        image, conversion = fit_channels(image, self.model.spec, axes)
        if conversion:
            self.conversions.add(conversion)
        return self.model.predict(image, axes=axes, **options)


def scores(model, images: Sequence[Path], targets: Sequence, axes: str | None = None, baseline: bool = True) -> dict:
    """A model's metrics on (image, target) pairs: AP/F1/PQ of instance segmentation (the Otsu +
    watershed baseline's as ``baseline_*``), PSNR/SSIM of restoration (the input's as ``*_input``),
    accuracy and macro-F1 of a classifier (``targets``: class names; the most frequent class's
    as ``baseline_*``)."""
    if model.task.per_image:
        return _classifier_scores(model, images, targets, baseline)
    if model.makes_instances:
        from .segmentation.evaluate import evaluate_segmentation

        row = evaluate_segmentation(model, images, targets, baseline=baseline)["all"]
        return {k: v for k, v in row.items() if k not in ("images", "seconds_per_mpx")}
    return summary(evaluate_pairs(model, images, targets, axes=axes))


def _classifier_scores(model, images: Sequence[Path], labels: Sequence[str], baseline: bool) -> dict:
    from collections import Counter

    from .classification.evaluate import classification_metrics

    names = model.class_names
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise InputError(f"labels {unknown} are not classes of {model.spec.ref} ({', '.join(names)})")
    true = [names.index(label) for label in labels]
    predicted = [names.index(model.predict(read_image(path))[0]) for path in images]
    runs = {"": predicted, **({"baseline_": [Counter(true).most_common(1)[0][0]] * len(true)} if baseline else {})}
    measured = {prefix: classification_metrics(true, p, names) for prefix, p in runs.items()}
    return {prefix + k: m[k] for prefix, m in measured.items() for k in ("accuracy", "macro_f1")}


def _kind(model) -> str:
    """Which of :data:`HEADLINES` decides a comparison of ``model``."""
    if model.task.per_image:
        return "classification"
    if model.makes_instances:
        return "instances"
    if model.spec.task.startswith("restoration"):
        return "restoration"
    raise InputError(f"{model.spec.ref} is a {model.spec.task} model: comparisons score instance segmentation "
                     "(AP against label images), restoration (PSNR against clean images) and classification")


def compare(model, images: Sequence[Path], targets: Sequence[Path], parent=None, axes: str | None = None) -> dict:
    """``model`` beside ``parent`` (optional) and the classical baseline on the same pairs, each
    model fed the images converted to the channels it declares. Returns ``{metric, label,
    baseline, images, model, parent, baseline_value, metrics: {key: {model, parent, baseline}},
    conversions: {model, parent}, warnings}``: a warning for each the model scores below."""
    kind = _kind(model)
    if parent is not None and _kind(parent) != kind:
        raise InputError(f"cannot compare {model.spec.ref} ({model.spec.task}) with {parent.spec.ref} "
                         f"({parent.spec.task}): they answer different questions")
    key, label, baseline_key, baseline = HEADLINES[kind]
    runs = {"model": Converting(model), **({"parent": Converting(parent)} if parent is not None else {})}
    measured = {who: scores(run, images, targets, axes, baseline=who == "model") for who, run in runs.items()}
    ours = measured["model"]
    table = {k: {who: m[k] for who, m in measured.items()} for k in ours
             if not k.startswith(("baseline_", "n_images")) and not k.endswith("_input") and k != "psnr_gain"}
    for k in table:
        reference = f"baseline_{k}" if f"baseline_{k}" in ours else k.replace("_output", "_input")
        if reference in ours:
            table[k]["baseline"] = ours[reference]
    report = {"metric": key, "label": label, "baseline": baseline, "images": len(images),
              "model": ours[key], "parent": measured.get("parent", {}).get(key), "baseline_value": ours[baseline_key],
              "metrics": table, "conversions": {who: sorted(run.conversions) for who, run in runs.items()
                                                if run.conversions}}
    report["warnings"] = _shortfalls(report, model.spec.ref, parent.spec.ref if parent is not None else None)
    return report


def _shortfalls(report: dict, name: str, parent: str | None, tolerance: float = 1e-3) -> list[str]:
    """One line for each reference (the parent, the baseline) the model scores below."""
    against = [(f"its parent {parent}", report["parent"]),
               (f"the classical baseline, {report['baseline']},", report["baseline_value"])]
    return [f"{name} scores {report['label']} {report['model']:.3f} on {report['images']} image(s), below {who} at "
            f"{value:.3f}: use the better one for such images, or train on more images or for more steps"
            for who, value in against if value is not None and report["model"] < value - tolerance]


def describe(report: dict, names: tuple[str, str] = ("model", "parent")) -> list[str]:
    """A comparison as lines of text: the headline beside the parent's and the baseline's, the
    other metrics (``metrics``: {key: {model or child, parent, baseline}}), and the conversions
    applied."""
    called = {"model": names[0], "child": names[0], "parent": names[1], "baseline": "baseline"}
    parent = f", {names[1]} {report['parent']:.3f}" if report["parent"] is not None else ""
    lines = [f"{report['label']} on {report['images']} image(s): {names[0]} {report['model']:.3f}{parent}, "
             f"baseline {report['baseline_value']:.3f} ({report['baseline']})"]
    lines += [f"  {key}: " + ", ".join(f"{called[who]} {v:.3f}" for who, v in values.items())
              for key, values in report.get("metrics", {}).items() if key != report["metric"]]
    lines += [f"  converted for {called[who]}: {'; '.join(done)}" for who, done in report["conversions"].items()]
    return lines


def write_comparison(report: dict, path: Path) -> Path:
    """The report of :func:`compare` as JSON."""
    import json

    from .errors import storage

    with storage("write the comparison"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
    return path
