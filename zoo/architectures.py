"""The architecture registry: ids -> architectures.

Two sources, one namespace of ids:

- **built in**: every sub-package of ``zoo.models`` (a folder ``models/<id>/`` in this
  repository) whose ``__init__.py`` defines ``architecture = Architecture(...)``. They are found
  by listing the package (``pkgutil.iter_modules``): adding a folder is all it takes, with no
  list to edit and no reinstall. Folders whose name starts with ``_`` are skipped (helpers).
- **plugins**: other distributions declare theirs in the ``zoo.architectures`` entry-point
  group (``my-net = "my_package.my_net:architecture"``). A plugin cannot replace a built-in
  architecture: an entry point that claims a built-in id is ignored with a warning naming it.

An :class:`Architecture` names its parts by import path so that nothing heavy is imported
until it is used: declaring one imports this module alone, prediction needs the network alone,
training the LightningModule too. Listing the built-in ids imports each ``models/<id>/__init__.py``
(a few milliseconds); a plugin's module is imported only when its id is asked for (or when all
architectures are listed).
"""
from __future__ import annotations

import importlib
import pkgutil
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from . import tasks
from .errors import UnknownArchitectureError

ENTRY_POINT_GROUP = "zoo.architectures"
BUILTIN_PACKAGE = "zoo.models"


class ArchitectureConflictWarning(UserWarning):
    """An installed plugin claims an id that is already taken; the first holder keeps it."""


def import_target(target: str) -> Any:
    """The object named by ``module:attr.path``."""
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Architecture:
    """An architecture: built in (``models/<id>/__init__.py`` defines it) or a plugin's.

    id: the id specs refer to (``architecture.id``).
    package: the Python package holding ``spec.yaml`` (the blueprint).
    network: ``module:callable`` taking the spec's ``architecture.params`` as keywords and
        returning a ``torch.nn.Module`` (imports torch only).
    training: ``module:Class`` of its LightningModule, constructed as ``Class(spec)``.
    needs_targets: trained on (image, target) pairs rather than on images alone.
    task: ``restoration`` (image out), ``segmentation`` (instance labels out; its targets
        are label images) or ``classification`` (class probabilities out).
    describe_outputs: optional ``module:callable(params, output_tensor_spec)`` that names the
        output channels for changed parameters (fine-tuning with a new head, e.g. more rays).
    trainer_target: optional ``module:object``, the :class:`zoo.trainers.dispatch.Trainer` that trains
        and fine-tunes it; default its task's (:mod:`zoo.tasks`: patches for restoration and
        segmentation, labelled images for classification).

    The task's entry (:func:`task_entry`) also says how a prediction runs (tiled, or the task's
    strategy): training and prediction dispatch through the architecture and its task, never on
    task names.
    """

    id: str
    package: str
    network: str
    training: str
    needs_targets: bool = False
    task: str = "restoration"
    describe_outputs: str | None = None
    trainer_target: str | None = None

    @property
    def task_entry(self):
        """The :class:`zoo.tasks.Task` of this architecture: what a prediction gives and how it runs."""
        if self.task not in tasks.TASKS:
            raise UnknownArchitectureError(f"architecture '{self.id}' declares task '{self.task}'; known tasks: "
                                           f"{', '.join(sorted(tasks.TASKS))}")
        return tasks.TASKS[self.task]

    @property
    def trainer(self) -> str:
        """``module:object`` of the Trainer that trains and fine-tunes this architecture."""
        target = self.trainer_target or self.task_entry.trainer
        if target is None:
            raise UnknownArchitectureError(f"architecture '{self.id}' ({self.task}) has no trainer in this version")
        return target

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


def _checked(arch: Any, where: str, arch_id: str | None = None) -> "Architecture":
    if not isinstance(arch, Architecture) or (arch_id is not None and arch.id != arch_id):
        wanted = f"an Architecture with id {arch_id!r}" if arch_id else "an Architecture"
        raise TypeError(f"{where} must be {wanted}, got {arch!r}")
    return arch


@lru_cache(maxsize=1)
def _builtin() -> dict[str, Architecture]:
    """The architectures in ``zoo.models``, by id: one sub-package each, defining ``architecture``."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    found: dict[str, Architecture] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__, f"{BUILTIN_PACKAGE}."), key=lambda m: m.name):
        if not info.ispkg or info.name.rpartition(".")[2].startswith("_"):
            continue
        module = importlib.import_module(info.name)
        where = f"{info.name}.architecture (models/{info.name.rpartition('.')[2]}/__init__.py)"
        if not hasattr(module, "architecture"):
            raise TypeError(f"{info.name} is a folder of zoo.models without an architecture: its __init__.py must "
                            "define `architecture = Architecture(...)` (or rename the folder to start with '_')")
        arch = _checked(module.architecture, where)
        if arch.id in found:
            raise TypeError(f"{where}: id {arch.id!r} is already declared by {found[arch.id].package}")
        found[arch.id] = arch
    return found


def _distribution(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.metadata['Name']} {dist.version}" if dist is not None else "an installed distribution"


@lru_cache(maxsize=1)
def _plugin_entry_points() -> dict[str, metadata.EntryPoint]:
    """Entry points of the ``zoo.architectures`` group, by id, not loaded yet. An entry point
    that claims a built-in id (or one another plugin claimed first) is left out, with a warning;
    one that names the built-in package itself (the metadata of an older bioimage-zoo, which
    declared its own architectures there) is left out silently."""
    builtin = _builtin()
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in builtin and ep.module == builtin[ep.name].package:
            continue
        taken = ("built into bioimage-zoo (zoo.models)" if ep.name in builtin
                 else f"registered by {_distribution(found[ep.name])} ({found[ep.name].value})" if ep.name in found
                 else None)
        if taken:
            warnings.warn(f"{_distribution(ep)} declares architecture {ep.name!r} = {ep.value} in the "
                          f"'{ENTRY_POINT_GROUP}' entry points, but that id is {taken}; the plugin's is ignored. "
                          "Give the plugin's architecture an id of its own.", ArchitectureConflictWarning,
                          stacklevel=3)
            continue
        found[ep.name] = ep
    return found


@lru_cache(maxsize=None)
def _plugin(arch_id: str) -> Architecture:
    ep = _plugin_entry_points()[arch_id]
    return _checked(ep.load(), f"entry point {ep.name} = {ep.value} ({_distribution(ep)})", ep.name)


def available() -> dict[str, Architecture]:
    """Every registered architecture, by id: built-in, then plugins, then registered in-process."""
    return {**_builtin(), **{i: _plugin(i) for i in _plugin_entry_points()}, **_extra}


def register(arch: Architecture, replace: bool = False) -> None:
    """Register an architecture in this process (tests, notebooks); distributions use entry points.
    An id that is already registered is refused unless ``replace`` is given."""
    _checked(arch, "register()'s argument")
    if not replace and (arch.id in _builtin() or arch.id in _plugin_entry_points() or arch.id in _extra):
        raise ValueError(f"architecture {arch.id!r} is already registered; choose another id "
                         "(or pass replace=True to replace it in this process)")
    _extra[arch.id] = arch


def get(arch_id: str) -> Architecture:
    if arch_id in _extra:
        return _extra[arch_id]
    builtin, plugins = _builtin(), _plugin_entry_points()
    if arch_id in builtin:
        return builtin[arch_id]
    if arch_id in plugins:
        return _plugin(arch_id)
    known = ", ".join(sorted({*builtin, *plugins, *_extra})) or "none"
    raise UnknownArchitectureError(
        f"unknown architecture '{arch_id}': no installed package registers it "
        f"(installed: {known}). Install the package that provides '{arch_id}' "
        f"(it must declare an entry point in the '{ENTRY_POINT_GROUP}' group)."
    )
