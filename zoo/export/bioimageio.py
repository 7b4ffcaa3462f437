"""``zoo export bioimageio PKG OUT/``: a bioimage.io model description (``rdf.yaml``, format 0.5)
that the bioimage.io tools (``bioimageio test``), Fiji/deepImageJ, ilastik and napari read.

What maps onto the format's own ops is mapped (``percentile_normalize`` -> ``scale_range``,
``zero_mean_unit_variance`` -> ``zero_mean_unit_variance`` or its fixed form, ``scale_linear``,
``clip``, ``sigmoid``). Every input op must map (else the export is refused: the description
would feed the network other numbers). Output ops are mapped up to the first that has no
equivalent (restoring the input's intensity scale, the instance steps); that one and the rest
are left out, reported, and written into the documentation, and the exported test outputs
stop there.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .. import architectures, spec as specs
from ..errors import InputError
from ..hashing import sha256_file
from ..package import files, readers
from ..runtime import ops

FORMAT_VERSION = "0.5.4"
STATE_DICT = "weights/model.pt"
NETWORK_OUTPUT = "test/output_network.npy"
CHANNELS_LAST_ONNX = "weights/model_channels_last.onnx"
SAMPLE_INPUT, SAMPLE_OUTPUT = "sample_input.tif", "sample_output.tif"


@dataclass
class Report:
    mapped: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)      # ops with no bioimage.io equivalent
    notes: list[str] = field(default_factory=list)


def _values(params: dict, *keys: str) -> dict:
    """Scalars as they are; per-channel lists along bioimage.io's ``channel`` axis."""
    values = {k: params[k] for k in keys}
    if any(isinstance(v, (list, tuple)) for v in values.values()):
        n = max(len(v) for v in values.values() if isinstance(v, (list, tuple)))
        return {"axis": "channel", **{k: [float(x) for x in (v if isinstance(v, (list, tuple)) else [v] * n)]
                                      for k, v in values.items()}}
    return {k: float(v) for k, v in values.items()}


def bioimageio_op(op, tensor) -> dict | None:
    """The bioimage.io op doing what a zoo op does, or None where there is none."""
    spatial, p = list(tensor.spatial_axes), op.params
    if op.op == "percentile_normalize" and "low_value" not in p:
        return {"id": "scale_range", "kwargs": {"axes": spatial, "min_percentile": float(p.get("low", 1.0)),
                                                "max_percentile": float(p.get("high", 99.8)), "eps": 1e-6}}
    if op.op == "zero_mean_unit_variance":
        if "mean" not in p:
            return {"id": "zero_mean_unit_variance", "kwargs": {"axes": spatial, "eps": 1e-6}}
        return {"id": "fixed_zero_mean_unit_variance", "kwargs": _values(p, "mean", "std")}
    if op.op == "scale_linear":
        return {"id": "scale_linear", "kwargs": _values({"gain": 1.0, "offset": 0.0, **p}, "gain", "offset")}
    if op.op == "clip" and p.get("min") is not None and p.get("max") is not None:
        return {"id": "clip", "kwargs": {"min": float(p["min"]), "max": float(p["max"])}}
    if op.op == "sigmoid":
        return {"id": "sigmoid"}
    return None


def _preprocessing(tensor, report: Report) -> list[dict]:
    """Every input op mapped, or a clear error: a description without one would feed the
    network other numbers than the zoo does."""
    out = []
    for op in tensor.preprocessing:
        mapped = bioimageio_op(op, tensor)
        if mapped is None:
            raise InputError(f"input {tensor.name}: the preprocessing op '{op.op}' {op.params or ''} has no "
                             "bioimage.io equivalent, so no bioimage.io description can reproduce this model")
        out.append(mapped)
        report.mapped.append(f"input {tensor.name}: {op.op} -> {mapped['id']}")
    return out


def _postprocessing(tensor, report: Report) -> tuple[list[dict], int]:
    """The output ops bioimage.io can express, up to the first it cannot (that one and every
    later op are left to bioimage-zoo and reported); returns them and their count."""
    out = []
    for op in tensor.postprocessing:
        mapped = bioimageio_op(op, tensor)
        if mapped is None:
            break
        out.append(mapped)
        report.mapped.append(f"output {tensor.name}: {op.op} -> {mapped['id']}")
    report.unmapped += [f"output {tensor.name}: {op.op}" for op in tensor.postprocessing[len(out):]]
    return out, len(out)


def _axes(tensor, inputs: bool, n_channels: int, halo=None, reference: str | None = None,
          channels_last: bool = False) -> list[dict]:
    axes = [{"type": "batch"}, {"type": "channel", "channel_names": list(tensor.channels or ["c0"])[:n_channels]}]
    mins = tensor.shape_min or [1] * len(tensor.spatial_axes)
    steps = tensor.shape_step or [1] * len(tensor.spatial_axes)
    for k, name in enumerate(tensor.spatial_axes):
        if inputs:          # bioimage.io wants every allowed size to exceed twice the output halo
            smallest = int(mins[k])
            while halo and smallest <= 2 * int(halo[k]):
                smallest += int(steps[k])
            axes.append({"type": "space", "id": name, "size": {"min": smallest, "step": int(steps[k])}})
        else:
            axis = {"type": "space", "id": name, "size": {"tensor_id": reference, "axis_id": name}}
            if halo:
                axis["halo"] = int(halo[k])
            axes.append(axis)
    return axes[:1] + axes[2:] + axes[1:2] if channels_last else axes


def export(package: str | Path, out: str | Path) -> tuple[Path, Report]:
    """Write ``out/rdf.yaml`` and its files for a verified package; returns (rdf path, report).
    An imported ONNX graph (``onnx-graph``) is exported with its onnx weights alone."""
    root = Path(package)
    spec = specs.load(root)
    if spec.kind != "package":
        raise InputError(f"{root} is not a package")
    files.verify(spec, root)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty; choose a new folder for the bioimage.io export")
    for rel in files.package_files(spec)[1:]:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files.safe_join(root, rel), target)
    report = Report()
    inp, outp = spec.inputs[0], spec.outputs[0]

    # test tensors: the raw input, and the network's output on the preprocessed input
    x = np.load(files.safe_join(root, spec.test.inputs[0].file), allow_pickle=False)
    pre = _preprocessing(inp, report)
    post, n_post = _postprocessing(outp, report)
    y = _network_output(spec, root, x, outp.postprocessing[:n_post])
    instances = _instance_op(outp, n_post, y, report)
    if instances:                 # bioimage.io's own instance step: a label image, b, *spatial, c
        post.append(instances[0])
        y = np.moveaxis(instances[1], 1, -1)
    n_out = y.shape[-1] if instances else y.shape[1]
    # bioimage.io wants every size to exceed twice the halo; the test tensor must be such a size
    halo = [min(int(h), (int(n) - 1) // 2) for h, n in zip(inp.halo, x.shape[2:])] if inp.halo else None
    np.save(out / NETWORK_OUTPUT, y, allow_pickle=False)
    import tifffile

    tifffile.imwrite(out / SAMPLE_INPUT, x, photometric="minisblack")     # sample tensors: the test crop, as TIFF
    tifffile.imwrite(out / SAMPLE_OUTPUT, y, photometric="minisblack")

    rdf = {
        "format_version": FORMAT_VERSION, "type": "model", "name": spec.name,
        "description": spec.description.strip()[:1000],
        "authors": [{"name": a["name"]} for a in spec.authors],
        "cite": [{"text": c["text"], **({"doi": c["doi"]} if c.get("doi") else {"url": "https://github.com/"})}
                 for c in spec.cite] or [{"text": "bioimage-zoo", "url": "https://github.com/"}],
        "license": spec.license, "tags": list(spec.tags), "covers": list(spec.covers),
        "documentation": "documentation.md", "version": spec.version,
        "inputs": [{"id": inp.name, "description": _short(inp.description), "axes": _axes(inp, True, inp.n_channels, halo),
                    "test_tensor": {"source": spec.test.inputs[0].file, "sha256": spec.test.inputs[0].sha256},
                    "sample_tensor": {"source": SAMPLE_INPUT, "sha256": sha256_file(out / SAMPLE_INPUT)},
                    "data": {"type": "float32"}, "preprocessing": pre}],
        "outputs": [{"id": "network_output", "description": _short("the network's outputs (post-processing: see "
                                                                  "the documentation): " + (outp.description or "")),
                     "axes": _axes(outp, False, n_out, halo, inp.name, channels_last=bool(instances)),
                     "test_tensor": {"source": NETWORK_OUTPUT, "sha256": sha256_file(out / NETWORK_OUTPUT)},
                     "sample_tensor": {"source": SAMPLE_OUTPUT, "sha256": sha256_file(out / SAMPLE_OUTPUT)},
                     "data": {"type": "int32" if instances else "float32"}, "postprocessing": post}],
        "weights": _weights(spec, root, out, channels_last=bool(instances)),
        "config": {"bioimageio": {"reproducibility_tolerance": [
            {"relative_tolerance": 1e-3, "absolute_tolerance": float(max(1e-4, 2e-3 * np.ptp(y))),
             "mismatched_elements_per_million": 100}]},
            "bioimage-zoo": {"ref": spec.ref, "unmapped_ops": report.unmapped, **_lineage(spec),
                             "postprocessing": [{"op": op.op, "params": op.params} for op in outp.postprocessing]}},
    }
    if spec.training and spec.training.data.get("description"):
        rdf["training_data"] = _training_data(spec)
    outp_channels = ["labels"] if instances else list(outp.channels or [])
    if len(outp_channels) == n_out:
        next(a for a in rdf["outputs"][0]["axes"] if a["type"] == "channel")["channel_names"] = outp_channels
    (out / "documentation.md").write_text(_documentation(spec, root, report), encoding="utf-8")
    (out / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False), encoding="utf-8")
    return out / "rdf.yaml", report


def _training_data(spec) -> dict:
    """The training data as an embedded bioimage.io dataset description (what is known of it)."""
    data = spec.training.data
    text = data["description"] + (f" Source: {data['source']}." if data.get("source") else "") + \
        f" {data['n_train']} training and {data['n_validation']} validation images; fingerprint {data['fingerprint']}."
    return {"type": "dataset", "format_version": "0.3.0", "name": _short(f"{spec.name} training data", 128),
            "description": _short(text, 1000), **({"license": data["license"]} if _spdx(data.get("license")) else {})}


def _spdx(text: str | None) -> bool:
    return bool(text) and " " not in text.strip()


def _lineage(spec) -> dict:
    """What bioimage.io's ``parent`` (an id on bioimage.io) cannot hold: our parent package and
    its pinned zoo.yaml sha256, and the training data's fingerprint."""
    if not spec.training:
        return {}
    out = {"training_data": {k: spec.training.data[k] for k in ("fingerprint", "n_train", "n_validation", "source",
                                                                "license") if k in spec.training.data}}
    if spec.training.parent:
        out["parent"] = dict(spec.training.parent)
    return out


def _weights(spec, root: Path, out: Path, channels_last: bool = False) -> dict:
    """The ONNX graph as it is; the state dict (unless the package is a graph alone) in torch's own
    format, loadable with ``weights_only=True``, its architecture an importable callable.
    ``channels_last``: both give ``b, *spatial, c`` (what bioimage.io's StarDist op expects back)."""
    weights = {"onnx": {"source": spec.weights.onnx.file, "sha256": spec.weights.onnx.sha256,
                        "opset_version": spec.weights.onnx_opset}}
    if channels_last:
        import onnx

        from .onnx_layout import channels_last_output, save

        graph = save(channels_last_output(onnx.load(str(files.safe_join(root, spec.weights.onnx.file)))),
                     out / CHANNELS_LAST_ONNX)
        weights["onnx"].update(source=CHANNELS_LAST_ONNX, sha256=sha256_file(graph))
    if spec.graph_only:
        return weights
    import torch

    torch.save(readers.state_dict(files.safe_join(root, spec.weights.safetensors.file)), out / STATE_DICT)
    module, _, attr = architectures.get(spec.architecture_id).network.partition(":")
    weights["onnx"]["parent"] = "pytorch_state_dict"
    weights["pytorch_state_dict"] = {"source": STATE_DICT, "sha256": sha256_file(out / STATE_DICT),
                                     "architecture": {"callable": attr, "import_from": module,
                                                      "kwargs": {**spec.architecture_params,
                                                                 **({"channels_last_output": True}
                                                                    if channels_last else {})}},
                                     "pytorch_version": torch.__version__.split("+")[0]}
    return weights


def _instance_op(tensor, n_post: int, y: np.ndarray, report: Report) -> tuple[dict, np.ndarray] | None:
    """bioimage.io's ``stardist_postprocessing`` for our ``stardist_instances`` (same layout: the
    probability, then rays at angle 2*pi*k/n from x towards y), when the ``stardist`` package that
    runs it is installed (``bioimageio test`` needs it too). Returns the op and its labels on the
    test output, the agreement with our own polygon NMS reported; None otherwise."""
    import importlib.util

    rest = tensor.postprocessing[n_post:]
    if not rest or rest[0].op != "stardist_instances" or y.ndim != 4:
        return None
    if importlib.util.find_spec("stardist") is None:
        report.notes.append("StarDist's bioimage.io post-processing (stardist_postprocessing) needs the stardist "
                            "package at export and test time; it is not installed, so the network output is exported")
        return None
    from stardist import non_maximum_suppression, polygons_to_label

    from ..segmentation.metrics import evaluate

    params = rest[0].params
    kwargs = {"prob_threshold": float(params.get("prob_threshold", 0.5)),
              "nms_threshold": float(params.get("nms_threshold", 0.4)), "n_rays": int(y.shape[1] - 1),
              "grid": [1, 1], "b": 0}
    labels = []
    for image in y:
        points, prob, dist = non_maximum_suppression(np.moveaxis(image[1:], 0, -1), image[0], grid=(1, 1),
                                                     prob_thresh=kwargs["prob_threshold"],
                                                     nms_thresh=kwargs["nms_threshold"], b=0)
        labels.append(polygons_to_label(dist, points, prob=prob, shape=image.shape[1:]))
    labels = np.stack(labels)[:, None].astype(np.int32)
    ours = ops.apply(rest[:1], y, {}, tensor.name, ops.POSTPROCESSING)
    f1 = evaluate([a[0] for a in ours], [b[0] for b in labels], [0.5])[0]["f1"]
    report.unmapped.remove(f"output {tensor.name}: stardist_instances")
    report.mapped.append(f"output {tensor.name}: stardist_instances -> stardist_postprocessing (its objects match "
                         f"ours with F1 {f1:.3f} at IoU 0.5 on the test input)")
    return {"id": "stardist_postprocessing", "kwargs": kwargs}, labels


def _network_output(spec, root: Path, x: np.ndarray, post: list) -> np.ndarray:
    """The ONNX network's output on the preprocessed test input, then the ``post`` ops."""
    import onnxruntime as ort

    inp = spec.inputs[0]
    pre = ops.apply(inp.preprocessing, x.astype(np.float32), {}, inp.name, ops.PREPROCESSING)
    session = ort.InferenceSession(str(files.safe_join(root, spec.weights.onnx.file)), providers=["CPUExecutionProvider"])
    y = session.run(None, {session.get_inputs()[0].name: pre})[0]
    return ops.apply(post, y, {}, spec.outputs[0].name, ops.POSTPROCESSING)


def _short(text: str | None, limit: int = 128) -> str:
    """bioimage.io tensor descriptions are at most 128 characters."""
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _documentation(spec, root: Path, report: Report) -> str:
    card = (root / spec.documentation).read_text(encoding="utf-8") if spec.documentation else f"# {spec.name}\n"
    lines = ["", "## bioimage.io export", "",
             "Pre-processing mapped onto bioimage.io ops: " + ("; ".join(report.mapped) or "none") + ".", "",
             "Not expressible as bioimage.io ops, so not in this description (bioimage-zoo applies them: "
             "`zoo predict`): " + ("; ".join(report.unmapped) or "none") + ". The test output is therefore the "
             "network's output.", ""]
    if "## Validation" not in card:
        lines += ["## Validation", "", "See the held-out metrics in the package's training record.", ""]
    return card + "\n".join(lines)


def zip_folder(folder: str | Path) -> Path:
    """``folder.zip`` holding the export with rdf.yaml at its root (a bioimage.io package)."""
    from ..package.archive import write_zip

    folder = Path(folder)
    return write_zip({p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()},
                     folder.with_suffix(".zip"))
