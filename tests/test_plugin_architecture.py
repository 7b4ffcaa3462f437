"""Third-party architectures through the ``zoo.architectures`` entry-point group (issue 22.4).

A tiny plugin distribution is written here, built and installed by pip (``--target`` a folder
that is then put on ``sys.path``): real ``.dist-info`` metadata read by ``importlib.metadata``,
no mocks. It declares one architecture of its own, with its blueprint as package data, and one
that claims a built-in id, which must not shadow the built-in one silently.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from conftest import REPO
from zoo import architectures, spec as specs

PLUGIN = "zoo_plugin_demo"

PYPROJECT = f"""\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "zoo-plugin-demo"
version = "1.0.0"

[project.entry-points."zoo.architectures"]
tiny-net = "{PLUGIN}:architecture"
n2v = "{PLUGIN}:impostor"

[tool.setuptools]
packages = ["{PLUGIN}"]

[tool.setuptools.package-data]
"{PLUGIN}" = ["spec.yaml"]
"""

INIT = """\
from zoo.architectures import Architecture

# a narrow restoration U-Net trained as Noise2Void, under an id of its own
architecture = Architecture(id="tiny-net", package=__name__, network="zoo.nn.unet:restoration_unet",
                            training="zoo.models.n2v.module:N2VModule")
impostor = Architecture(id="n2v", package=__name__, network="zoo.nn.unet:restoration_unet",
                        training="zoo.models.n2v.module:N2VModule")
"""


def clear_caches() -> None:
    for cached in (architectures._builtin, architectures._plugin_entry_points, architectures._plugin):
        cached.cache_clear()


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """The plugin, installed by pip into a folder of its own."""
    root = tmp_path_factory.mktemp("plugin")
    source, site = root / "source", root / "site"
    (source / PLUGIN).mkdir(parents=True)
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / PLUGIN / "__init__.py").write_text(INIT)
    blueprint = (REPO / "models" / "n2v" / "spec.yaml").read_text()
    assert "  id: n2v\n" in blueprint
    (source / PLUGIN / "spec.yaml").write_text(blueprint.replace("  id: n2v\n", "  id: tiny-net\n"))
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                             "--no-index", "-q", "--target", str(site), str(source)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (site / "zoo_plugin_demo-1.0.0.dist-info" / "entry_points.txt").is_file()
    return site


@pytest.fixture
def plugin(plugin_site, monkeypatch):
    """The plugin on sys.path (as if installed) for one test; the registry re-read around it."""
    monkeypatch.syspath_prepend(str(plugin_site))
    clear_caches()
    yield plugin_site
    sys.modules.pop(PLUGIN, None)
    clear_caches()


def test_an_installed_plugin_is_listed_and_builds_from_its_own_blueprint(plugin):
    with pytest.warns(architectures.ArchitectureConflictWarning):
        registered = architectures.available()
    arch = registered["tiny-net"]
    assert arch is architectures.get("tiny-net") and arch.package == PLUGIN
    blueprint = specs.load(arch.blueprint_path())
    assert blueprint.architecture_id == "tiny-net"
    assert arch.blueprint_path().is_relative_to(plugin)
    net = arch.build_network({**blueprint.architecture_params, "base_channels": 4}).eval()
    assert net(torch.zeros(1, 1, 16, 16)).shape == (1, 1, 16, 16)
    assert set(registered) > {"care", "n2v", "stardist", "classifier"}     # the built-in ones are all there


def test_a_plugin_cannot_shadow_a_builtin_id_silently(plugin):
    with pytest.warns(architectures.ArchitectureConflictWarning,
                      match=r"zoo-plugin-demo 1.0.0 declares architecture 'n2v' = zoo_plugin_demo:impostor.*"
                            r"built into bioimage-zoo.*ignored"):
        n2v = architectures.get("n2v")
    assert n2v.package == "zoo.models.n2v"
    assert PLUGIN not in sys.modules, "asking for a built-in architecture imported the plugin"
    assert architectures.available()["n2v"] is n2v
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # said once per process, not at every lookup
        architectures.get("n2v")


def test_a_plugin_is_imported_only_when_asked_for(plugin):
    with pytest.warns(architectures.ArchitectureConflictWarning):
        architectures.get("care")
    assert PLUGIN not in sys.modules
    architectures.get("tiny-net")
    assert PLUGIN in sys.modules


def test_unknown_ids_name_the_plugins_too(plugin):
    with pytest.warns(architectures.ArchitectureConflictWarning):
        with pytest.raises(architectures.UnknownArchitectureError, match=r"installed: .*n2v.*tiny-net"):
            architectures.get("no-such-net")


def test_in_process_registration_refuses_a_taken_id():
    n2v = architectures.get("n2v")
    with pytest.raises(ValueError, match="'n2v' is already registered"):
        architectures.register(architectures.Architecture(id="n2v", package="x", network="x:y", training="x:z"))
    assert architectures.get("n2v") is n2v


def test_a_models_folder_is_an_architecture_without_any_list(tmp_path, monkeypatch):
    """A new folder in zoo.models is found by listing the package: nothing to declare elsewhere."""
    import zoo.models

    folder = tmp_path / "models_extra" / "my_net"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(textwrap.dedent("""\
        from zoo.architectures import Architecture

        architecture = Architecture(id="my-net", package=__name__, network="zoo.nn.unet:restoration_unet",
                                    training="zoo.models.n2v.module:N2VModule")
        """))
    (tmp_path / "models_extra" / "_helpers").mkdir()            # folders starting with '_' are not architectures
    (tmp_path / "models_extra" / "_helpers" / "__init__.py").write_text("")
    monkeypatch.setattr(zoo.models, "__path__", [*zoo.models.__path__, str(tmp_path / "models_extra")])
    clear_caches()
    try:
        arch = architectures.get("my-net")
        assert arch.package == "zoo.models.my_net" and "my-net" in architectures.available()
    finally:
        monkeypatch.undo()
        sys.modules.pop("zoo.models.my_net", None)
        clear_caches()
    assert "my-net" not in architectures.available()
