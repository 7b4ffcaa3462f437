"""Concurrency: 8 processes publishing to and pulling from one registry folder at once
(scripts/stress_registry.py, a 15-second run): no lost version, one winner per contested
version, every listed version and cached package verified, nothing left over."""
from __future__ import annotations

import pytest

import importlib.util
import shutil

from conftest import REPO
from zoo.registry import standard_store


def _stress():
    spec = importlib.util.spec_from_file_location("stress_registry", REPO / "scripts" / "stress_registry.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow    # the default suite keeps under 10 minutes on 2 cores (issue 22.8): run it with -m slow
def test_eight_processes_publishing_and_pulling_at_once(tmp_path):
    stress = _stress()
    source = standard_store() / "packages" / "n2v-w2s-2d" / "0.1.0"
    result = stress.run(source, processes=8, seconds=15, seed=7, work=tmp_path / "work")
    print({k: v for k, v in result.items() if k != "failures"})
    assert result["failures"] == [], result["failures"][:20]
    counts = result["counts"]
    assert counts.get("own:created", 0) >= 40 and counts.get("pull", 0) >= 40, counts
    assert counts.get("shared:existing", 0) >= 10 and counts.get("contested:conflict", 0) >= 10, counts
    assert counts.get("shared:created", 0) <= stress.SHARED and counts.get("contested:created", 0) <= stress.CONTESTED
    own = counts["own:created"] + counts.get("own:existing", 0)
    assert result["versions listed"] == 1 + own + counts.get("shared:created", 0) + counts.get("contested:created", 0)
    assert result["verified"] == result["versions listed"]
    shutil.rmtree(tmp_path / "work", ignore_errors=True)
