"""Package references: ``name``, ``name@1.2.0``, ``name@^1.2``, ``name@~1.2``, ``name@latest``."""
from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from ..errors import InputError, NotFoundError, ZooError

_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._-]*)(@(?P<version>[^@\s]+))?$")


@dataclass(frozen=True)
class Ref:
    name: str
    constraint: str = "latest"   # 'latest', an exact version, or ^X.Y / ~X.Y / a PEP 440 specifier

    def __str__(self) -> str:
        return self.name if self.constraint == "latest" else f"{self.name}@{self.constraint}"


def parse(text: str) -> Ref:
    m = _REF.match(text.strip())
    if not m:
        raise InputError(f"bad package reference '{text}': expected NAME, NAME@VERSION, NAME@^X.Y or "
                         "NAME@latest (lower-case name)")
    return Ref(m["name"], m["version"] or "latest")


def _caret(base: Version) -> SpecifierSet:
    parts = list(base.release) + [0, 0]
    if parts[0] > 0:
        upper = f"{parts[0] + 1}.0.0"
    elif parts[1] > 0:
        upper = f"0.{parts[1] + 1}.0"
    else:
        upper = f"0.0.{parts[2] + 1}"
    return SpecifierSet(f">={base},<{upper}")


def _specifier(constraint: str) -> SpecifierSet | Version:
    try:
        if constraint.startswith("^"):
            return _caret(Version(constraint[1:]))
        if constraint.startswith("~") and not constraint.startswith("~="):
            base = Version(constraint[1:])
            major, minor = (list(base.release) + [0])[:2]
            return SpecifierSet(f">={base},<{major}.{minor + 1}.0")
        if constraint[0].isdigit():
            return Version(constraint)
        return SpecifierSet(constraint)
    except (InvalidVersion, ValueError):
        raise InputError(f"bad version constraint '{constraint}': expected 1.2.0, ^1.2, ~1.2, latest "
                         "or a specifier such as '>=1.0,<2'") from None


def version_of(text: str) -> Version:
    """``text`` as resolution compares it; a registry listing anything else is damaged."""
    try:
        return Version(text)
    except (InvalidVersion, TypeError):
        raise ZooError(f"{text!r} is not a version (MAJOR.MINOR.PATCH, e.g. 1.2.0): the registry index that lists "
                       "it is damaged; see `zoo check`") from None


def is_version(text: str) -> bool:
    try:
        version_of(text)
        return True
    except ZooError:
        return False


def alias_of(version: str, versions) -> str | None:
    """The one of ``versions`` that resolution cannot tell from ``version`` (``1.0.0-a1`` and
    ``1.0.0-alpha.1`` are one version to it), or None."""
    wanted = version_of(version)
    return next((v for v in versions if is_version(v) and Version(v) == wanted), None)


def resolve(ref: Ref, versions: list[str]) -> str:
    """The highest of ``versions`` that satisfies the reference (compared as versions, not strings)."""
    if not versions:
        raise NotFoundError(f"no package named '{ref.name}'")
    parsed = sorted((version_of(v), v) for v in versions)
    if ref.constraint == "latest":
        stable = [v for v in parsed if not v[0].is_prerelease]
        return (stable or parsed)[-1][1]
    spec = _specifier(ref.constraint)
    if isinstance(spec, Version):
        matches = [v for v in parsed if v[0] == spec]
    else:
        wants_pre = any(ch.isalpha() for ch in ref.constraint)  # pre-releases only when the constraint names one
        matches = [v for v in parsed if spec.contains(v[0], prereleases=True)
                   and (wants_pre or not v[0].is_prerelease)]
    if not matches:
        raise NotFoundError(f"no version of '{ref.name}' matches '{ref.constraint}' "
                            f"(available: {', '.join(v for _, v in parsed)})")
    return matches[-1][1]
