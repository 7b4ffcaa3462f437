"""One Python file that builds an architecture's network with torch alone, for people without
bioimage-zoo (bioimage.io's ``pytorch_state_dict`` weights name such a file as their
architecture: ``source``, ``callable``, ``kwargs``).

The file is assembled from the project's own network code, not kept beside it, so that it cannot
drift: the module that defines the architecture's ``network`` callable, with every module of
bioimage-zoo it imports from (``from zoo.nn.unet import SegmentationUNet``) inlined before it,
dependencies first, and those imports removed. Whatever else a module imports must be torch or
the standard library; anything else (numpy, a zoo module object, a lazy zoo import inside a
function, a name two modules define differently) is a :class:`StandaloneError` naming it.

``load`` imports such a file in isolation (a module of its own, never ``sys.modules``), as
bioimage.io's tools do.
"""
from __future__ import annotations

import ast
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

ALLOWED_ROOTS = frozenset({"torch"})


class StandaloneError(InputError):
    """The architecture's network code cannot be made into one torch-only file."""


@dataclass
class _Module:
    name: str
    path: Path
    text: str
    tree: ast.Module
    package: str
    zoo_imports: list[tuple[ast.ImportFrom, str]] = field(default_factory=list)   # (statement, module it names)


def _allowed(module: str) -> bool:
    root = module.split(".")[0]
    return root in ALLOWED_ROOTS or root in sys.stdlib_module_names


def _read(name: str) -> _Module:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise StandaloneError(f"cannot read the source of {name}: it is not a Python source file")
    path = Path(spec.origin)
    text = path.read_text(encoding="utf-8")
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return _Module(name, path, text, ast.parse(text, filename=str(path)), package)


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    if node.level - 1 >= len(parts):
        raise StandaloneError(f"relative import beyond the top package in {package}")
    base = parts[: len(parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _is_zoo(module: str) -> bool:
    return module == "zoo" or module.startswith("zoo.")


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, AttributeError, ValueError):      # the parent is a module, not a package
        return False


def _check_imports(module: _Module) -> None:
    """Every import anywhere in the module: torch, the standard library, or (at the top level
    only, ``from zoo.x import Name``) a zoo module to inline."""
    top = {id(node) for node in module.tree.body}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _allowed(alias.name):
                    raise StandaloneError(f"{module.name} imports {alias.name} (line {node.lineno}); a standalone "
                                          "architecture may import torch and the standard library only")
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node, module.package)
            if _is_zoo(target):
                if id(node) not in top:
                    raise StandaloneError(f"{module.name} imports {target} inside a block (line {node.lineno}); "
                                          "only top-level 'from zoo... import Name' can be inlined")
                for alias in node.names:
                    if alias.name == "*" or _is_module(f"{target}.{alias.name}"):
                        raise StandaloneError(f"{module.name} imports {target}.{alias.name} as a module (line "
                                              f"{node.lineno}); only names defined in a module can be inlined")
                module.zoo_imports.append((node, target))
            elif target != "__future__" and not _allowed(target):
                raise StandaloneError(f"{module.name} imports {target} (line {node.lineno}); a standalone "
                                      "architecture may import torch and the standard library only")


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in node.names]
    return []


def _collect(name: str, seen: dict[str, _Module], stack: tuple[str, ...] = ()) -> None:
    """``seen`` in inlining order: every zoo module ``name`` needs, dependencies first."""
    if name in seen:
        return
    if name in stack:
        raise StandaloneError(f"import cycle among the network's modules: {' -> '.join((*stack, name))}")
    module = _read(name)
    _check_imports(module)
    for _, target in module.zoo_imports:
        _collect(target, seen, (*stack, name))
    seen[name] = module


def _lines(module: _Module, node: ast.stmt) -> tuple[int, int]:
    return node.lineno - 1, node.end_lineno or node.lineno


def source(target: str, title: str = "") -> str:
    """The standalone source of ``target`` (``module:callable``, an architecture's ``network``
    entry). ``title``: the first line of the file's docstring."""
    module_name, _, callable_name = target.partition(":")
    if not callable_name:
        raise StandaloneError(f"{target} does not name a callable (module:callable)")
    modules: dict[str, _Module] = {}
    _collect(module_name, modules)

    hoisted: list[str] = []                 # torch / stdlib imports, once, at the top
    future: set[str] = set()
    bound: dict[str, tuple[str, str]] = {}  # name -> (module, what binds it)
    sections: list[str] = []
    for module in modules.values():
        drop: set[int] = set()
        extra: dict[int, list[str]] = {}   # line index -> lines to put there (aliases of inlined names)
        doc = ast.get_docstring(module.tree, clean=True)
        body = list(module.tree.body)
        if doc is not None and body:
            start, end = _lines(module, body[0])
            drop.update(range(start, end))
            body = body[1:]
        zoo_nodes = {id(node) for node, _ in module.zoo_imports}
        for node in body:
            start, end = _lines(module, node)
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                future.update(a.name for a in node.names)
                drop.update(range(start, end))
                continue
            if id(node) in zoo_nodes:
                drop.update(range(start, end))
                extra[start] = [f"{a.asname} = {a.name}" for a in node.names if a.asname and a.asname != a.name]
                source_module = modules[_absolute(node, module.package)]
                defined = {n for stmt in source_module.tree.body for n in _bound_names(stmt)}
                for a in node.names:
                    if a.name not in defined:
                        raise StandaloneError(f"{module.name} imports {a.name} from {source_module.name}, which "
                                              "does not define it at its top level")
                continue
            what = ast.unparse(node) if isinstance(node, (ast.Import, ast.ImportFrom)) else f"{module.name}:{start + 1}"
            for name in _bound_names(node):
                if name in bound and bound[name][1] != what:
                    raise StandaloneError(f"{name} is defined both in {bound[name][0]} and in {module.name}; "
                                          "they cannot share one standalone file")
                bound[name] = (module.name, what)
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                if what not in hoisted:
                    hoisted.append(what)
                drop.update(range(start, end))
        lines = module.text.splitlines()
        kept = []
        for i, line in enumerate(lines):
            kept += extra.get(i, [])
            if i not in drop:
                kept.append(line)
        relative = _display_path(module)
        header = [f"# {'-' * 3} {module.name} ({relative}) {'-' * max(3, 90 - len(module.name) - len(relative))}"]
        header += [f"# {line}".rstrip() for line in (doc or "").splitlines()]
        sections.append("\n".join(header + [""] + _trim(kept)))
    if callable_name not in bound or bound[callable_name][0] != module_name:
        raise StandaloneError(f"{module_name} defines no top-level {callable_name}")

    __version__ = _zoo_version()
    docstring = [title or f"The network {target} builds, standalone.", "",
                 f"Generated by bioimage-zoo {__version__} from its own sources ({', '.join(modules)}), with",
                 "their bioimage-zoo imports inlined; it imports torch and the standard library only. Build the",
                 f"network with ``{callable_name}(**kwargs)``, the kwargs of the pytorch_state_dict entry in rdf.yaml."]
    head = ['"""' + "\n".join(docstring) + '\n"""']
    if future:
        head.append(f"from __future__ import {', '.join(sorted(future))}")
    head.append("\n".join(hoisted))
    text = "\n\n".join(head) + "\n\n\n" + "\n\n\n".join(sections) + "\n"
    check(text)
    return text


def _zoo_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bioimage-zoo")
    except PackageNotFoundError:
        return "(unknown version)"


def _display_path(module: _Module) -> str:
    parts = module.path.parts
    for anchor in ("models", "zoo", "trainers"):
        if anchor in parts:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(anchor):])
    return module.path.name


def _trim(lines: list[str]) -> list[str]:
    """Without leading and trailing blank lines, and never more than two blank lines in a row."""
    out: list[str] = []
    for line in lines:
        if not line.strip() and (not out or (len(out) >= 2 and not out[-1].strip() and not out[-2].strip())):
            continue
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return out


def imports(text: str) -> set[str]:
    """Every module a source imports (anywhere in it), by full name."""
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


def check(text: str) -> None:
    """The source compiles and imports only torch, ``__future__`` and the standard library."""
    compile(text, "<standalone architecture>", "exec")
    bad = sorted(m for m in imports(text) if m != "__future__" and (m.startswith(".") or not _allowed(m)))
    if bad:
        raise StandaloneError(f"the standalone architecture would import {', '.join(bad)}")


def load(path: str | Path, callable_name: str):
    """The callable ``callable_name`` of the file at ``path``, imported as a module of its own
    (not registered in ``sys.modules``), the way bioimage.io's tools import an architecture."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"_standalone_{path.stem}_{abs(hash(path.resolve()))}", path)
    if spec is None or spec.loader is None:
        raise StandaloneError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, callable_name)
