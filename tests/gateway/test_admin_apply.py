"""POST /gateway/admin/apply and the DELETE routes through a real uvicorn gateway with real
runtimes: applied manifests serve, survive a restart, and go again."""

from __future__ import annotations

from pathlib import Path

import httpx

from gateway.app import create_app
from gateway.manifests import load_config
from gateway.settings import Settings
from tests.conftest import runtimes_for, serve_app, write_app, write_model

FN = "def predict(x):\n    return x + 1\n"
APP = "kind: Application\nname: web\nsingular:\n  model: m:1\n"
REMOTE = ("kind: Model\nname: tf\nversion: 3\nwarmup: junk.warmup\nbackend:\n  protocol: tensorflow-serving\n"
          "  target: 127.0.0.1:9\ncontract:\n  inputs:\n    x: {type: int32, shape: [-1]}\n"
          "  outputs:\n    y: {type: int32, shape: [-1]}\n")


async def test_apply_serves_survives_a_restart_and_delete_removes(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write_model(root, "m/1", "m", FN)
    write_app(root, "keep", "m:1")
    settings = Settings(config_dir=root, access_log=False, drain_timeout_s=0.1)
    with runtimes_for(load_config(root)) as config:
        async with (serve_app(create_app(settings, config)) as url,
                    httpx.AsyncClient(base_url=url, timeout=30) as client):
            dry = await client.post("/gateway/admin/apply?dry_run=true", json={"file": "web.yaml", "text": APP})
            assert dry.status_code == 200, dry.text
            assert dry.json()["applied"] is False
            assert dry.json()["changes"] == ["application web: added"]
            assert (await client.post("/gateway/applications/web", json={"x": [1]})).status_code == 404

            bad = await client.post("/gateway/admin/apply", json={"file": "web.yaml", "text": APP.replace(
                "m:1", "m:9")})
            assert bad.status_code == 422
            assert bad.json()["error"] == {"code": "invalid_manifest",
                                           "message": "web.yaml:4: model m has no version 9 (defined: 1)"}
            for body in ({"file": "web.yaml"}, {"text": APP, "files": "x"}, [APP], {"text": 1}):
                refused = await client.post("/gateway/admin/apply", json=body)
                assert refused.status_code == 400, body
                assert refused.json()["error"]["code"] == "bad_request"
            maybe = await client.post("/gateway/admin/apply?dry_run=maybe", json={"text": APP})
            assert maybe.status_code == 400
            assert maybe.json()["error"]["field"] == "dry_run"
            nameless = await client.post("/gateway/admin/apply", json={"text": "kind: Nope\n"})
            assert nameless.json()["error"]["message"].startswith("<request>:1: kind:")

            (root / "models" / "junk.warmup").write_bytes(b"not a TFRecord")  # relative to models/
            refused = await client.post("/gateway/admin/apply", json={"file": "tf.yaml", "text": REMOTE})
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["code"] == "reload_refused"
            assert "model tf:3 is not served" in refused.json()["error"]["message"]
            assert not (root / "models" / "tf-3.yaml").exists()  # reverted

            applied = await client.post("/gateway/admin/apply", json={"file": "web.yaml", "text": APP})
            assert applied.status_code == 200, applied.text
            assert applied.json()["documents"] == [{"kind": "Application", "name": "web", "action": "created"}]
            assert applied.json()["applied"] is True
            answer = await client.post("/gateway/applications/web", json={"x": [1]})
            assert answer.json() == {"y": [2]}

    with runtimes_for(load_config(root)) as config:  # a restart on the same directory
        async with (serve_app(create_app(settings, config)) as url,
                    httpx.AsyncClient(base_url=url, timeout=30) as client):
            assert (await client.post("/gateway/applications/web", json={"x": [2]})).json() == {"y": [3]}
            in_use = await client.delete("/gateway/admin/models/m/versions/1")
            assert in_use.status_code == 409
            assert "keep, web" in in_use.json()["error"]["message"]
            assert (await client.delete("/gateway/admin/applications/nope")).status_code == 404
            for version in ("%C2%B2", "%E2%91%A0", "1x"):  # ² and ①: digits to str.isdigit, not to int()
                odd = await client.delete(f"/gateway/admin/models/m/versions/{version}")
                assert odd.status_code == 400, odd.text
                assert odd.json()["error"]["field"] == "version"
            deleted = await client.delete("/gateway/admin/applications/web")
            assert deleted.status_code == 200, deleted.text
            assert deleted.json() == {"deleted": "application", "name": "web"}
            assert (await client.post("/gateway/applications/web", json={"x": [1]})).status_code == 404
            assert (await client.post("/gateway/applications/keep", json={"x": [1]})).json() == {"y": [2]}
    assert not (root / "applications" / "web.yaml").exists()
