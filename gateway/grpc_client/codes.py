"""How a call that did not end with trailers ends (grpc's PROTOCOL-HTTP2.md and
http-grpc-status-mapping.md): an HTTP status other than 200, an RST_STREAM code, and the
errors the client raises."""

from __future__ import annotations

import grpc

from gateway.grpc_server import frames as f
from gateway.grpc_server.status import RpcStatus

# An HTTP status without a grpc-status (a proxy's answer, not the server's): gRPC's mapping.
HTTP_TO_CODE: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INTERNAL,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.UNAVAILABLE,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}
# RST_STREAM error codes (RFC 9113 7) as the call's status; REFUSED_STREAM is `Unprocessed`.
RESET_TO_CODE: dict[int, grpc.StatusCode] = {
    f.NO_ERROR: grpc.StatusCode.INTERNAL,
    f.PROTOCOL_ERROR: grpc.StatusCode.INTERNAL,
    f.INTERNAL_ERROR: grpc.StatusCode.INTERNAL,
    f.FLOW_CONTROL_ERROR: grpc.StatusCode.INTERNAL,
    0x4: grpc.StatusCode.INTERNAL,  # SETTINGS_TIMEOUT
    f.STREAM_CLOSED: grpc.StatusCode.INTERNAL,
    f.FRAME_SIZE_ERROR: grpc.StatusCode.INTERNAL,
    f.REFUSED_STREAM: grpc.StatusCode.UNAVAILABLE,
    f.CANCEL: grpc.StatusCode.CANCELLED,
    f.COMPRESSION_ERROR: grpc.StatusCode.INTERNAL,
    0xA: grpc.StatusCode.INTERNAL,  # CONNECT_ERROR
    f.ENHANCE_YOUR_CALM: grpc.StatusCode.RESOURCE_EXHAUSTED,
    0xC: grpc.StatusCode.PERMISSION_DENIED,  # INADEQUATE_SECURITY
    0xD: grpc.StatusCode.INTERNAL,  # HTTP_1_1_REQUIRED
}
CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


class Unprocessed(RpcStatus):
    """The server never processed the call (REFUSED_STREAM, above a GOAWAY's last stream, not
    sent before its connection ended): it may be sent again on another connection at once."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, message)


def http_status_error(status: str) -> RpcStatus:
    """The error of a response whose :status is not 200."""
    try:
        code = HTTP_TO_CODE.get(int(status), grpc.StatusCode.UNKNOWN)
    except ValueError:
        code = grpc.StatusCode.UNKNOWN
    return RpcStatus(code, f"Received http2 header with status: {status}")


def reset_error(error_code: int) -> RpcStatus:
    """The error of a stream the server reset with `error_code`."""
    if error_code == f.REFUSED_STREAM:
        return Unprocessed("the server refused the stream")
    code = RESET_TO_CODE.get(error_code, grpc.StatusCode.INTERNAL)
    return RpcStatus(code, f"Received RST_STREAM with error code {error_code}")
