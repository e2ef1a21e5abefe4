"""API keys, admin tokens, TLS on the listener and TLS/mTLS to backends."""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from gateway.app import create_app
from gateway.manifests import Config, load_config
from gateway.settings import ApiKey, AuthSettings, Settings
from tests.certs import make_certificates
from tests.conftest import CONFIG_DIR, serve_app
from tests.e2e.processes import running_gateway
from tests.tfserving_server import FakeTFServing


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


AUTH = AuthSettings(
    api_keys=(ApiKey("increment-team", sha("inc-key"), ("increment_app", "increment_model")),
              ApiKey("ops", sha("all-key"))),
    admin_token_sha256=(sha("admin-token"),),
)


@pytest.fixture
async def client(example_config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async with (serve_app(create_app(Settings(access_log=False, auth=AUTH), example_config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        yield client


INCREMENT = "/gateway/applications/increment_app"


async def test_no_key_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post(INCREMENT, json={"number": [1]})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthenticated"
    tf = await client.post("/v1/models/increment_model:predict", json={"instances": [1]})
    assert tf.status_code == 401
    assert isinstance(tf.json()["error"], str)


@pytest.mark.parametrize("headers", [{"authorization": "Bearer inc-key"}, {"x-api-key": "inc-key"},
                                     {"authorization": "Bearer all-key"},
                                     {"authorization": "Bearer admin-token", "x-api-key": "inc-key"}])
async def test_a_valid_key_is_served(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.post(INCREMENT, json={"number": [1]}, headers=headers)
    assert response.json() == {"number": [2]}


async def test_unknown_key_is_401_and_not_echoed(client: httpx.AsyncClient) -> None:
    response = await client.post(INCREMENT, json={"number": [1]}, headers={"x-api-key": "guess-123"})
    assert response.status_code == 401
    assert "guess-123" not in response.text


async def test_a_key_may_call_only_its_applications(client: httpx.AsyncClient) -> None:
    headers = {"authorization": "Bearer inc-key"}
    response = await client.post("/gateway/applications/scaler_app", headers=headers,
                                 json={"features": [[1, 2, 3]], "unit": "cm"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    tf = await client.get("/v1/models/scaler_model", headers=headers)
    assert tf.status_code == 403
    assert (await client.post("/v1/models/increment_model:predict", json={"instances": [1]},
                              headers=headers)).status_code == 200


async def test_health_and_metrics_stay_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).status_code == 200
    assert (await client.get("/health/ready")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200


async def test_admin_routes_need_the_admin_token(client: httpx.AsyncClient) -> None:
    path = "/gateway/admin/models/increment_model/reload-config"
    body: dict[str, object] = {"model_config_list": {"config": []}}
    refused = await client.post(path, json=body, headers={"authorization": "Bearer all-key"})
    assert refused.status_code == 401
    answer = await client.post(path, json=body, headers={"authorization": "Bearer admin-token"})
    assert answer.status_code != 401


async def test_tls_and_mutual_tls_to_a_backend(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    server = FakeTFServing()
    credentials = grpc.ssl_server_credentials(
        [(certs.server_key.read_bytes(), certs.server_cert.read_bytes())],
        root_certificates=certs.ca.read_bytes(), require_client_auth=True)
    await server.start(credentials)
    config_dir = tmp_path / "config"
    (config_dir / "models").mkdir(parents=True)
    (config_dir / "models" / "toy.yaml").write_text(
        f"kind: Model\nname: toy\nbackend:\n  protocol: tensorflow-serving\n  target: {server.target}\n"
        f"  model_name: Toy_double\n"
        f"  tls: {{ca: {certs.ca}, cert: {certs.client_cert}, key: {certs.client_key}}}\n")
    (config_dir / "models" / "plain.yaml").write_text(
        f"kind: Model\nname: plain\nbackend:\n  protocol: tensorflow-serving\n  target: {server.target}\n"
        f"  model_name: Toy_double\n  tls: {{ca: {certs.ca}}}\n")
    try:
        async with (serve_app(create_app(Settings(access_log=False), load_config(config_dir))) as url,
                    httpx.AsyncClient(base_url=url, timeout=10) as client):
            ok = await client.post("/v1/models/toy:predict", json={"instances": [[2, 3]]})
            assert ok.json() == {"predictions": [[6.0]]}
            refused = await client.post("/v1/models/plain:predict", json={"instances": [[2, 3]]})
            assert refused.status_code == 503  # the server wants a client certificate
    finally:
        await server.stop()


async def test_a_backend_model_name_does_not_open_the_gateway_model_behind_it(tmp_path: Path) -> None:
    """`/v1/models/<the backend's model_name>` resolves to the gateway model fronting it: a key
    must be allowed that gateway model, not only the name it asked."""
    server = FakeTFServing()
    await server.start()
    config_dir = tmp_path / "config"
    (config_dir / "models").mkdir(parents=True)
    (config_dir / "models" / "front.yaml").write_text(
        f"kind: Model\nname: front\nbackend:\n  protocol: tensorflow-serving\n  target: {server.target}\n"
        f"  model_name: Toy_double\n")
    auth = AuthSettings(api_keys=(ApiKey("asks-by-backend-name", sha("backend-key"), ("Toy_double",)),
                                  ApiKey("front-team", sha("front-key"), ("front", "Toy_double"))))
    try:
        async with (serve_app(create_app(Settings(access_log=False, auth=auth), load_config(config_dir))) as url,
                    httpx.AsyncClient(base_url=url, timeout=10) as client):
            body = {"instances": [[2, 3]]}
            refused = await client.post("/v1/models/Toy_double:predict", json=body,
                                        headers={"authorization": "Bearer backend-key"})
            assert refused.status_code == 403
            assert "front" in refused.json()["error"]
            served = await client.post("/v1/models/Toy_double:predict", json=body,
                                       headers={"authorization": "Bearer front-key"})
            assert served.json() == {"predictions": [[6.0]]}
    finally:
        await server.stop()


def test_https_listener(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    env = dict(os.environ, GATEWAY_TLS_CERTFILE=str(certs.server_cert),
               GATEWAY_TLS_KEYFILE=str(certs.server_key))
    trust = ssl.create_default_context(cafile=str(certs.ca))
    with running_gateway(CONFIG_DIR, env=env, scheme="https", verify=trust) as (_, url):
        assert url.startswith("https://")
        response = httpx.post(f"{url}{INCREMENT}", json={"number": [1]}, verify=trust, timeout=10)
        assert response.json() == {"number": [2]}
