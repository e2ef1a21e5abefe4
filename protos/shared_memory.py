"""Memory a gateway shares with its embedded runtimes: a large request body the gateway reads
once and the runtime reads from there, instead of the body crossing the local wire's socket.

A `SharedRegion` is an anonymous memory file (memfd: no name, nothing in /dev/shm, gone with
the last process that holds it, whichever side crashes) of a fixed size. The gateway writes it
with `write_at` (the kernel copies into the file's pages; the gateway never maps them for
writing) and reads it through `view()`, a read-only mapping whose pages enter the gateway's
resident set only where something reads them: a tensor the gateway only forwards costs it no
resident memory. The runtime reads the bytes it needs into a buffer of its own (`read_shared`:
one kernel copy, where a socket takes two): its arrays are writable, and neither a model writing
into one nor the gateway reusing the region changes what the other holds. Regions are pooled
(`shared_buffer`, protos.buffers' pool): a region nothing in the gateway refers to any more
takes the next large body, whose pages then need no zeroing (77 against 24 ms per 100 MB here);
at most KEEP_COUNT regions and KEEP_BYTES are kept, in memory the container is charged for as
shared memory, not in the gateway's RSS. A region whose call was given up before its answer
(a deadline, a disconnect) is never reused: the runtime may still be reading it.

The runtime finds the file through `/proc/<gateway pid>/fd/<fd>` and checks that it is that
memfd (device and inode, a regular file named like one), so a runtime that cannot see the
gateway's processes (another PID namespace) refuses the reference instead of reading something
else, and the gateway sends the bytes on the wire instead. A region costs the gateway two file
descriptors while it lives (its own and its mapping's), in use or kept in the pool.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import stat
from dataclasses import dataclass

from protos.buffers import BufferPool, frame_buffer

AVAILABLE = hasattr(os, "memfd_create")  # Linux
MEMFD_NAME = "gateway-body"  # what /proc/<pid>/fd/<n> of a region links to: "/memfd:gateway-body (deleted)"
_REFERENCE_PATH = re.compile(r"/proc/[0-9]+/fd/[0-9]+")


class SharedRegion(mmap.mmap):
    """A memfd of `size` bytes and the gateway's read-only mapping of it (see the module's
    docstring); create with `SharedRegion.create(size)`."""

    fd: int
    device: int
    inode: int
    address: int  # where the mapping starts in this process

    @classmethod
    def create(cls, size: int) -> SharedRegion:
        fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)  # sparse: pages come as bytes are written
            region = cls(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)  # (the mapping holds a dup)
        except BaseException:
            os.close(fd)
            raise
        region.fd = fd
        status = os.fstat(fd)
        region.device, region.inode = status.st_dev, status.st_ino
        region.address = _address(region)
        return region

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write `data` at `offset` (raises OSError, e.g. when memory runs out)."""
        view = memoryview(data)
        while view.nbytes:
            written = os.pwrite(self.fd, view, offset)
            if written == 0:
                raise OSError(f"nothing written at {offset} of a shared region")
            offset += written
            view = view[written:]

    def reference(self, offset: int, length: int) -> RegionReference:
        """What a runtime needs to read `length` bytes at `offset` of this region."""
        return RegionReference(f"/proc/{os.getpid()}/fd/{self.fd}", self.device, self.inode, offset, length)

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
    device: int
    inode: int
    offset: int
    length: int


class RegionUnavailable(OSError):
    """A reference that cannot be mapped here. `lasting`: it never will be (another PID namespace,
    another file, a malformed reference), so the gateway should stop naming regions; else only
    this time (out of descriptors or memory)."""

    def __init__(self, reason: str, lasting: bool = True) -> None:
        super().__init__(reason)
        self.lasting = lasting


def read_shared(reference: RegionReference) -> bytearray | memoryview:
    """A copy of the referenced bytes in a buffer of this process's own (protos.local_wire's
    frame_buffer: writable, the call's), read from the gateway's memfd once it is known to be that;
    raises RegionUnavailable. A copy, not a mapping: the gateway reuses its regions once it lets go
    of them, and what a model keeps of its inputs must not change under it."""
    if reference.length == 0:
        return bytearray()
    try:
        buffer = frame_buffer(reference.length)
    except (OSError, ValueError) as error:  # out of memory: this call only
        raise RegionUnavailable(f"no buffer of {reference.length} bytes: {error}", lasting=False) from None
    fd = _open(reference)
    try:
        view, offset = memoryview(buffer), reference.offset
        while view.nbytes:
            got = os.preadv(fd, [view], offset)
            if got == 0:
                raise RegionUnavailable(f"{reference.path} holds {offset} bytes, "
                                        f"{reference.offset + reference.length} are referenced")
            view, offset = view[got:], offset + got
    except RegionUnavailable:
        raise
    except OSError as error:
        raise RegionUnavailable(f"cannot read {reference.path}: {error.strerror or error}", lasting=False) from None
    finally:
        os.close(fd)
    return buffer


def _open(reference: RegionReference) -> int:
    """A descriptor of the referenced file, once it is known to be the gateway's memfd."""
    if _REFERENCE_PATH.fullmatch(reference.path) is None:
        raise RegionUnavailable(f"{reference.path!r} does not name a process's open file")
    try:
        fd = os.open(reference.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as error:
        lasting = error.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENXIO)
        raise RegionUnavailable(f"cannot open {reference.path}: {error.strerror or error}", lasting) from None
    try:
        status = os.fstat(fd)
        if ((status.st_dev, status.st_ino) != (reference.device, reference.inode)
                or not stat.S_ISREG(status.st_mode)
                or not os.readlink(f"/proc/self/fd/{fd}").startswith(f"/memfd:{MEMFD_NAME}")):
            raise RegionUnavailable(f"{reference.path} is not the gateway's shared memory")
    except BaseException as error:
        os.close(fd)
        if isinstance(error, OSError) and not isinstance(error, RegionUnavailable):
            raise RegionUnavailable(f"cannot read {reference.path}: {error.strerror or error}",
                                    lasting=False) from None
        raise
    return fd


def region_of(buffer: object) -> SharedRegion | None:
    """The SharedRegion that `buffer` (a numpy array, a memoryview) is a view of, if any."""
    seen = 0
    while buffer is not None and seen < 16:  # views of views: a short chain in practice
        if isinstance(buffer, SharedRegion):
            return buffer
        buffer = getattr(buffer, "base", None) if not isinstance(buffer, memoryview) else buffer.obj
        seen += 1
    return None


KEEP_BYTES = 256 << 20  # kept regions, in use or free (beside protos.buffers' pool of other buffers)
KEEP_COUNT = 32  # and at most this many of them: each holds two file descriptors


def _pool() -> BufferPool:
    return BufferPool(KEEP_BYTES, factory=SharedRegion.create, keep_count=KEEP_COUNT)


REGIONS = _pool()
if hasattr(os, "register_at_fork"):  # a forked child starts with a pool of its own
    os.register_at_fork(after_in_child=lambda: globals().__setitem__("REGIONS", _pool()))


def forget_region(region: SharedRegion) -> None:
    """Never reuse `region`: a runtime may still be reading it (a call given up mid-way)."""
    REGIONS.forget(region)


def shared_buffer(size: int) -> memoryview:
    """A read-only view of `size` bytes of a SharedRegion from this process's pool (reused once
    nothing refers to it, as protos.buffers' are; its `.obj` is the region to `write_at`)."""
    return REGIONS.take(size)


def _address(region: mmap.mmap) -> int:
    import numpy as np  # where the mapping starts: numpy reads it from the buffer protocol

    return int(np.frombuffer(region, dtype=np.uint8, count=1).ctypes.data)
