"""tensorcodecs is pure: no web framework, RPC, network or event-loop imports."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import tensorcodecs

FORBIDDEN = ("starlette", "grpc", "httpx", "uvicorn", "asyncio", "socket", "ssl", "http", "urllib",
             "requests", "aiohttp", "gateway", "runtime", "yaml", "subprocess", "threading")
# Loaded indirectly by the standard library, numpy or protobuf; the source rule still bans them.
INDIRECT_OK = {"http", "urllib", "threading", "subprocess"}
PACKAGE = pathlib.Path(tensorcodecs.__file__).parent


def _top(name: str) -> str:
    return name.split(".")[0]


def test_source_imports_nothing_forbidden() -> None:
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert _top(name) not in FORBIDDEN, f"{path.name} imports {name}"


def test_importing_the_package_loads_nothing_forbidden() -> None:
    code = (
        "import json, sys; import tensorcodecs, tensorcodecs.json_codec, tensorcodecs.tensor_proto; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {_top(name) for name in json.loads(out.stdout)}
    assert not loaded & (set(FORBIDDEN) - INDIRECT_OK)
