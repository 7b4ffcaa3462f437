"""``zoo serve``: models over HTTP."""
from __future__ import annotations

import sys

from .common import registry_of, runtime_options


def cmd_serve(args) -> int:
    from .. import api
    from ..serve.app import Limits

    limits = Limits(max_body=args.max_body_mb << 20, max_pixels=args.max_pixels, max_batch=args.max_batch,
                    max_wait=args.max_wait_ms / 1000, max_queue=args.max_queue, timeout=args.timeout)
    print(f"serving {', '.join(args.refs) or 'no model yet'} on http://{args.host}:{args.port} "
          f"(API: /docs, /openapi.json)", file=sys.stderr, flush=True)
    api.serve(args.refs, host=args.host, port=args.port, runtime=args.runtime, device=args.device, token=args.token,
              limits=limits, registry=registry_of(args))
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve models over HTTP (FastAPI + uvicorn), with batching and limits")
    p.add_argument("refs", nargs="*", help="models to load: NAME[@VERSION], package folders or registry URLs")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    runtime_options(p, device_help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--token", help="bearer token for predict and admin (default: $ZOO_SERVE_TOKEN; "
                                   "without one, predict is open and admin is off)")
    p.add_argument("--max-batch", type=int, default=8, help="requests batched into one network call")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a batch waits to fill")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting per model before 503")
    p.add_argument("--max-body-mb", type=int, default=256, help="largest request body")
    p.add_argument("--max-pixels", type=int, default=64 << 20, help="largest image (values) accepted")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds one prediction may take (504)")
    p.set_defaults(func=cmd_serve)
