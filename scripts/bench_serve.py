"""Load test of ``zoo serve``: a real server process on 127.0.0.1 driven by separate client
processes, against the offline batched runner on the same inputs in the same run.

    python scripts/bench_serve.py [--model n2v-w2s-2d] [--size 256] [--clients 1 8 64]
                                  [--max-batch 1 8] [--seconds 15] [--max-requests 20000]

For every server batch size (``--max-batch``) and every client count, the clients send NPY
images of ``size`` x ``size`` for ``--seconds`` (at most ``--max-requests`` in all) and the
table gives requests/s, Mpx/s, p50/p95/p99 latency and errors. The offline runner is
``Model.predict_tensor`` on batches of the largest ``--max-batch``, timed the same way, with no
server running; "vs offline" is serving throughput over offline throughput.
"""
from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np

REPO_SAMPLE = os.path.join(os.path.dirname(__file__), "..", "samples", "hagen_actin_lowsnr.tif")


def images(size: int, count: int = 16) -> list[np.ndarray]:
    """Crops of the shipped Hagen sample (real microscopy), uint8."""
    import tifffile

    sample = tifffile.imread(REPO_SAMPLE)
    rng = np.random.default_rng(0)
    corners = rng.integers(0, sample.shape[0] - size, size=(count, 2))
    return [np.ascontiguousarray(sample[y:y + size, x:x + size]) for y, x in corners]


def _client(url: str, bodies: list[bytes], threads: int, stop_at: float, budget, queue) -> None:
    """One client process: ``threads`` clients in a loop until ``stop_at`` or the shared budget is spent."""
    from concurrent.futures import ThreadPoolExecutor

    def loop(k: int) -> list[tuple[float, int]]:
        out, i = [], k
        while time.time() < stop_at:
            with budget.get_lock():
                if budget.value <= 0:
                    break
                budget.value -= 1
            started = time.perf_counter()
            request = urllib.request.Request(url, data=bodies[i % len(bodies)], method="POST",
                                             headers={"Content-Type": "application/x-npy",
                                                      "Accept": "application/x-npy"})
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    response.read()
                    code = response.status
            except urllib.error.HTTPError as e:
                code = e.code
            except OSError:
                code = -1
            out.append((time.perf_counter() - started, code))
            i += 1
        return out

    with ThreadPoolExecutor(threads) as pool:
        results = [r for part in pool.map(loop, range(threads)) for r in part]
    queue.put(results)


def drive(url: str, bodies: list[bytes], clients: int, seconds: float, max_requests: int) -> dict:
    processes = min(clients, max(2, (os.cpu_count() or 2)))
    per = [clients // processes + (1 if k < clients % processes else 0) for k in range(processes)]
    ctx = mp.get_context("spawn")
    queue, budget = ctx.Queue(), ctx.Value("i", max_requests)
    started = time.time()
    stop_at = started + seconds
    workers = [ctx.Process(target=_client, args=(url, bodies, n, stop_at, budget, queue)) for n in per if n]
    for w in workers:
        w.start()
    results = [r for _ in workers for r in queue.get()]
    for w in workers:
        w.join()
    elapsed = time.time() - started
    latencies = np.array([t for t, code in results if code == 200]) * 1000
    ok = len(latencies)
    return {"requests": len(results), "ok": ok, "errors": len(results) - ok, "seconds": elapsed,
            "rps": ok / elapsed, "p50": np.percentile(latencies, 50) if ok else float("nan"),
            "p95": np.percentile(latencies, 95) if ok else float("nan"),
            "p99": np.percentile(latencies, 99) if ok else float("nan")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, max_batch: int, max_queue: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "serve", model, "--port", str(port), "--max-batch",
                             str(max_batch), "--max-wait-ms", "5", "--max-queue", str(max_queue)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/ready", timeout=2):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the server died: {proc.stderr.read().decode()}")
            time.sleep(0.2)
    raise SystemExit("the server did not start")


def offline(model_ref: str, crops: list[np.ndarray], batch: int, seconds: float) -> float:
    """Images per second of the offline runner on batches of ``batch`` of the same crops."""
    import zoo

    model = zoo.load(model_ref, device="cpu")
    x = np.stack([c.astype(np.float32)[None] for c in crops])          # b, c, y, x
    model.predict_tensor(x[:batch])                                      # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for i in range(0, len(x), batch):
            model.predict_tensor(x[i:i + batch])
            done += len(x[i:i + batch])
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="n2v-w2s-2d")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--max-requests", type=int, default=20000)
    args = parser.parse_args()
    crops = images(args.size)
    bodies = []
    for crop in crops:
        out = io.BytesIO()
        np.save(out, crop)
        bodies.append(out.getvalue())
    mpx = args.size * args.size / 1e6
    rows = []
    for max_batch in args.max_batch:
        proc, url = start_server(args.model, max_batch, max_queue=max(args.clients) * 2)
        try:
            drive(f"{url}/v1/models/{args.model}/predict", bodies, 4, 3, 10_000)       # warm-up
            for clients in args.clients:
                r = drive(f"{url}/v1/models/{args.model}/predict", bodies, clients, args.seconds, args.max_requests)
                rows.append({"max_batch": max_batch, "clients": clients, **r})
                print(f"server batch {max_batch}, {clients} clients: {r['rps']:.1f} req/s, {r['errors']} errors",
                      flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    best_batch = max(args.max_batch)
    offline_rate = offline(args.model, crops, best_batch, args.seconds)
    offline_one = offline(args.model, crops, 1, args.seconds)
    print(f"\n{args.model}, {args.size}x{args.size} images, {os.cpu_count()} CPU cores, {args.seconds:g} s per row\n")
    print("| server max batch | clients | requests | errors | req/s | Mpx/s | p50 ms | p95 ms | p99 ms | vs offline |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['max_batch']} | {r['clients']} | {r['requests']} | {r['errors']} | {r['rps']:.1f} | "
              f"{r['rps'] * mpx:.2f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | "
              f"{r['rps'] / offline_rate:.2f}x |")
    print(f"\noffline runner, batches of {best_batch}: {offline_rate:.1f} images/s ({offline_rate * mpx:.2f} Mpx/s); "
          f"batches of 1: {offline_one:.1f} images/s")
    saturated = {r["max_batch"]: r for r in rows if r["clients"] == max(args.clients)}
    if len(saturated) > 1:
        lo, hi = saturated[min(saturated)], saturated[max(saturated)]
        print(f"batching at {max(args.clients)} clients: {hi['rps'] / lo['rps']:.2f}x the throughput of batch size 1")


if __name__ == "__main__":
    main()
