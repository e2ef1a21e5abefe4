"""The gateway's own HTTP/2 gRPC client for unary calls, run in the event loop: the mirror of
gateway.grpc_server, whose frames, HPACK and status modules it shares.

    target.py      which targets it reaches: one plaintext host:port, ipv4: or ipv6: address
    codes.py       how a call ends without trailers: HTTP status and RST_STREAM codes, `Unprocessed`
    backoff.py     the reconnect backoff and the retry policy of gateway.backends.pool's grpcio channels
    connection.py  one HTTP/2 connection (h2c): calls as streams under flow control, PING, SETTINGS, GOAWAY
    channel.py     `InloopChannel`: lazy connect, reconnect, deadlines, cancellation, retries, close
"""

from gateway.grpc_client.channel import InloopChannel
from gateway.grpc_client.target import parse_target

__all__ = ["InloopChannel", "parse_target"]
