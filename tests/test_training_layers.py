"""Training stays in its layer (issue 22.5): evaluating and importing never load Lightning, and
the trainers modules import each other without a cycle, lazy imports included."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINERS = REPO / "trainers"

# Modules that must work without Lightning: what `zoo evaluate` and `zoo import` (bioimage.io,
# ONNX) run, and the shift check's calibration that an import records.
NO_LIGHTNING = ["zoo.evaluate", "zoo.export.bioimageio_import", "zoo.export.onnx_import", "zoo.trust.calibrate",
                "zoo.images"]


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module ``path`` (a module of ``package``) imports, at the top or inside a function,
    as absolute names; ``from X import name`` also yields ``X.name`` (it may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def trainers_graph(folder: Path = TRAINERS) -> dict[str, set[str]]:
    """Which trainers modules each trainers module imports (``zoo.trainers.X``, relative or not)."""
    modules = {f"zoo.trainers.{p.stem}": p for p in sorted(folder.glob("*.py")) if p.stem != "__init__"}
    return {name: {m for m in imported_modules(path, "zoo.trainers") if m in modules and m != name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_trainers_modules_import_each_other_without_a_cycle():
    graph = trainers_graph()
    assert "zoo.trainers.finetune" in graph and "zoo.trainers.classification" in graph
    assert cycles(graph) == [], f"import cycles among the trainers modules (lazy imports included): {cycles(graph)}"


def test_the_cycle_finder_sees_a_lazy_import(tmp_path):
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from zoo.trainers import a\n")
    (tmp_path / "c.py").write_text("from . import a\n")
    assert cycles(trainers_graph(tmp_path)) == [["zoo.trainers.a", "zoo.trainers.b"]]


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
    lazy = set()
    for name in NO_LIGHTNING:
        parts = name.split(".")
        path = REPO.joinpath(*parts).with_suffix(".py")
        lazy.update(m for m in imported_modules(path, ".".join(parts[:-1])) if m.startswith("zoo."))
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
