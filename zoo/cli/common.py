"""What every command group shares: the registry the global options name, progress, model options."""
from __future__ import annotations

import argparse
import sys


def registry_of(args, url=None):
    """The registry of ``--registry`` (a folder, ``local``, ``http(s)://...`` or ``hf://ORG``), or ``url``."""
    from .. import api

    return api.registry(url or args.registry, offline=args.offline or None)


def load(args, ref: str):
    """The model ``ref`` names, with the command's --runtime, --device and --registry."""
    from .. import api

    return api.load(ref, runtime=args.runtime, device=args.device, registry=registry_of(args))


def progress(label: str):
    """A tqdm progress callback on a terminal, nothing otherwise; returns (update, close)."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(desc=label, unit="tile", leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def runtime_options(p: argparse.ArgumentParser, device_help: str = "auto, cpu, cuda or cuda:N (default auto)") -> None:
    p.add_argument("--runtime", choices=["auto", "onnx", "torch"], default="auto",
                   help="auto (default): the fastest here, measured once per package and machine and cached")
    p.add_argument("--device", default="auto", help=device_help)


def print_rows(rows: list[dict], empty: str) -> None:
    """One package per line, tab-separated: name, latest version, task, description."""
    if not rows:
        print(empty, file=sys.stderr)
    for row in rows:
        print(f"{row['name']}\t{row['latest']}\t{row['task']}\t{row['description']}")
