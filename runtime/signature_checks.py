"""TF Serving's checks of a SignatureDef for Classify and Regress (classifier.cc
PreProcessClassification, regressor.cc PreProcessRegression, with the default
enable_signature_method_name_check=false), in TF's order and with its messages."""

from __future__ import annotations

from google.protobuf import text_format

from protos.tensorflow.meta_graph_pb2 import SignatureDef

CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"


def classification_error(signature: SignatureDef) -> str | None:
    """What TF Serving answers (INVALID_ARGUMENT) for Classify on `signature`; None if it passes."""
    if len(signature.inputs) != 1:
        return "Expected one input Tensor."
    if len(signature.outputs) not in (1, 2):
        return f"Expected one or two output Tensors, found {len(signature.outputs)}"
    if CLASSIFY_INPUTS not in signature.inputs:
        return f"No classification inputs found in SignatureDef: {_debug_string(signature)}"
    if CLASSIFY_CLASSES not in signature.outputs and CLASSIFY_SCORES not in signature.outputs:
        return ("Expected classification signature outputs to contain at least one of "
                f'"{CLASSIFY_CLASSES}" or "{CLASSIFY_SCORES}". Signature was: {_debug_string(signature)}')
    return None


def regression_error(signature: SignatureDef) -> str | None:
    """What TF Serving answers (INVALID_ARGUMENT) for Regress on `signature`; None if it passes."""
    if len(signature.inputs) != 1:
        return "Expected one input Tensor."
    if len(signature.outputs) != 1:
        return "Expected one output Tensor."
    if REGRESS_INPUTS not in signature.inputs:
        return f"No regression inputs found in SignatureDef: {_debug_string(signature)}"
    if REGRESS_OUTPUTS not in signature.outputs:
        return f"No regression outputs found in SignatureDef: {_debug_string(signature)}"
    return None


def _debug_string(signature: SignatureDef) -> str:
    """C++ Message::DebugString: text format, map entries sorted by key, non-ASCII bytes octal."""
    return text_format.MessageToString(signature)
