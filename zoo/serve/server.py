"""Running the app: load the models, then uvicorn on loopback unless told otherwise."""
from __future__ import annotations

import logging
import os

from .app import Limits, Pool, create_app
from .metrics import Metrics

log = logging.getLogger("zoo.serve")


def serve(refs: list[str], host: str = "127.0.0.1", port: int = 8000, runtime: str = "onnx", device: str = "auto",
          token: str | None = None, limits: Limits | None = None, registry=None, graceful: float = 30.0) -> None:
    """Load ``refs`` and serve them until SIGINT/SIGTERM; in-flight requests finish first (up to ``graceful`` s)."""
    import uvicorn

    pool = Pool(limits or Limits(), Metrics(), runtime=runtime, device=device, registry=registry)
    for ref in refs:
        pool.load(ref)
    app = create_app(pool, token=token or os.environ.get("ZOO_SERVE_TOKEN") or None)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: reachable from other machines%s", host, "" if token else " WITHOUT a token")
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=graceful)
