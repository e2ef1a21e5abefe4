"""The local wire: Predict and PredictMany between the gateway and an embedded runtime on the
same machine, over a Unix socket, without gRPC's per-call machinery.

A connection carries one call at a time, as on HTTP/1.1 keep-alive: the gateway writes a
request frame and reads one answer frame before it writes the next request. Each frame is a
fixed header followed by `length` bytes:

    request: kind = the method's number in LOCAL_METHODS, payload = the serialized request
    answer:  kind = a gRPC status code; 0: payload = the serialized response,
             otherwise payload = the status message (UTF-8)

Deadlines stay with the gateway: a caller that stops waiting closes the connection, which
the runtime sees as the end of that connection once the call is done.
"""

from __future__ import annotations

import struct
from typing import Any

from protos.services import RUNTIME_PREDICT_MANY, TF_PREDICT, Method

HEADER = struct.Struct("<BQ")  # kind, payload length
LOCAL_METHODS: dict[int, Method[Any, Any]] = {1: TF_PREDICT, 2: RUNTIME_PREDICT_MANY}
METHOD_NUMBERS: dict[str, int] = {method.path: number for number, method in LOCAL_METHODS.items()}
SMALL_FRAME = 1 << 16  # frames up to this size are written with one copy, larger ones without
