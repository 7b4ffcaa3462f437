"""The architecture registry: ids -> installed architectures, fed by the ``zoo.architectures``
entry-point group (a third-party distribution registers its own the same way).

An :class:`Architecture` names its parts by import path so that nothing heavy is imported
until it is used: prediction needs the network alone, training the LightningModule too.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from .errors import UnknownArchitectureError

ENTRY_POINT_GROUP = "zoo.architectures"


def import_target(target: str) -> Any:
    """The object named by ``module:attr.path``."""
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Architecture:
    """An installed architecture.

    id: the id specs refer to (``architecture.id``).
    package: the Python package holding ``spec.yaml`` (the blueprint).
    network: ``module:callable`` taking the spec's ``architecture.params`` as keywords and
        returning a ``torch.nn.Module`` (imports torch only).
    training: ``module:Class`` of its LightningModule, constructed as ``Class(spec)``.
    needs_targets: trained on (image, target) pairs rather than on images alone.
    task: ``restoration`` (image out) or ``segmentation`` (instance labels out; its targets
        are label images).
    describe_outputs: optional ``module:callable(params, output_tensor_spec)`` that names the
        output channels for changed parameters (fine-tuning with a new head, e.g. more rays).
    """

    id: str
    package: str
    network: str
    training: str
    needs_targets: bool = False
    task: str = "restoration"
    describe_outputs: str | None = None

    def build_network(self, params: dict[str, Any]):
        return import_target(self.network)(**params)

    def training_module(self) -> type:
        return import_target(self.training)

    def blueprint_path(self, dims: int = 2) -> Path:
        """The blueprint shipped with the architecture: ``spec.yaml`` (2D) or ``spec-3d.yaml``."""
        name = "spec.yaml" if dims == 2 else f"spec-{dims}d.yaml"
        path = Path(str(resources.files(self.package).joinpath(name)))
        if not path.is_file():
            raise UnknownArchitectureError(f"architecture '{self.id}' ships no {dims}D blueprint ({name})")
        return path


_extra: dict[str, Architecture] = {}


@lru_cache(maxsize=1)
def _installed() -> dict[str, Architecture]:
    found: dict[str, Architecture] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        arch = ep.load()
        if not isinstance(arch, Architecture) or arch.id != ep.name:
            raise TypeError(f"entry point {ep.name} = {ep.value} must be an Architecture with id {ep.name!r}")
        found[ep.name] = arch
    return found


def available() -> dict[str, Architecture]:
    """Every registered architecture, by id."""
    return {**_installed(), **_extra}


def register(arch: Architecture) -> None:
    """Register an architecture in this process (tests, notebooks); distributions use entry points."""
    _extra[arch.id] = arch


def get(arch_id: str) -> Architecture:
    archs = available()
    if arch_id not in archs:
        known = ", ".join(sorted(archs)) or "none"
        raise UnknownArchitectureError(
            f"unknown architecture '{arch_id}': no installed package registers it "
            f"(installed: {known}). Install the package that provides '{arch_id}' "
            f"(it must declare an entry point in the '{ENTRY_POINT_GROUP}' group)."
        )
    return archs[arch_id]
