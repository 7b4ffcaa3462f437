"""Each worker loads the model once, through a worker plugin, from its own verified cache.

:class:`ModelPlugin` travels to every worker (those that join later too) as a reference, never
as weights: the worker resolves it through the registry (a folder or URL the plugin names, or
the worker's default one), pulls it into the worker's cache (``$ZOO_CACHE`` there), verifies
every sha256 and loads it. Tasks find it with :func:`model_on_worker`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import InputError

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:        # dask not installed: the class still imports, client_for says what to install
    WorkerPlugin = object


def plugin_name(ref: str, registry: str | None, runtime: str, device: str) -> str:
    """A name per (model, registry, runtime, device): a second model does not replace the first.
    A package folder's name changes with its ``zoo.yaml``, so that an edited folder is loaded anew."""
    spec = Path(ref) / "zoo.yaml" if Path(ref).is_dir() else Path(ref)
    stamp = (spec.stat().st_mtime_ns, spec.stat().st_size) if spec.suffix in (".yaml", ".yml") and spec.is_file() else ""
    key = "|".join(map(str, (ref, registry, runtime, device, stamp)))
    return f"zoo-model-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


class ModelPlugin(WorkerPlugin):
    """Loads ``ref`` on a worker when it starts (see the module docstring). Registering it again
    under its name is a no-op (``idempotent``): workers keep the model between calls."""

    idempotent = True

    def __init__(self, ref: str | Path, registry: str | Path | None = None, runtime: str = "onnx",
                 device: str = "auto"):
        self.ref, self.runtime, self.device = str(ref), runtime, device
        self.registry = None if registry is None else str(registry)
        self.name = plugin_name(self.ref, self.registry, runtime, device)
        self.model = None
        self.error: str | None = None

    def setup(self, worker=None) -> None:
        from ..loading import load
        from ..registry.remote import registry_for

        try:
            registry = None if self.registry is None else registry_for(self.registry)
            self.model = load(self.ref, runtime=self.runtime, device=self.device, registry=registry)
        except Exception as e:   # noqa: BLE001 - said by every task that needs it, not lost in a worker log
            self.error = f"{type(e).__name__}: {e}"

    def teardown(self, worker=None) -> None:
        self.model = None


def register(client, ref: str | Path, registry: str | Path | None = None, runtime: str = "onnx",
             device: str = "auto") -> str:
    """Make every worker of ``client`` (and every worker that joins) load the model; its name."""
    plugin = ModelPlugin(ref, registry, runtime, device)
    if hasattr(client, "register_plugin"):
        client.register_plugin(plugin, name=plugin.name)
    else:                              # distributed < 2023.9
        client.register_worker_plugin(plugin, name=plugin.name)
    failed = {worker: error for worker, error in client.run(_load_error, plugin.name).items() if error}
    if failed:
        worker, error = next(iter(failed.items()))
        raise InputError(f"{len(failed)} Dask worker(s) could not load {plugin.ref} (e.g. {worker}: {error})")
    return plugin.name


def _load_error(name: str, dask_worker=None) -> str | None:
    """On a worker: why the plugin ``name`` has no model (None when it has one)."""
    plugin = dask_worker.plugins.get(name)
    return "the plugin is missing" if plugin is None else (None if plugin.model is not None else plugin.error)


def model_on_worker(name: str):
    """The model the plugin ``name`` loaded on the worker running this task."""
    from distributed import get_worker

    plugin = get_worker().plugins.get(name)
    if plugin is None:
        raise InputError(f"this Dask worker has no model {name}: register it with zoo.distributed.plugin.register")
    if plugin.model is None:
        raise InputError(f"the worker could not load {plugin.ref}: {plugin.error}")
    return plugin.model
