"""The HTTP API (FastAPI; served by uvicorn). Versioned under ``/v1``; the schema is at ``/openapi.json``.

    GET    /v1/models                      the loaded models
    GET    /v1/models/{name}               one model: its spec's inputs and outputs
    POST   /v1/models/{name}/predict       body: one image (TIFF or NPY); answer by Accept (TIFF / NPY;
                                           JSON: the object table of instance segmentation;
                                           classifiers always answer JSON: class and probabilities)
    POST   /v1/admin/models                load a model from the registry: {"ref": "NAME[@VERSION]"} (token)
    DELETE /v1/admin/models/{name}         unload it (token)
    GET    /health, /ready, /metrics       liveness, readiness, Prometheus metrics

Packages with a dataset-shift check answer with ``X-Shift-Score``, ``X-Shift-Threshold``,
``X-Shift-Warning`` (and ``X-Shift-Messages``: what differs from the training data).

Every error is JSON ``{"error": ..., "status": ...}`` with a 4xx code that names the problem;
nothing a client sends can make the server answer 500 or stop. Under load: a full queue, or more
request bodies being buffered at once than ``ZOO_SERVE_MAX_IN_FLIGHT_MB`` (default 1024, all
connections together), answer 503 with Retry-After; a prediction past the timeout answers 504 and
stops at its next batch of tiles; unloading never waits for running predictions; a client that
goes away is counted in ``zoo_client_disconnects_total``, not as an error.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import InputError, NotFoundError, ZooError
from ..runtime import layout
from . import codec
from .batching import Batcher, QueueFull, Unloaded
from .metrics import Metrics

log = logging.getLogger("zoo.serve")


def _mib_from_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise InputError(f"{name} must be a whole number of MiB (at least 1), got '{value}'")
    return int(value) << 20


@dataclass
class Limits:
    max_body: int = 256 << 20            # bytes of one request body
    max_in_flight: int = field(          # bytes of request bodies buffered at once, all connections together
        default_factory=lambda: _mib_from_env("ZOO_SERVE_MAX_IN_FLIGHT_MB", 1 << 30))
    max_pixels: int = 64 << 20           # values of one image (after decoding)
    max_batch: int = 8                   # requests run together
    max_wait: float = 0.01               # seconds a batch waits to fill
    max_queue: int = 64                  # requests waiting per model; more get 503
    timeout: float = 120.0               # seconds one prediction may take


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class InFlight:
    """The bytes of request bodies being buffered, across all connections, against a cap (event loop only)."""

    def __init__(self, cap: int):
        self.cap, self.used = cap, 0

    def reserve(self, size: int) -> int:
        if size > self.cap:
            raise ApiError(413, f"the body needs {size} bytes; this server buffers at most {self.cap} at once")
        if self.used + size > self.cap:
            raise ApiError(503, f"the server is buffering {self.used} bytes of uploads (at most {self.cap}); "
                                "retry shortly", {"Retry-After": "1"})
        self.used += size
        return size

    def release(self, size: int) -> None:
        self.used -= size


@dataclass
class Served:
    model: object
    batcher: Batcher
    loaded: float = field(default_factory=time.time)
    # The shift checks of one model run one at a time, in a thread of their own: memory is then
    # bounded by one check (its encoder session, its buffers), not by the number of clients.
    checks: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="zoo-shift"))


class Pool:
    """The loaded models, by name."""

    def __init__(self, limits: Limits, metrics: Metrics, runtime: str = "onnx", device: str = "auto", registry=None):
        self.limits, self.metrics, self.runtime, self.device, self.registry = limits, metrics, runtime, device, registry
        self.models: dict[str, Served] = {}
        self.bodies = InFlight(limits.max_in_flight)

    def load(self, ref: str) -> Served:
        return self.add(self.open(ref))

    def open(self, ref: str):
        """The model of ``ref``, ready to run (blocking: run it in a thread while serving)."""
        from ..loading import load

        return load(ref, runtime=self.runtime, device=self.device, registry=self.registry)

    def add(self, model) -> Served:
        """Serve ``model``, in place of a loaded model of its name (on the event loop while serving)."""
        name = model.spec.name
        batcher = Batcher(lambda x, progress, m=model: m.predict_tensor(x, progress=progress), self.limits.max_batch,
                          self.limits.max_wait, self.limits.max_queue,
                          on_batch=lambda size, n=name: self.metrics.batch(n, size))
        self.unload(name)
        self.models[name] = Served(model, batcher)
        self.metrics.watch_queue(name, lambda b=batcher: b.depth)
        log.info("serving %s (%s)", model.spec.ref, model.runtime)
        return self.models[name]

    def get(self, name: str) -> Served:
        if name not in self.models:
            raise ApiError(404, f"no model '{name}' is served here (served: {', '.join(sorted(self.models)) or 'none'}); "
                                "see GET /v1/models")
        return self.models[name]

    def unload(self, name: str) -> bool:
        """Stop serving ``name`` at once; its requests already accepted finish (never blocks)."""
        served = self.models.pop(name, None)
        if served:
            served.batcher.close()       # its checks' thread ends with it, after the requests already running
        return served is not None


def describe(model) -> dict:
    spec = model.spec

    def tensor(t):
        return {"name": t.name, "axes": t.axes, "dtype": t.dtype, "channels": t.channels,
                "shape": {"min": t.shape_min, "step": t.shape_step}, "halo": t.halo,
                "description": t.description}

    return {"name": spec.name, "version": spec.version, "ref": spec.ref, "task": spec.task,
            "description": spec.description.strip(), "architecture": spec.architecture_id,
            "license": spec.license, "runtime": model.runtime, "instances": model.makes_instances,
            **({"classes": model.class_names} if model.task.per_image else {}),
            "inputs": [tensor(t) for t in spec.inputs], "outputs": [tensor(t) for t in spec.outputs]}


def create_app(pool: Pool, token: str | None = None) -> FastAPI:
    app = FastAPI(title="bioimage-zoo", version="1", description="Pretrained bioimage models over HTTP.")
    metrics, limits = pool.metrics, pool.limits
    app.state.pool = pool

    def check_token(request: Request, required: bool) -> None:
        if token is None:
            if required:
                raise ApiError(403, "admin endpoints are disabled: start the server with --token (or ZOO_SERVE_TOKEN)")
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise ApiError(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                           {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        metrics.error(e.status)
        return JSONResponse({"error": e.message, "status": e.status}, status_code=e.status, headers=e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        metrics.error(e.status_code)
        return JSONResponse({"error": str(e.detail), "status": e.status_code}, status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        metrics.error(422)
        return JSONResponse({"error": f"invalid request: {e.errors()}", "status": 422}, status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, e: ClientDisconnect):      # not an error of the server
        log.info("the client went away during %s %s", request.method, request.url.path)
        metrics.disconnect()
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):      # a bug, not the client's fault: logged
        log.exception("unexpected error on %s", request.url.path)
        metrics.error(500)
        return JSONResponse({"error": f"internal error ({type(e).__name__}); see the server log", "status": 500},
                            status_code=500)

    @app.get("/health", summary="liveness")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", summary="readiness: at least one model loaded")
    async def ready():
        if not pool.models:
            raise ApiError(503, "no model loaded yet", {"Retry-After": "5"})
        return {"status": "ready", "models": sorted(pool.models)}

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models", summary="the models served")
    async def list_models():
        return [{k: describe(s.model)[k] for k in ("name", "version", "task", "description")}
                for s in pool.models.values()]

    @app.get("/v1/models/{name}", summary="one model: inputs, outputs, task")
    async def model_info(name: str):
        return describe(pool.get(name).model)

    @app.post("/v1/models/{name}/predict", summary="predict one image",
              openapi_extra={"requestBody": {"required": True, "content": {
                  kind: {"schema": {"type": "string", "format": "binary"}} for kind in codec.ACCEPTED}}},
              responses={200: {"content": {codec.TIFF: {}, codec.NPY: {}, codec.JSON: {}}}})
    async def predict(name: str, request: Request, axes: str | None = None):
        started = time.perf_counter()
        check_token(request, required=False)
        served = pool.get(name)
        classifier = served.model.task.per_image
        kind = codec.JSON if classifier else \
            _answer(lambda: codec.response_type(request.headers.get("accept"), tables=served.model.makes_instances))
        body = await _read_body(request, limits.max_body, pool.bodies)
        image = _answer(lambda: codec.decode(body, request.headers.get("content-type", ""), limits.max_pixels))
        inp = served.model.spec.inputs[0]
        x, natural = _answer(lambda: layout.tensor_for(image, axes, inp), status=422)
        _answer(lambda: layout.check_finite(x), status=422)   # before batching: never fail other requests
        try:
            parts = [served.batcher.submit(x[b:b + 1]) for b in range(x.shape[0])]
            y = np.concatenate(await asyncio.wait_for(asyncio.gather(*parts), limits.timeout))   # all or none
        except QueueFull:
            raise ApiError(503, f"'{name}' has {limits.max_queue} requests waiting; retry shortly",
                           {"Retry-After": "1"}) from None
        except Unloaded:
            raise ApiError(503, f"'{name}' is being unloaded; see GET /v1/models", {"Retry-After": "1"}) from None
        except asyncio.TimeoutError:
            raise ApiError(504, f"the prediction took longer than {limits.timeout:g} s") from None
        except ZooError as e:
            raise ApiError(422, str(e)) from None
        shift = await asyncio.get_running_loop().run_in_executor(served.checks, _shift_headers, served.model, x, y)
        metrics.observe(name, time.perf_counter() - started, 200)
        if classifier:                      # one row per image: the class and every class's probability
            names = served.model.class_names
            rows = [{"class": names[int(np.argmax(p))], "probabilities": dict(zip(names, map(float, p)))} for p in y]
            return JSONResponse({"model": served.model.spec.ref, "predictions": rows},
                                headers={"X-Model": served.model.spec.ref, **shift})
        result = layout.from_tensor(y, natural)
        return Response(codec.encode(result, kind), media_type=kind,
                        headers={"X-Model": served.model.spec.ref, "X-Shape": ",".join(map(str, result.shape)), **shift})

    @app.post("/v1/admin/models", summary="load a model from the registry (token required)")
    async def load_model(request: Request):
        check_token(request, required=True)
        try:
            ref = (await request.json())["ref"]
            if not isinstance(ref, str):
                raise TypeError
        except Exception:   # noqa: BLE001
            raise ApiError(400, 'expected a JSON body {"ref": "NAME[@VERSION]"}') from None
        try:
            model = await asyncio.get_running_loop().run_in_executor(None, pool.open, ref)
        except NotFoundError as e:
            raise ApiError(404, str(e)) from None
        except ZooError as e:
            raise ApiError(422, str(e)) from None
        return describe(pool.add(model).model)

    @app.delete("/v1/admin/models/{name}", summary="unload a model (token required)")
    async def unload_model(name: str, request: Request):
        check_token(request, required=True)
        if not pool.unload(name):
            raise ApiError(404, f"no model '{name}' is served here")
        return {"unloaded": name}

    return app


def _shift_headers(model, x: np.ndarray, y: np.ndarray) -> dict:
    """The dataset-shift check of the first image as response headers (none without a check)."""
    if not model.spec.trust:
        return {}
    from ..trust.check import check

    labels = y[0, 0] if model.makes_instances and y.ndim == x.ndim and y.shape[2:] == x.shape[2:] else None
    report = check(model, x[:1], labels)
    headers = {"X-Shift-Score": f"{report.shift_score:.4g}", "X-Shift-Threshold": f"{report.shift_threshold:.4g}",
               "X-Shift-Warning": "true" if report.shift_warning else "false"}
    if report.messages:
        headers["X-Shift-Messages"] = "; ".join(report.messages).encode("ascii", "replace").decode()
    return headers


def _answer(make, status: int = 400):
    """Run a decoding step; the client's mistakes become 4xx answers."""
    try:
        return make()
    except codec.TooLarge as e:
        raise ApiError(413, str(e)) from None
    except codec.NotAcceptable as e:
        raise ApiError(406, str(e)) from None
    except InputError as e:
        unsupported = "unsupported content type" in str(e)
        raise ApiError(415 if unsupported else status, str(e)) from None


async def _read_body(request: Request, max_body: int, bodies: InFlight) -> bytes:
    """The body, buffered under ``bodies``' cap: the declared length is reserved before reading, a body
    without one as it arrives; the reservation ends with the reading (or the client going away)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"bad Content-Length '{declared}'")
        if int(declared) > max_body:
            raise ApiError(413, f"the body declares {declared} bytes; this server accepts at most {max_body}")
    reserved = bodies.reserve(int(declared or 0))
    try:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise ApiError(413, f"the body is larger than {max_body} bytes")
            if size > reserved:
                reserved += bodies.reserve(size - reserved)
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        bodies.release(reserved)
