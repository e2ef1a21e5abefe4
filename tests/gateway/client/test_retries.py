"""Retries of 429 and 503 honouring Retry-After within the deadline, against a real uvicorn and a
real runtime of a slow model; the retry rules and the error table as pure functions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate

import httpx
import pytest

from gateway import errors
from gateway.app import create_app
from gateway.client import AsyncClient, Client, GatewayTimeout
from gateway.client.calls import transport_error
from gateway.client.errors import ERRORS_BY_CODE, ConnectionLost, GatewayUnreachable, UnexpectedAnswer, error_for
from gateway.client.retries import Attempts, parse_retry_after, retryable
from gateway.errors import Overloaded, TooManyRequests
from gateway.manifests import Config, load_config
from gateway.settings import Settings
from tests.conftest import runtimes_for, serve_app, write_app, write_model
from tests.waiting import until_in_flight

SLOW = "import time\n\ndef predict(x):\n    time.sleep(int(x[0]) / 1000)\n    return x\n"  # x[0] ms


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    root = tmp_path_factory.mktemp("retries")
    write_model(root, "slow", "slow", SLOW)
    write_app(root, "narrow", "slow", "max_concurrency: 1")
    write_app(root, "wide", "slow")
    with runtimes_for(load_config(root)) as bound:
        yield bound


@pytest.fixture
async def url(config: Config) -> AsyncIterator[str]:
    async with serve_app(create_app(Settings(access_log=False), config)) as url:
        yield url


async def occupy(client: AsyncClient, app: str, ms: int) -> asyncio.Task[object]:
    """A request holding `app` busy for `ms` milliseconds, once it is in flight."""
    await client.predict(app, x=[0])  # the contract read first: then only the busy request is in flight
    task = asyncio.create_task(client.predict(app, x=[ms]))
    await until_in_flight(client.url, 1)
    return task


async def test_429_without_retries_raises_too_many_requests(url: str) -> None:
    async with AsyncClient(url, retries=0) as client:
        busy = await occupy(client, "narrow", 800)
        with pytest.raises(TooManyRequests) as refused:
            await client.predict("narrow", x=[0])
        assert (refused.value.status, refused.value.retry_after_s) == (429, 1.0)
        await busy


async def test_429_is_retried_after_retry_after(url: str) -> None:
    async with AsyncClient(url) as client:
        busy = await occupy(client, "narrow", 500)
        started = time.monotonic()
        with Client(url, retries=2) as blocking:
            answer = await asyncio.to_thread(blocking.predict, "narrow", x=[0])
        elapsed = time.monotonic() - started
        assert answer["y"].tolist() == [0]
        assert 0.9 < elapsed < 5  # waited the 1 s Retry-After, then answered
        await busy


async def test_503_retries_stop_at_the_deadline(config: Config) -> None:
    settings = Settings(access_log=False, max_concurrency=1)  # the whole gateway: 503 overloaded
    async with serve_app(create_app(settings, config)) as url, AsyncClient(url) as holder:
        busy = await occupy(holder, "wide", 2000)
        async with AsyncClient(url, deadline=1.5, retries=10) as client:
            started = time.monotonic()
            with pytest.raises(Overloaded) as refused:
                await client.predict("wide", x=[0])
            elapsed = time.monotonic() - started
        # Tried at 0 s and after the 1 s Retry-After; a second wait would end past the deadline.
        assert refused.value.status == 503
        assert 0.9 < elapsed < 1.5
        busy.cancel()


async def test_the_deadline_is_sent_and_the_gateways_504_comes_first(url: str) -> None:
    async with AsyncClient(url, deadline=2.0) as client:  # the gateway is told 1.8 s
        started = time.monotonic()
        with pytest.raises(errors.DeadlineExceeded) as late:
            await client.predict("wide", x=[4000])
        assert time.monotonic() - started < 2.5
    assert type(late.value) is errors.DeadlineExceeded  # the gateway's answer, not the client giving up
    assert late.value.status == 504
    assert late.value.request_id  # type: ignore[attr-defined]


async def test_a_timeout_without_a_deadline_is_the_clients_own(url: str) -> None:
    async with AsyncClient(url, timeout=0.4) as client:
        started = time.monotonic()
        with pytest.raises(GatewayTimeout) as late:
            await client.predict("wide", x=[2000])
        assert time.monotonic() - started < 1.5
    assert late.value.status is None
    assert "within 0.4 s" in late.value.message


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("1.5.1") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    assert parse_retry_after(formatdate(now + 10, usegmt=True), now=now) == pytest.approx(10, abs=1)
    assert parse_retry_after(formatdate(now - 10, usegmt=True), now=now) == 0.0


def test_only_refusals_before_running_are_retried() -> None:
    assert retryable(error_for(429, "too_many_requests", "busy"))
    for code in ("overloaded", "not_ready", "application_contract_mismatch"):
        assert retryable(error_for(503, code, "busy"), pipeline=True)  # answered before any stage ran
    assert retryable(error_for(503, "backend_unavailable", "down"))
    assert retryable(error_for(429, "resource_exhausted", "busy"))
    assert not retryable(error_for(503, "backend_unavailable", "down"), pipeline=True)  # an earlier stage ran
    assert not retryable(error_for(429, "resource_exhausted", "busy"), pipeline=True)
    assert not retryable(error_for(503, "unexpected_answer", "<html>", kind=UnexpectedAnswer))  # a proxy's page
    assert retryable(error_for(None, "gateway_unreachable", "refused", kind=GatewayUnreachable))
    assert not retryable(error_for(500, "model_error", "ValueError"))
    assert not retryable(error_for(504, "deadline_exceeded", "late"))
    assert not retryable(error_for(None, "connection_lost", "reset", kind=ConnectionLost))


def test_a_connect_timeout_is_retried_as_a_refused_connection() -> None:
    error = transport_error(httpx.ConnectTimeout("timed out"), 30.0)
    assert type(error) is GatewayUnreachable
    assert retryable(error)
    assert "no connection within 5 s" in error.message
    read = transport_error(httpx.ReadTimeout("timed out"), 30.0)  # sent: the gateway may be running it
    assert type(read) is GatewayTimeout
    assert not retryable(read)


def test_waits_follow_retry_after_and_never_pass_the_deadline() -> None:
    attempts = Attempts.start(retries=2, deadline_s=10)
    busy = error_for(503, "overloaded", "busy", retry_after_s=2)
    assert attempts.wait_s(busy) == 2
    assert attempts.wait_s(error_for(429, "too_many_requests", "busy")) <= 0.2  # type: ignore[operator]
    assert attempts.wait_s(busy) is None  # no retries left
    short = Attempts.start(retries=5, deadline_s=1)
    assert short.wait_s(busy) is None  # 2 s would end past the 1 s deadline
    assert 800 <= int(short.header() or 0) <= 900  # x-request-timeout: 90 % of the milliseconds left


def test_without_a_deadline_waits_are_bounded_by_the_timeout() -> None:
    attempts = Attempts.start(retries=5, deadline_s=None, timeout_s=2.0)
    assert attempts.wait_s(error_for(503, "overloaded", "busy", retry_after_s=2)) == 2
    assert attempts.wait_s(error_for(503, "overloaded", "busy", retry_after_s=3600)) is None
    backed_off = Attempts.start(retries=50, deadline_s=None, timeout_s=0.05)
    refused = error_for(None, "gateway_unreachable", "refused", kind=GatewayUnreachable)
    assert all((backed_off.wait_s(refused) or 0) <= 0.05 for _ in range(20))  # 5 s back-offs cut to the timeout


def test_a_back_off_is_shortened_to_leave_a_last_try_before_the_deadline() -> None:
    attempts = Attempts.start(retries=100, deadline_s=0.5)
    refused = error_for(None, "gateway_unreachable", "refused", kind=GatewayUnreachable)
    waits = [attempts.wait_s(refused) for _ in range(30)]
    assert all(wait is not None and 0 <= wait < 0.5 for wait in waits)


def test_the_error_table_is_the_gateways_tree() -> None:
    def codes(root: type[errors.GatewayError]) -> set[str]:
        found = {root.code} if root.__module__ == errors.__name__ else set()
        for child in root.__subclasses__():
            found |= codes(child)
        return found

    assert set(ERRORS_BY_CODE) == codes(errors.GatewayError)
    assert ERRORS_BY_CODE["not_found"] is errors.NotFound  # not BackendNotFound: nearer the root
    assert ERRORS_BY_CODE["contract_violation"] is errors.ContractViolation
    assert ERRORS_BY_CODE["model_error"] is errors.ModelError
    assert type(error_for(418, "teapot", "?")) is errors.GatewayError
    assert type(error_for(404, "unheard_of", "?")) is errors.NotFound  # an unknown code: by status
