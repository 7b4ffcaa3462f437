"""The processing ops a spec may name, and what each name means for the rest of the zoo, beside the
spec: which ops exist, where they may run, and which turn network outputs into instance labels.
The implementations live in :mod:`zoo.runtime.ops` (a test keeps the two in step); this module
imports nothing but errors, so the registry and package builders can ask without the runtime."""
from __future__ import annotations

from .errors import SpecError

SHARED = frozenset({"zero_mean_unit_variance", "scale_linear", "scale_range", "clip"})
PREPROCESSING = frozenset({"percentile_normalize", "fit_canvas"}) | SHARED
INSTANCE = frozenset({"semantic_instances", "stardist_instances", "cellpose_instances"})
POSTPROCESSING = frozenset({"restore_input_scale", "sigmoid", "softmax", "argmax", "threshold"}) | SHARED | INSTANCE


def is_instance_op(name: str) -> bool:
    """Whole-image ops that turn network outputs into instance labels (skipped for raw outputs)."""
    return name in INSTANCE


def output_ops(spec, raw: bool = False, index: int = 0) -> list:
    """An output's post-processing ops (the first's by default); with ``raw`` only those that
    act pixel by pixel."""
    return [op for op in spec.outputs[index].postprocessing if not (raw and is_instance_op(op.op))]


def makes_instances(spec) -> bool:
    """Whether a spec's predictions are instance label images."""
    return any(is_instance_op(op.op) for op in spec.outputs[0].postprocessing)


def check_known(spec) -> None:
    """Raise SpecError if a spec names an op this version of the zoo does not implement."""
    problems = []
    for group, names, attr in (("inputs", PREPROCESSING, "preprocessing"), ("outputs", POSTPROCESSING, "postprocessing")):
        for i, t in enumerate(getattr(spec, group)):
            for j, op in enumerate(getattr(t, attr)):
                if op.op not in names:
                    problems.append(f"{group}[{i}].{attr}[{j}].op: unknown op '{op.op}' "
                                    f"(known: {', '.join(sorted(names))})")
    if problems:
        raise SpecError("the spec uses processing ops this zoo does not implement; upgrade bioimage-zoo:", problems)
