"""Registries of model packages. The embedded default is a local folder under ``$ZOO_HOME``,
seeded with the standard zoo shipped inside this distribution."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .local import LocalRegistry


def standard_store() -> Path:
    """The standard zoo's packages, shipped with bioimage-zoo (read-only, registry layout)."""
    return Path(str(resources.files("zoo").joinpath("standard")))


def default_registry() -> LocalRegistry:
    from ..paths import zoo_cache, zoo_home

    return LocalRegistry(zoo_home() / "registry", cache=zoo_cache(), seed=standard_store())


__all__ = ["LocalRegistry", "default_registry", "standard_store"]
