"""``zoo serve``: pulled packages over HTTP (FastAPI + uvicorn), with dynamic batching, limits and
Prometheus metrics. See :func:`zoo.serve.app.create_app`."""
