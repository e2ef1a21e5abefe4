"""The gRPC front door: TF Serving's PredictionService and ModelService, Hydrosphere's
GatewayService and grpc.health.v1 on `grpc_port`, served by a grpc.aio server in the HTTP
app's process and event loop over the same data plane (gateway.dataplane).

    server.py       the grpc.aio server: options, TLS, start, drain (`GrpcFrontDoor`)
    calls.py        one call: request id, deadline, API key, metrics, access log, errors -> status
    tfserving.py    tensorflow.serving.PredictionService and ModelService
    hydrosphere.py  hydrosphere.serving.gateway.GatewayService
    health.py       grpc.health.v1.Health following readiness
"""
