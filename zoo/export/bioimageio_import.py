"""``zoo import bioimageio PATH_OR_ZIP``: a bioimage.io model package as a zoo package.

The description is validated by bioimageio.spec first (its messages are passed on). Two weight
formats are imported, in this order of preference:

- ``pytorch_state_dict`` whose architecture is an installed zoo architecture (``import_from:
  zoo.models.<arch>.network``): a full package that torch and ONNX Runtime run and that can be
  fine-tuned. The state dict is read with ``torch.load(weights_only=True)`` after its sha256.
- ``onnx``: a package around the graph alone (architecture ``onnx-graph``): ONNX Runtime runs it,
  tiled like any other; other axis orders and input types are adapted by a few nodes around the
  graph (:mod:`zoo.export.onnx_layout`). The import is refused unless the graph reproduces the
  package's own test output.

Other formats (TorchScript, TensorFlow, Keras) are refused, naming the format. Pre/post-processing
ops are mapped onto the zoo's; an op without an equivalent is refused by name.

The import reads the files inside the package alone, each checked against the sha256 the
description pins; a file named by URL is refused, naming it. Offline (``--offline``,
``ZOO_OFFLINE=1``) nothing opens a connection: bioimage.io's validator runs without its
downloads, and the importer's own sha256 checks stand in for its file checks.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from .. import architectures, spec as specs
from ..errors import InputError, IntegrityError, ReproducibilityError, SpecError, UnknownArchitectureError
from ..hashing import sha256_file
from ..package import archive, build, files, readers
from ..runtime.onnx_session import check_self_contained
from ..runtime.ops import POSTPROCESSING, PREPROCESSING
from ..spec import Op, Spec, TensorSpec, Training, load_yaml_file
from . import onnx_layout

SUPPORTED = ("pytorch_state_dict", "onnx")
OTHER_FORMATS = ("torchscript", "keras_hdf5", "keras_v3", "tensorflow_saved_model_bundle", "tensorflow_js")


def _validate(rdf: Path, offline: bool) -> dict:
    import httpx
    from bioimageio.spec import InvalidDescr, load_description

    data = load_yaml_file(rdf)          # bounded and alias-free, before bioimage.io's own reader expands it
    try:
        descr = load_description(str(rdf), perform_io_checks=not offline)   # checks download what URLs name
    except httpx.HTTPError as e:
        raise InputError(f"{rdf}: validating it needs a file it names by URL, and the download failed ({e}); check "
                         "the network, or put the file in the package and name it by its relative path") from None
    if isinstance(descr, InvalidDescr):
        problems = [f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in descr.validation_summary.errors]
        raise SpecError(f"{rdf} is not a valid bioimage.io model description", problems=problems, source=str(rdf))
    return data


def _installed_architecture(weights: dict) -> tuple[architectures.Architecture, dict] | None:
    arch_descr = (weights.get("pytorch_state_dict") or {}).get("architecture") or {}
    target = f"{arch_descr.get('import_from')}:{arch_descr.get('callable')}"
    for arch in architectures.available().values():
        if arch.network == target:
            return arch, dict(arch_descr.get("kwargs") or {})
    return None


def choose_weights(weights: dict, prefer: str | None = None) -> str:
    """The weight format to import: ``prefer`` if given, else a state dict of an installed
    architecture, else ONNX; a clear error naming the formats otherwise."""
    present = [f for f in weights if weights.get(f)]
    if prefer:
        if prefer not in SUPPORTED:
            raise InputError(f"cannot import '{prefer}' weights: bioimage-zoo imports {' or '.join(SUPPORTED)}")
        if prefer not in present:
            raise InputError(f"the package has no '{prefer}' weights (it has: {', '.join(present)})")
        if prefer == "pytorch_state_dict" and _installed_architecture(weights) is None:
            arch = weights["pytorch_state_dict"].get("architecture") or {}
            raise UnknownArchitectureError(
                f"the package's architecture {arch.get('import_from')}:{arch.get('callable')} is not an installed "
                "bioimage-zoo architecture; import its onnx weights instead (--weights onnx) if it has them")
        return prefer
    if "pytorch_state_dict" in present and _installed_architecture(weights):
        return "pytorch_state_dict"
    if "onnx" in present:
        return "onnx"
    if "pytorch_state_dict" in present:
        arch = weights["pytorch_state_dict"].get("architecture") or {}
        raise UnknownArchitectureError(
            f"the package's architecture {arch.get('import_from')}:{arch.get('callable')} is not an installed "
            "bioimage-zoo architecture and the package has no onnx weights; nothing can be imported")
    raise InputError(f"importing {' / '.join(present) or 'these'} weights is not supported yet: bioimage-zoo "
                     "imports onnx weights, or pytorch_state_dict weights of an installed architecture")


def _source(folder: Path, entry: dict, what: str, offline: bool) -> Path:
    """The file in the package that ``entry`` (``source`` and ``sha256``) names, its sha256 checked;
    a URL is refused: the import reads what the package holds and downloads nothing."""
    source = str(entry["source"])
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", source):
        why = "offline (--offline, ZOO_OFFLINE), so nothing is downloaded" if offline else \
            "bioimage-zoo imports the files a package holds and downloads none"
        raise InputError(f"{what} is at {source}, outside the package: {why}. Download it into the package folder, "
                         "set its source in the description to the relative path, and import again")
    path = files.safe_join(folder, source)
    if not path.is_file():
        raise InputError(f"{what} {source} is not in the package ({folder}): the description names a missing file")
    if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
        raise IntegrityError(f"{source}: sha256 differs from the one the description pins")
    return path


# ----------------------------------------------------------------------------- processing ops
def _axes_param(kwargs: dict) -> list[str] | None:
    axes = kwargs.get("axes")
    return None if axes is None else [a if isinstance(a, str) else a.get("id", "") for a in axes]


def _op(op: dict, where: str, n_channels: int) -> Op | None:
    """One bioimage.io op as the zoo's (None: nothing to do in a float32 runtime)."""
    kind, kwargs = op["id"], op.get("kwargs") or {}
    axes = _axes_param(kwargs)
    if kind in ("scale_range", "zero_mean_unit_variance"):
        joint = ("c" in axes or "channel" in axes) if axes is not None else n_channels > 1
        if kwargs.get("reference_tensor") or joint:
            raise InputError(f"{where}: '{kind}' over {axes or 'the whole tensor'}"
                             f"{' of ' + kwargs['reference_tensor'] if kwargs.get('reference_tensor') else ''} has no "
                             "bioimage-zoo equivalent yet (the zoo normalises each image and channel on its own)")
        if kind == "scale_range":
            return Op("percentile_normalize", {"low": float(kwargs.get("min_percentile", 0.0)),
                                               "high": float(kwargs.get("max_percentile", 100.0))})
        return Op("zero_mean_unit_variance", {})
    if kind == "fixed_zero_mean_unit_variance":
        return Op("zero_mean_unit_variance", {"mean": kwargs["mean"], "std": kwargs["std"]})
    if kind == "scale_linear":
        return Op("scale_linear", {"gain": kwargs.get("gain", 1.0), "offset": kwargs.get("offset", 0.0)})
    if kind == "clip":
        return Op("clip", {k: kwargs[k] for k in ("min", "max") if kwargs.get(k) is not None})
    if kind == "sigmoid":
        return Op("sigmoid", {})
    if kind == "binarize":
        return Op("threshold", {"value": float(kwargs["threshold"])})
    if kind == "ensure_dtype":
        return None
    if kind == "stardist_postprocessing":     # same layout as ours: probability, then rays from x towards y
        if len(kwargs.get("grid") or []) != 2 or any(int(g) != 1 for g in kwargs["grid"]):
            raise InputError(f"{where}: StarDist post-processing on a grid of {kwargs.get('grid')} (or in 3D) is not "
                             "supported yet; bioimage-zoo's runs on every pixel of a 2D output")
        return Op("stardist_instances", {"prob_threshold": float(kwargs["prob_threshold"]),
                                         "nms_threshold": float(kwargs["nms_threshold"])})
    raise InputError(f"{where}: the bioimage.io op '{kind}' has no bioimage-zoo equivalent yet")


def _ops(items: list[dict] | None, where: str, n_channels: int, allowed: dict) -> list[Op]:
    out = []
    for item in items or []:
        op = _op(item, where, n_channels)
        if op is not None and op.op not in allowed:
            raise InputError(f"{where}: the bioimage.io op '{item['id']}' is not supported there yet")
        if op is not None:
            out.append(op)
    return out


# ----------------------------------------------------------------------------- description
def _describe(spec: Spec, rdf: dict, name: str | None) -> None:
    """Copy the package's identity, credits and licence onto ``spec``."""
    spec.name = name or re.sub(r"[^a-z0-9._-]+", "-", rdf["name"].lower()).strip("-.")[:64]
    spec.version = str(rdf.get("version") or "0.1.0")
    spec.description = rdf.get("description") or spec.description
    spec.authors = [{"name": a["name"]} for a in rdf.get("authors", [])] or spec.authors
    spec.license = rdf.get("license", spec.license)
    spec.cite = [{"text": c["text"], **({"doi": c["doi"]} if c.get("doi") else {})} for c in rdf.get("cite", [])]
    spec.tags = list(dict.fromkeys(rdf.get("tags") or spec.tags))


def _training(rdf: dict, rdf_path: Path, source: Path, test_input: np.ndarray, weights: str) -> Training:
    from ..images import intensity_statistics

    return Training(
        data={"description": f"not described: imported from the bioimage.io model '{rdf['name']}' "
                             f"{rdf.get('version', '')} (n_train 0 = unknown)",
              "source": f"bioimage.io package {source.name}", "fingerprint": sha256_file(rdf_path),
              "n_train": 0, "n_validation": 0},
        statistics=intensity_statistics([test_input]),
        metrics={}, config={"imported_from": {"name": rdf["name"], "format_version": rdf.get("format_version"),
                                              "weights": weights, "statistics_from": "the package's test input"}},
        parent=None)


def _letters(axes: list[dict], where: str) -> str:
    """bioimage.io axes objects as the zoo's letters (``b``, ``c``, ``z``/``y``/``x``)."""
    out = ""
    for axis in axes:
        kind = axis.get("type")
        if kind == "batch":
            out += "b"
        elif kind == "channel":
            out += "c"
        elif kind == "space" and axis.get("id", "") in ("x", "y", "z"):
            out += axis["id"]
        else:
            raise InputError(f"{where}: the axis {axis.get('id') or kind} ({kind}) is not supported yet: "
                             "bioimage-zoo imports batch, channel and space (z, y, x) axes")
    return out


def _task(tags: list[str]) -> str:
    text = " ".join(tags).lower()
    for family in ("segmentation", "classification", "detection"):
        if family in text:
            return family
    return "restoration"


def _graph_tensors(rdf: dict) -> tuple[TensorSpec, TensorSpec, str, str]:
    """The zoo's input and output tensors of a foreign graph, and the axes the graph declares."""
    if len(rdf["inputs"]) != 1 or len(rdf["outputs"]) != 1:
        raise InputError(f"the model has {len(rdf['inputs'])} inputs and {len(rdf['outputs'])} outputs: bioimage-zoo "
                         "imports models with one input and one output tensor")
    rdf_in, rdf_out = rdf["inputs"][0], rdf["outputs"][0]
    their_in, their_out = _letters(rdf_in["axes"], "input"), _letters(rdf_out["axes"], "output")
    spatial = "".join(a for a in "zyx" if a in their_in)
    if sorted(a for a in their_out if a in "zyx") != sorted(spatial):
        raise InputError(f"the output's space axes ({their_out}) differ from the input's ({their_in})")
    mins, steps, halo = [], [], []
    by_id_in = {a.get("id", a["type"]): a for a in rdf_in["axes"]}
    by_id_out = {a.get("id", a["type"]): a for a in rdf_out["axes"]}
    for name in spatial:
        size = by_id_in[name].get("size")
        if not isinstance(size, dict) or "min" not in size or not size.get("step"):
            raise InputError(f"input axis {name} has a fixed size ({size}): bioimage-zoo tiles images, so it needs a "
                             "size that can vary (min and step); fixed-size models are not supported yet")
        out_size = by_id_out[name].get("size")
        if not (isinstance(out_size, dict) and out_size.get("tensor_id") == rdf_in["id"]
                and float(out_size.get("scale", 1.0)) == 1.0 and int(out_size.get("offset", 0)) == 0):
            raise InputError(f"output axis {name} is not the input's size ({out_size}): bioimage-zoo imports models "
                             "whose output has the input's spatial size")
        mins.append(int(size["min"]))
        steps.append(int(size["step"]))
        halo.append(int(by_id_out[name].get("halo", 0)))

    def channels(axes: list[dict]) -> list[str]:
        axis = next((a for a in axes if a["type"] == "channel"), None)
        return list(axis["channel_names"]) if axis else ["c0"]

    in_channels, out_channels = channels(rdf_in["axes"]), channels(rdf_out["axes"])
    inp = TensorSpec(name=rdf_in["id"], axes="bc" + spatial, dtype="float32", channels=in_channels,
                     shape_min=mins, shape_step=steps, halo=halo if any(halo) else None,
                     description=rdf_in.get("description") or None)
    inp.preprocessing = _ops(rdf_in.get("preprocessing"), "input preprocessing", len(in_channels),
                             PREPROCESSING)
    out = TensorSpec(name=rdf_out["id"], axes="bc" + spatial, dtype="float32", channels=out_channels,
                     description=rdf_out.get("description") or None)
    out.postprocessing = _ops(rdf_out.get("postprocessing"), "output postprocessing", len(out_channels),
                              POSTPROCESSING)
    star = next((p for p in rdf_out.get("postprocessing") or [] if p["id"] == "stardist_postprocessing"), None)
    if star:                       # the graph gives the probability and the rays; the op makes labels
        out.channels = ["probability"] + [f"ray{k:02d}" for k in range(int(star["kwargs"]["n_rays"]))]
    return inp, out, their_in, their_out


def _zoo_postprocessing(rdf: dict) -> list[Op]:
    """Our own export's post-processing that bioimage.io ops cannot express (instances, the
    input's scale restored), kept in its config; nothing for anyone else's package."""
    ours = (rdf.get("config") or {}).get("bioimage-zoo") or {}
    return [Op(p["op"], p.get("params") or {}) for p in ours.get("postprocessing") or []]


def _tolerance(rdf: dict) -> tuple[float, float]:
    tolerances = ((rdf.get("config") or {}).get("bioimageio") or {}).get("reproducibility_tolerance") or []
    first = tolerances[0] if tolerances else {}
    return float(first.get("relative_tolerance", 1e-3)), float(first.get("absolute_tolerance", 1e-4))


# ----------------------------------------------------------------------------- the two importers
def _import_state_dict(rdf: dict, folder: Path, rdf_path: Path, source: Path, out: Path, name, overwrite,
                       offline: bool) -> Path:
    arch, params = _installed_architecture(rdf["weights"])
    params.pop("channels_last_output", None)       # our StarDist export's layout for bioimage.io's op
    weights = rdf["weights"]["pytorch_state_dict"]
    state = readers.torch_state_dict(_source(folder, weights, "the pytorch_state_dict weights", offline))
    network = arch.build_network(params)
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise IntegrityError(f"{weights['source']} does not fit {arch.id} with the kwargs the description gives: "
                             f"{str(e).splitlines()[0][:300]}") from None

    spec = specs.load(arch.blueprint_path(int(params.get("dims", 2))))
    spec.architecture_params = params
    _describe(spec, rdf, name)
    inp, rdf_in = spec.inputs[0], rdf["inputs"][0]
    channel = next((a for a in rdf_in["axes"] if a.get("type") == "channel"), None)
    if channel and channel.get("channel_names"):
        inp.channels = list(channel["channel_names"])
    inp.preprocessing = _ops(rdf_in.get("preprocessing"), "input preprocessing", inp.n_channels,
                             PREPROCESSING)
    spec.outputs[0].postprocessing = _zoo_postprocessing(rdf) or spec.outputs[0].postprocessing
    test_input = np.load(_source(folder, rdf_in["test_tensor"], "the test input", offline), allow_pickle=False)
    return build.build(spec, network, out, _training(rdf, rdf_path, source, test_input, "pytorch_state_dict"),
                       test_input, name=spec.name, version=spec.version, description=spec.description,
                       overwrite=overwrite)


def _import_graph(rdf: dict, folder: Path, rdf_path: Path, source: Path, out: Path, name, overwrite,
                  work: Path, offline: bool) -> Path:
    import onnx

    weights = rdf["weights"]["onnx"]
    model = onnx.load(str(_source(folder, weights, "the onnx weights", offline)), load_external_data=False)
    check_self_contained(model, weights["source"])
    inp, outp, their_in, their_out = _graph_tensors(rdf)
    declared_in, _ = onnx_layout.static_dims(model)
    if declared_in and isinstance(declared_in[their_in.index("b")], int) and declared_in[their_in.index("b")] > 0:
        raise InputError(f"the ONNX graph fixes the batch size to {declared_in[their_in.index('b')]}: bioimage-zoo "
                         "runs tiles in batches; export the graph with a dynamic batch axis")
    graph = onnx_layout.save(onnx_layout.adapt(model, their_in, their_out, inp.spatial_axes), work / "graph.onnx")

    spec = Spec(kind="package", name="imported", version="0.1.0", description="imported", authors=[{"name": "-"}],
                license="CC-BY-4.0", task=_task(rdf.get("tags") or []), architecture_id=specs.ONNX_GRAPH,
                architecture_params={}, inputs=[inp], outputs=[outp])
    _describe(spec, rdf, name)
    rdf_in, rdf_out = rdf["inputs"][0], rdf["outputs"][0]
    test_x = onnx_layout.to_ours(np.load(_source(folder, rdf_in["test_tensor"], "the test input", offline),
                                         allow_pickle=False).astype(np.float32), their_in, inp.spatial_axes)
    expected = onnx_layout.to_ours(np.load(_source(folder, rdf_out["test_tensor"], "the test output", offline),
                                           allow_pickle=False), their_out, inp.spatial_axes)
    _check_reproduces(spec, graph, test_x, expected, _tolerance(rdf))
    outp.postprocessing = _zoo_postprocessing(rdf) or outp.postprocessing
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return build.build_graph(spec, graph, opset, out, _training(rdf, rdf_path, source, test_x, "onnx"), test_x,
                             name=spec.name, version=spec.version, description=spec.description, overwrite=overwrite)


def _check_reproduces(spec: Spec, graph: Path, x: np.ndarray, expected: np.ndarray,
                      tolerance: tuple[float, float]) -> None:
    """The zoo's runtime (ops, tiling, ONNX Runtime) must give the package's own test output,
    away from the borders where the zoo mirrors the image to give tiles their halo."""
    from ..runtime.predictor import Predictor
    from ..runtime.runners import OnnxRunner

    model = Predictor(spec, OnnxRunner(graph, device="cpu"))
    try:
        got = model.predict_tensor(x, raw=not model.makes_instances)
    except Exception as e:   # noqa: BLE001 - ONNX Runtime's errors name nodes; say what failed first
        raise InputError(f"the imported ONNX graph does not run on the package's test input {x.shape}: {e}") from None
    if model.makes_instances:       # labels: the same objects (an NMS may differ in a few), not the same ids
        from ..segmentation.metrics import evaluate

        f1 = evaluate([e[0] for e in expected], [g[0] for g in got], [0.5])[0]["f1"]
        if f1 < 0.9:
            raise ReproducibilityError(f"the imported graph's objects match the package's test output with F1 {f1:.3f} "
                                       "at IoU 0.5 (at least 0.9 expected)")
        return
    if got.shape != expected.shape:
        raise ReproducibilityError(f"the imported graph gives an output of shape {got.shape} on the test input; "
                                   f"the package's test output has shape {expected.shape}")
    halo = spec.inputs[0].halo or [0] * (x.ndim - 2)
    inner = (slice(None), slice(None)) + tuple(slice(h, s - h) for h, s in zip(halo, x.shape[2:]))
    rtol, atol = tolerance
    error = np.abs(got[inner].astype(np.float64) - expected[inner])
    allowed = atol + rtol * np.abs(expected[inner].astype(np.float64))
    if error.size and not np.all(error <= allowed):
        raise ReproducibilityError(f"the imported graph does not reproduce the package's own test output (max error "
                                   f"{float(error.max()):.3g}, tolerance rtol={rtol}, atol={atol}); its "
                                   "pre/post-processing may not map exactly onto the zoo's ops")


def import_package(source: str | Path, out: str | Path, name: str | None = None, overwrite: bool = False,
                   weights: str | None = None, offline: bool | None = None) -> Path:
    """Validate the bioimage.io package at ``source`` (folder, rdf.yaml or .zip) and write a zoo
    package to ``out``; ``weights`` picks the format (``pytorch_state_dict`` or ``onnx``);
    ``offline`` (default: ZOO_OFFLINE / HF_HUB_OFFLINE) opens no connection."""
    from ..registry.remote import offline_by_default

    offline = offline_by_default() if offline is None else offline
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source} does not exist: give a bioimage.io package folder, its rdf.yaml or its .zip")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = archive.extract(source, work / "package") if source.suffix == ".zip" else \
            (source if source.is_dir() else source.parent)
        rdf_path = folder / "rdf.yaml" if (folder / "rdf.yaml").is_file() else folder / "bioimageio.yaml"
        if not rdf_path.is_file():
            raise InputError(f"{source} holds no rdf.yaml (or bioimageio.yaml): not a bioimage.io package")
        rdf = _validate(rdf_path, offline)
        if rdf.get("type") != "model":
            raise InputError(f"{rdf_path} describes a {rdf.get('type')}, not a model")
        if choose_weights(rdf.get("weights") or {}, weights) == "pytorch_state_dict":
            return _import_state_dict(rdf, folder, rdf_path, source, Path(out), name, overwrite, offline)
        return _import_graph(rdf, folder, rdf_path, source, Path(out), name, overwrite, work, offline)
