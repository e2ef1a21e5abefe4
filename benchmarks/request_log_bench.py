"""A slow request-log sink never adds latency: two real gateways (`gateway serve`, embedded runtime)
serve the same application of the same model side by side, one without a request log and one
recording every request (`request_log: {sample_rate: 1.0, cloudevents: {url}}`) to a CloudEvents
server that takes 200 ms per event (~10 calls/s over the sink's four senders: its queue fills and
drops). Each closed-loop client (`--concurrency`, `{"number":[1]}`) alternates between the two
gateways, so both see the same moments of a noisy machine, and a cost of the sink anywhere in its gateway's process
(its writer thread, the GIL) shows in that gateway's latency. The script prints the latencies side
by side, the ratio logged / plain at p50 and p99, and the records the logging gateway counted
(written, dropped, ...). Loopback only; bounded (a few thousand requests).

usage: PYTHONPATH=. .venv/bin/python benchmarks/request_log_bench.py [--requests N] [--concurrency C]
       [--event-delay-s S] [--tsv]
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
APP = "increment"
GATEWAYS = ("plain", "logged")
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


def write_config(root: Path, events_url: str | None) -> None:
    """One application of one model, logging every request to `events_url` when it is given."""
    shutil.copytree(MODEL, root / "models" / "increment")
    (root / "applications").mkdir()
    (root / "gateway.yaml").write_text("kind: Gateway\nlogging:\n  access_log: true\n")
    request_log = (f"request_log:\n  sample_rate: 1.0\n  cloudevents:\n    url: {events_url}\n"
                   if events_url else "")
    (root / "applications" / f"{APP}.yaml").write_text(
        f"kind: Application\nname: {APP}\nsingular:\n  model: increment:1\n{request_log}")


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


async def load(clients: dict[str, httpx.AsyncClient], requests: int, concurrency: int) -> dict[str, list[float]]:
    """`requests` POSTs of BODY to each gateway by `concurrency` closed-loop clients, each one
    alternating between them; each request's latency (s) by gateway."""
    latencies: dict[str, list[float]] = {gateway: [] for gateway in GATEWAYS}
    left = 2 * requests

    async def one_client(first: int) -> None:
        nonlocal left
        turn = first
        while left > 0:
            left -= 1
            gateway = GATEWAYS[turn % 2]
            turn += 1
            started = time.perf_counter()
            response = await clients[gateway].post(f"/gateway/applications/{APP}", content=BODY,
                                                   headers={"content-type": "application/json"})
            latencies[gateway].append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"the {gateway} gateway answered {response.status_code}: {response.text[:200]}")

    await asyncio.gather(*(one_client(number) for number in range(concurrency)))
    return latencies


async def measure(bases: dict[str, str], requests: int, concurrency: int) -> dict[str, list[float]]:
    """Latencies per gateway, after a warm-up of 100 requests each."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with contextlib.AsyncExitStack() as stack:
        clients = {gateway: await stack.enter_async_context(httpx.AsyncClient(base_url=base, limits=limits,
                                                                              timeout=30))
                   for gateway, base in bases.items()}
        await load(clients, 100, concurrency)
        return await load(clients, requests, concurrency)


def records(metrics_text: str) -> dict[str, int]:
    """The gateway's request-log records by outcome, summed over its sinks."""
    counted: dict[str, int] = {}
    for outcome, value in _RECORDS.findall(metrics_text):
        counted[outcome] = counted.get(outcome, 0) + int(float(value))
    return counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1500, help="measured requests per gateway")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--event-delay-s", type=float, default=0.2, help="the CloudEvents server's time per event")
    parser.add_argument("--tsv", action="store_true", help="key<TAB>value lines (for run_all.sh)")
    parser.add_argument("--serve-events", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_events:
        serve_events(args.event_delay_s)
        return

    with tempfile.TemporaryDirectory(prefix="request-log-bench-") as folder, contextlib.ExitStack() as stack:
        root = Path(folder)
        events_command = [sys.executable, __file__, "--serve-events", "--event-delay-s", str(args.event_delay_s)]
        events = stack.enter_context(child(events_command, root / "events.log"))
        assert events.stdout is not None
        events_port = int(events.stdout.readline() or 0)
        if not events_port:
            sys.exit(f"the event server did not start:\n{(root / 'events.log').read_text()}")
        events_url = f"http://127.0.0.1:{events_port}"
        bases = {}
        for gateway in GATEWAYS:
            write_config(root / gateway, f"{events_url}/events" if gateway == "logged" else None)
            log = root / f"{gateway}.log"
            process = stack.enter_context(child([sys.executable, "-m", "gateway", "serve", "--config",
                                                 str(root / gateway), "--port", "0", "--log-level", "info"], log))
            bases[gateway] = f"http://127.0.0.1:{gateway_port(process, log)}"
        latencies = asyncio.run(measure(bases, args.requests, args.concurrency))
        counted = records(httpx.get(f"{bases['logged']}/metrics", timeout=10).text)
        ready = httpx.get(f"{bases['logged']}/health/ready", timeout=10).status_code
        received = httpx.get(f"{events_url}/stats", timeout=10).json()
    report(latencies, counted, ready, received, args)


def report(latencies: dict[str, list[float]], counted: dict[str, int], ready: int, received: dict[str, int],
           args: argparse.Namespace) -> None:
    ms = {gateway: np.array(values) * 1000 for gateway, values in latencies.items()}
    p50 = {gateway: float(np.percentile(values, 50)) for gateway, values in ms.items()}
    p99 = {gateway: float(np.percentile(values, 99)) for gateway, values in ms.items()}
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
    print(f"{args.requests} requests per gateway, c={args.concurrency}, each client alternating; "
          f"CloudEvents server: {args.event_delay_s * 1000:.0f} ms per event")
    print(f"{'':28}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for gateway, label in (("plain", "without request_log"), ("logged", "with request_log (slow sink)")):
        print(f"{label:28}{p50[gateway]:10.3f}{p99[gateway]:10.3f}{float(ms[gateway].mean()):10.3f}")
    print(f"{'ratio with / without':28}{rows['p50_ratio_logged_over_plain']:10.3f}"
          f"{rows['p99_ratio_logged_over_plain']:10.3f}")
    print("request-log records: " + ", ".join(f"{key[8:]} {count}" for key, count in outcomes.items())
          + f"; events received by the server: {events}; /health/ready: {ready}")
    if not any(outcomes.values()):
        print("warning: the gateway counted no request-log records: it does not log (request_log not in effect)")


if __name__ == "__main__":
    main()
