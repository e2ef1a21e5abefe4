"""The model runtime sits below the gateway: nothing under runtime/ (nor the model-folder format
it reads, modelfolder/) imports the gateway, so a runtime process loads none of its code."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import modelfolder
import runtime

FORBIDDEN = {
    "runtime": {"gateway"},
    "modelfolder": {"gateway", "runtime"},
}
PACKAGES = {"runtime": pathlib.Path(runtime.__file__).parent,
            "modelfolder": pathlib.Path(modelfolder.__file__).parent}


def _imported(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in one source file, however deeply nested."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_imports_rule_sees_the_forms_python_has(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import os\nif True:\n    import gateway.errors as e\n"
                      "def f():\n    from gateway import manifests\nfrom . import sibling\n")
    assert _imported(source) == [(1, "os"), (3, "gateway.errors"), (5, "gateway")]


def test_runtime_and_modelfolder_sources_import_nothing_above_them() -> None:
    offences: list[str] = []
    for package, folder in PACKAGES.items():
        sources = sorted(folder.rglob("*.py"))
        assert sources, f"no sources found under {folder}"
        for path in sources:
            for line, module in _imported(path):
                if module.split(".")[0] in FORBIDDEN[package]:
                    offences.append(f"{path.relative_to(folder.parent)}:{line} imports {module}")
    assert offences == []


def test_a_runtime_process_loads_no_gateway_module() -> None:
    code = ("import json, sys; import runtime.cli, runtime.server, runtime.local, runtime.invokers; "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert "modelfolder" in loaded
    assert [name for name in loaded if name.split(".")[0] == "gateway"] == []
