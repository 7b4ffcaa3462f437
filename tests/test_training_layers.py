"""Training stays in its layer (issue 22.5): evaluating and importing never load Lightning, and
the trainers modules import each other without a cycle, lazy imports included."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_layers import _cycles, graph

REPO = Path(__file__).resolve().parents[1]
TRAINERS = REPO / "trainers"

# Modules that must work without Lightning: what `zoo evaluate` and `zoo import` (bioimage.io,
# ONNX) run, and the shift check's calibration that an import records.
NO_LIGHTNING = ["zoo.evaluate", "zoo.export.bioimageio_import", "zoo.export.onnx_import", "zoo.trust.calibrate",
                "zoo.images"]


def trainers_graph() -> dict[str, set[str]]:
    """Which trainers modules each trainers module imports (the import graph of test_layers, lazy
    imports included, restricted to ``zoo.trainers``)."""
    return {name: {m for m in targets if m.startswith("zoo.trainers.")}
            for name, targets in graph().items() if name.startswith("zoo.trainers.")}


def test_the_trainers_modules_import_each_other_without_a_cycle():
    found = trainers_graph()
    assert "zoo.trainers.finetune" in found and "zoo.trainers.classification" in found
    assert _cycles(found) == [], f"import cycles among the trainers modules (lazy imports included): {_cycles(found)}"


def test_one_policy_and_one_set_of_options_serve_dense_and_classifier_training():
    policy = {f"zoo.trainers.{m}" for m in ("policy", "options")}
    graph = trainers_graph()
    for trainer in ("zoo.trainers.finetune", "zoo.trainers.classification"):
        reached, todo = set(), [trainer]
        while todo:
            for m in graph[todo.pop()] - reached:
                reached.add(m)
                todo.append(m)
        assert policy <= reached, f"{trainer} does not use {policy - reached}"
    for trainer in ("finetune", "classification"):       # the policy's numbers are set in one place
        source = (TRAINERS / f"{trainer}.py").read_text(encoding="utf-8")
        assert "warmup_steps =" not in source and "layer_decay =" not in source and "lr_scale *" not in source


def test_evaluating_and_importing_never_load_lightning():
    """Each module, and every zoo module it imports inside its functions, in a fresh interpreter."""
    lazy = {m for name in NO_LIGHTNING for m in graph()[name] if m.startswith("zoo.")}
    code = ("import importlib, json, sys\n"
            f"for name in {sorted(NO_LIGHTNING)!r}:\n"
            "    importlib.import_module(name)\n"
            f"for name in {sorted(lazy)!r}:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except ImportError:\n"
            "        pass          # a name imported from a module, not a module\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning'))))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
