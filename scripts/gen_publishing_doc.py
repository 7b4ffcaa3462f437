"""Regenerate the generated sections of docs/publishing.md: the op list, from the op registry
(zoo.runtime.ops), and the required spec fields, from the schema (specs/model.schema.json).

    python scripts/gen_publishing_doc.py           # rewrite the sections between their markers
    python scripts/gen_publishing_doc.py --check   # exit 1 if a section is out of date

Each op's row gives where it may run, the parameters its code reads and the first paragraph of
its docstring; tests/test_import_onnx.py fails when the document and the code disagree.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "publishing.md"
COMMAND = "python scripts/gen_publishing_doc.py"


def begin(section: str) -> str:
    return f"<!-- generated {section}: {COMMAND}; do not edit by hand -->"


def end(section: str) -> str:
    return f"<!-- end of generated {section} -->"


def _params(fn) -> set[str]:
    """The parameter names an op reads: ``params["k"]`` / ``params.get("k")`` in its code and in
    the helpers it hands ``params`` to, or the keyword arguments of the function it forwards
    ``**params`` to."""
    source = inspect.getsource(fn)
    found = set(re.findall(r'params(?:\.get\(|\[)\s*"(\w+)"', source))
    for helper in re.findall(r"(\w+)\(params\)", source):
        found |= _params(fn.__globals__[helper])
    if "**params" in source:
        package = fn.__module__.rsplit(".", 1)[0]
        for module, name in re.findall(r"from \.(\w+) import (\w+)", source):
            target = getattr(importlib.import_module(f"{package}.{module}"), name)
            found |= {p.name for p in inspect.signature(target).parameters.values() if p.default is not p.empty}
    return found


def _summary(fn) -> str:
    text = " ".join((inspect.getdoc(fn) or "").split("\n\n")[0].split())
    return text.replace("|", "\\|") or "-"


def ops_section() -> list[str]:
    """One row per op of the registry, in name order."""
    from zoo.opnames import is_instance_op
    from zoo.runtime.ops import POSTPROCESSING, PREPROCESSING

    rows = ["| op | where | parameters | what it does |", "|---|---|---|---|"]
    for name in sorted(set(PREPROCESSING) | set(POSTPROCESSING)):
        where = " and ".join(w for w, table in (("input", PREPROCESSING), ("output", POSTPROCESSING)) if name in table)
        if is_instance_op(name):
            where += " (instances: whole image, after stitching)"
        fn = PREPROCESSING.get(name) or POSTPROCESSING[name]
        params = ", ".join(f"`{p}`" for p in sorted(_params(fn))) or "-"
        rows.append(f"| `{name}` | {where} | {params} | {_summary(fn)} |")
    return rows


def fields_section() -> list[str]:
    """The fields the schema requires of every spec, of a package, of a tensor and of a test."""
    from zoo.spec import schema

    top = schema()
    package = next(rule["then"]["required"] for rule in top.get("allOf", [])
                   if rule.get("if", {}).get("properties", {}).get("kind", {}).get("const") == "package")
    props = top["properties"]

    def fields(names) -> str:
        return ", ".join(f"`{n}`" for n in names)

    return [f"- every spec (blueprint or package): {fields(top['required'])}",
            f"- a package, also: {fields(package)}",
            f"- each input and output tensor: {fields(top['$defs']['tensor']['required'])}",
            f"- `training`: {fields(props['training']['required'])}; `training.data`: "
            f"{fields(props['training']['properties']['data']['required'])}",
            f"- `test`: {fields(props['test']['required'])} (`tolerance`: "
            f"{fields(props['test']['properties']['tolerance']['required'])})"]


SECTIONS = {"ops": ops_section, "required fields": fields_section}


def render(section: str) -> str:
    return "\n".join([begin(section), "", *SECTIONS[section](), "", end(section)])


def current(text: str, section: str) -> str | None:
    """The generated ``section`` of ``text`` as it stands (None if its markers are missing)."""
    match = re.search(re.escape(begin(section)) + r".*?" + re.escape(end(section)), text, flags=re.S)
    return match.group(0) if match else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the sections are up to date")
    args = parser.parse_args(argv)
    text = DOC.read_text(encoding="utf-8")
    updated = text
    for section in SECTIONS:
        old = current(updated, section)
        if old is None:
            print(f"{DOC}: the markers of the generated {section} are missing", file=sys.stderr)
            return 1
        updated = updated.replace(old, render(section))
    if updated == text:
        print(f"{DOC}: up to date")
        return 0
    if args.check:
        print(f"{DOC}: out of date; run {COMMAND}", file=sys.stderr)
        return 1
    DOC.write_text(updated, encoding="utf-8")
    print(f"{DOC}: regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
