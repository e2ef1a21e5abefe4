"""Memory a gateway shares with its embedded runtimes: a large request body the gateway reads
once and the runtime maps, instead of the body crossing the local wire's socket.

A `SharedRegion` is an anonymous memory file (memfd: no name, nothing in /dev/shm, gone with
the last process that holds it, whichever side crashes) of a fixed size. The gateway writes it
with `write_at` (the kernel copies into the file's pages; the gateway never maps them for
writing) and reads it through `view()`, a read-only mapping whose pages enter the gateway's
resident set only where something reads them: a tensor the gateway only forwards costs it no
resident memory. The runtime maps the same file copy-on-write (`map_shared`): its arrays are
writable, and a model writing into one never changes what the gateway holds.

The runtime finds the file through `/proc/<gateway pid>/fd/<fd>` and checks its inode, so a
runtime that cannot see the gateway's processes (another PID namespace) refuses the reference
instead of mapping something else, and the gateway sends the bytes on the wire instead.
A region's file stays open as long as anything in the gateway refers to the region (a view, an
array over one).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from dataclasses import dataclass

AVAILABLE = hasattr(os, "memfd_create")  # Linux


class SharedRegion(mmap.mmap):
    """A memfd of `size` bytes and the gateway's read-only mapping of it (see the module's
    docstring); create with `SharedRegion.create(size)`."""

    fd: int
    inode: int
    address: int  # where the mapping starts in this process

    @classmethod
    def create(cls, size: int) -> SharedRegion:
        fd = os.memfd_create("gateway-body", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)  # sparse: pages come as bytes are written
            region = cls(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        except BaseException:
            os.close(fd)
            raise
        region.fd, region.inode = fd, os.fstat(fd).st_ino
        region.address = _address(region)
        return region

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write `data` at `offset` (raises OSError, e.g. when memory runs out)."""
        view = memoryview(data)
        while view.nbytes:
            written = os.pwrite(self.fd, view, offset)
            offset += written
            view = view[written:]

    def reference(self, offset: int, length: int) -> RegionReference:
        """What a runtime needs to map `length` bytes at `offset` of this region."""
        return RegionReference(f"/proc/{os.getpid()}/fd/{self.fd}", self.inode, offset, length)

    def offset_of(self, address: int, length: int) -> int | None:
        """The offset in this region of `length` bytes at `address` of this process, or None when
        they do not lie in it."""
        offset = address - self.address
        return offset if offset >= 0 and offset + length <= len(self) else None

    def __del__(self) -> None:
        fd, self.fd = getattr(self, "fd", -1), -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass(frozen=True)
class RegionReference:
    """Bytes of a gateway's SharedRegion, as the local wire names them."""

    path: str
    inode: int
    offset: int
    length: int


class RegionUnavailable(OSError):
    """A reference that cannot be mapped here (another PID namespace, another file, cut short)."""


def map_shared(reference: RegionReference) -> memoryview:
    """The referenced bytes, mapped copy-on-write into this process (writable; writes stay
    private); raises RegionUnavailable."""
    try:
        fd = os.open(reference.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise RegionUnavailable(f"cannot open {reference.path}: {error.strerror or error}") from None
    try:
        status = os.fstat(fd)
        end = reference.offset + reference.length
        if status.st_ino != reference.inode:
            raise RegionUnavailable(f"{reference.path} is not the gateway's shared memory")
        if status.st_size < end:
            raise RegionUnavailable(f"{reference.path} holds {status.st_size} bytes, {end} are referenced")
        start = reference.offset - reference.offset % mmap.ALLOCATIONGRANULARITY
        mapping = mmap.mmap(fd, end - start, flags=mmap.MAP_PRIVATE, offset=start)
    except OSError as error:
        if isinstance(error, RegionUnavailable):
            raise
        raise RegionUnavailable(f"cannot map {reference.path}: {error.strerror or error}") from None
    finally:
        os.close(fd)  # the mapping keeps the memory
    return memoryview(mapping)[reference.offset - start:]


def region_of(buffer: object) -> SharedRegion | None:
    """The SharedRegion that `buffer` (a numpy array, a memoryview) is a view of, if any."""
    seen = 0
    while buffer is not None and seen < 16:  # views of views: a short chain in practice
        if isinstance(buffer, SharedRegion):
            return buffer
        buffer = getattr(buffer, "base", None) if not isinstance(buffer, memoryview) else buffer.obj
        seen += 1
    return None


def _address(region: mmap.mmap) -> int:
    import numpy as np  # where the mapping starts: numpy reads it from the buffer protocol

    return int(np.frombuffer(region, dtype=np.uint8, count=1).ctypes.data)
