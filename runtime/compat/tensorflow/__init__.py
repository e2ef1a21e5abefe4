"""The two TensorFlow helpers Hydrosphere model functions use, for runtimes without TensorFlow.

Hydrosphere's Python runtime examples do `tf.make_ndarray(tensor)` and
`tf.make_tensor_proto(values)`. When TensorFlow is not installed, the runtime puts this
module on the import path (last) so such functions run as they are. Anything else from
TensorFlow needs the real package in the model's environment (`gateway build`).
"""

from __future__ import annotations

from typing import Any

from hydro_serving_grpc import make_ndarray, make_tensor_proto

__all__ = ["make_ndarray", "make_tensor_proto"]


def __getattr__(name: str) -> Any:
    raise AttributeError(
        f"tensorflow.{name} is not available: this runtime provides only tensorflow.make_ndarray and "
        "tensorflow.make_tensor_proto; add tensorflow to the model's requirements.txt and run "
        "`gateway build` for the rest"
    )
