"""Commands about packages and registries: list, search, info, pull, push, pack, check, mirror,
cache, validate, lineage."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import print_rows, registry_of


def cmd_list(args) -> int:
    print_rows(registry_of(args, args.remote).entries(), "(no packages)")
    return 0


def cmd_search(args) -> int:
    from ..registry.remote import search

    rows = search(registry_of(args, args.remote).entries(), text=" ".join(args.text) or None, task=args.task,
                  tag=args.tag, architecture=args.architecture, axes=args.axes)
    print_rows(rows, "(no package matches)")
    return 0


def cmd_info(args) -> int:
    from .. import spec as specs

    reg = registry_of(args)
    spec = reg.spec(args.ref)
    if args.yaml:
        print(specs.dump(spec), end="")
        return 0
    name, _ = reg.resolve(args.ref)
    print(f"{spec.ref}  ({spec.task}, architecture {spec.architecture_id})")
    print(f"  {spec.description.strip()}")
    from packaging.version import Version

    print(f"  versions: {', '.join(sorted(reg.versions(name), key=Version))}")
    print(f"  license: {spec.license}; authors: {', '.join(a['name'] for a in spec.authors)}")
    for group in ("inputs", "outputs"):
        for t in getattr(spec, group):
            print(f"  {group[:-1]} {t.name}: axes {t.axes}, {t.dtype}, channels {t.channels or ['-']}"
                  + (f", halo {t.halo}" if t.halo else ""))
    if spec.training and spec.training.metrics:
        print("  metrics (held-out):")
        for k, v in spec.training.metrics.items():
            print(f"    {k}: {v}")
    if spec.training and spec.training.parent:
        print(f"  parent: {spec.training.parent['ref']}")
    return 0


def cmd_pull(args) -> int:
    from .. import api

    pulled = api.pull(args.ref, registry_of(args), sha256=args.sha256, weights=args.weights,
                      trust_code=args.trust_code)
    if pulled.bytes_moved is None:                  # an archive
        print(f"{pulled.spec.ref}\t{pulled.path}")
        return 0
    print(f"{pulled.spec.ref}\t{pulled.path}\t{pulled.bytes_moved} bytes {pulled.how}"
          + (" (already in the cache)" * (not pulled.bytes_moved)))
    return 0


def cmd_push(args) -> int:
    from .. import api

    if args.dry_run:
        return _push_plan(args)
    result = api.publish(args.package, registry_of(args, args.to), test=not args.no_test)
    state = "published" if result.created else "already published (identical)"
    print(f"{result.ref} {state}" + (f" to {args.to}" if args.to else f": {result.path}"))
    return 0


def _push_plan(args) -> int:
    """What ``push --to hf://ORG`` would send: repository, tag, files and model card."""
    from .. import spec as specs
    from ..errors import InputError

    if not (args.to or "").startswith("hf://"):
        raise InputError("--dry-run shows a Hugging Face upload: give --to hf://ORG")
    from ..registry.hf import plan_upload

    plan = plan_upload(specs.load(args.package), Path(args.package), args.to[len("hf://"):].strip("/"))
    print(f"repository {plan.repo_id}, tag {plan.tag}")
    for path_in_repo in sorted(plan.files):
        print(f"  {path_in_repo}")
    print("  README.md (model card)\n" + plan.card)
    return 0


def cmd_pack(args) -> int:
    from .. import spec as specs
    from ..hashing import sha256_file
    from ..package.archive import pack

    spec = specs.load(args.package)
    out = pack(args.package, args.output or Path(f"{spec.name}-{spec.version}.zip"))
    print(f"{out}\tsha256 {sha256_file(out)}")
    return 0


def cmd_check(args) -> int:
    """Check the registry folder and the cache after a crash; ``--repair`` removes what interrupted
    operations left behind (never a listed version)."""
    from ..paths import zoo_cache
    from ..registry.health import check_cache, check_registry, repair

    registry = registry_of(args)
    targets = [("cache", zoo_cache(), check_cache)]
    if isinstance(getattr(registry, "root", None), Path):
        registry.index()                                   # seeds the embedded registry on first use
        targets.insert(0, ("registry", registry.root, check_registry))
    damaged = 0
    for label, path, check in targets:
        health = check(path)
        print(f"{label} {path}: {health.checked} verified, {len(health.problems)} damaged, "
              f"{len(health.leftovers)} left over by interrupted operations")
        for problem in health.problems:
            print(f"  damaged: {problem}")
        if args.repair and health.leftovers:
            print(f"  removed {repair(health)} leftover(s)")
        damaged += len(health.problems)
    if damaged:
        print("damaged versions are never repaired automatically: pull or publish them again", file=sys.stderr)
    return 1 if damaged else 0


def cmd_mirror(args) -> int:
    from ..registry.remote import mirror

    counts = mirror(args.source, args.destination)
    print(f"mirrored {args.source} -> {args.destination}: {counts['copied']} version(s) copied, "
          f"{counts['skipped']} already there")
    return 0


def cmd_cache(args) -> int:
    from ..paths import zoo_cache
    from ..registry.cache import listing, prune

    if args.action == "ls":
        rows = listing(zoo_cache())
        for row in rows:
            print(f"{row['name']}@{row['version']}\t{row['sha256']}\t{row['bytes']}\t{row['path']}")
        if not rows:
            print(f"(the cache {zoo_cache()} holds no package)", file=sys.stderr)
        return 0
    freed, removed = prune(zoo_cache(), keep_latest=not args.all)
    print(f"removed {len(removed)} item(s), {freed} bytes freed from {zoo_cache()}")
    return 0


def cmd_validate(args) -> int:
    from .. import api

    result = api.validate(args.target, registry_of(args))
    spec = result.spec
    if Path(args.target).is_file():
        print(f"{args.target}: valid {spec.kind} spec ({spec.ref})")
        if result.root is None:
            return 0
    if spec.kind != "package":
        print(f"{result.root}: valid blueprint ({spec.ref})")
        return 0
    for runtime, ratio in result.ratios.items():
        print(f"{spec.ref}: {runtime} reproduces the test tensors (max error {ratio:.2g}x tolerance)")
    print(f"{spec.ref}: valid package, every sha256 verified ({result.root})")
    return 0


def cmd_lineage(args) -> int:
    from ..lineage import chain, describe

    links = chain(registry_of(args), args.ref)
    print(describe(links))
    return 0 if all(link.status in ("package", "verified") for link in links) else 1


def register(sub) -> None:
    p = sub.add_parser("list", help="list packages in the registry, one per line, name first")
    p.add_argument("--remote", help="list this registry instead (folder, http(s)://..., hf://ORG)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("search", help="find packages by text, task, tag, architecture or input axes")
    p.add_argument("text", nargs="*", help="words that must all appear in the name, description or tags")
    p.add_argument("--task", help="e.g. segmentation, segmentation/instance, restoration/denoising")
    p.add_argument("--tag")
    p.add_argument("--architecture", help="architecture id, e.g. stardist")
    p.add_argument("--axes", help="input axes, e.g. bcyx or bczyx")
    p.add_argument("--remote", help="search this registry instead (folder, http(s)://..., hf://ORG)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("mirror", help="copy every package of one registry into another, verifying hashes (resumable)")
    p.add_argument("source", help="folder, local, http(s)://HOST/ROOT or hf://ORG")
    p.add_argument("destination", help="folder, local or hf://ORG")
    p.set_defaults(func=cmd_mirror)

    p = sub.add_parser("cache", help="the package cache: ls lists it, prune removes leftovers and older versions")
    p.add_argument("action", choices=["ls", "prune"])
    p.add_argument("--all", action="store_true", help="prune: remove every cached package")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("info", help="describe a package")
    p.add_argument("ref", help="NAME[@VERSION]")
    p.add_argument("--yaml", action="store_true", help="print its zoo.yaml")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("pull", help="fetch a package into the cache, verifying every sha256")
    p.add_argument("ref", help="NAME[@VERSION] (e.g. n2v-w2s@^0.1), or REGISTRY_URL/NAME[@VERSION] "
                               "(hf://ORG/NAME@1.0, http://HOST/ROOT/NAME), or a package archive "
                               "(PKG.zip, https://HOST/PKG.zip), or bioimageio:ID (e.g. bioimageio:affable-shark)")
    p.add_argument("--sha256", help="with an archive: the sha256 its author published (checked before unpacking)")
    p.add_argument("--weights", choices=["onnx", "torchscript", "pytorch_state_dict"],
                   help="with bioimageio:ID: the weight format to import (default: the importer's choice)")
    p.add_argument("--trust-code", action="store_true",
                   help="with bioimageio:ID: let a state dict's own architecture source run once, at import "
                        "(SECURITY.md)")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("check", help="verify the registry folder and the cache (after a crash)")
    p.add_argument("--repair", action="store_true", help="remove what interrupted operations left behind")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("pack", help="write a package folder as one .zip (the same bytes every time)")
    p.add_argument("package", type=Path, help="package folder (holding zoo.yaml)")
    p.add_argument("-o", "--output", type=Path, help="the .zip to write (default: NAME-VERSION.zip here)")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("push", help="publish a package folder or archive to the registry")
    p.add_argument("package", type=Path, help="package folder (holding zoo.yaml) or archive (.zip, .tar.gz)")
    p.add_argument("--no-test", action="store_true", help="skip reproducing the test tensors")
    p.add_argument("--to", help="registry to publish to: a folder, local (default) or hf://ORG")
    p.add_argument("--dry-run", action="store_true", help="with --to hf://ORG: print the repository, tag, files "
                                                          "and model card that would be sent, send nothing")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("validate", help="validate a spec file, a package folder or a registry package")
    p.add_argument("target", help="SPEC.yaml, PACKAGE_DIR or NAME[@VERSION]")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("lineage", help="the chain of packages a package was fine-tuned from, each verified")
    p.add_argument("ref", help="NAME[@VERSION] or a package folder")
    p.set_defaults(func=cmd_lineage)
