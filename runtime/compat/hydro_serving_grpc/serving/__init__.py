"""The hydro-serving-grpc 3.x module layout (`hydro_serving_grpc.serving.contract`, `.runtime`),
backed by the project's copies of the same messages (protos/hydrosphere: same field numbers)."""
