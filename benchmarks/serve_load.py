"""Load test of `genrec serve`: requests/s, latency percentiles, errors and peak memory under 1, 8 and 64
concurrent clients (loopback only; bounded in requests and seconds).

    python benchmarks/serve_load.py RUN_DIR [--index EXPORT_DIR] [--clients 1 8 64] [--requests 2000]
                                   [--seconds 30] [--malformed 0.05]

It starts the server as a child process on a free port, waits for /readyz, and for each client count
sends POST /recommend requests whose histories are the dataset's users' latest 50 events (k=10).
With --malformed p, that share of requests is broken on purpose (bad JSON, k=0, a string for the
history, an unknown field); each must get a 4xx and the others must still succeed. Prints one
Markdown row per client count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

MALFORMED = [
    b'{"history": [',
    b'{"history": ["1"], "k": 0}',
    b'{"history": "1,2,3"}',
    b'{"history": ["1"], "colour": "red"}',
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def histories(run_dir: str, count: int = 2000, length: int = 50) -> list[list[str]]:
    from genrec.serve import Recommender

    rec = Recommender.from_run(run_dir)
    seqs = rec.dataset.sequences
    raw = rec.item_raw_ids
    out = []
    for user in range(1, min(rec.dataset.num_users, count) + 1):
        items = seqs.user(user)[-length:]
        out.append([str(raw[i]) for i in items])
    return out


class Connection:
    """One keep-alive HTTP/1.1 connection, written by hand: a load generator in Python must cost less CPU
    than the server it measures (httpx's pool at 64 connections cost more than the server on 2 cores)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def drive(
    port: int, clients: int, requests: int, seconds: float, bodies: list[bytes], malformed: float, seed: int = 0
) -> dict:
    rng = random.Random(seed)
    latencies: list[float] = []
    errors = bad_ok = bad_4xx = 0
    sent = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal sent, errors, bad_ok, bad_4xx
        connection = Connection("127.0.0.1", port)
        try:
            while sent < requests and time.perf_counter() < deadline:
                sent += 1
                broken = rng.random() < malformed
                body = rng.choice(MALFORMED) if broken else rng.choice(bodies)
                start = time.perf_counter()
                try:
                    status = await connection.post("/recommend", body)
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    errors += 1
                    connection.close()
                    connection = Connection("127.0.0.1", port)
                    continue
                elapsed = time.perf_counter() - start
                if broken:
                    bad_4xx += 400 <= status < 500
                    bad_ok += status == 200
                elif status == 200:
                    latencies.append(elapsed)
                else:
                    errors += 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": sent,
        "ok": len(latencies),
        "errors": errors,
        "malformed_4xx": bad_4xx,
        "malformed_200": bad_ok,
        "rps": sent / wall,
        "p50": float(np.percentile(lat, 50)) if len(lat) else None,
        "p95": float(np.percentile(lat, 95)) if len(lat) else None,
        "p99": float(np.percentile(lat, 99)) if len(lat) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--index")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--requests", type=int, default=2000, help="at most this many requests per client count")
    parser.add_argument("--seconds", type=float, default=30, help="at most this long per client count")
    parser.add_argument("--malformed", type=float, default=0.0, help="share of broken requests (e.g. 0.05)")
    parser.add_argument("--threads", type=int, help="the server's --threads")
    parser.add_argument("--label", default="", help="a label for the rows")
    args = parser.parse_args()

    bodies = [json.dumps({"history": h, "k": 10}).encode() for h in histories(args.run_dir)]
    port = free_port()
    command = [sys.executable, "-m", "genrec", "serve", args.run_dir, "--port", str(port), "-q"]
    command += ["--index", args.index] if args.index else []
    command += ["--threads", str(args.threads)] if args.threads else []
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if server.poll() is not None:
                    raise SystemExit(server.communicate()[1][-2000:]) from None
            time.sleep(0.1)
        asyncio.run(drive(port, 4, 200, 10, bodies, 0.0))  # warm-up
        print(
            "| run | index | clients | requests | req/s | p50 ms | p95 ms | p99 ms | errors | malformed 4xx / sent | "
            "mean batch | peak RSS MiB |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for clients in args.clients:
            before = httpx.get(f"{url}/readyz").json()
            r = asyncio.run(drive(port, clients, args.requests, args.seconds, bodies, args.malformed))
            after = httpx.get(f"{url}/readyz").json()
            r["batch"] = (after["requests"] - before["requests"]) / max(after["batches"] - before["batches"], 1)
            bad = f"{r['malformed_4xx']} / {r['malformed_4xx'] + r['malformed_200']}" if args.malformed else "-"
            print(
                f"| {args.label or Path(args.run_dir).name} | {Path(args.index).name if args.index else 'none'} | "
                f"{clients} | {r['requests']} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | "
                f"{r['errors']} | {bad} | {r['batch']:.1f} | {peak_rss_mib(server.pid):.0f} |",
                flush=True,
            )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
