"""The ``zoo`` command. Each command group is a module that adds its parsers (``register``) and
whose commands parse, call one function of :mod:`zoo.api` and print the result. Imports are lazy,
so that the command starts fast."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ..errors import ZooError
from . import exchange, packages, predict, recommend, serving, training

GROUPS = (packages, predict, recommend, training, serving, exchange)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="bioimage-zoo: pretrained models for microscopy")
    parser.add_argument("--registry", help="registry: a folder, local (default: $ZOO_HOME/registry), "
                                           "http(s)://HOST/ROOT (read-only) or hf://ORG")
    parser.add_argument("--offline", action="store_true",
                        help="resolve from the cache alone (also ZOO_OFFLINE=1 or HF_HUB_OFFLINE=1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (providers, files)")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"bioimage-zoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("tifffile").setLevel(logging.ERROR)  # corrupt files get our own error instead
    offline_before = os.environ.get("ZOO_OFFLINE")
    if args.offline:              # one switch for every part: registries, archive URLs, imports read ZOO_OFFLINE
        os.environ["ZOO_OFFLINE"] = "1"
    try:
        code = args.func(args)
        sys.stdout.flush()        # a reader that has gone (`zoo info | head -1`) shows here, not at exit
        return code
    except BrokenPipeError:       # stop quietly, as cat does: nothing more to say, and nobody to say it to
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141                # 128 + SIGPIPE, what a shell reports for a command the pipe stopped
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if offline_before is None:
            os.environ.pop("ZOO_OFFLINE", None)
        else:
            os.environ["ZOO_OFFLINE"] = offline_before
