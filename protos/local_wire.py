"""The local wire: Predict and PredictMany between the gateway and an embedded runtime on the
same machine, over a Unix socket, without gRPC's per-call machinery.

A connection carries one call at a time, as on HTTP/1.1 keep-alive: the gateway writes a
request frame and reads one answer frame before it writes the next request. A frame is a
fixed header, then a table, a message and an attachment of the lengths it gives:

    request: kind = the method's number in LOCAL_METHODS, message = the serialized request
    answer:  kind = a gRPC status code; 0: message = the serialized response,
             otherwise message = the status message (UTF-8), no table, no attachment

Large numeric tensors (ATTACH_MIN bytes and more) travel in the attachment, after the
message, instead of in `tensor_content`: their TensorProto keeps dtype and shape only, and
the table lists them in attachment order as (item, name, bytes), where item is the index
of the request (or result) in a PredictMany, 0 for Predict; each starts at a multiple of
ALIGN bytes, zeros in between. Both ends then read and write
the values in place: no protobuf copy of them on either side.

A request's tensor that lies in memory the gateway shares (protos.shared_memory: a large body
it read), at an ALIGN-aligned offset, is not in the attachment at all: its table entry has
SHARED in its item and is followed by a REGION (device, inode, offset, path length) and the
path the runtime reads it from. A runtime that cannot read it answers, without running anything,
kind SHARED_REFUSED (it never will: the gateway sends that call again with every tensor in the
attachment, and every later call) or SHARED_BUSY (not now: that call alone goes again inline),
with no table, no attachment and the reason as message.

Deadlines stay with the gateway: a caller that stops waiting closes the connection, which
the runtime sees as the end of that connection once the call is done.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from protos.buffers import MAPPED_MIN as MAPPED_MIN  # the wire's buffers, for both ends
from protos.buffers import frame_buffer as frame_buffer
from protos.services import RUNTIME_PREDICT_MANY, TF_PREDICT, Method
from protos.shared_memory import RegionReference, region_of

HEADER = struct.Struct("<BIIQ")  # kind, table length, message length, attachment length
ENTRY = struct.Struct("<IHQ")  # item, name length (the UTF-8 name follows), bytes in the attachment
REGION = struct.Struct("<QQQH")  # after a SHARED entry's name: device, inode, offset, path length (the path follows)
SHARED = 1 << 31  # in an entry's item: its bytes are in the gateway's shared memory, not the attachment
SHARED_REFUSED = 255  # an answer's kind: the runtime cannot map SHARED tensors; send them inline from now on
SHARED_BUSY = 254  # an answer's kind: the runtime could not map a SHARED tensor this time; send this call inline
LOCAL_METHODS: dict[int, Method[Any, Any]] = {1: TF_PREDICT, 2: RUNTIME_PREDICT_MANY}
METHOD_NUMBERS: dict[str, int] = {method.path: number for number, method in LOCAL_METHODS.items()}
SMALL_FRAME = 1 << 16  # frames up to this size are written with one copy, larger ones without
ATTACH_MIN = 1 << 16  # numeric tensors of at least this many bytes travel in the attachment
ALIGN = 8  # each tensor's bytes start at a multiple of this offset in the attachment


class WireError(ValueError):
    """A frame that does not follow the local wire."""


@dataclass
class Attachments:
    """A call's large tensors, by item and name: the arrays it sends (C-ordered, little-endian)
    and the raw bytes its answer brought."""

    sent: list[tuple[int, str, Any]] = field(default_factory=list)  # (item, name, numpy array)
    received: dict[int, dict[str, memoryview]] = field(default_factory=dict)

    def table(self) -> bytes:
        """The table of `sent`, in the order their bytes are written."""
        return self.frame(share=False)[0]

    def buffers(self) -> list[memoryview]:
        """The attachment: the bytes of `sent` in table order, each starting at a multiple of
        ALIGN bytes (zeros in between)."""
        return self.frame(share=False)[1]

    def frame(self, share: bool) -> tuple[bytes, list[memoryview]]:
        """The table and the attachment of `sent`; with `share`, the tensors that lie in shared
        memory are named in the table instead of being in the attachment."""
        parts: list[bytes] = []
        buffers: list[memoryview] = []
        offset = 0
        for item, name, array in self.sent:
            encoded = name.encode()
            reference = shared_reference(array) if share else None
            if reference is not None:
                path = reference.path.encode()
                parts += [ENTRY.pack(item | SHARED, len(encoded), array.nbytes), encoded,
                          REGION.pack(reference.device, reference.inode, reference.offset, len(path)), path]
                continue
            parts += [ENTRY.pack(item, len(encoded), array.nbytes), encoded]
            if pad := -offset % ALIGN:
                buffers.append(memoryview(bytes(pad)))
                offset += pad
            buffers.append(array.reshape(-1).view("u1").data)  # bytes of any dtype, no copy
            offset += array.nbytes
        return b"".join(parts), buffers


def shared_reference(array: Any) -> RegionReference | None:
    """Where `array`'s bytes lie in the gateway's shared memory, when they do (C-contiguous, at
    an ALIGN-aligned offset: the runtime's array over them is then as aligned as one from the
    attachment)."""
    region = region_of(array)
    if region is None or not array.flags.c_contiguous:
        return None
    offset = region.offset_of(array.ctypes.data, array.nbytes)
    if offset is None or offset % ALIGN:
        return None
    return region.reference(offset, array.nbytes)


def encode_table(entries: Iterable[tuple[int, str, int]]) -> bytes:
    parts: list[bytes] = []
    for item, name, length in entries:
        encoded = name.encode()
        parts.append(ENTRY.pack(item, len(encoded), length))
        parts.append(encoded)
    return b"".join(parts)


def split_attachment(table: bytes, attachment: bytearray | bytes | memoryview,
                     read_shared: Callable[[RegionReference], bytearray | memoryview] | None = None,
                     ) -> dict[int, dict[str, memoryview]]:
    """The attachment cut into its tensors' bytes (views, no copy), by item and name; SHARED
    entries are read with `read_shared` (a WireError without it: only requests name them)."""
    tensors: dict[int, dict[str, memoryview]] = {}
    whole = memoryview(attachment)
    offset = position = 0
    while position < len(table):
        if position + ENTRY.size > len(table):
            raise WireError("the attachment table is cut short")
        item, name_length, length = ENTRY.unpack_from(table, position)
        position += ENTRY.size
        name = table[position:position + name_length].decode(errors="replace")
        position += name_length
        if item & SHARED:
            if read_shared is None:
                raise WireError("a tensor in shared memory where none may be")
            if position + REGION.size > len(table):
                raise WireError("the attachment table is cut short")
            device, inode, region_offset, path_length = REGION.unpack_from(table, position)
            position += REGION.size
            if position + path_length > len(table):
                raise WireError("the attachment table is cut short")
            path = table[position:position + path_length].decode(errors="replace")
            position += path_length
            tensors.setdefault(item & ~SHARED, {})[name] = memoryview(read_shared(
                RegionReference(path, device, inode, region_offset, length)))
            continue
        offset += -offset % ALIGN
        if offset + length > len(whole):
            raise WireError(f"the attachment holds {len(whole)} bytes, the table needs more")
        tensors.setdefault(item, {})[name] = whole[offset:offset + length]
        offset += length
    if offset != len(whole):
        raise WireError(f"the attachment holds {len(whole)} bytes, the table accounts for {offset}")
    return tensors
