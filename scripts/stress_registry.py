"""Many processes publishing to and pulling from one registry folder at once, for a bounded time.

Each worker process loops, choosing at random to:

- publish a version of its own (``3.<worker>.<k>``): it must be listed afterwards;
- publish a *shared* version that every worker builds identically (``1.0.<j>``): one creates it,
  the others find it already there;
- publish a *contested* version that every worker builds differently (``2.0.<j>``): exactly one
  wins, the others are refused (``VersionConflictError``);
- pull a random listed version into the shared cache and compare its files with the registry's.

Every outcome goes to a journal. Passes when the index lists every version a worker was told was
published, with the winner's content; every listed version and cached package verifies; no two
winners claim one contested version; no worker failed otherwise; nothing is left over.

Reproduce:  python scripts/stress_registry.py [--processes 8] [--seconds 60]
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

SHARED, CONTESTED = 6, 6


def _variant(source: Path, work: Path, version: str, description: str | None = None) -> Path:
    """A copy of ``source`` as ``version`` (and another description: other content)."""
    from zoo import spec as specs

    target = work / version
    if not target.exists():
        shutil.copytree(source, target)
        spec = specs.load(target)
        spec.version = version
        if description:
            spec.description = f"{description} {spec.description}"
        (target / specs.SPEC_FILE).write_text(specs.dump(spec))
    return target


def worker(index: int, root: Path, cache: Path, source: Path, seconds: float, journal: Path, seed: int) -> None:
    from zoo import spec as specs
    from zoo.errors import VersionConflictError
    from zoo.hashing import sha256_file
    from zoo.registry import LocalRegistry

    rng = random.Random(seed * 1000 + index)
    registry = LocalRegistry(root, cache=cache)
    work = Path(tempfile.mkdtemp(prefix=f"zoo-stress-{index}-"))
    name = specs.load(source).name
    own = 0
    deadline = time.monotonic() + seconds
    with open(journal, "w") as out:
        def log(**row):
            out.write(json.dumps(row) + "\n")
            out.flush()

        while time.monotonic() < deadline:
            action, version = rng.choice(["own", "shared", "contested", "pull", "pull"]), None
            try:
                if action == "own":
                    version, own = f"3.{index}.{own}", own + 1
                    package = _variant(source, work, version)
                elif action == "shared":
                    version = f"1.0.{rng.randrange(SHARED)}"
                    package = _variant(source, work, version)
                elif action == "contested":
                    version = f"2.0.{rng.randrange(CONTESTED)}"
                    package = _variant(source, work, version, description=f"(worker {index})")
                if action != "pull":
                    result = registry.publish(package)
                    log(action=action, version=version, created=result.created,
                        sha256=sha256_file(package / "zoo.yaml"))
                    continue
                versions = registry.versions(name)
                version = rng.choice(versions)
                spec, folder = registry.pull(f"{name}@{version}")
                stored = registry.package_dir(name, version)
                same = all(sha256_file(folder / f.file) == sha256_file(stored / f.file) for f in spec.package_files())
                log(action="pull", version=version, same=same, sha256=sha256_file(folder / "zoo.yaml"))
            except VersionConflictError:
                log(action=action, version=version, conflict=True)
            except Exception as e:                       # anything else is a failure of the registry
                log(action=action, version=version, error=f"{type(e).__name__}: {e}")
    shutil.rmtree(work, ignore_errors=True)


def run(source: Path, processes: int = 8, seconds: float = 30.0, seed: int = 0, work: Path | None = None) -> dict:
    """Run the workers against a fresh registry; return the counts and every failure found."""
    from zoo.registry import LocalRegistry
    from zoo.registry.health import check_cache, check_registry

    work = Path(work or tempfile.mkdtemp(prefix="zoo-stress-"))
    root, cache = work / "registry", work / "cache"
    LocalRegistry(root, cache=cache).publish(source)
    journals = [work / f"journal-{k}.jsonl" for k in range(processes)]
    children = [subprocess.Popen([sys.executable, __file__, "--worker", str(k), "--root", str(root), "--cache",
                                  str(cache), "--source", str(source), "--seconds", str(seconds), "--journal",
                                  str(journal), "--seed", str(seed)])
                for k, journal in enumerate(journals)]
    codes = [child.wait(timeout=seconds + 300) for child in children]
    rows = [json.loads(line) for journal in journals if journal.is_file() for line in journal.read_text().splitlines()]
    index = json.loads((root / "index.json").read_text())
    name = next(iter(index))
    listed = index[name]
    failures = [f"worker exited with {code}" for code in codes if code != 0]
    failures += [f"{r['action']} {r['version']}: {r['error']}" for r in rows if "error" in r]
    published = [r for r in rows if r["action"] != "pull" and "created" in r]
    for r in published:                              # no lost version, and the listed content is what was published
        if r["version"] not in listed:
            failures.append(f"{r['version']}: published (created={r['created']}) but not listed")
        elif r["action"] != "contested" and listed[r["version"]]["sha256"] != r["sha256"]:
            failures.append(f"{r['version']}: listed with other content than was published")
    for version in {r["version"] for r in rows if r["action"] == "contested"}:
        winners = [r for r in published if r["version"] == version and r["action"] == "contested"]
        creators = {r["sha256"] for r in winners if r["created"]}
        if len(creators) > 1 or (version in listed and not creators and not winners):
            failures.append(f"{version}: {len(creators)} different contents claim to have created it")
        if version in listed and any(r["sha256"] != listed[version]["sha256"] for r in winners):
            failures.append(f"{version}: a worker was told its content was published, but other content is listed")
    failures += [f"pull {r['version']}: the cached files differ from the registry's" for r in rows
                 if r["action"] == "pull" and not r.get("same", True)]
    registry_health, cache_health = check_registry(root), check_cache(cache)
    failures += registry_health.problems + cache_health.problems
    failures += [f"left over: {p}" for p in registry_health.leftovers + cache_health.leftovers]
    counts = Counter(r["action"] + (":conflict" if r.get("conflict") else
                                    ":created" if r.get("created") else ":existing" if "created" in r else "")
                     for r in rows)
    return {"processes": processes, "seconds": seconds, "operations": len(rows), "counts": dict(counts),
            "versions listed": len(listed), "verified": registry_health.checked,
            "cached packages verified": cache_health.checked, "failures": failures, "work": str(work)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", type=Path, help="package folder to publish variants of "
                                                     "(default: the standard n2v-w2s-2d@0.1.0)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--journal", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.root, args.cache, args.source, args.seconds, args.journal, args.seed)
        return 0
    from zoo.registry import standard_store

    source = args.source or standard_store() / "packages" / "n2v-w2s-2d" / "0.1.0"
    result = run(source, args.processes, args.seconds, args.seed)
    for key, value in result.items():
        if key != "failures":
            print(f"{key}: {value}")
    print(f"failures: {len(result['failures'])}")
    for failure in result["failures"][:50]:
        print(f"  {failure}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
