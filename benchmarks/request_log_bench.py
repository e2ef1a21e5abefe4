"""A slow request-log sink never adds latency: one real gateway (`gateway serve`, embedded runtime)
serves two applications of the same model, `plain` without a request log and `logged` recording
every request (`request_log: {sample_rate: 1.0, cloudevents: {url}}`) to a CloudEvents server that
takes 200 ms per event (~2.5 calls/s: the sink's queue fills and drops). Both are loaded in the same
run, in interleaved rounds (closed loop, `--concurrency` clients, `{"number":[1]}`), and the script
prints their latencies side by side, the ratio logged / plain at p50 and p99, and the records the
gateway counted (written, dropped, ...). Loopback only; bounded (a few thousand requests).

usage: PYTHONPATH=. .venv/bin/python benchmarks/request_log_bench.py [--requests N] [--rounds R]
       [--concurrency C] [--event-delay-s S] [--tsv]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
MODEL = HERE / "configs" / "embedded" / "models" / "increment"
BODY = b'{"number":[1]}'
APPS = ("plain", "logged")
_SERVING = re.compile(r" INFO gateway: serving https?://\S+:(\d+) ")
_RECORDS = re.compile(r'^gateway_request_log_records_total\{(?=[^}]*outcome="(\w+)")[^}]*\} (\S+)$', re.MULTILINE)


def serve_events(delay_s: float) -> None:
    """The slow CloudEvents server (run as a child process): every event takes `delay_s`;
    prints its port, then serves until terminated. GET /stats: the events received by type."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    received: dict[str, int] = {}

    async def event(request: Request) -> Response:
        await request.body()
        await asyncio.sleep(delay_s)
        kind = request.headers.get("ce-type", "")
        received[kind] = received.get(kind, 0) + 1
        return Response(status_code=202)

    async def stats(request: Request) -> Response:
        return JSONResponse(received)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    app = Starlette(routes=[Route("/events", event, methods=["POST"]), Route("/stats", stats)])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])


def write_config(root: Path, events_url: str) -> None:
    """Two applications of one model: without a request log, and logging every request."""
    shutil.copytree(MODEL, root / "models" / "increment")
    (root / "applications").mkdir()
    (root / "gateway.yaml").write_text("kind: Gateway\nlogging:\n  access_log: true\n")
    (root / "applications" / "plain.yaml").write_text(
        "kind: Application\nname: plain\nsingular:\n  model: increment:1\n")
    (root / "applications" / "logged.yaml").write_text(
        "kind: Application\nname: logged\nsingular:\n  model: increment:1\n"
        f"request_log:\n  sample_rate: 1.0\n  cloudevents:\n    url: {events_url}\n")


@contextlib.contextmanager
def child(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, its stderr to `log`; stopped by its own pid afterwards."""
    with open(log, "ab") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def gateway_port(process: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> int:
    """The port the gateway serves, read from its INFO line; exits with its log if it stops first."""
    deadline = time.monotonic() + timeout
    while (found := _SERVING.search(log.read_text(errors="replace"))) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            hint = ("\n(this gateway does not accept `request_log:` in application manifests)"
                    if "request_log" in tail else "")
            sys.exit(f"the gateway did not start:\n{tail}{hint}")
        time.sleep(0.05)
    return int(found.group(1))


async def load(client: httpx.AsyncClient, url: str, requests: int, concurrency: int) -> list[float]:
    """`requests` POSTs of BODY by `concurrency` closed-loop clients; each one's latency (s)."""
    latencies: list[float] = []
    left = requests

    async def one_client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            response = await client.post(url, content=BODY, headers={"content-type": "application/json"})
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:200]}")

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return latencies


async def measure(base: str, requests: int, rounds: int, concurrency: int) -> dict[str, list[float]]:
    """Latencies per application: a warm-up, then `rounds` rounds, the order alternating."""
    latencies: dict[str, list[float]] = {app: [] for app in APPS}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        for app in APPS:
            await load(client, f"/gateway/applications/{app}", 100, concurrency)
        for number in range(rounds):
            for app in APPS if number % 2 == 0 else reversed(APPS):
                latencies[app] += await load(client, f"/gateway/applications/{app}", requests // rounds, concurrency)
    return latencies


def records(metrics_text: str) -> dict[str, int]:
    """The gateway's request-log records by outcome, summed over its sinks."""
    counted: dict[str, int] = {}
    for outcome, value in _RECORDS.findall(metrics_text):
        counted[outcome] = counted.get(outcome, 0) + int(float(value))
    return counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1500, help="measured requests per application")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--event-delay-s", type=float, default=0.2, help="the CloudEvents server's time per event")
    parser.add_argument("--tsv", action="store_true", help="key<TAB>value lines (for run_all.sh)")
    parser.add_argument("--serve-events", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_events:
        serve_events(args.event_delay_s)
        return

    with tempfile.TemporaryDirectory(prefix="request-log-bench-") as folder:
        root = Path(folder)
        events_log, gateway_log = root / "events.log", root / "gateway.log"
        events_command = [sys.executable, __file__, "--serve-events", "--event-delay-s", str(args.event_delay_s)]
        with child(events_command, events_log) as events:
            assert events.stdout is not None
            events_port = int(events.stdout.readline() or 0)
            if not events_port:
                sys.exit(f"the event server did not start:\n{events_log.read_text()}")
            events_url = f"http://127.0.0.1:{events_port}"
            write_config(root / "config", f"{events_url}/events")
            gateway_command = [sys.executable, "-m", "gateway", "serve", "--config", str(root / "config"),
                               "--port", "0", "--log-level", "info"]
            with child(gateway_command, gateway_log) as gateway:
                base = f"http://127.0.0.1:{gateway_port(gateway, gateway_log)}"
                latencies = asyncio.run(measure(base, args.requests, args.rounds, args.concurrency))
                counted = records(httpx.get(f"{base}/metrics", timeout=10).text)
                ready = httpx.get(f"{base}/health/ready", timeout=10).status_code
            received = httpx.get(f"{events_url}/stats", timeout=10).json()
    report(latencies, counted, ready, received, args)


def report(latencies: dict[str, list[float]], counted: dict[str, int], ready: int, received: dict[str, int],
           args: argparse.Namespace) -> None:
    ms = {app: np.array(values) * 1000 for app, values in latencies.items()}
    p50 = {app: float(np.percentile(values, 50)) for app, values in ms.items()}
    p99 = {app: float(np.percentile(values, 99)) for app, values in ms.items()}
    rows = {
        "plain_p50_ms": p50["plain"], "plain_p99_ms": p99["plain"],
        "logged_p50_ms": p50["logged"], "logged_p99_ms": p99["logged"],
        "p50_ratio_logged_over_plain": p50["logged"] / p50["plain"],
        "p99_ratio_logged_over_plain": p99["logged"] / p99["plain"],
    }
    outcomes = {f"records_{outcome}": counted.get(outcome, 0) for outcome in ("written", "dropped", "failed",
                                                                              "skipped")}
    events = sum(received.values())
    if args.tsv:
        for key, value in rows.items():
            print(f"{key}\t{value:.3f}")
        for key, count in outcomes.items():
            print(f"{key}\t{count}")
        print(f"events_received\t{events}")
        print(f"health_ready_status\t{ready}")
        return
    print(f"{args.requests} requests per application, c={args.concurrency}, {args.rounds} interleaved rounds; "
          f"CloudEvents server: {args.event_delay_s * 1000:.0f} ms per event")
    print(f"{'':28}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for app, label in (("plain", "without request_log"), ("logged", "with request_log (slow sink)")):
        print(f"{label:28}{p50[app]:10.3f}{p99[app]:10.3f}{float(ms[app].mean()):10.3f}")
    print(f"{'ratio with / without':28}{rows['p50_ratio_logged_over_plain']:10.3f}"
          f"{rows['p99_ratio_logged_over_plain']:10.3f}")
    print("request-log records: " + ", ".join(f"{key[8:]} {count}" for key, count in outcomes.items())
          + f"; events received by the server: {events}; /health/ready: {ready}")
    if not any(outcomes.values()):
        print("warning: the gateway counted no request-log records: it does not log (request_log not in effect)")


if __name__ == "__main__":
    main()
