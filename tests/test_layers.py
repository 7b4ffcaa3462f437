"""Layers point down (issue 22.3): the import graph of the source, read from the AST with lazy
imports (inside functions) included, has no cycle, and the lower layers never reach up."""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"zoo": REPO / "zoo", "zoo.models": REPO / "models", "zoo.trainers": REPO / "trainers"}


def _modules() -> dict[str, Path]:
    """Every module of the distribution under its import name (``models/unet_seg`` is ``zoo.models.unet_seg``)."""
    found = {}
    for package, root in ROOTS.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """What module ``name`` imports (anywhere in it, lazy imports included): modules of the
    distribution by name, other top-level packages by their first part."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            submodules = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known]
            found.update(submodules)
            if len(submodules) < len(node.names):      # names from the module itself
                found.add(module)
    return {m if m in known or m.split(".")[0] == "zoo" else m.split(".")[0] for m in found} - {name}


@lru_cache(maxsize=1)
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, result, counter = {}, {}, set(), [], [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root] & edges.keys())))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child] & edges.keys()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    result.append(sorted(component))
    return result


def test_the_reader_sees_lazy_imports_and_names_modules_of_the_three_folders():
    edges = graph()
    assert "zoo.models.stardist" in edges and "zoo.trainers.fit" in edges and "zoo.cli.predict" in edges
    assert "zoo.runtime.stream" in edges["zoo.model"] or "zoo.runtime.predictor" in edges["zoo.model"]
    assert "zoo.trust.check" in edges["zoo.model"]                      # imported inside a method
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_there_is_no_import_cycle():
    cycles = _cycles(graph())
    described = ["; ".join(f"{m} -> {sorted(graph()[m] & set(c))}" for m in c) for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(described)


RULES = [
    ("zoo.registry", ("zoo.runtime", "zoo.model", "zoo.trainers", "zoo.api", "zoo.cli", "zoo.loading"),
     "the registry stores and verifies; it never runs a model"),
    ("zoo.runtime", ("zoo.trainers", "zoo.model", "zoo.cli", "zoo.api", "zoo.loading", "pytorch_lightning",
                     "lightning"), "the runtime never imports training code, the model or a face"),
    ("zoo.package", ("zoo.model", "zoo.api", "zoo.cli", "zoo.loading"), "packages are built without the model"),
    ("zoo.trust.check", ("zoo.model", "zoo.trainers", "zoo.api"), "the shift check runs under the model"),
    ("zoo.opnames", ("zoo.",), "op names sit beside the spec"),
    ("zoo.tasks", ("zoo.",), "the task table sits beside the spec"),
    ("zoo.napari", ("zoo.runtime", "zoo.model", "zoo.registry", "zoo.trainers", "zoo.package", "zoo.loading",
                    "zoo.cli", "zoo.serve", "zoo.trust", "zoo.segmentation", "pytorch_lightning", "torch"),
     "the napari plugin is a face: it goes through zoo.api"),
    ("zoo.api", ("zoo.napari",), "the api knows no napari"),
]


@pytest.mark.parametrize("layer, forbidden, why", RULES, ids=[r[0] for r in RULES])
def test_lower_layers_never_reach_up(layer, forbidden, why):
    bad = sorted(f"{module} -> {target}" for module, targets in graph().items()
                 if module == layer or module.startswith(layer + ".")
                 for target in targets
                 if any(target == f or target.startswith(f if f.endswith(".") else f + ".") for f in forbidden)
                 and target != "zoo.errors")
    assert not bad, f"{why}:\n" + "\n".join(bad)


def test_the_spec_imports_nothing_but_errors():
    inside = {t for t in graph()["zoo.spec"] if t.startswith("zoo")}
    assert inside <= {"zoo.errors"}, inside


def test_every_registry_store_keeps_the_written_store_contract(tmp_path):
    """zoo.registry.base.Store: the registry asks stores, never probes them with getattr/hasattr."""
    from zoo.registry.base import Store
    from zoo.registry.hf import HfStore
    from zoo.registry.http import HttpStore
    from zoo.registry.remote import FolderStore

    for store in (FolderStore(tmp_path / "reg"), HttpStore("http://127.0.0.1:9"), HfStore("org", offline=True)):
        assert isinstance(store, Store), type(store)
        assert isinstance(store.writable, bool) and isinstance(store.reads_offline, bool)
    source = (REPO / "zoo" / "registry" / "remote.py").read_text()
    assert "getattr(self.store" not in source and "hasattr(self.store" not in source
    private = sorted(f"{path.relative_to(REPO)}: {alias.name} from {node.module}"
                     for path in (REPO / "zoo" / "registry").glob("*.py")
                     for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)
                     for alias in node.names if alias.name.startswith("_") and node.module != "__future__")
    assert not private, f"private names imported across registry modules: {private}"
