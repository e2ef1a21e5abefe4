"""One gateway for the whole fuzz suite (starting runtimes per example would dwarf the requests)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.harness import Connection, FuzzGateway, running_gateway


@pytest.fixture(scope="session")
def gateway() -> Iterator[FuzzGateway]:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as directory, \
            running_gateway(Path(directory) / "config") as gateway:
        yield gateway


@pytest.fixture(scope="session")
def connection(gateway: FuzzGateway) -> Iterator[Connection]:
    connection = Connection(gateway.port)
    yield connection
    connection.close()
