"""`gateway logs replay`: the logged requests sent again, one at a time and at a bounded rate,
to a running gateway's native routes (TF Serving's REST route for a signature the native route
does not serve: it serves a model's default one only), each answer compared with the logged outputs."""

from __future__ import annotations

import base64
import binascii
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from gateway.requestlog.reading import LogFileError, LogRecord, decode, read_log, record_label
from gateway.requestlog.show import tensors_json
from protos.tensorflow import tensor_pb2
from tensorcodecs import CodecError

MAX_RATE = 1000.0  # requests per second: a replay is a check, not a load test
DEFAULT_SIGNATURE = "serving_default"  # TF's default signature key
_SHOWN_BODY = 300  # characters of a failed answer's body printed


@dataclass(frozen=True, slots=True)
class Target:
    """Where records go: `url` (the gateway), `application` (None: each record's model route)."""

    url: str
    application: str | None = None
    api_key: str | None = None
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Call:
    """One request to send: the record it comes from, its route, its body, and the outputs
    its answer is compared with (None: the logged call has none)."""

    record: LogRecord
    label: str  # `record N`, with the file's name when a directory is replayed
    path: str
    body: bytes
    expected: Mapping[str, tensor_pb2.TensorProto] | None
    output_filter: tuple[str, ...] = ()  # the logged request's: its logged outputs are only these
    unfinished: bool = False  # an application request whose last stage was not logged: nothing to compare
    outputs: frozenset[str] | None = None  # the route's contract (None: unknown)
    tf_rest: bool = False  # the answer is TF REST's `{"outputs": ...}`


@dataclass(frozen=True, slots=True)
class Contract:
    """What the gateway's TF metadata says of a model version: its default signature and each
    signature's output names."""

    default: str | None
    outputs: Mapping[str, frozenset[str]]


@dataclass(slots=True)
class Tally:
    """What a replay saw, for its summary."""

    sent: int = 0
    answered: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # by status, or "no answer"
    equal: int = 0
    different: int = 0
    not_compared: int = 0
    unfinished: int = 0  # application requests whose last stage is not in the log
    skipped: Counter[str] = field(default_factory=Counter)  # by reason


def replay(path: Path, target: Target, *, rate: float = 10.0, limit: int | None = None,
           out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Send the records of `path` to `target`, at most `rate` a second, one at a time; print a
    line per failure or difference and a summary. 0 when every request sent was answered 2xx,
    1 otherwise (none sent, a failure, an unreadable file after some records), 2 when `path`
    cannot be read at all."""
    out = out or sys.stdout
    err = err or sys.stderr
    tally = Tally()
    file_errors: list[LogFileError] = []

    def fail(error: LogFileError) -> None:
        file_errors.append(error)
        print(f"gateway logs replay: {error}", file=err)

    def warn(message: str) -> None:
        print(f"gateway logs replay: warning: {message}", file=err)

    finals = last_stages(path, target.application) if target.application is not None else None
    records = read_log(path, warn=warn, fail=fail)
    headers = {"content-type": "application/json"}
    if target.api_key:
        headers["authorization"] = f"Bearer {target.api_key}"
    contracts: dict[tuple[str, int | None], Contract | None] = {}
    with httpx.Client(base_url=target.url.rstrip("/"), headers=headers, timeout=target.timeout_s) as client:
        try:
            _send_all(client, calls(records, target.application, finals, tally, with_file=path.is_dir()),
                      contracts, target, tally, rate, limit, out, err)
        except KeyboardInterrupt:  # Ctrl-C: what was seen so far, then 130 as a shell reports SIGINT
            print("gateway logs replay: interrupted", file=err)
            _summary(tally, target, out)
            return 130
    if file_errors and tally.sent == 0 and all(error.shown == 0 for error in file_errors):
        return 2
    _summary(tally, target, out)
    answered_all = tally.sent > 0 and tally.answered == tally.sent
    if tally.sent == 0:
        print("gateway logs replay: no record was sent", file=err)
    return 0 if answered_all and not file_errors else 1


def _send_all(client: httpx.Client, planned: Iterable[Call], contracts: dict[tuple[str, int | None], Contract | None],
              target: Target, tally: Tally, rate: float, limit: int | None, out: TextIO, err: TextIO) -> None:
    interval = 1.0 / rate
    next_at = time.monotonic()
    for planned_call in planned:
        if limit is not None and tally.sent >= limit:
            break
        call = planned_call if target.application is not None else _routed(client, planned_call, contracts)
        if call is None:
            tally.skipped["a signature the gateway does not describe"] += 1
            continue
        wait = next_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        next_at = time.monotonic() + interval  # from this send: a slow answer is no credit for a burst
        tally.sent += 1
        try:
            response = client.post(call.path, content=call.body)
        except httpx.TransportError as error:
            tally.failed["no answer"] += 1
            print(f"{call.label}: {target.url}{call.path} does not answer: "
                  f"{error or type(error).__name__}", file=out)
            if isinstance(error, httpx.ConnectError):
                print(f"gateway logs replay: {target.url} does not answer ({error or 'connection refused'}): "
                      "stopped", file=err)
                break
            continue
        _check(call, response, tally, out)


def _routed(client: httpx.Client, call: Call, contracts: dict[tuple[str, int | None], Contract | None]) -> Call | None:
    """`call` to the native route when its signature is the model's default (or unnamed), else
    to TF Serving's REST route naming it, with the route's output names (unknown when the
    metadata cannot be read); None: the gateway's metadata does not list the signature."""
    spec = call.record.record.predict_log.request.model_spec
    version = spec.version.value if spec.HasField("version") else None
    key = (spec.name, version)
    if key not in contracts:
        contracts[key] = _contract(client, spec.name, version)
    contract = contracts[key]
    signature = spec.signature_name
    if signature == DEFAULT_SIGNATURE and contract is not None and signature not in contract.outputs:
        signature = ""  # TF's default key names the default signature of a model that has another name for it
    if contract is None:  # no metadata (e.g. an unknown model): a route that answers why
        if signature in ("", DEFAULT_SIGNATURE):
            return call
        return _signature_call(call, spec.name, version, signature, None)  # the gateway checks the signature
    if signature and signature not in contract.outputs:
        return None
    outputs = contract.outputs.get(signature or contract.default or "")
    if not signature or signature == contract.default:
        return replace(call, outputs=outputs)
    return _signature_call(call, spec.name, version, signature, outputs)


def _signature_call(call: Call, name: str, version: int | None, signature: str,
                    outputs: frozenset[str] | None) -> Call:
    """`call` to TF Serving's REST route of the model version, naming `signature`."""
    route = f"/v1/models/{quote(name, safe='')}" + ("" if version is None else f"/versions/{version}")
    body = b'{"signature_name":' + orjson.dumps(signature) + b',"inputs":' + call.body + b"}"
    return replace(call, path=f"{route}:predict", body=body, outputs=outputs, tf_rest=True)


def _contract(client: httpx.Client, name: str, version: int | None) -> Contract | None:
    """The model version's signatures from `GET /v1/models/NAME[/versions/V]/metadata`."""
    route = f"/v1/models/{quote(name, safe='')}" + ("" if version is None else f"/versions/{version}")
    try:
        answer = client.get(f"{route}/metadata")
        if answer.status_code != 200:
            return None
        document = answer.json()
        signatures = document["metadata"]["signature_def"]["signature_def"]
        outputs = {signature: frozenset(definition.get("outputs") or {})
                   for signature, definition in signatures.items()}
        default = document.get("model_spec", {}).get("signature_name") or None
    except (httpx.TransportError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if default not in outputs:
        default = DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in outputs else (
            next(iter(outputs)) if len(outputs) == 1 else None)
    return Contract(default, outputs)


def last_stages(path: Path, application: str) -> dict[str, Mapping[str, tensor_pb2.TensorProto] | None]:
    """For each request of `application` the index names whose last stage is in the log, the
    logged outputs of that stage (None: that call failed): what the application answered. The
    last stage is the highest one the log holds for the application (a request whose records
    stop before it is left out: its last call was not logged). A first pass over the log."""
    finals: dict[str, tuple[int, Mapping[str, tensor_pb2.TensorProto] | None]] = {}
    stages = 0
    for record in read_log(path, warn=lambda _: None, fail=lambda _: None):
        entry = record.entry
        if entry is None or entry.get("application") != application or not entry.get("request_id"):
            continue
        stage = entry.get("stage") or 0
        stages = max(stages, stage)
        known = finals.get(entry["request_id"])
        if known is None or stage >= known[0]:
            log = record.record.predict_log
            finals[entry["request_id"]] = (stage, log.response.outputs if log.HasField("response") else None)
    return {request_id: outputs for request_id, (stage, outputs) in finals.items() if stage == stages}


def calls(records: Iterable[LogRecord], application: str | None,
          finals: Mapping[str, Mapping[str, tensor_pb2.TensorProto] | None] | None, tally: Tally, *,
          with_file: bool = False) -> Iterator[Call]:
    """The requests to send, in the log's order: each predict record's inputs to the model
    route of the model and version that ran; with `application`, to its route, only the
    records of its stage 1 when the file has an index (every record of a file without one),
    compared with `finals`, the outputs of the same request's last stage."""
    for record in records:
        log = record.record
        if log.WhichOneof("log_type") != "predict_log":
            tally.skipped[f"not a predict log ({log.WhichOneof('log_type')})"] += 1
            continue
        request = log.predict_log.request
        expected: Mapping[str, tensor_pb2.TensorProto] | None = (
            log.predict_log.response.outputs if log.predict_log.HasField("response") else None)
        entry = record.entry
        unfinished = False
        output_filter = tuple(request.output_filter)
        if application is None:
            spec = request.model_spec
            path = model_path(spec.name, spec.version.value if spec.HasField("version") else None)
        elif record.indexed and entry is None:
            tally.skipped["no index line (cannot tell its stage)"] += 1
            continue
        elif entry is not None and (entry.get("application") != application or entry.get("stage") != 1):
            tally.skipped[f"not stage 1 of {application}"] += 1
            continue
        else:
            if entry is not None:
                request_id = entry.get("request_id") or ""
                unfinished = finals is not None and request_id not in finals
                expected = None if finals is None or unfinished else finals[request_id]
            output_filter = ()  # the last stage's outputs are the application's answer
            path = f"/gateway/applications/{quote(application, safe='')}"
        try:
            body = request_body(request.inputs)
        except (CodecError, ValueError, MemoryError):
            tally.skipped["inputs that cannot be decoded"] += 1
            continue
        yield Call(record, record_label(record, with_file=with_file), path, body, expected, output_filter,
                   unfinished)


def model_path(name: str, version: int | None) -> str:
    """The native model route of `name` at `version` (every version's route when None)."""
    route = f"/gateway/models/{quote(name, safe='')}"
    return route if version is None else f"{route}/versions/{version}"


def request_body(inputs: Mapping[str, tensor_pb2.TensorProto]) -> bytes:
    """The native JSON body `{input: value}`. Non-finite floats go as `NaN`/`Infinity`, which
    requests may use (strict JSON would make them null, which no float input takes)."""
    values = tensors_json(inputs)
    for name, value in values.items():
        if isinstance(value, dict) and set(value) == {"error"}:
            raise CodecError(f"input {name!r}: {value['error']}")
    if not any(_non_finite(decode(tensor)) for tensor in inputs.values()):
        return orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(values, default=_plain).encode()


def _non_finite(array: np.ndarray) -> bool:
    return array.dtype.kind in "fc" and not bool(np.isfinite(array).all())


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _check(call: Call, response: httpx.Response, tally: Tally, out: TextIO) -> None:
    label = call.label
    if not 200 <= response.status_code < 300:
        tally.failed[str(response.status_code)] += 1
        print(f"{label}: {call.path} answered {response.status_code}: "
              f"{response.text[:_SHOWN_BODY]}", file=out)
        return
    tally.answered += 1
    if call.unfinished:
        tally.unfinished += 1
        return
    if call.expected is None:
        tally.not_compared += 1
        return
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if call.tf_rest and isinstance(answer, dict):  # `{"outputs": {name: value}}`, or the value of the only one
        answer = answer.get("outputs")
        if call.outputs is not None and len(call.outputs) == 1:
            answer = {next(iter(call.outputs)): answer}
        elif call.outputs is None and call.expected is not None and len(call.expected) == 1 and (
                not isinstance(answer, dict)):  # outputs unknown: a bare value is the logged output's
            answer = {next(iter(call.expected)): answer}
    if not isinstance(answer, dict):
        tally.different += 1
        print(f"{label}: {call.path} answered {response.status_code} without a JSON object of "
              "outputs", file=out)
        return
    differences = compare(call.expected, answer, output_filter=call.output_filter, contract=call.outputs)
    if differences:
        tally.different += 1
        print(f"{label}: outputs differ from the log: {'; '.join(differences)}", file=out)
    else:
        tally.equal += 1


def compare(logged: Mapping[str, tensor_pb2.TensorProto], answer: Mapping[str, Any], *,
            output_filter: Iterable[str] = (), contract: Iterable[str] | None = None) -> list[str]:
    """What differs between the logged outputs and an answer's, over the outputs both have
    (the answer restricted to the logged request's `output_filter` when it had one). Also a
    difference: no output in common, and a logged output the answer leaves out unless it is
    outside the route's `contract` (its output names, when known). Exact for integers, bools
    and strings; floats with numpy.isclose, NaN and infinities (null in answers) equal to null."""
    wanted = set(output_filter)
    if wanted:
        answer = {name: value for name, value in answer.items() if name in wanted}
    common = sorted(set(logged) & set(answer))
    if not common:
        return [f"no output in common with the log (logged: {', '.join(sorted(logged)) or 'none'}; "
                f"answered: {', '.join(sorted(answer)) or 'none'})"]
    served = set(contract) if contract is not None else None
    missing = [name for name in sorted(set(logged) - set(answer)) if served is None or name in served]
    differences = [f"{name}: missing from the answer" for name in missing]
    for name in common:
        try:
            array = decode(logged[name])
        except (CodecError, ValueError) as error:
            differences.append(f"{name}: the logged value cannot be decoded: {error}")
            continue
        expected = orjson.loads(orjson.dumps(tensors_json({name: logged[name]})[name],
                                             option=orjson.OPT_SERIALIZE_NUMPY))
        if not _equal(expected, answer[name], floats=array.dtype.kind in "fc"):
            differences.append(f"{name}: logged {_short(expected)}, answered {_short(answer[name])}")
    return differences


def _equal(expected: Any, got: Any, *, floats: bool) -> bool:
    if not floats:
        return bool(_as_bytes(expected) == _as_bytes(got))
    try:
        want = np.asarray(expected, dtype=np.float64)
        have = np.asarray(got, dtype=np.float64)  # null -> NaN, as in `expected`
    except (TypeError, ValueError):
        return False
    return want.shape == have.shape and bool(np.isclose(want, have, equal_nan=True).all())


def _as_bytes(value: Any) -> Any:
    """Strings as their bytes, whether written as text or `{"b64": ...}` (a `bytes` output
    is always b64 in answers, the log's JSON writes UTF-8 as text)."""
    if isinstance(value, list):
        return [_as_bytes(item) for item in value]
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error:
            return value
    return value


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 80 else f"{text[:77]}..."


def _summary(tally: Tally, target: Target, out: TextIO) -> None:
    where = target.url + (f" (application {target.application})" if target.application else "")
    failed = sum(tally.failed.values())
    print(f"sent {tally.sent} request(s) to {where}: {tally.answered} answered 2xx, {failed} failed", file=out)
    if tally.failed:
        print("  failed: " + ", ".join(f"{status} x{count}" for status, count in sorted(tally.failed.items())),
              file=out)
    print(f"  outputs equal to the logged ones: {tally.equal}, different: {tally.different}, "
          f"not compared: {tally.not_compared} (no logged outputs)", file=out)
    if tally.unfinished:
        print(f"  not compared: {tally.unfinished} request(s) whose last stage was not logged", file=out)
    for reason, count in sorted(tally.skipped.items()):
        print(f"  skipped {count} record(s): {reason}", file=out)


def rate_per_second(text: str) -> float:
    """A rate in (0, MAX_RATE] requests per second (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number of requests per second: {text!r}") from None
    if not (value > 0 and math.isfinite(value) and value <= MAX_RATE):
        raise ValueError(f"must be more than 0 and at most {MAX_RATE:g} requests per second, got {text!r}")
    return value
