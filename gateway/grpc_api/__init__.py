"""The gRPC front door: TF Serving's PredictionService and ModelService, Hydrosphere's
GatewayService and grpc.health.v1 on `grpc_port`, served by the gateway's own gRPC server
(gateway.grpc_server) in the HTTP app's process and event loop over the same data plane
(gateway.dataplane).

    server.py       the door's server: options, socket, TLS, start, drain (`GrpcFrontDoor`)
    calls.py        one call: request id, deadline, API key, metrics, access log, errors -> status
    tfserving.py    tensorflow.serving.PredictionService and ModelService
    hydrosphere.py  hydrosphere.serving.gateway.GatewayService
    tensors.py      TensorProto maps <-> arrays by the contract, for both services
    passthrough.py  Predict forwarded undecoded to a TF Serving backend
    health.py       grpc.health.v1.Health following readiness
"""
