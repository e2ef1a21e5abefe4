"""TF Serving's REST API under hostile input: `:predict` (`instances`, `inputs`,
`signature_name`), `:classify`, `:regress`, and the GET status and metadata routes, on local
models (embedded runtimes) and TF Serving models."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.harness import Connection, FuzzGateway, Request
from tests.fuzz.oracle import Expect, check
from tests.fuzz.routes import (
    MODELS,
    fuzz_settings,
    json_body,
    post,
    served_name,
    suffix_for,
)
from tests.fuzz.strategies import common_headers, examples_document, predict_document

# The test server's logistic score of a huge feature sum overflows to 0 or 1, as it should.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
PREDICTED = Expect(keys=(frozenset({"predictions"}), frozenset({"outputs"})))
RESULTS = Expect(keys=(frozenset({"results"}),))
VERB_CASES = st.sampled_from(["{}", "{}", "{}", "{}", "upper", "title"])


def verb(method: str, case: str) -> str:
    return method.upper() if case == "upper" else method.title() if case == "title" else method


@fuzz_settings(300)
@given(data=st.data())
def test_predict(gateway: FuzzGateway, connection: Connection, data: st.DataObject) -> None:
    valid = data.draw(st.booleans(), "valid")
    segment, name = data.draw(served_name(MODELS, valid), "model")
    suffix = data.draw(suffix_for(name, valid), "version or label")
    fields = MODELS[name][0] if name else MODELS["toy"][0]
    body, headers = data.draw(json_body(predict_document(fields, valid), valid), "request")
    path = f"/v1/models/{segment}{suffix}:{verb('predict', data.draw(VERB_CASES, 'case'))}"
    check(gateway, connection, post(path, body, headers), PREDICTED)


@fuzz_settings(150)
@given(data=st.data())
def test_classify_and_regress(gateway: FuzzGateway, connection: Connection, data: st.DataObject) -> None:
    valid = data.draw(st.booleans(), "valid")
    segment, name = data.draw(served_name(MODELS, valid), "model")
    suffix = data.draw(suffix_for(name, valid), "version or label")
    method = data.draw(st.sampled_from(["classify", "regress"]), "method")
    body, headers = data.draw(json_body(examples_document(valid), valid), "request")
    path = f"/v1/models/{segment}{suffix}:{verb(method, data.draw(VERB_CASES, 'case'))}"
    check(gateway, connection, post(path, body, headers), RESULTS)


@fuzz_settings(120)
@given(data=st.data())
def test_status_and_metadata(gateway: FuzzGateway, connection: Connection, data: st.DataObject) -> None:
    valid = data.draw(st.booleans(), "valid")
    segment, name = data.draw(served_name(MODELS, valid) if valid else st.one_of(served_name(MODELS),
                                                                                 st.just(("", None))), "model")
    suffix = data.draw(suffix_for(name, valid), "version or label")
    tails = ["", "/metadata"] if valid else ["", "/metadata", "/METADATA", "/metadata/x", ":predict", "/"]
    tail = data.draw(st.sampled_from(tails), "tail")
    methods = ["GET", "HEAD"] if valid else ["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"]
    method = data.draw(st.sampled_from(methods), "method")
    headers = data.draw(common_headers(benign=valid or None), "headers")
    path = f"/v1/models/{segment}{suffix}{tail}" if segment else f"/v1/models{suffix}{tail}"
    body = None if method in ("GET", "HEAD") else data.draw(st.binary(max_size=30), "body")
    check(gateway, connection, Request(method, path, tuple(headers), body))


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/gateway/models/toy/versions/{}", b'{"input_1": [[1, 2]]}'),
    ("POST", "/v1/models/toy/versions/{}:predict", b'{"instances": [[1, 2]]}'),
    ("POST", "/v1/models/Toy/versions/{}:classify", b'{"examples": [{"x": [1.0]}]}'),
    ("GET", "/v1/models/toy/versions/{}", None),
    ("GET", "/v1/models/toy/versions/{}/metadata", None),
])
def test_versions_beyond_int64_are_not_found(gateway: FuzzGateway, connection: Connection, method: str,
                                             path: str, body: bytes | None) -> None:
    """TF Serving's versions are int64: a larger one names no version (it answered 500 and reset)."""
    for version in ("9223372036854775807", "9223372036854775808", "99999999999999999999"):
        answer = check(gateway, connection, Request(method, path.format(version), (), body))
        assert answer.status == 404, (version, answer.body)
