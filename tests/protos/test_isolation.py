"""The project's protos live beside upstream TensorFlow protos in one process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

SCRIPT = textwrap.dedent(
    """
    import importlib, pathlib
    from google.protobuf import descriptor_pb2, descriptor_pool

    pool = descriptor_pool.Default()

    def register(file_name, package, *messages):
        proto = descriptor_pb2.FileDescriptorProto(name=file_name, package=package, syntax="proto3")
        for message in messages:
            field = proto.message_type.add(name=message).field.add()
            field.name, field.number = "dtype", 1
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_INT32
            field.label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
        pool.AddSerializedFile(proto.SerializeToString())

    # What tensorflow / tensorflow-serving-api register when they are imported first.
    register("tensorflow/core/framework/tensor.proto", "tensorflow", "TensorProto")
    register("tensorflow/core/framework/tensor_shape.proto", "tensorflow", "TensorShapeProto")
    register("tensorflow_serving/apis/model.proto", "tensorflow.serving", "ModelSpec")
    register("tensorflow_serving/apis/predict.proto", "tensorflow.serving",
             "PredictRequest", "PredictResponse")

    modules = sorted(
        ".".join(path.with_suffix("").parts)
        for path in pathlib.Path("protos").rglob("*_pb2.py")
    )
    assert modules, "no generated modules found"
    for name in modules + ["protos.services", "runtime.compat.hydro_serving_grpc"]:
        if name.startswith("runtime."):
            import sys; sys.path.append("runtime/compat")
            name = "hydro_serving_grpc"
        importlib.import_module(name)

    from protos.tensorflow_serving.predict_pb2 import PredictRequest
    assert PredictRequest.DESCRIPTOR.full_name == "gatewayproto.tensorflow.serving.PredictRequest"
    upstream = pool.FindMessageTypeByName("tensorflow.serving.PredictRequest")
    assert upstream.file.name == "tensorflow_serving/apis/predict.proto"
    print("imported", len(modules), "modules")
    """
)


def test_project_protos_import_after_upstream_descriptors() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("imported ")


def test_method_paths_are_upstream() -> None:
    from protos.services import TF_PREDICT

    assert TF_PREDICT.path == "/tensorflow.serving.PredictionService/Predict"
