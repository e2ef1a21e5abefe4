"""The channel pool's DNS refresh against real grpc.aio servers on 127.0.0.2-4 and a DNS server
the test controls (tests/dns_server.py): a `dns:` target gets a fresh channel that reuses the
connections still wanted, a failed resolution keeps the channel, other targets are left alone,
and closing stops it all; the setting `dns_refresh_s` that drives it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from gateway.backends.pool import ChannelPool, refreshable
from gateway.backends.transports import GrpcTransport
from gateway.errors import ConfigError
from gateway.manifests import TLSSpec
from gateway.settings import SECTIONS, Settings
from protos.services import TF_GET_MODEL_STATUS
from protos.tensorflow_serving.get_model_status_pb2 import GetModelStatusRequest
from protos.tensorflow_serving.model_pb2 import ModelSpec
from tests.certs import make_certificates
from tests.dns_server import DNSServer, dns_server, start_on_one_port
from tests.tfserving_server import FakeTFServing
from tests.waiting import eventually

NAME = "backends.test"
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
STATUS = GetModelStatusRequest(model_spec=ModelSpec(name="Toy"))


@pytest.fixture
async def servers() -> AsyncIterator[list[FakeTFServing]]:
    started = [FakeTFServing(host=host) for host in HOSTS]
    await start_on_one_port(started)
    try:
        yield started
    finally:
        for server in started:
            await server.stop()


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    with dns_server({NAME: list(HOSTS[:2])}) as server:
        yield server


@pytest.fixture
async def pool() -> AsyncIterator[ChannelPool]:
    pool = ChannelPool(retry_attempts=1, close_grace_s=5)
    try:
        yield pool
    finally:
        await pool.close(grace=1)


async def calls(transport: GrpcTransport, count: int) -> None:
    for _ in range(count):
        await transport.call(TF_GET_MODEL_STATUS, STATUS, timeout=5)


def connections(server: FakeTFServing) -> set[str]:
    return set(server.peers)


def test_only_dns_targets_are_refreshed() -> None:
    assert refreshable("dns:///backends.test:8500")
    assert refreshable("dns://10.0.0.10:53/backends.test:8500")
    assert refreshable("dns:backends.test:8500")
    assert not refreshable("backends.test:8500")
    assert not refreshable("127.0.0.1:8500")
    assert not refreshable("ipv4:127.0.0.1:8500")


def test_dns_refresh_s_is_a_resilience_setting_where_0_turns_the_refresh_off() -> None:
    assert Settings().dns_refresh_s == 30.0
    assert "dns_refresh_s" in SECTIONS["resilience"]
    assert Settings.load(Path("cfg"), env={"GATEWAY_DNS_REFRESH_S": "0.5"}).dns_refresh_s == 0.5
    assert Settings.load(Path("cfg"), {"dns_refresh_s": 0.0}, env={}).dns_refresh_s == 0.0
    with pytest.raises(ConfigError, match=r"^dns_refresh_s must be 0 \(off\) or more, got -1.0$"):
        Settings.load(Path("cfg"), env={"GATEWAY_DNS_REFRESH_S": "-1"})


async def test_a_pool_without_dns_refresh_s_never_refreshes(servers: list[FakeTFServing], dns: DNSServer) -> None:
    pool = ChannelPool(retry_attempts=1, dns_refresh_s=None)
    target = dns.target(NAME, servers[0].port)
    pooled = pool.pooled(target)
    await calls(GrpcTransport(pooled, target, "toy"), 2)
    kept, queries = pooled.channel, dns.a_queries(NAME)
    pool.start()
    await asyncio.sleep(0.3)  # what a refresh every 0.1 s would have done three times
    assert pooled.channel is kept
    assert dns.a_queries(NAME) == queries
    await pool.close()


async def test_a_refresh_brings_in_added_addresses_and_keeps_the_connections_to_the_others(
        servers: list[FakeTFServing], dns: DNSServer, pool: ChannelPool) -> None:
    target = dns.target(NAME, servers[0].port)
    pooled = pool.pooled(target)
    transport = GrpcTransport(pooled, target, "toy")
    await calls(transport, 20)
    before = [connections(server) for server in servers]
    assert [len(peers) for peers in before] == [1, 1, 0]  # round robin over the two resolved

    dns.set(NAME, HOSTS)
    old = pooled.channel
    await pool.refresh()
    assert pooled.channel is not old  # swapped under the transport, which kept its PooledChannel
    await eventually(lambda: _true(old.get_state() is grpc.ChannelConnectivity.SHUTDOWN),
                     what="the replaced channel, without calls, closed")
    await calls(transport, 30)
    assert servers[2].peers, "the address added was not called"
    assert [connections(server) for server in servers[:2]] == before[:2]  # same client ports: not reconnected

    dns.set(NAME, HOSTS[1:])
    await pool.refresh()
    first_calls = len(servers[0].calls)
    await calls(transport, 30)
    assert len(servers[0].calls) == first_calls  # gone from the answer: no more calls
    assert connections(servers[1]) == before[1]
    assert len(connections(servers[2])) == 1


async def test_a_tls_target_is_not_refreshed_and_keeps_its_connections(
        tmp_path: Path, dns: DNSServer, caplog: pytest.LogCaptureFixture) -> None:
    certificates = make_certificates(tmp_path)
    credentials = grpc.ssl_server_credentials(
        [(certificates.server_key.read_bytes(), certificates.server_cert.read_bytes())])
    servers = [FakeTFServing(host=host) for host in HOSTS]
    await start_on_one_port(servers, credentials)
    pool = ChannelPool(retry_attempts=1, dns_refresh_s=30)
    try:
        target = dns.target(NAME, servers[0].port)
        tls = TLSSpec(ca=certificates.ca, server_name="localhost")  # the certificate names 127.0.0.1 and localhost
        assert not refreshable(target, tls)
        with caplog.at_level(logging.WARNING, logger="gateway.backends"):
            pooled = pool.pooled(target, tls)
        assert any("over TLS is not re-resolved" in r.getMessage() for r in caplog.records)
        transport = GrpcTransport(pooled, target, "toy")
        await calls(transport, 10)
        before, kept = [connections(server) for server in servers[:2]], pooled.channel
        dns.set(NAME, HOSTS)
        await pool.refresh()
        await calls(transport, 10)
        assert pooled.channel is kept
        assert [connections(server) for server in servers[:2]] == before
    finally:
        await pool.close(grace=1)
        for server in servers:
            await server.stop()


async def test_a_call_under_way_on_a_replaced_channel_finishes(
        servers: list[FakeTFServing], dns: DNSServer, pool: ChannelPool) -> None:
    target = dns.target(NAME, servers[0].port)
    transport = GrpcTransport(pool.pooled(target), target, "toy")
    await calls(transport, 4)
    hold = asyncio.Event()
    for server in servers:
        server.hold = hold
    under_way = asyncio.create_task(transport.call(TF_GET_MODEL_STATUS, STATUS, timeout=10))
    await eventually(lambda: _true(sum(len(s.calls) for s in servers) == 5), what="the held call arrives")
    dns.set(NAME, HOSTS[2:])  # the held call's address is dropped
    for server in servers:
        server.hold = None
    await pool.refresh()
    hold.set()
    answer = await asyncio.wait_for(under_way, 10)
    assert answer.model_version_status


async def test_closing_the_pool_waits_its_grace_for_calls_on_replaced_channels_and_does_not_cut_them(
        servers: list[FakeTFServing], dns: DNSServer) -> None:
    pool = ChannelPool(retry_attempts=1, close_grace_s=60)
    target = dns.target(NAME, servers[0].port)
    pooled = pool.pooled(target)
    transport = GrpcTransport(pooled, target, "toy")
    await calls(transport, 2)
    hold = asyncio.Event()
    for server in servers:
        server.hold = hold
    under_way = asyncio.create_task(transport.call(TF_GET_MODEL_STATUS, STATUS, timeout=30))
    await eventually(lambda: _true(sum(len(s.calls) for s in servers) == 3), what="the held call arrives")
    old = pooled.channel
    await pool.refresh()
    assert pooled.channel is not old
    await asyncio.wait_for(pool.close(grace=0.2), 10)  # not the replaced channel's 60 s
    assert pooled.channel.get_state() is grpc.ChannelConnectivity.SHUTDOWN
    assert not under_way.done()
    hold.set()
    answer = await asyncio.wait_for(under_way, 10)  # finished on the replaced channel
    assert answer.model_version_status
    await eventually(lambda: _true(old.get_state() is grpc.ChannelConnectivity.SHUTDOWN),
                     what="the replaced channel closed after its call")


async def test_a_resolution_that_fails_or_finds_nothing_keeps_the_channel_and_says_so_once(
        servers: list[FakeTFServing], dns: DNSServer, pool: ChannelPool, caplog: pytest.LogCaptureFixture) -> None:
    target = dns.target(NAME, servers[0].port)
    pooled = pool.pooled(target)
    transport = GrpcTransport(pooled, target, "toy")
    await calls(transport, 4)
    kept = pooled.channel
    dns.set(NAME, [])  # NOERROR, no address
    with caplog.at_level(logging.INFO, logger="gateway.backends"):
        await pool.refresh()
        await pool.refresh()
        assert pooled.channel is kept
        await calls(transport, 4)  # the old addresses still serve
        unknown = dns.target("unknown.test", servers[0].port)  # NXDOMAIN
        missing = pool.pooled(unknown)
        missing_channel = missing.channel
        await pool.refresh()
        assert missing.channel is missing_channel
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if target in w]) == 1, warnings
    assert len([w for w in warnings if unknown in w]) == 1, warnings

    dns.set(NAME, HOSTS)
    with caplog.at_level(logging.INFO, logger="gateway.backends"):
        await pool.refresh()
    assert pooled.channel is not kept
    assert any("answers again" in r.getMessage() and target in r.getMessage() for r in caplog.records)


async def test_a_dns_server_that_does_not_answer_keeps_the_channel(servers: list[FakeTFServing],
                                                                   pool: ChannelPool) -> None:
    with dns_server({NAME: list(HOSTS)}) as dns:
        target = dns.target(NAME, servers[0].port)
        pooled = pool.pooled(target)
        transport = GrpcTransport(pooled, target, "toy")
        await calls(transport, 3)
    kept = pooled.channel  # the DNS server is gone: its port refuses
    await pool.refresh()
    assert pooled.channel is kept
    await calls(transport, 3)


async def test_targets_that_are_not_dns_keep_their_channel(servers: list[FakeTFServing], dns: DNSServer,
                                                           pool: ChannelPool) -> None:
    plain = pool.pooled(servers[0].target)
    plain_channel = plain.channel
    named = pool.pooled(dns.target(NAME, servers[0].port))
    named_channel = named.channel
    await GrpcTransport(plain, servers[0].target, "toy").call(TF_GET_MODEL_STATUS, STATUS, timeout=5)
    await pool.refresh()
    assert plain.channel is plain_channel
    assert named.channel is not named_channel


async def test_the_refresh_runs_every_dns_refresh_s_once_started(servers: list[FakeTFServing],
                                                                 dns: DNSServer) -> None:
    pool = ChannelPool(retry_attempts=1, dns_refresh_s=0.1)
    target = dns.target(NAME, servers[0].port)
    transport = GrpcTransport(pool.pooled(target), target, "toy")
    await calls(transport, 2)
    pool.start()
    dns.set(NAME, HOSTS)

    async def third_called() -> bool:
        await calls(transport, 3)
        return bool(servers[2].peers)
    await eventually(third_called, timeout=10, what="the added address is called")
    queries = dns.a_queries(NAME)
    await pool.close(grace=1)
    assert pool.targets == []
    await asyncio.sleep(0.3)  # three refresh periods: none may run after close
    assert dns.a_queries(NAME) == queries


async def test_a_target_a_reload_dropped_is_not_refreshed_back(servers: list[FakeTFServing],
                                                               dns: DNSServer, pool: ChannelPool) -> None:
    target = dns.target(NAME, servers[0].port)
    await GrpcTransport(pool.pooled(target), target, "toy").call(TF_GET_MODEL_STATUS, STATUS, timeout=5)
    refreshing = asyncio.create_task(pool.refresh())
    await pool.close_except(())
    await refreshing
    assert pool.targets == []


async def _true(value: bool) -> bool:
    return value


async def test_a_reload_that_changes_only_a_targets_tls_closes_its_old_channel(
        tmp_path: Path, pool: ChannelPool) -> None:
    """Channels are kept by (target, TLS): one whose target stays but whose TLS a reload changed is
    closed, not refreshed forever for no model."""
    certs = make_certificates(tmp_path)
    target = "dns:///localhost:1"
    pool.pooled(target)
    tls = TLSSpec(ca=certs.ca)
    pool.pooled(target, tls)
    assert len(pool.targets) == 2
    await pool.close_except({target}, channels={(target, tls)})
    assert pool.targets == [target]
    assert list(pool._channels) == [(target, tls)]
