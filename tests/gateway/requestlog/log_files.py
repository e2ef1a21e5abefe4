"""Request-log files for the `gateway logs` tests, written as a file sink writes them: each call
as `records.prediction_log` framed by `encode_record`, its index line `records.index_entry`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gateway.requestlog.call import LoggedCall
from gateway.requestlog.records import index_entry, prediction_log
from tensorcodecs.tfrecord import encode_record

STEM = "requests-20261201T162030.123456Z-p4242-000001"


def call(request_id: str = "req-1", *, model: str = "increment_model", version: int | None = 1,
         signature: str = "increment", inputs: Mapping[str, np.ndarray] | None = None,
         outputs: Mapping[str, np.ndarray] | None = None, failed: bool = False, **fields: Any) -> LoggedCall:
    """A logged call of increment_model:1 by default: [1, 2, 3] answered [2, 3, 4]."""
    if inputs is None:
        inputs = {"number": np.array([1, 2, 3], dtype=np.int32)}
    if outputs is None and not failed:
        outputs = {"number": np.asarray(inputs["number"]) + 1}
    return LoggedCall(request_id=request_id, time=1796142030.123456, duration_s=0.0042, model=model,
                      version=version, signature_name=signature, inputs=inputs,
                      outputs=None if failed else outputs, **fields)


def write_log(folder: Path, calls: Iterable[LoggedCall], *, stem: str = STEM, index: bool = True,
              partial: bool = False) -> Path:
    """The TFRecord file of `calls` in `folder` (with its index unless `index` is False)."""
    suffix = ".partial" if partial else ""
    path = folder / f"{stem}.tfrecord{suffix}"
    lines = []
    data = bytearray()
    for one in calls:
        record = encode_record(prediction_log(one).SerializeToString())
        lines.append(json.dumps(index_entry(one, len(data), len(record))) + "\n")
        data += record
    path.write_bytes(bytes(data))
    if index:
        (folder / f"{stem}.index.jsonl{suffix}").write_text("".join(lines))
    return path
