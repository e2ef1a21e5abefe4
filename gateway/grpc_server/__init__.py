"""The gateway's own HTTP/2 gRPC server, run in the asyncio event loop.

    huffman.py     the Huffman code of HPACK (RFC 7541 Appendix B) and its table-driven decoder
    hpack.py       HPACK header block decoding and a static-table-only encoder (RFC 7541)
    frames.py      HTTP/2 frame types, flags, error codes, settings and the frames the server writes
    status.py      gRPC's status on HTTP/2: `RpcStatus`, `grpc-timeout`, the percent-encoded `grpc-message`
    call.py        what a handler is given (`ServerCall`) and what it is (`RpcHandler`: unary or server-streaming)
    connection.py  one HTTP/2 connection: frames in, calls dispatched as tasks, answers out under flow control
    server.py      the listener, its connections, handlers by method path, the graceful stop; TLS with ALPN h2
"""
