"""Memory shared between the gateway and its runtimes: a memfd written through the kernel,
mapped read-only by the gateway, read into a buffer of its own by the runtime, pooled."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
from pathlib import Path

import numpy as np
import pytest

from protos.buffers import BufferPool
from protos.shared_memory import (
    AVAILABLE,
    RegionReference,
    RegionUnavailable,
    SharedRegion,
    read_shared,
    region_of,
)

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="memfd_create is Linux's")


def test_what_is_written_is_what_both_sides_read() -> None:
    data = bytes(range(256)) * 8192  # 2 MiB
    region = SharedRegion.create(len(data) + 5)
    region.write_at(0, data[:1000])
    region.write_at(1000, memoryview(data)[1000:])
    assert bytes(memoryview(region)[:len(data)]) == data
    copied = read_shared(region.reference(4096, 100_000))
    assert bytes(copied) == data[4096:104_096]
    unaligned = read_shared(region.reference(12_345, 10))  # offsets need not be page-aligned
    assert bytes(unaligned) == data[12_345:12_355]


def test_the_runtime_reads_a_copy_it_may_write_and_the_gateway_may_reuse_the_region() -> None:
    region = SharedRegion.create(2 << 20)
    region.write_at(0, b"\x01" * (2 << 20))
    copy = read_shared(region.reference(0, 2 << 20))
    array = np.frombuffer(copy, dtype=np.uint8)
    array += 1  # a model changing its input in place
    assert int(array.sum()) == 2 * (2 << 20)
    assert bytes(memoryview(region)[:4]) == b"\x01" * 4
    assert memoryview(region).readonly  # the gateway's own view cannot be written at all
    region.write_at(0, b"\x07" * 4)  # the next request's body, in the same region
    assert bytes(copy[:4]) == b"\x02" * 4  # what the model kept stays as it was


def inode(view: memoryview) -> int:
    region = view.obj
    assert isinstance(region, SharedRegion)
    return region.inode


def test_a_region_is_reused_once_nothing_refers_to_it() -> None:
    pool = BufferPool(factory=SharedRegion.create)  # as shared_buffer's, of this test's own
    first = pool.take(3 << 20)
    assert first.readonly
    taken = inode(first)
    second = pool.take(3 << 20)
    assert inode(second) != taken  # the first is still referred to
    del first, second
    third = pool.take(2 << 20 | 1)
    assert inode(third) == taken
    assert third.nbytes == 2 << 20 | 1
    pool.forget(third.obj)  # type: ignore[arg-type]  # a runtime may still read it: never handed out again
    del third
    assert inode(pool.take(2 << 20)) != taken


def test_a_pool_keeps_at_most_its_count() -> None:
    pool = BufferPool(factory=SharedRegion.create, keep_count=2)
    views = [pool.take(4096) for _ in range(3)]
    assert len(pool._kept) == 2  # the third is the caller's alone, closed with its last view
    del views
    assert len({inode(pool.take(4096)) for _ in range(3)}) == 1  # freed between takes: reused


@pytest.mark.parametrize("change", [
    {"inode": 1},  # another file at that path (a runtime in another PID namespace)
    {"device": 0},
    {"path": f"/proc/{os.getpid()}/fd/999999"},  # nothing there
    {"path": "/proc/self/fd/0"},  # not the form the gateway sends
    {"path": "/etc/hostname"},
    {"length": 1 << 30},  # more than the file holds
])
def test_a_reference_the_runtime_cannot_trust_is_refused(change: dict[str, object]) -> None:
    region = SharedRegion.create(4096)
    reference = dataclasses.replace(region.reference(0, 4096), **change)  # type: ignore[arg-type]
    with pytest.raises(RegionUnavailable) as refused:
        read_shared(reference)
    assert refused.value.lasting


def test_a_file_that_is_not_a_region_is_refused_even_with_its_own_inode(tmp_path: Path) -> None:
    with open(tmp_path / "data", "wb+") as file:
        file.write(bytes(8192))
        file.flush()
        status = os.fstat(file.fileno())
        reference = RegionReference(f"/proc/{os.getpid()}/fd/{file.fileno()}", status.st_dev, status.st_ino, 0, 8192)
        with pytest.raises(RegionUnavailable, match="not the gateway's shared memory"):
            read_shared(reference)


def test_an_empty_tensor_reads_nothing() -> None:
    region = SharedRegion.create(4096)
    assert len(read_shared(region.reference(0, 0))) == 0


def test_arrays_over_a_region_lead_back_to_it_and_others_do_not() -> None:
    region = SharedRegion.create(1 << 20)
    array = np.frombuffer(memoryview(region)[64:64 + 800], dtype="<f4").reshape(10, 20)
    assert region_of(array) is region
    assert region_of(array[2:]) is region
    assert region.offset_of(array[2:].ctypes.data, array[2:].nbytes) == 64 + 2 * 20 * 4
    assert region_of(np.zeros(4)) is None
    assert region_of(memoryview(b"abc")) is None
    assert region.offset_of(np.zeros(4).ctypes.data, 32) is None


def test_the_file_is_closed_once_nothing_refers_to_the_region() -> None:
    region = SharedRegion.create(4096)
    fd = region.fd
    view = memoryview(region)
    del region
    gc.collect()
    assert "memfd:gateway-body" in os.readlink(f"/proc/self/fd/{fd}")  # a view keeps it
    view.release()
    del view
    gc.collect()
    with contextlib.suppress(FileNotFoundError):  # else the number was reused since
        assert "memfd:gateway-body" not in os.readlink(f"/proc/self/fd/{fd}")
