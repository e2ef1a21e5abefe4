import hydro_serving_grpc as hs  # provided by the runtime when the real package is absent


def to_celsius(fahrenheit):
    degrees = hs.make_ndarray(fahrenheit)
    celsius = (degrees - 32) * 5 / 9

    shape = hs.TensorShapeProto(dim=[hs.TensorShapeProto.Dim(size=dim.size) for dim in fahrenheit.tensor_shape.dim])
    return hs.PredictResponse(outputs={
        "celsius": hs.TensorProto(dtype=hs.DT_FLOAT, tensor_shape=shape, float_val=celsius.flatten()),
        "readings": hs.TensorProto(dtype=hs.DT_INT64, int64_val=[degrees.size]),
    })
