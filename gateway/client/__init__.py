"""A Python client of the gateway: `Client` (blocking) and `AsyncClient` (asyncio), on httpx.

    from gateway.client import Client

    with Client() as gateway:                    # GATEWAY_URL, else http://127.0.0.1:8000
        gateway.predict("increment_app", number=[1])["number"]    # array([2], dtype=int32)

Failures raise the gateway's own exceptions (gateway.errors), chosen by the answer's code, and
the client's own for no answer (gateway.client.errors): catch `GatewayError` for all of them.
"""

from gateway.client.calls import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, DEFAULT_URL
from gateway.client.clients import AsyncClient, Client
from gateway.client.errors import ERRORS_BY_CODE, ConnectionLost, GatewayTimeout, GatewayUnreachable, UnexpectedAnswer
from gateway.client.listing import Application, ModelVersion, Stage, Tensor, Variant
from gateway.client.tensors import DEFAULT_BINARY_THRESHOLD
from gateway.errors import GatewayError

__all__ = [
    "DEFAULT_BINARY_THRESHOLD",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "ERRORS_BY_CODE",
    "Application",
    "AsyncClient",
    "Client",
    "ConnectionLost",
    "GatewayError",
    "GatewayTimeout",
    "GatewayUnreachable",
    "ModelVersion",
    "Stage",
    "Tensor",
    "UnexpectedAnswer",
    "Variant",
]
