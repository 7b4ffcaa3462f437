"""A package's lineage: the chain of parents it was fine-tuned from, each checked against the
registry (the parent's zoo.yaml sha256 recorded in the child must be the one published)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import spec as specs
from .hashing import sha256_file


@dataclass(frozen=True)
class Link:
    ref: str                  # name@version
    sha256: str               # of its zoo.yaml
    status: str               # "package" (the first), "verified", "missing" (not in the registry), "mismatch"
    from_scratch: bool = False
    data: str = ""            # what it was trained on


def chain(registry, ref: str | Path, max_depth: int = 64) -> list[Link]:
    """The package ``ref`` (a registry reference or a package folder) followed by its ancestors."""
    path = Path(ref)
    if path.is_dir():
        spec, sha = specs.load(path), sha256_file(path / specs.SPEC_FILE)
    else:
        name, version = registry.resolve(str(ref))
        spec, sha = registry.spec(f"{name}@{version}"), registry.index()[name][version]["sha256"]
    links: list[Link] = []
    status = "package"
    while True:
        parent = spec.training.parent if spec.training else None
        data = spec.training.data.get("description", "") if spec.training else ""
        links.append(Link(spec.ref, sha, status, parent is None, data))
        if parent is None or len(links) > max_depth:
            return links
        name, _, version = parent["ref"].partition("@")
        published = registry.index().get(name, {}).get(version, {}).get("sha256")
        if published is None or published != parent["sha256"]:
            links.append(Link(parent["ref"], parent["sha256"], "missing" if published is None else "mismatch"))
            return links
        spec, sha, status = registry.spec(parent["ref"]), published, "verified"


NOTES = {"package": "", "verified": "sha256 as published",
         "missing": "not in this registry", "mismatch": "PUBLISHED sha256 DIFFERS from the one the child recorded"}


def describe(links: list[Link]) -> str:
    """The chain as indented text, the package first."""
    lines = []
    for depth, link in enumerate(links):
        prefix = "" if depth == 0 else "  " * (depth - 1) + "<- fine-tuned from "
        notes = [NOTES[link.status], "trained from scratch" if link.from_scratch else "", link.data]
        extra = "; ".join(n for n in notes if n)
        lines.append(f"{prefix}{link.ref} [{link.sha256[:12]}]" + (f" ({extra})" if extra else ""))
    return "\n".join(lines)
