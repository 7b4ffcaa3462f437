"""The model card (README.md of a package), generated from its spec."""
from __future__ import annotations

from .. import tasks
from ..opnames import makes_instances
from ..spec import Spec


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def _tensor_rows(tensors, ops_attr: str) -> list[str]:
    rows = []
    for t in tensors:
        ops = ", ".join(o.op + (f"({_fmt(o.params)})" if o.params else "") for o in getattr(t, ops_attr)) or "-"
        shape = f"min {t.shape_min}, step {t.shape_step}" if t.shape_min else "-"
        rows.append(f"| {t.name} | {t.axes} | {t.dtype} | {', '.join(t.channels or ['-'])} | {shape} | "
                    f"{t.halo or '-'} | {ops} |")
    return rows


def _before_after(metrics: dict) -> tuple[list[str], dict]:
    """Restoration metrics (``<data>_psnr_input``, ``<data>_psnr_output``, ...) as one before/after
    table row per data set; the other metrics are returned as they are."""
    prefixes = [k[: -len("_psnr_input")] for k in metrics if k.endswith("_psnr_input")]
    if not prefixes:
        return [], dict(metrics)
    used = set()
    rows = ["| data | images | PSNR input (dB) | PSNR output (dB) | SSIM input | SSIM output |",
            "|---|---|---|---|---|---|"]
    for prefix in prefixes:
        keys = [f"{prefix}_{k}" for k in ("n_images", "psnr_input", "psnr_output", "ssim_input", "ssim_output",
                                          "psnr_gain")]
        used.update(keys)
        cells = [_fmt(metrics.get(k, "-")) for k in keys[:-1]]
        rows.append(f"| {prefix} | " + " | ".join(cells) + " |")
    return rows + [""], {k: v for k, v in metrics.items() if k not in used}


def _segmentation(metrics: dict) -> tuple[list[str], dict]:
    """Segmentation metrics (``segmentation: {image kind: {ap50, ...}}``) as one row per image kind,
    next to the classical baseline on the same images."""
    groups = metrics.get("segmentation")
    if not isinstance(groups, dict):
        return [], dict(metrics)
    rows = ["Objects matched one-to-one by IoU (Hungarian); AP = TP / (TP + FP + FN) as in the DSB2018 and "
            "StarDist papers; baseline: Otsu threshold + distance-transform watershed on the same images.", "",
            "| images | n | AP@0.5 | AP@0.75 | AP@0.9 | F1@0.5 | PQ@0.5 | baseline AP@0.5 | baseline AP@0.75 |",
            "|---|---|---|---|---|---|---|---|---|"]
    for group, r in groups.items():
        cells = [r.get(k, "-") for k in ("images", "ap50", "ap75", "ap90", "f1_50", "pq50", "baseline_ap50",
                                          "baseline_ap75")]
        rows.append(f"| {group} | " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return rows + [""], {k: v for k, v in metrics.items() if k != "segmentation"}


def _lineage(spec: Spec) -> list[str]:
    """Fine-tuned packages: the parent, the policy, and parent vs child on the same validation images."""
    training = spec.training
    if not training.parent:
        return []
    policy = training.config.get("finetune", {})
    lines = ["## Fine-tuning", "", f"Fine-tuned from `{training.parent['ref']}` (its zoo.yaml sha256 "
             f"`{training.parent['sha256']}`); `zoo lineage {spec.ref}` shows the whole chain.", ""]
    if policy:
        shown = {k: v for k, v in policy.items() if k not in ("transfer", "trainable_stages")}
        lines += [f"- policy: {_fmt(shown)}"]
        transfer = policy.get("transfer", {})
        if transfer:
            lines.append(f"- weights: {transfer.get('copied', 0)} tensors copied from the parent"
                         + (f", first convolution adapted ({policy.get('parent_channels')} -> {policy.get('channels')} "
                            "channels)" if transfer.get("adapted") else "")
                         + (f", new head ({', '.join(transfer['new'])})" if transfer.get("new") else ""))
        lines.append("")
    comparison = training.metrics.get("parent_vs_child")
    if isinstance(comparison, dict):
        lines += ["Parent (its weights before fine-tuning, adapted to these inputs) and this package on the same "
                  "validation images:", "", "| metric | parent | fine-tuned |", "|---|---|---|"]
        if "parent_val_loss" in training.metrics:
            lines.append(f"| validation loss | {_fmt(training.metrics['parent_val_loss'])} | "
                         f"{_fmt(training.metrics.get('val_loss'))} |")
        lines += [f"| {k} | {_fmt(v['parent'])} | {_fmt(v['child'])} |" for k, v in comparison.items()]
        lines.append("")
    evidence = training.metrics.get("transfer_benchmark")
    if isinstance(evidence, dict) and evidence.get("rows"):
        lines += [evidence.get("title", "Transfer-learning benchmark") + ":", "",
                  "| " + " | ".join(evidence["columns"]) + " |", "|" + "---|" * len(evidence["columns"])]
        lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in evidence["rows"]]
        lines.append("")
    return lines


def _classification(metrics: dict, covers: list[str]) -> tuple[list[str], dict]:
    """A classifier's held-out scores: accuracy, macro-F1, per-class table, confusion figure."""
    held = metrics.get("held_out")
    if not isinstance(held, dict) or "per_class" not in held:
        return [], dict(metrics)
    rows = [f"On the {held.get('data', 'held-out images')}: accuracy **{held['accuracy']:.3f}**, macro-F1 "
            f"**{held['macro_f1']:.3f}**.", "", "| class | precision | recall | F1 | images |", "|---|---|---|---|---|"]
    for name, c in held["per_class"].items():
        rows.append(f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |")
    rows.append("")
    figure = next((c for c in covers if c.startswith("confusion")), None)
    if figure:
        rows += [f"![confusion matrix]({figure})", ""]
    return rows, {k: v for k, v in metrics.items() if k != "held_out"}


def _usage(spec: Spec) -> list[str]:
    if tasks.of(spec).per_image:
        return ["## Use it", "", "```bash", f"zoo pull {spec.ref}",
                f"zoo predict {spec.ref} cell1.png cell2.png -o classes.csv   # one row per image",
                f"zoo measure labels.tif image.tif --classifier {spec.ref} -o objects.csv   # one row per object",
                "```", "", "```python", "import zoo", f'model = zoo.load("{spec.ref}")',
                "label, probabilities = model.predict(image)   # probabilities in the order of model.class_names",
                "rows = model.classify_objects(image, labels)   # per object of a label image", "```", ""]
    lines = ["## Use it", "", "```bash", f"zoo pull {spec.ref}",
             f"zoo predict {spec.ref} image.tif -o prediction.tif", "```", "", "```python", "import zoo",
             f'model = zoo.load("{spec.ref}")', "prediction = model.predict(image)  # numpy array, natural layout",
             "```", ""]
    if makes_instances(spec):
        lines[-1:] = ["", "The prediction is an instance label image (0 = background, one id per object); "
                      "`--raw` (`model.predict(image, raw=True)`) gives the network's outputs instead.", ""]
    return lines


def _scale(spec: Spec) -> list[str]:
    """The scale the model was trained at, and how predictions use it."""
    scale = spec.scale or {}
    if not scale:
        return []
    lines = ["## Scale", ""]
    if scale.get("pixel_size"):
        lines.append("- pixel size: " + ", ".join(f"{a} {v:g} µm" for a, v in scale["pixel_size"].items()))
    if scale.get("diameter"):
        lines.append(f"- typical object: {scale['diameter']:g} px across (median of the training objects)")
    if scale.get("measured_from"):
        lines.append(f"- measured from: {scale['measured_from']}")
    lines += ["", "An image at another scale is rescaled to this one and the prediction back: give "
              "`--pixel-size` (read from OME-TIFF, ImageJ or OME-Zarr metadata when present) or the objects' "
              "`--diameter` in pixels.", ""]
    return lines


def render(spec: Spec) -> str:
    lines = [f"# {spec.name} {spec.version}", "", spec.description.strip(), ""]
    lines += [f"- **Task**: {spec.task}", f"- **Architecture**: `{spec.architecture_id}` "
              f"({_fmt(spec.architecture_params)})", f"- **License**: {spec.license}",
              f"- **Authors**: {', '.join(a['name'] for a in spec.authors)}"]
    if spec.tags:
        lines.append(f"- **Tags**: {', '.join(spec.tags)}")
    if spec.covers:
        lines += ["", f"![cover]({spec.covers[0]})"]
    lines += ["", *_usage(spec)]
    lines += ["## Inputs", "", "| name | axes | dtype | channels | shape | halo | preprocessing |",
              "|---|---|---|---|---|---|---|", *_tensor_rows(spec.inputs, "preprocessing"), ""]
    lines += ["## Outputs", "", "| name | axes | dtype | channels | shape | halo | postprocessing |",
              "|---|---|---|---|---|---|---|", *_tensor_rows(spec.outputs, "postprocessing"), ""]
    lines += _scale(spec)
    if spec.training:
        t = spec.training
        lines += ["## Training", "", t.data.get("description", ""), ""]
        for key in ("source", "license"):
            if t.data.get(key):
                lines.append(f"- data {key}: {t.data[key]}")
        lines += [f"- images: {t.data['n_train']} for training, {t.data['n_validation']} for validation "
                  "(split by image)", f"- data fingerprint: `{t.data['fingerprint']}`"]
        if t.parent:
            lines.append(f"- fine-tuned from: `{t.parent['ref']}` (zoo.yaml sha256 `{t.parent['sha256'][:12]}...`)")
        config = ", ".join(f"{k}={_fmt(v)}" for k, v in t.config.items() if not isinstance(v, (list, dict)))
        lines += [f"- configuration: {config}", ""]
        if "training_curves.png" in spec.covers:
            lines += ["![training curves](training_curves.png)", ""]
        if t.metrics:
            lines += ["## Validation", "", "Measured on held-out data that training never saw.", ""]
            restoration, rest = _before_after({k: v for k, v in t.metrics.items()
                                               if k not in ("parent_vs_child", "parent_val_loss", "transfer_benchmark")})
            segmentation, rest = _segmentation(rest)
            classification, rest = _classification(rest, spec.covers)
            lines += restoration + segmentation + classification
            if rest:
                lines += ["| metric | value |", "|---|---|", *[f"| {k} | {_fmt(v)} |" for k, v in rest.items()], ""]
        lines += _lineage(spec)
    if spec.cite:
        lines += ["## Cite", ""]
        lines += [f"- {c['text']}" + (f" doi:{c['doi']}" if c.get("doi") else "") for c in spec.cite]
        lines.append("")
    lines += ["## Files", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| {f.file} | `{f.sha256}` |" for f in spec.package_files()]
    return "\n".join(lines) + "\n"
