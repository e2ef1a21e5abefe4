"""hydrosphere.serving.gateway.GatewayService on the gRPC front door."""

from __future__ import annotations

import grpc

from gateway.grpc_api.calls import DoorState
from protos.services import HYDRO_GATEWAY_SERVICE


def services(door: DoorState) -> list[grpc.GenericRpcHandler[bytes, bytes]]:
    """The handlers of this module's services (one generic handler per service)."""
    return [grpc.method_handlers_generic_handler(HYDRO_GATEWAY_SERVICE, {})]
