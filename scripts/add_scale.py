"""Give a published standard instance package its physical scale, as a new patch version
(published versions are never rewritten): the same weights, test tensors and shift check, plus
``scale.diameter``, the training objects' median diameter in pixels (measured on the training
label images when the shift check was calibrated: its ``reference.scale``), and
``scale.pixel_size`` where the training data's metadata gives one (DSB 2018 does not: its
images come from several microscopes and magnifications without metadata).

Predictions then rescale an image whose objects are another size (``--diameter``) or whose
pixel size differs (``--pixel-size`` or the file's metadata) to the model's scale and back.

Reproduce:  python scripts/add_scale.py NAME [--version X.Y.Z] [--pixel-size UM] [--no-publish]
            (every standard instance package: --all)
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import zoo
from zoo.registry import standard_store
from zoo.trust.check import load_shift

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe_cli  # noqa: E402


def latest(name: str) -> str:
    versions = [p.name for p in (standard_store() / "packages" / name).iterdir() if p.is_dir()]
    return max(versions, key=lambda v: tuple(int(x) for x in v.split("-")[0].split(".")))


def instance_packages() -> list[str]:
    names = sorted(p.name for p in (standard_store() / "packages").iterdir() if p.is_dir())
    return [n for n in names if zoo.opnames.makes_instances(zoo.spec.load(standard_store() / "packages" / n /
                                                                          latest(n)))]


def with_scale(name: str, work: Path, version: str | None, pixel_size: float | None) -> Path:
    source_version = latest(name)
    source = standard_store() / "packages" / name / source_version
    spec = zoo.spec.load(source)
    shift = load_shift(spec, source)
    if shift is None or not shift.reference.get("scale"):
        raise SystemExit(f"{name}@{source_version} has no training object scale in its shift check")
    major, minor, patch = (int(x) for x in source_version.split("-")[0].split("."))
    version = version or f"{major}.{minor}.{patch + 1}"
    package = work / f"{name}-{version}"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(source, package)
    scale = {"diameter": round(float(shift.reference["scale"]), 3),
             "measured_from": "training labels: median equivalent diameter of the objects"}
    if pixel_size:
        scale["pixel_size"] = {a: pixel_size for a in spec.inputs[0].spatial_axes}
    from zoo.package import build

    def change(s):
        s.version = version
        s.scale = scale

    build.amend(package, change)
    zoo.load(package).test()
    print(f"{package}: {name}@{version} scale {scale}", flush=True)
    return package


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?")
    p.add_argument("--all", action="store_true", help="every standard instance package")
    p.add_argument("--version", help="default: the next patch version")
    p.add_argument("--pixel-size", type=float, help="the training images' pixel size in µm, where known")
    p.add_argument("--no-publish", action="store_true")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "zoo-scale")
    args = p.parse_args()
    names = instance_packages() if args.all else [args.name]
    if not names or names == [None]:
        raise SystemExit("name a package, or --all")
    for name in names:
        package = with_scale(name, args.work, args.version, args.pixel_size)
        if not args.no_publish:
            recipe_cli.publish(package, standard_store())


if __name__ == "__main__":
    main()
