"""Waiting for a condition in tests, instead of sleeping for a time that may be too short on a
loaded machine (or longer than needed on an idle one)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import httpx


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float = 5, what: str = "") -> None:
    """Return once `condition()` holds; fail the test if it has not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what or condition}"
        await asyncio.sleep(0.01)


def wait_until(condition: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
    """Return once `condition()` holds (polled, blocking); fail the test if it has not within
    `timeout` seconds. For tests that drive processes or threads without an event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what or condition}"
        time.sleep(0.01)


def in_flight_now(url: str) -> int:
    """The gateway's in-flight gauge, less the /metrics request that reads it (blocking)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    match = re.search(r"^gateway_requests_in_flight (\S+)$", text, re.MULTILINE)
    assert match is not None
    return int(float(match.group(1))) - 1


async def in_flight(url: str) -> int:
    """The gateway's in-flight gauge, less the /metrics request that reads it."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{url}/metrics")).text
    match = re.search(r"^gateway_requests_in_flight (\S+)$", text, re.MULTILINE)
    assert match is not None
    return int(float(match.group(1))) - 1


async def until_in_flight(url: str, count: int, timeout: float = 5) -> None:
    """Return once exactly `count` requests are in flight."""
    async def holds() -> bool:
        return await in_flight(url) == count
    await eventually(holds, timeout, f"{count} requests in flight")
