"""`hydro_serving_grpc.serving.runtime` of hydro-serving-grpc 3.x: the runtime's Predict messages."""
