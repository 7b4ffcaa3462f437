"""``zoo export bioimageio PKG OUT/``: a bioimage.io model description (``rdf.yaml``, format 0.5)
that the bioimage.io tools (``bioimageio test``), Fiji/deepImageJ, ilastik and napari read.

What maps onto the format's own ops is mapped (``percentile_normalize`` -> ``scale_range``,
``zero_mean_unit_variance`` -> ``zero_mean_unit_variance`` or its fixed form, ``scale_linear``,
``clip``, ``sigmoid``). Every input op must map (else the export is refused: the description
would feed the network other numbers). Output ops are mapped up to the first that has no
equivalent (restoring the input's intensity scale, the instance steps); that one and the rest
are left out, reported, and written into the documentation, and the exported test outputs
stop there.

Three weight formats, each runnable without bioimage-zoo: ``onnx`` (the package's graph),
``pytorch_state_dict`` (the weights in torch's own format, its architecture a standalone source
file that imports torch only, assembled by :mod:`zoo.export.torch_source` from the
architecture's own network code), and ``torchscript`` (that standalone network traced, for
deepImageJ, QuPath and Fiji). The export checks that the standalone network loads the weights
strictly and reproduces the ONNX graph's output, and that the traced one reproduces it at a
second input size.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .. import architectures, opnames, spec as specs
from ..errors import InputError, IntegrityError
from ..hashing import sha256_file
from ..package import files, readers
from ..runtime import ops

FORMAT_VERSION = "0.5.4"
STATE_DICT = "weights/model.pt"
ARCHITECTURE_SOURCE = "weights/network.py"
TORCHSCRIPT = "weights/model_torchscript.pt"
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
    x_net = ops.apply(inp.preprocessing, x.astype(np.float32), {}, inp.name, ops.PREPROCESSING)
    raw = _network_output(spec, root, x_net)
    y = ops.apply(outp.postprocessing[:n_post], raw, {}, outp.name, ops.POSTPROCESSING)
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
        "weights": _weights(spec, root, out, x_net, raw, report, channels_last=bool(instances)),
        "config": {"bioimageio": {"reproducibility_tolerance": [
            {"relative_tolerance": 1e-3, "absolute_tolerance": float(max(1e-4, 2e-3 * np.ptp(y))),
             "mismatched_elements_per_million": 100}]},
            "bioimage-zoo": {"ref": spec.ref, "unmapped_ops": report.unmapped, **_lineage(spec), **_architecture(spec),
                             "postprocessing": [{"op": op.op, "params": op.params} for op in outp.postprocessing]}},
    }
    if spec.training and spec.training.data.get("description"):
        rdf["training_data"] = _training_data(spec)
    outp_channels = ["labels"] if instances else list(outp.channels or [])
    if len(outp_channels) == n_out:
        next(a for a in rdf["outputs"][0]["axes"] if a["type"] == "channel")["channel_names"] = outp_channels
    (out / "documentation.md").write_text(_documentation(spec, root, report, rdf["weights"]), encoding="utf-8")
    (out / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False), encoding="utf-8")
    return out / "rdf.yaml", report


def _architecture(spec) -> dict:
    """The zoo architecture the state dict belongs to: bioimage.io's entry names the standalone
    source file, so this is how bioimage-zoo recognises its own export when importing it back
    (and builds the network from the installed code, running nothing from the package)."""
    if spec.graph_only:
        return {}
    return {"architecture": {"id": spec.architecture_id, "network": architectures.get(spec.architecture_id).network,
                             "params": dict(spec.architecture_params)}}


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


def _weights(spec, root: Path, out: Path, x: np.ndarray, expected: np.ndarray, report: Report,
             channels_last: bool = False) -> dict:
    """The ONNX graph as it is; unless the package is a graph alone, the state dict in torch's own
    format (loadable with ``weights_only=True``) with its architecture as a standalone source
    file, and that network traced to TorchScript. ``x``: the preprocessed test input,
    ``expected``: the ONNX graph's output on it, which both torch formats must reproduce.
    ``channels_last``: every format gives ``b, *spatial, c`` (what bioimage.io's StarDist op
    expects back)."""
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

    from . import torch_source

    state = readers.state_dict(files.safe_join(root, spec.weights.safetensors.file))
    torch.save(state, out / STATE_DICT)
    target = architectures.get(spec.architecture_id).network
    module, _, attr = target.partition(":")
    kwargs = {**spec.architecture_params, **({"channels_last_output": True} if channels_last else {})}
    version = torch.__version__.split("+")[0]
    weights["onnx"]["parent"] = "pytorch_state_dict"
    try:
        text = torch_source.source(target, title=f"The network of {spec.ref} ({spec.architecture_id}), standalone.")
    except torch_source.StandaloneError as e:     # e.g. a third-party architecture importing more than torch
        report.notes.append(f"the pytorch_state_dict's architecture is imported from {module} (its code cannot be "
                            f"made standalone: {e}), so it runs only where that is installed; no torchscript")
        weights["pytorch_state_dict"] = {"source": STATE_DICT, "sha256": sha256_file(out / STATE_DICT),
                                         "architecture": {"callable": attr, "import_from": module, "kwargs": kwargs},
                                         "pytorch_version": version}
        return weights
    (out / ARCHITECTURE_SOURCE).write_text(text, encoding="utf-8")
    network = torch_source.load(out / ARCHITECTURE_SOURCE, attr)(**kwargs).eval()
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise IntegrityError(f"the standalone architecture does not load {spec.ref}'s weights: "
                             f"{str(e).splitlines()[0][:300]}") from None
    weights["pytorch_state_dict"] = {"source": STATE_DICT, "sha256": sha256_file(out / STATE_DICT),
                                     "architecture": {"source": ARCHITECTURE_SOURCE,
                                                      "sha256": sha256_file(out / ARCHITECTURE_SOURCE),
                                                      "callable": attr, "kwargs": kwargs},
                                     "pytorch_version": version}
    expected = np.moveaxis(expected, 1, -1) if channels_last else expected
    steps = spec.inputs[0].shape_step or [16] * (x.ndim - 2)
    traced = _torchscript(network, x, expected, [int(s) for s in steps], spec.ref, out / TORCHSCRIPT)
    weights["torchscript"] = {"source": TORCHSCRIPT, "sha256": sha256_file(traced), "pytorch_version": version,
                              "parent": "pytorch_state_dict"}
    return weights


def _close(got: np.ndarray, expected: np.ndarray) -> bool:
    """Within the tolerance the description declares for its test output."""
    atol = max(1e-4, 2e-3 * float(np.ptp(expected))) if expected.size else 1e-4
    return got.shape == expected.shape and bool(np.allclose(got, expected, rtol=1e-3, atol=atol))


def _torchscript(network, x: np.ndarray, expected: np.ndarray, steps: list[int], ref: str, path: Path) -> Path:
    """``network`` traced on ``x`` and saved with ``torch.jit.save``; refused unless the eager
    network reproduces the ONNX graph's output ``expected``, and the traced one the eager one at
    ``x`` and at another batch and size (``x`` grown by one ``steps`` per spatial axis): a trace
    must not have recorded the sizes it saw."""
    import warnings

    import torch

    sample = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with torch.no_grad():
        eager = network(sample).numpy()
        if not _close(eager, expected):
            raise IntegrityError(f"the standalone network of {ref} does not reproduce its ONNX graph's test output "
                                 f"(largest difference {float(np.abs(eager - expected).max()):.3g})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)     # torch 2.9+: jit is deprecated, still read
            warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*")
            traced = torch.jit.trace(network, sample, check_trace=False)
        pad = [(0, 0), (0, 0)] + [(0, min(int(s), n - 1)) for s, n in zip(steps, x.shape[2:])]
        grown = np.pad(x[:1], pad, mode="reflect")
        bigger = torch.from_numpy(np.concatenate([grown, grown[:, :, ::-1]]).astype(np.float32))
        for probe in (sample, bigger):
            if not np.allclose(traced(probe).numpy(), network(probe).numpy(), rtol=1e-5, atol=1e-5):
                raise IntegrityError(f"the TorchScript trace of {ref} does not reproduce its network at input "
                                     f"shape {tuple(probe.shape)}")
    torch.jit.save(traced, str(path))
    return path


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


def _network_output(spec, root: Path, x: np.ndarray) -> np.ndarray:
    """The package's ONNX graph's output on the preprocessed test input ``x``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(files.safe_join(root, spec.weights.onnx.file)), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _short(text: str | None, limit: int = 128) -> str:
    """bioimage.io tensor descriptions are at most 128 characters."""
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


WEIGHTS_DOC = {
    "onnx": "`{source}`: the ONNX graph (ONNX Runtime, ilastik, deepImageJ)",
    "pytorch_state_dict": "`{source}`: the weights in torch's own format (`torch.load(..., weights_only=True)`); the "
                          "architecture is `{arch}`, a standalone file that imports torch and the standard library "
                          "only: `{callable}(**kwargs)` with the kwargs in rdf.yaml builds the network, no bioimage-zoo "
                          "needed",
    "torchscript": "`{source}`: the same network traced with `torch.jit.trace` (`torch.jit.load`; deepImageJ, QuPath, "
                   "Fiji). Loading TorchScript runs the graph the file contains: trust the file as you would code",
}


def _weights_doc(weights: dict) -> list[str]:
    lines = ["### Weights", "", "Each format reproduces the test output on its own (`bioimageio test`):", ""]
    for name, entry in weights.items():
        arch = entry.get("architecture") or {}
        text = WEIGHTS_DOC.get(name, "`{source}`").format(source=entry["source"], callable=arch.get("callable"),
                                                          arch=arch.get("source") or arch.get("import_from"))
        if name == "pytorch_state_dict" and "import_from" in arch:
            text = (f"`{entry['source']}`: the weights in torch's own format; the architecture is imported from "
                    f"`{arch['import_from']}`, which must be installed")
        lines.append(f"- `{name}`: {text}.")
    return lines + [""]


def _instance_doc(spec, report: Report) -> list[str]:
    """For a model whose instance step bioimage.io cannot express: its outputs here are the raw
    maps, and the zoo command that turns them into labels."""
    left = [op for op in spec.outputs[0].postprocessing if f"output {spec.outputs[0].name}: {op.op}" in report.unmapped]
    instance = [op.op for op in left if opnames.is_instance_op(op.op)]
    if not instance:
        return []
    channels = ", ".join(spec.outputs[0].channels or []) or "the network's output channels"
    return ["### Instance labels", "",
            f"bioimage.io has no op for this model's instance step (`{instance[0]}`), so the output of this "
            f"description is the raw maps ({channels}), not instance labels: that is what `bioimageio test`, "
            "deepImageJ, ilastik and napari get from it. bioimage-zoo finishes the job; with the zoo package "
            f"itself (`zoo pull {spec.ref}` where it is not in your registry yet):", "",
            "```",
            f"zoo predict {spec.ref} image.tif -o labels.tif            # int32 instance labels",
            f"zoo predict {spec.ref} image.tif -o maps.tif --raw        # the raw maps, as here",
            "```", "",
            "or with this bioimage.io package, imported into a zoo package first (the steps are kept in "
            "`config.bioimage-zoo.postprocessing`), from this package's folder:", "",
            "```",
            f"zoo import bioimageio rdf.yaml --out ../my-{spec.name}",
            f"zoo predict ../my-{spec.name} image.tif -o labels.tif",
            "```", ""]


def _documentation(spec, root: Path, report: Report, weights: dict | None = None) -> str:
    card = (root / spec.documentation).read_text(encoding="utf-8") if spec.documentation else f"# {spec.name}\n"
    lines = ["", "## bioimage.io export", "",
             "Pre-processing mapped onto bioimage.io ops: " + ("; ".join(report.mapped) or "none") + ".", "",
             "Not expressible as bioimage.io ops, so not in this description (bioimage-zoo applies them: "
             "`zoo predict`): " + ("; ".join(report.unmapped) or "none") + ". The test output is therefore the "
             "network's output.", ""]
    lines += _instance_doc(spec, report) + (_weights_doc(weights) if weights else [])
    lines += [f"Note: {note}." for note in report.notes] + ([""] if report.notes else [])
    if "## Validation" not in card:
        lines += ["## Validation", "", "See the held-out metrics in the package's training record.", ""]
    return card + "\n".join(lines)


def zip_folder(folder: str | Path) -> Path:
    """``folder.zip`` holding the export with rdf.yaml at its root (a bioimage.io package)."""
    from ..package.archive import write_zip

    folder = Path(folder)
    return write_zip({p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()},
                     folder.with_suffix(".zip"))
