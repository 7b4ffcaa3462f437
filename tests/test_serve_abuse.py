"""The server under load and abuse (scripts/stress_serve.py, the full run): 1,000 malformed
requests of 12 kinds mixed with 333 valid ones from 8 concurrent clients on loopback; memory
back within 5% (or 8 MiB) of the baseline taken after a warm-up of the same mix, and no more
than 4 MiB of growth over the last three quarters of the run."""
from __future__ import annotations

import importlib.util

from conftest import REPO


def test_malformed_requests_under_load_never_get_a_5xx(zoo_home):
    spec = importlib.util.spec_from_file_location("stress_serve", REPO / "scripts" / "stress_serve.py")
    stress = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stress)
    report = stress.run(requests=1000, clients=8, model="n2v-w2s-2d")
    assert report["malformed"] == 1000 and report["server_errors_5xx"] == 0, report
    assert report["valid_answered_correctly"] and report["alive"], report
    print(report["rss_kib"])
    assert report["memory_back"], report["rss_kib"]
    kinds = report["by_kind"]
    assert len(kinds) == 13                                   # every malformed kind came up, plus the valid
    assert all(set(statuses) <= {"400", "403", "404", "406", "413", "415", "422"}
               for kind, statuses in kinds.items() if kind != "valid")
