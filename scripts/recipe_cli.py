"""The command line the standard-zoo builders share: recipes by name, step override, version,
the store to publish into and a work folder; and publishing a built package."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import zoo
from zoo.registry import LocalRegistry, standard_store


def parser(doc: str, recipes: dict, work: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipes", nargs="+", help=f"{', '.join(recipes)} or all")
    p.add_argument("--max-steps", type=int, help="override the recipe's step count")
    p.add_argument("--version", default="0.1.0")
    p.add_argument("--store", type=Path, default=standard_store(), help="registry to publish into")
    p.add_argument("--no-publish", action="store_true")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / work,
                   help="where packages are built before publishing (kept)")
    p.add_argument("--resume", action="store_true",
                   help="continue each recipe's stopped run from its last checkpoint (its run folder in --work)")
    p.add_argument("--max-time", help="stop each training after this long (2h, 90m, 1d12h); --resume continues it")
    return p


def session(args, out: Path) -> dict:
    """The ``fit`` options for one recipe's training into ``out``: resume its run folder
    (``OUT.run`` beside it) on ``--resume``, and ``--max-time``."""
    return {"resume": out.parent / f"{out.name}.run" if args.resume else None, "max_time": args.max_time}


def chosen(p: argparse.ArgumentParser, args, recipes: dict, all_names: list[str]) -> list[str]:
    """The recipe names asked for (``all``: ``all_names``); unknown names are a usage error."""
    names = all_names if args.recipes == ["all"] else args.recipes
    unknown = [n for n in names if n not in recipes]
    if unknown:
        p.error(f"unknown recipe(s) {unknown}: choose from {', '.join(recipes)}")
    return names


def publish(package: Path, store: Path) -> None:
    result = zoo.api.publish(package, LocalRegistry(store, seed=None))    # test tensors reproduced first
    print(f"published {result.ref} to {store} (new: {result.created})", flush=True)
