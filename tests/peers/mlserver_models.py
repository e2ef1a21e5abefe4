"""The models MLServer serves in the peer tests (loaded by MLServer from its own venv, never by the
gateway's): `Increment` adds 1 to every numeric input, `Shout` upper-cases BYTES. Each answers its
outputs under its inputs' names, datatypes and shapes, so a pipeline of two `Increment` stages fits.
Outputs are built as ResponseOutput directly: MLServer's NumpyCodec would answer a [N] tensor as
[N, 1]."""

from __future__ import annotations

from typing import Any

from mlserver import MLModel  # type: ignore[import-not-found]
from mlserver.codecs import NumpyCodec  # type: ignore[import-not-found]
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput  # type: ignore[import-not-found]

# MLServer's packages are in its own venv only (mypy runs in the gateway's, without them).


def _output(tensor: Any, values: list[Any]) -> Any:
    return ResponseOutput(name=tensor.name, shape=list(tensor.shape), datatype=tensor.datatype, data=values)


class Increment(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = [_output(tensor, (NumpyCodec.decode_input(tensor) + 1).ravel().tolist())
                   for tensor in payload.inputs]
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=outputs)


class Shout(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        tensor = payload.inputs[0]
        # The elements as sent (bytes from raw contents, str from JSON): NumpyCodec reads BYTES as
        # byte buffers to concatenate, not as one element each.
        words = list(getattr(tensor.data, "root", tensor.data))
        loud = [(word if isinstance(word, bytes) else str(word).encode()).upper() for word in words]
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[_output(tensor, loud)])
