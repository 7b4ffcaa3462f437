"""From a ``--cluster`` spec to a ``dask.distributed`` Client.

- ``local`` / ``local:N``: a LocalCluster of N worker processes on loopback (default: one per
  core), each with ``cores // N`` threads, so that workers x threads never exceeds the cores;
- ``cuda`` / ``cuda:N``: one worker per GPU: dask-cuda's LocalCUDACluster where it is installed,
  otherwise worker processes that each see one GPU through ``CUDA_VISIBLE_DEVICES``;
- ``tcp://HOST:PORT`` (also ``tls://``, ``ucx://``): a running scheduler;
- ``PATH.json``: the scheduler file a scheduler (or dask-jobqueue, dask-mpi) wrote.

:func:`close` closes the Client and the cluster when :func:`client_for` started it.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import weakref
from pathlib import Path

from ..errors import InputError
from ..runtime.device import cores

log = logging.getLogger("zoo.distributed")

FORMS = "local, local:N, cuda, cuda:N, tcp://HOST:PORT or a scheduler file (SCHEDULER.json)"
WORKER_ENV = {"ZOO_THREADS": "1"}    # a task's network on one core: the worker's threads run tasks side by side
# Workers started here: glibc's malloc left to its defaults (Dask's nannies set MALLOC_TRIM_THRESHOLD_,
# which also fixes the mmap threshold: every tile-sized array is then mapped, faulted in and unmapped
# again: +17% CPU time on the same tiles in one process, 3 runs each), no statistical profiler
# sampling every thread's stack each 10 ms (it feeds the dashboard, which is off), and the event
# loops' health checks (20 ms) and system monitors (500 ms) less often: an idle local:1 took 2.8% of
# a core in the client (with the scheduler) and 1.8% in the worker, 1.0% and 0.6% so. The memory
# monitors (every worker's, and every nanny's in the client's event loop) look once a second instead
# of every 100 ms: an idle local:2 took 1.3-1.8% of a core in the client and 0.6-0.8% in each worker,
# 0.9% and 0.35% so (a task's memory is a chunk's: it does not jump past the limits within a second).
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                 "distributed.worker.profile.enabled": False,
                 "distributed.admin.tick.interval": "1s",
                 "distributed.admin.system-monitor.interval": "2s",
                 "distributed.worker.memory.monitor-interval": "1s"}
# Set from the cluster's start to its close (a nanny restarting a killed worker reads them then).
_STARTED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()    # client -> the cluster it owns


def local_shape(n_workers: int | None, n_cores: int | None = None, threads: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker) for ``local[:N]``: workers x threads <= cores (``threads``:
    fewer per worker than that, e.g. 1 to compare ``local:1`` with one single-threaded process)."""
    n_cores = n_cores or cores()
    n = n_cores if n_workers is None else n_workers
    if n < 1:
        raise InputError(f"--cluster local:{n}: the number of workers must be at least 1")
    if n > n_cores:
        raise InputError(f"--cluster local:{n}: this machine gives {n_cores} core(s), so at most local:{n_cores} "
                         "(one thread each); ask a remote scheduler (tcp://HOST:PORT) for more")
    most = max(1, n_cores // n)
    if threads is not None and not 1 <= threads <= most:
        raise InputError(f"{threads} thread(s) per worker: local:{n} on {n_cores} core(s) allows 1 to {most}")
    return n, most if threads is None else threads


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else those nvidia-smi lists."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [g.strip() for g in given.split(",") if g.strip() and g.strip() != "-1"]
    try:
        found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(found.splitlines()) if line.startswith("GPU ")]


def gpu_worker_env(gpus: list[str]) -> list[dict[str, str]]:
    """One worker per GPU: the environment of each (it sees its own GPU only, as device 0)."""
    return [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in gpus]


def parse(spec: str) -> tuple[str, object]:
    """(kind, argument) of a cluster spec: ('local', N|None), ('cuda', N|None), ('address', str),
    ('file', Path); an InputError naming the accepted forms otherwise."""
    text = str(spec).strip()
    match = re.fullmatch(r"(local|cuda)(?::(\d+))?", text)
    if match:
        return match.group(1), None if match.group(2) is None else int(match.group(2))
    if re.fullmatch(r"(tcp|tls|ucx|inproc)://\S+", text):
        return "address", text
    if text.lower().endswith(".json"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise InputError(f"--cluster {text}: no scheduler file there; a scheduler writes it "
                             "(dask scheduler --scheduler-file PATH.json), or give tcp://HOST:PORT")
        return "file", path
    raise InputError(f"--cluster {text!r}: expected {FORMS}")


def client_for(spec: str, timeout: float = 30.0, threads: int | None = None):
    """A connected ``dask.distributed.Client`` for ``spec`` (see the module docstring); ``threads``:
    threads per worker of a cluster started here (default: cores // workers)."""
    try:
        import dask
        from distributed import Client
    except ImportError:
        raise InputError("--cluster needs Dask: pip install 'bioimage-zoo[dask]' (or dask[distributed])") from None
    kind, arg = parse(spec)
    if not logging.getLogger("zoo").isEnabledFor(logging.INFO):   # Dask's own INFO lines only with -v
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if kind == "local":
        from distributed import LocalCluster

        n, threads = local_shape(arg, threads=threads)
        settings = dask.config.set(WORKER_CONFIG)
        try:
            cluster = LocalCluster(n_workers=n, threads_per_worker=threads, processes=True, dashboard_address=None,
                                   host="127.0.0.1", silence_logs=logging.WARNING, env=WORKER_ENV)
        except BaseException:
            settings.__exit__(None, None, None)
            raise
        return _owned(Client(cluster), cluster, settings)
    if kind == "cuda":
        settings = dask.config.set(WORKER_CONFIG)
        try:
            client, cluster = _cuda_client(arg, threads)
        except BaseException:
            settings.__exit__(None, None, None)
            raise
        return _owned(client, cluster, settings)
    try:
        if kind == "file":
            return Client(scheduler_file=str(arg), timeout=timeout)
        return Client(arg, timeout=timeout)
    except (OSError, TimeoutError) as e:
        where = f"the scheduler file {arg}" if kind == "file" else arg
        raise InputError(f"--cluster: could not reach the Dask scheduler of {where} within {timeout:g} s ({e}); "
                         "is it running (dask scheduler) and reachable from here?") from None


def _cuda_client(n: int | None, threads: int | None = None):
    """One worker per GPU (dask-cuda when installed; else CUDA_VISIBLE_DEVICES per worker)."""
    from distributed import Client

    gpus = visible_gpus()
    if not gpus:
        raise InputError("--cluster cuda: no GPU is visible (nvidia-smi lists none, or CUDA_VISIBLE_DEVICES is "
                         "empty); use --cluster local:N on the CPU")
    if n is not None:
        if not 1 <= n <= len(gpus):
            raise InputError(f"--cluster cuda:{n}: {len(gpus)} GPU(s) are visible ({', '.join(gpus)})")
        gpus = gpus[:n]
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        cluster = _env_cluster(gpus, threads)
    else:
        cluster = LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(gpus), dashboard_address=None, host="127.0.0.1",
                                   **({"threads_per_worker": threads} if threads else {}))
    return Client(cluster), cluster


def _env_cluster(gpus: list[str], threads: int | None = None):
    """Worker processes (nannies), one per GPU, each started with its own CUDA_VISIBLE_DEVICES."""
    from distributed import Nanny, Scheduler, SpecCluster

    threads = threads or max(1, cores() // len(gpus))
    workers = {f"gpu-{gpu}": {"cls": Nanny, "options": {"nthreads": threads, "env": {**WORKER_ENV, **env},
                                                     "host": "127.0.0.1"}}
               for gpu, env in zip(gpus, gpu_worker_env(gpus))}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None, "host": "127.0.0.1"}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.WARNING)


def _owned(client, cluster, settings=None):
    _STARTED[client] = (cluster, settings)
    return client


def close(client) -> None:
    """Close ``client``, and its cluster when :func:`client_for` started one (and Dask's settings
    for the workers it started go back to what they were)."""
    cluster, settings = _STARTED.pop(client, (None, None))
    client.close()
    if cluster is not None:
        cluster.close()
    if settings is not None:
        settings.__exit__(None, None, None)
