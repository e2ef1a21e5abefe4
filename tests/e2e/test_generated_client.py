"""A client generated from the live document by openapi-python-client, as an app developer
makes one, calling increment_app and scaler_app on a real uvicorn with the example config's real
runtimes; and the generator taking the whole document without a warning (`--fail-on-warning`)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openapi_python_client.strings import snake_case

from gateway.app import create_app
from gateway.manifests import Config
from gateway.settings import Settings
from tests.conftest import serve_app

BIN = Path(sys.executable).parent
PACKAGE = "gateway_api_client"
# What the client script runs: (application, body, answer).
CALLS = [
    ("increment_app", {"number": [1]}, {"number": [2]}),
    ("scaler_app", {"features": [[1, 10, 100], [3, 15, 150]], "unit": "cm"},
     {"scaled": [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], "rows": 2, "unit": "cm"}),
]
# The script a developer would write, given the generated names of each call's operation.
SCRIPT = '''
import json
import sys
import typing

from {package} import Client

from {package}.api.{tag} import {operation} as operation

with Client(base_url=sys.argv[1], raise_on_unexpected_status=True) as client:
    # The JSON body's model (an operation taking raw tensors too takes `Model | File`).
    hint = typing.get_type_hints(operation.sync)["body"]
    model = next(kind for kind in typing.get_args(hint) or (hint,) if hasattr(kind, "from_dict"))
    body = model.from_dict(json.loads(sys.argv[2]))
    answer = operation.sync_detailed(client=client, body=body)
    print(json.dumps({{"status": int(answer.status_code), "type": type(answer.parsed).__name__,
                      "body": answer.parsed.to_dict()}}))
'''


async def run(*command: str, cwd: Path, timeout: float = 60) -> str:
    """`command`'s output; fails with it unless it exits 0."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})  # the generator runs ruff
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()  # not left running after the test
        await process.wait()
        raise
    text = output.decode("utf-8", "replace")
    assert process.returncode == 0, f"{' '.join(command)} exited {process.returncode}:\n{text}"
    return text


def operation_of(document: dict[str, Any], path: str) -> tuple[str, str]:
    """The generated module's package and name for `POST path`: `api/<tag>/<operationId>.py`."""
    operation = document["paths"][path]["post"]
    tags = operation.get("tags") or ["default"]
    return snake_case(tags[0]), snake_case(operation["operationId"])


async def generate(url: str, document_path: str, folder: Path, *options: str, settings: str = "") -> dict[str, Any]:
    """The client package generated in `folder` from the gateway's document at `document_path`
    (saved as a user would), with the generator's `settings` (YAML lines); the document."""
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.get(document_path)
    assert answer.status_code == 200
    (folder / "openapi.json").write_bytes(answer.content)
    (folder / "generator.yaml").write_text(f"package_name_override: {PACKAGE}\n{settings}")
    await run(str(BIN / "openapi-python-client"), "generate", "--path", "openapi.json", "--output-path", PACKAGE,
              "--meta", "none", "--config", "generator.yaml", *options, cwd=folder)
    document: dict[str, Any] = answer.json()
    return document


DOCUMENTS = pytest.mark.parametrize("document_path", ["/openapi.json", "/openapi-3.0.json"])


@DOCUMENTS
async def test_a_generated_client_calls_the_applications(example_config: Config, tmp_path: Path,
                                                         document_path: str) -> None:
    async with serve_app(create_app(Settings(access_log=False), example_config)) as url:
        document = await generate(url, document_path, tmp_path)
        for application, body, expected in CALLS:
            tag, operation = operation_of(document, f"/gateway/applications/{application}")
            script = tmp_path / f"call_{application}.py"
            script.write_text(SCRIPT.format(package=PACKAGE, tag=tag, operation=operation))
            output = await run(sys.executable, str(script), url, orjson.dumps(body).decode(), cwd=tmp_path)
            called = orjson.loads(output.strip().splitlines()[-1])
            assert called["status"] == 200, called
            assert "Error" not in called["type"], called  # parsed as the answer's model, not an error's
            assert called["body"] == expected


@DOCUMENTS
async def test_the_generator_takes_the_whole_document_without_a_warning(example_config: Config, tmp_path: Path,
                                                                        document_path: str) -> None:
    async with serve_app(create_app(Settings(access_log=False), example_config)) as url:
        # The generator types no application/yaml answer (/openapi.yaml's): its own setting takes it as text.
        await generate(url, document_path, tmp_path, "--fail-on-warning",
                       settings="content_type_overrides:\n  application/yaml: text/plain\n")
