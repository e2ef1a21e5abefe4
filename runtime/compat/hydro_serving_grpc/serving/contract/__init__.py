"""`hydro_serving_grpc.serving.contract` of hydro-serving-grpc 3.x: tensors, types, fields, signatures."""
