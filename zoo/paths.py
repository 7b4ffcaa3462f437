"""Where the zoo keeps its data: $ZOO_HOME (local registry) and $ZOO_CACHE (pulled packages)."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def _user_data_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))


def _user_cache_dir() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))


def zoo_home() -> Path:
    """Root of the embedded local registry (``$ZOO_HOME``, default: the user's data folder)."""
    env = os.environ.get("ZOO_HOME")
    return Path(env).expanduser() if env else _user_data_dir() / "bioimage-zoo"


def zoo_cache() -> Path:
    """Root of the content-addressed package cache (``$ZOO_CACHE``, default: next to ZOO_HOME)."""
    env = os.environ.get("ZOO_CACHE")
    if env:
        return Path(env).expanduser()
    if os.environ.get("ZOO_HOME"):
        return zoo_home() / "cache"
    return _user_cache_dir() / "bioimage-zoo"
