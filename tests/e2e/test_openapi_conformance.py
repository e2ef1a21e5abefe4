"""The gateway against its own OpenAPI document: `schemathesis run` (a subprocess, as CI would
run it) fuzzing a real uvicorn serving (a) the example config and (b) a config with every
dtype (tests/e2e/every_dtype), each with real embedded runtimes. Every answer must match the
schema, status codes, content types and headers the document gives it, and no 5xx may be the
gateway's own fault or undocumented (tests/e2e/schemathesis_checks.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.manifests import Config, load_config
from gateway.settings import ApiKey, AuthSettings, Settings
from tests.conftest import logs_under, runtimes_for, serve_app

EVERY_DTYPE = Path(__file__).with_name("every_dtype")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
HOOKS = Path(__file__).with_name("schemathesis_checks.py")

CONFIG = Path(__file__).with_name("schemathesis.toml")  # the checks left out, and why
# Admin routes change the gateway (reloads): never fuzzed.
ADMIN = r"(^|/)admin(/|$)"
# Fuzzed cases per operation, after the examples and the coverage phase's deterministic edge cases:
# a few thousand requests per config, some 15 s.
MAX_EXAMPLES = 5
PHASES = "examples,coverage,fuzzing"
TIME_BUDGET_S = 90  # `--max-time` would not bound it: fuzzing repeats until that time is spent


async def fuzz(url: str, report: Path, *options: str) -> tuple[int, str]:
    """`schemathesis run` against `url`'s own /openapi.json: its exit code and output (killed,
    its output so far shown, if it overruns its time budget)."""
    log = report / "schemathesis.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS), "--config-file", str(CONFIG), "run", f"{url}/openapi.json",
            "--exclude-path-regex", ADMIN, "--phases", PHASES, *options,
            "--max-examples", str(MAX_EXAMPLES), "--seed", "1",
            "--workers", "1", "--generation-database", "none", "--request-timeout", "20",
            "--no-color", "--report", "junit", "--report-junit-path", str(report / "junit.xml"),
            env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
            stdout=output, stderr=asyncio.subprocess.STDOUT, cwd=report)
        try:
            code = await asyncio.wait_for(process.wait(), TIME_BUDGET_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"schemathesis overran its budget:\n{log.read_text()[-20000:]}") from None
    return code, log.read_text()


@pytest.fixture
def every_dtype_config(tmp_path: Path) -> Iterator[Config]:
    with runtimes_for(logs_under(load_config(EVERY_DTYPE), tmp_path / "request-logs")) as config:
        yield config


async def conforms(config: Config, tmp_path: Path, settings: Settings | None = None,
                   *options: str, applications: tuple[str, ...] | None = None) -> None:
    async with serve_app(create_app(settings or Settings(access_log=False), config)) as url:
        code, output = await fuzz(url, tmp_path, *options)
    assert code == 0, output
    selected = re.search(r"Selected: (\d+)/\d+\s+Tested: (\d+)", output)
    assert selected is not None, output
    assert selected.group(1) == selected.group(2), output  # every operation selected was tested
    # Each application's predict route among them.
    for name in applications if applications is not None else tuple(config.applications):
        assert f"POST /gateway/applications/{name}" in (tmp_path / "junit.xml").read_text(), output


async def test_the_example_config_one_with_every_dtype_and_a_keys_document_answer_as_they_say(
        example_config: Config, every_dtype_config: Config, tmp_path: Path) -> None:
    """Three runs side by side (each is mostly the fuzzer's own work, in a process of its own):
    the example config; a config with every dtype; and with API keys, where the document a key
    is given lists its applications and models, each with its security schemes and 401/403, and
    schemathesis calls them with the key, and (ignored_auth) without it."""
    key = ApiKey(name="fuzz", sha256=hashlib.sha256(b"s3cret").hexdigest(),
                 applications=("increment_app", "increment_model"))
    with_keys = Settings(access_log=False, auth=AuthSettings(api_keys=(key,)))
    for name in ("example", "every_dtype", "keys"):
        (tmp_path / name).mkdir()
    await asyncio.gather(conforms(example_config, tmp_path / "example"),
                         conforms(every_dtype_config, tmp_path / "every_dtype"),
                         conforms(example_config, tmp_path / "keys", with_keys, "--header",
                                  "Authorization: Bearer s3cret", applications=("increment_app",)))
