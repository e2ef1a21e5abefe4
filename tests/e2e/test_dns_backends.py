"""A `gateway serve` whose model's backend is a `dns:` target: three TF Serving test servers on
127.0.0.2-4 (one port, as pods behind a headless Service) named by a DNS server the test controls
(tests/dns_server.py, reached through the target's authority). round_robin spreads predictions
evenly; re-resolving every `dns_refresh_s` brings an added address in without reconnecting to the
others (each server sees the same client ports) and takes a removed one out without failing a
request in flight."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.dns_server import DNSServer, dns_server, start_on_one_port
from tests.e2e.processes import running_gateway
from tests.tfserving_server import FakeTFServing
from tests.waiting import wait_until

NAME = "backends.test"
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
GATEWAY_YAML = ("kind: Gateway\ndefaults: {drain_timeout_s: 1, health_interval_s: 60}\n"
                "logging: {access_log: false}\nresilience: {dns_refresh_s: %s}\n")
BODY = {"input_1": [[1.0, 2.0]]}


@contextmanager
def backends() -> Iterator[list[FakeTFServing]]:
    """The three servers on one port, on an event loop of their own in a thread (the gateway
    under test is another process)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers = [FakeTFServing(host=host) for host in HOSTS]
    asyncio.run_coroutine_threadsafe(start_on_one_port(servers), loop).result(30)
    try:
        yield servers
    finally:
        for server in servers:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextmanager
def gateway(tmp_path: Path, dns: DNSServer, port: int, refresh_s: float) -> Iterator[str]:
    (tmp_path / "models").mkdir()
    (tmp_path / "gateway.yaml").write_text(GATEWAY_YAML % refresh_s)
    (tmp_path / "models" / "toy.yaml").write_text(
        "kind: Model\nname: toy\n"
        f"backend: {{protocol: tensorflow-serving, target: '{dns.target(NAME, port)}', model_name: Toy, version: 1}}\n")
    with running_gateway(tmp_path) as (_, url):
        yield url


def predictions(server: FakeTFServing) -> int:
    return sum(1 for method, _ in list(server.calls) if method == "Predict")


def predict(client: httpx.Client, url: str) -> int:
    return client.post(f"{url}/gateway/models/toy", json=BODY).status_code


def predict_many(url: str, count: int, concurrency: int = 8) -> list[int]:
    """`count` predictions from `concurrency` clients at once; their statuses."""
    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda _: predict(client, url), range(count)))


def until_every_server_predicts(url: str, servers: list[FakeTFServing]) -> None:
    with httpx.Client(timeout=10) as client:
        def every_one() -> bool:
            assert predict(client, url) == 200
            return all(predictions(server) for server in servers)
        wait_until(every_one, timeout=20, what=f"predictions on {[s.host for s in servers]}")


def test_round_robin_spreads_predictions_evenly_over_the_resolved_addresses(tmp_path: Path) -> None:
    with backends() as servers, dns_server({NAME: list(HOSTS)}) as dns, \
            gateway(tmp_path, dns, servers[0].port, refresh_s=30) as url:
        until_every_server_predicts(url, servers)
        before = [predictions(server) for server in servers]
        count = 600
        assert predict_many(url, count) == [200] * count
        split = [predictions(server) - done for server, done in zip(servers, before, strict=True)]
        print(f"{count} predictions over {len(servers)} addresses: {split}")  # the measured split (pytest -s)
        assert sum(split) == count
        for share in split:
            assert abs(share - count / 3) <= count * 0.05, split  # 200 ± 30
        assert all(len(set(server.peers)) == 1 for server in servers)  # one connection each


def test_addresses_added_get_predictions_and_removed_ones_stop_without_reconnects_or_failures(
        tmp_path: Path) -> None:
    with backends() as servers, dns_server({NAME: list(HOSTS[:2])}) as dns, \
            gateway(tmp_path, dns, servers[0].port, refresh_s=0.5) as url:
        until_every_server_predicts(url, servers[:2])
        assert predictions(servers[2]) == 0
        connections = [set(server.peers) for server in servers[:2]]
        assert [len(peers) for peers in connections] == [1, 1]

        dns.set(NAME, HOSTS)
        started = time.monotonic()
        until_every_server_predicts(url, servers)
        print(f"the added address served within {time.monotonic() - started:.2f} s")
        assert [set(server.peers) for server in servers[:2]] == connections  # the same connections: no storm

        # Take 127.0.0.2 out while predictions are under way there (each takes 0.2 s).
        servers[0].delay_s = 0.2
        statuses: list[int] = []
        stop = threading.Event()

        def keep_predicting() -> None:
            with httpx.Client(timeout=10) as client:
                while not stop.is_set():
                    statuses.append(predict(client, url))
        with ThreadPoolExecutor(6) as pool:
            running = [pool.submit(keep_predicting) for _ in range(6)]
            wait_until(lambda: predictions(servers[0]) > 3, timeout=10, what="predictions under way on 127.0.0.2")
            queries = dns.a_queries(NAME)
            dns.set(NAME, HOSTS[1:])
            # Two queries later the first refresh that saw the change has swapped the channel.
            wait_until(lambda: dns.a_queries(NAME) >= queries + 2, timeout=10, what="two more resolutions")
            removed = predictions(servers[0])
            others = [predictions(server) for server in servers[1:]]
            wait_until(lambda: all(predictions(s) >= n + 30 for s, n in zip(servers[1:], others, strict=True)),
                       timeout=20, what="30 more predictions on each remaining address")
            stop.set()
            for future in running:
                future.result()
        assert predictions(servers[0]) == removed  # no call reached it since
        assert statuses
        assert set(statuses) == {200}  # the calls under way at the swap were answered
        assert set(servers[1].peers) == connections[1]

