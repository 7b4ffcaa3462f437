"""The model spec (``zoo.yaml``) and blueprint (``spec.yaml``): load, validate, write.

Validation is the JSON Schema in ``zoo.specs/model.schema.json`` plus a few cross-field checks
the schema cannot express. The rest of the code works with the typed view below, never with
raw dicts.
"""
from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError, storage

SPEC_FILE = "zoo.yaml"
FORMAT_VERSION = "0.1"
ONNX_GRAPH = "onnx-graph"    # the architecture id of a package that is an ONNX graph alone
TORCHSCRIPT = "torchscript"  # the architecture id of a package that is a TorchScript module alone (imported)
FOREIGN = (ONNX_GRAPH, TORCHSCRIPT)   # networks without trainable zoo weights: run, never fine-tuned
MAX_YAML_BYTES = 1 << 20     # a spec is a few kB; the shipped ones are under 14 kB
MAX_YAML_DEPTH = 32          # nesting of mappings and lists; the shipped specs nest 8 deep
MAX_YAML_NODES = 100_000     # values that aliases may expand to (bioimage.io descriptions use a few)


# ----------------------------------------------------------------------------- typed view
@dataclass
class Op:
    """A named pre/post-processing op with its parameters (see ``zoo.runtime.ops``)."""

    op: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "Op":
        return cls(op=d["op"], params=dict(d.get("params") or {}))

    def to_dict(self) -> dict:
        return {"op": self.op, "params": self.params} if self.params else {"op": self.op}


@dataclass
class TensorSpec:
    name: str
    axes: str
    dtype: str
    channels: list[str] | None = None
    shape_min: list[int] | None = None
    shape_step: list[int] | None = None
    halo: list[int] | None = None
    preprocessing: list[Op] = field(default_factory=list)
    postprocessing: list[Op] = field(default_factory=list)
    description: str | None = None
    grey: str | None = None          # "repeat": a grey image is repeated into every channel
    batch: int | None = None         # the largest batch the network takes (an imported graph fixed to 1); None: any
    scale: list[float] | None = None     # an output's pixels per input pixel, per spatial axis (default 1)
    offset: list[int] | None = None      # pixels an output has beyond size * scale (negative: cropped), per axis

    @property
    def spatial_axes(self) -> str:
        return "".join(a for a in self.axes if a in "zyx")

    @property
    def n_channels(self) -> int:
        return len(self.channels) if self.channels else 1

    @property
    def resized(self) -> bool:
        """An output whose spatial size is not the input's (scaled, or cropped by an offset)."""
        return any(float(s) != 1.0 for s in self.scale or []) or any(int(o) != 0 for o in self.offset or [])

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        shape = d.get("shape") or {}
        return cls(
            name=d["name"], axes=d["axes"], dtype=d["dtype"], channels=d.get("channels"),
            shape_min=shape.get("min"), shape_step=shape.get("step"), halo=d.get("halo"),
            preprocessing=[Op.from_dict(o) for o in d.get("preprocessing", [])],
            postprocessing=[Op.from_dict(o) for o in d.get("postprocessing", [])],
            description=d.get("description"), grey=d.get("grey"), batch=d.get("batch"),
            scale=(d.get("size") or {}).get("scale"), offset=(d.get("size") or {}).get("offset"),
        )

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        d.update(axes=self.axes, dtype=self.dtype)
        if self.channels:
            d["channels"] = list(self.channels)
        if self.grey:
            d["grey"] = self.grey
        if self.shape_min is not None:
            d["shape"] = {"min": list(self.shape_min), "step": list(self.shape_step or [0] * len(self.shape_min))}
        if self.halo is not None:
            d["halo"] = list(self.halo)
        if self.batch is not None:
            d["batch"] = self.batch
        if self.scale is not None or self.offset is not None:
            n = len(self.spatial_axes)
            d["size"] = {"scale": list(self.scale or [1] * n), "offset": list(self.offset or [0] * n)}
        if self.preprocessing:
            d["preprocessing"] = [o.to_dict() for o in self.preprocessing]
        if self.postprocessing:
            d["postprocessing"] = [o.to_dict() for o in self.postprocessing]
        return d


@dataclass
class FileRef:
    file: str
    sha256: str

    @classmethod
    def from_dict(cls, d: dict) -> "FileRef":
        return cls(file=d["file"], sha256=d["sha256"])

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256}


@dataclass
class Weights:
    """``safetensors``: the trainable weights of an installed architecture; ``onnx``: the graph.
    A package imported as an ONNX graph alone has no safetensors (architecture ``onnx-graph``)."""

    safetensors: FileRef | None
    onnx: FileRef | None = None
    onnx_opset: int | None = None
    torchscript: FileRef | None = None     # an imported TorchScript module (architecture ``torchscript``)

    @classmethod
    def from_dict(cls, d: dict) -> "Weights":
        onnx = d.get("onnx")
        return cls(
            safetensors=FileRef.from_dict(d["safetensors"]) if d.get("safetensors") else None,
            onnx=FileRef.from_dict(onnx) if onnx else None,
            onnx_opset=onnx.get("opset") if onnx else None,
            torchscript=FileRef.from_dict(d["torchscript"]) if d.get("torchscript") else None,
        )

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"safetensors": self.safetensors.to_dict()} if self.safetensors else {}
        if self.onnx:
            d["onnx"] = {**self.onnx.to_dict(), "opset": self.onnx_opset}
        if self.torchscript:
            d["torchscript"] = self.torchscript.to_dict()
        return d

    def files(self) -> list[FileRef]:
        return [f for f in (self.safetensors, self.onnx, self.torchscript) if f is not None]


@dataclass
class Training:
    data: dict[str, Any]
    statistics: dict[str, Any]
    metrics: dict[str, Any]
    config: dict[str, Any]
    parent: dict[str, str] | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "Training":
        return cls(data=d["data"], statistics=d["statistics"], metrics=d["metrics"],
                   config=d["config"], parent=d.get("parent"))

    def to_dict(self) -> dict:
        return {"data": self.data, "statistics": self.statistics, "metrics": self.metrics,
                "config": self.config, "parent": self.parent}


@dataclass
class TestRecord:
    inputs: list[FileRef]
    outputs: list[FileRef]
    rtol: float
    atol: float

    @classmethod
    def from_dict(cls, d: dict) -> "TestRecord":
        return cls(inputs=[FileRef.from_dict(f) for f in d["inputs"]],
                   outputs=[FileRef.from_dict(f) for f in d["outputs"]],
                   rtol=d["tolerance"]["rtol"], atol=d["tolerance"]["atol"])

    def to_dict(self) -> dict:
        return {"inputs": [f.to_dict() for f in self.inputs],
                "outputs": [f.to_dict() for f in self.outputs],
                "tolerance": {"rtol": self.rtol, "atol": self.atol}}


@dataclass
class Spec:
    """A model package spec (kind ``package``) or an architecture blueprint (kind ``blueprint``)."""

    kind: str
    name: str
    version: str
    description: str
    authors: list[dict[str, str]]
    license: str
    task: str
    architecture_id: str
    architecture_params: dict[str, Any]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    cite: list[dict[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    weights: Weights | None = None
    training: Training | None = None
    test: TestRecord | None = None
    covers: list[str] = field(default_factory=list)
    documentation: str | None = None
    trust: dict | None = None        # {statistics: FileRef dict, encoder: FileRef dict, threshold, calibration}
    scale: dict | None = None        # {pixel_size: {z, y, x: µm}, diameter: px, measured_from}: the training's

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def graph_only(self) -> bool:
        """An ONNX graph without trainable weights (imported): ONNX Runtime runs it; torch,
        fine-tuning and the PyTorch export cannot."""
        return self.architecture_id in FOREIGN

    @classmethod
    def from_dict(cls, d: dict) -> "Spec":
        """Build the typed view from a dict that already passed :func:`validate`."""
        arch = d["architecture"]
        return cls(
            kind=d["kind"], name=d["name"], version=d["version"], description=d["description"],
            authors=list(d["authors"]), license=d["license"], task=d["task"],
            architecture_id=arch["id"], architecture_params=dict(arch.get("params") or {}),
            inputs=[TensorSpec.from_dict(t) for t in d["inputs"]],
            outputs=[TensorSpec.from_dict(t) for t in d["outputs"]],
            cite=list(d.get("cite", [])), tags=list(d.get("tags", [])),
            weights=Weights.from_dict(d["weights"]) if "weights" in d else None,
            training=Training.from_dict(d["training"]) if "training" in d else None,
            test=TestRecord.from_dict(d["test"]) if "test" in d else None,
            covers=list(d.get("covers", [])), documentation=d.get("documentation"), trust=d.get("trust"),
            scale=d.get("scale"),
        )

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "format_version": FORMAT_VERSION, "kind": self.kind, "name": self.name,
            "version": self.version, "description": self.description, "authors": self.authors,
            "license": self.license,
        }
        if self.cite:
            d["cite"] = self.cite
        if self.tags:
            d["tags"] = self.tags
        d["task"] = self.task
        d["architecture"] = {"id": self.architecture_id, "params": self.architecture_params}
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        if self.weights:
            d["weights"] = self.weights.to_dict()
        if self.training:
            d["training"] = self.training.to_dict()
        if self.test:
            d["test"] = self.test.to_dict()
        if self.trust:
            d["trust"] = self.trust
        if self.scale:
            d["scale"] = self.scale
        if self.covers:
            d["covers"] = self.covers
        if self.documentation:
            d["documentation"] = self.documentation
        return d

    def copy(self) -> "Spec":
        return copy.deepcopy(self)

    def package_files(self) -> list[FileRef]:
        """Every file the spec pins by sha256 (weights and test tensors)."""
        files = list(self.weights.files()) if self.weights else []
        if self.test:
            files += self.test.inputs + self.test.outputs
        if self.trust:
            files += [FileRef.from_dict(self.trust[k]) for k in ("statistics", "encoder")]
        return files


# ----------------------------------------------------------------------------- validation
@lru_cache(maxsize=1)
def schema() -> dict:
    text = resources.files("zoo.specs").joinpath("model.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@lru_cache(maxsize=None)
def _whole_string(pattern: str) -> re.Pattern:
    """``pattern`` with a final ``$`` meaning the end of the string, as in JSON Schema (ECMA 262);
    Python's ``$`` also matches before a trailing newline, which let ``"1.0.0\\n"`` through."""
    escapes = len(pattern[:-1]) - len(pattern[:-1].rstrip("\\"))
    if pattern.endswith("$") and escapes % 2 == 0:
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(validator, pattern, instance, schema):
    import jsonschema

    if validator.is_type(instance, "string") and not _whole_string(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    strict = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern})
    return strict(schema())


def _field_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _schema_problems(data: dict) -> list[str]:
    problems = []
    for err in _validator().iter_errors(data):
        # For oneOf/anyOf failures, the most specific sub-error says more than the summary.
        if err.context:
            err = min(err.context, key=lambda e: (-len(e.absolute_path), len(e.message)))
        message = err.message
        if err.validator == "pattern" and "\\.\\." in str(err.validator_value):     # the file-path pattern
            message = (f"{err.instance!r} is not a plain relative path inside the package (letters, digits, "
                       "'._-/', no leading '/', no '..')")
        elif err.validator == "pattern" and err.validator_value == schema()["$defs"]["sha256"]["pattern"]:
            message = f"{err.instance!r} is not a sha256: expected exactly 64 lower-case hex digits"
        elif err.validator == "pattern" and list(err.absolute_path) == ["version"]:
            message = (f"{err.instance!r} is not a version: expected MAJOR.MINOR.PATCH, optionally with "
                       "-alpha.N, -beta.N or -rc.N, spelled exactly so (e.g. 1.2.0, 1.2.0-rc.1)")
        problems.append((list(err.absolute_path), f"{_field_path(err.absolute_path)}: {message}"))
    problems.sort(key=lambda p: [str(x) for x in p[0]])
    return [p[1] for p in problems]


def _non_finite(node, path=()) -> list[str]:
    """NaN and infinities anywhere (JSON has none, and a NaN threshold compares false with everything)."""
    if isinstance(node, float) and not math.isfinite(node):
        return [f"{_field_path(path)}: {node} is not a finite number"]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _non_finite(v, path + (k,))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _non_finite(v, path + (i,))]
    return []


def _semantic_problems(data: dict) -> list[str]:
    """Cross-field rules the schema cannot express."""
    problems = _non_finite(data)
    for group in ("inputs", "outputs"):
        for i, t in enumerate(data.get(group, [])):
            where = f"{group}[{i}]"
            n_spatial = sum(a in "zyx" for a in t.get("axes", ""))
            shape = t.get("shape") or {}
            size = t.get("size") or {}
            for key, values in (("shape.min", shape.get("min")), ("shape.step", shape.get("step")),
                                ("halo", t.get("halo")), ("size.scale", size.get("scale")),
                                ("size.offset", size.get("offset"))):
                if values is not None and len(values) != n_spatial:
                    problems.append(f"{where}.{key}: has {len(values)} entries but axes "
                                    f"'{t['axes']}' has {n_spatial} spatial axes")
            channels = t.get("channels")
            if channels and "c" not in t.get("axes", "") and len(channels) != 1:
                problems.append(f"{where}.channels: {len(channels)} channels named but axes "
                                f"'{t['axes']}' has no 'c' axis")
    weights = data.get("weights") or {}
    arch_id = (data.get("architecture") or {}).get("id")
    if arch_id == ONNX_GRAPH and weights and ("safetensors" in weights or "onnx" not in weights):
        problems.append(f"weights: an '{ONNX_GRAPH}' package holds weights.onnx and no safetensors")
    if arch_id == TORCHSCRIPT and weights and ("safetensors" in weights or "torchscript" not in weights):
        problems.append(f"weights: a '{TORCHSCRIPT}' package holds a TorchScript module and no safetensors")
    if arch_id not in FOREIGN and data.get("kind") == "package" and weights and "safetensors" not in weights:
        problems.append(f"weights.safetensors: required for architecture '{arch_id}' "
                        f"(only an '{ONNX_GRAPH}' or '{TORCHSCRIPT}' package may hold a network alone)")
    if arch_id not in FOREIGN and "torchscript" in weights:
        problems.append(f"weights.torchscript: only a '{TORCHSCRIPT}' package holds a TorchScript module")
    for i, t in enumerate(data.get("inputs", [])):
        if "yx" not in t.get("axes", "yx"):
            problems.append(f"inputs[{i}].axes: '{t['axes']}' has no space axes: inputs are images (yx or zyx)")
    names = [t.get("name") for t in data.get("inputs", [])]
    if len(names) != len(set(names)):
        problems.append("inputs: tensor names must be unique")
    return problems


def validate(data: Any, source: str | None = None) -> Spec:
    """Validate a spec dict and return its typed view; raise SpecError naming every bad field."""
    if not isinstance(data, dict):
        raise SpecError(f"expected a mapping (key: value pairs) at the top level, got {type(data).__name__}",
                        source=source)
    problems = _schema_problems(data)
    if not problems:
        problems = _semantic_problems(data)
    if problems:
        raise SpecError(f"invalid spec ({len(problems)} problem{'s' * (len(problems) > 1)}):",
                        problems, source=source)
    return Spec.from_dict(data)


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader without anchors and aliases (a few lines of them expand to billions of nodes)
    and with the nesting bounded (deeper documents would exhaust the recursion limit)."""

    aliases = False      # a bioimage.io description may use them: counted as expanded, at most MAX_YAML_NODES

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0
        self.expanded = 0
        self._sizes: dict[int, int] = {}

    def _size(self, node) -> int:
        if id(node) not in self._sizes:
            if isinstance(node, yaml.MappingNode):
                size = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
            elif isinstance(node, yaml.SequenceNode):
                size = 1 + sum(self._size(v) for v in node.value)
            else:
                size = 1
            self._sizes[id(node)] = size
        return self._sizes[id(node)]

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            if not self.aliases:
                raise yaml.MarkedYAMLError(problem="anchors and aliases (&name, *name) are not accepted: write "
                                           "each value out", problem_mark=event.start_mark)
            if isinstance(event, yaml.AliasEvent) and event.anchor in self.anchors:
                self.expanded += self._size(self.anchors[event.anchor])
                if self.expanded > MAX_YAML_NODES:
                    raise yaml.MarkedYAMLError(problem=f"aliases expand to more than {MAX_YAML_NODES} values",
                                               problem_mark=event.start_mark)
        if self.depth >= MAX_YAML_DEPTH:
            raise yaml.MarkedYAMLError(problem=f"nested more than {MAX_YAML_DEPTH} levels deep",
                                       problem_mark=event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _AliasBoundedLoader(_BoundedLoader):
    aliases = True


def parse_yaml(text: str, source: str | None = None, aliases: bool = False) -> Any:
    """The one YAML reader of the zoo (specs, bioimage.io descriptions, ``--set`` values): safe
    types only, at most ``MAX_YAML_BYTES`` and ``MAX_YAML_DEPTH`` deep; no anchors or aliases
    unless ``aliases`` (bioimage.io descriptions use them), and then at most ``MAX_YAML_NODES``
    values once expanded."""
    if len(text) > MAX_YAML_BYTES or len(text.encode("utf-8")) > MAX_YAML_BYTES:     # characters first: cheap
        raise SpecError(f"the YAML document is larger than {MAX_YAML_BYTES} bytes: a spec is a few kB", source=source)
    try:
        loader = (_AliasBoundedLoader if aliases else _BoundedLoader)(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError(f"malformed YAML{where}: {problem}", source=source) from None


def read_yaml_file(path: str | Path) -> bytes:
    """The bytes of a YAML file, refused unread when larger than ``MAX_YAML_BYTES``."""
    with storage("read"), open(path, "rb") as f:
        data = f.read(MAX_YAML_BYTES + 1)
    if len(data) > MAX_YAML_BYTES:
        raise SpecError(f"larger than {MAX_YAML_BYTES} bytes: a spec is a few kB", source=str(path))
    return data


def load_yaml_file(path: str | Path, aliases: bool = False) -> Any:
    """A YAML file parsed by :func:`parse_yaml` (size checked before reading)."""
    return parse_yaml(_text(read_yaml_file(path), source=str(path)), source=str(path), aliases=aliases)


def _text(data: bytes, source: str | None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError("not a UTF-8 text file", source=source) from None


def load(path: str | Path) -> Spec:
    """Load and validate a spec file (``zoo.yaml`` or a blueprint ``spec.yaml``), or a package folder."""
    path = Path(path)
    if path.is_dir():
        path = path / SPEC_FILE
    if not path.is_file():
        raise SpecError(f"no spec file at {path}: expected a zoo.yaml or a package folder holding one")
    return load_bytes(read_yaml_file(path), source=str(path))


def load_bytes(data: bytes, source: str | None = None) -> Spec:
    """Parse and validate the bytes of a spec file (hash and parse the same bytes)."""
    return loads(_text(data, source), source=source)


class _SpecDumper(yaml.SafeDumper):
    """Writes short lists of numbers (shapes, halos) on one line: `min: [16, 16]`; never an alias
    (the reader refuses them), a value met twice is written twice."""

    def ignore_aliases(self, data) -> bool:
        return True


def _represent_list(dumper: yaml.SafeDumper, items: list):
    flow = bool(items) and all(isinstance(i, (int, float)) and not isinstance(i, bool) for i in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)


_SpecDumper.add_representer(list, _represent_list)


def dump(spec: Spec) -> str:
    """YAML text of a spec (validated first: an invalid spec is never written)."""
    data = spec.to_dict()
    validate(data, source=f"{spec.name} (about to be written)")
    text = yaml.dump(data, Dumper=_SpecDumper, sort_keys=False, allow_unicode=True, width=100)
    if parse_yaml(text) != data:    # characters YAML reads as line breaks (U+0085, U+2028): escape them all
        text = yaml.dump(data, Dumper=_SpecDumper, sort_keys=False, allow_unicode=False, width=100)
    return text


def write(spec: Spec, path: str | Path) -> Path:
    """Write a spec atomically (temporary file, fsync, rename): never a half-written zoo.yaml."""
    import os

    path = Path(path)
    if path.is_dir():
        path = path / SPEC_FILE
    text = dump(spec)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def loads(text: str, source: str | None = None) -> Spec:
    """Parse and validate spec text."""
    return validate(parse_yaml(text, source=source), source=source)
