"""The README's Hydrosphere walk-through, run as written: its blocks (a line
`<!-- hydrosphere-workflow -->` before each shell block, `<!-- hydrosphere-workflow: PATH -->` before a
file's content, `<!-- hydrosphere-workflow: answer -->` before the curl's answer) become one bash
script, run in a temporary folder against a real `gateway serve` of an empty config directory on
a free loopback port (`127.0.0.1:8000` becomes its address, `GATEWAY_URL` is set to it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import REPO
from tests.e2e.processes import running_gateway

README = REPO / "README.md"
SECTION = "## The Hydrosphere workflow"
MARKER = re.compile(r"^<!-- hydrosphere-workflow(?:: (?P<what>\S+))? -->$")
ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):8000")
END_OF_FILE = "__HYDROSPHERE_WORKFLOW_FILE__"
SCRIPT_TIMEOUT_S = 120


@dataclass(frozen=True)
class Block:
    what: str | None  # None: shell commands; "answer": the last command's output; else a file's path
    text: str


def workflow_blocks(markdown: str) -> list[Block]:
    """The marked blocks of the README's Hydrosphere section, in order."""
    section = markdown.split(f"\n{SECTION}\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    blocks = []
    for index, line in enumerate(lines):
        marker = MARKER.match(line.strip())
        if marker is None:
            continue
        assert lines[index + 1].startswith("```"), f"{SECTION}: {line} is not followed by a fenced block"
        end = next(i for i in range(index + 2, len(lines)) if lines[i].strip() == "```")
        blocks.append(Block(marker.group("what"), "\n".join(lines[index + 2:end]) + "\n"))
    return blocks


def script_of(blocks: list[Block], url: str) -> str:
    """One bash script: the commands as written, each file written where it is named."""
    parts = ["set -euo pipefail"]
    for block in blocks:
        if block.what is None:
            parts.append(ADDRESS.sub(url.removeprefix("http://"), block.text))
        elif block.what != "answer":
            parts.append(f"cat > '{block.what}' <<'{END_OF_FILE}'\n{block.text}{END_OF_FILE}")
    return "\n".join(parts) + "\n"


def test_the_section_follows_the_tutorial() -> None:
    blocks = workflow_blocks(README.read_text(encoding="utf-8"))
    assert [block.what for block in blocks] == [None, None, "src/func_main.py", "serving.yaml", None, None, "answer"]
    commands = "".join(block.text for block in blocks if block.what is None)
    assert "gateway upload\n" in commands
    assert "gateway apply -f - <<EOF\nkind: Application\nname: increment_app\nsingular:\n  model: increment_model:1\n" \
        in commands
    assert "'http://127.0.0.1:8000/gateway/applications/increment_app'" in commands


def test_the_readme_walkthrough_serves_increment_app(tmp_path: Path) -> None:
    blocks = workflow_blocks(README.read_text(encoding="utf-8"))
    config = tmp_path / "my-gateway"
    config.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    with running_gateway(config) as (_, url):
        env = {**os.environ, "GATEWAY_URL": url, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               "TMPDIR": str(tmp_path)}
        env.pop("GATEWAY_ADMIN_TOKEN", None)
        done = subprocess.run(["bash", "-c", script_of(blocks, url)], cwd=work, env=env, capture_output=True,
                              text=True, timeout=SCRIPT_TIMEOUT_S, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        answer = next(block.text for block in blocks if block.what == "answer").strip()
        assert done.stdout.splitlines()[-1] == answer
        assert "model increment_model:1 is " in done.stdout
        assert "application increment_app created" in done.stdout
        models = httpx.get(f"{url}/gateway/models", timeout=10).json()["models"]
        assert [(m["name"], m["version"], m["state"], m["applications"]) for m in models] == [
            ("increment_model", 1, "ready", ["increment_app"])]
    assert sorted(path.relative_to(config).as_posix() for path in (config / "models").rglob("*")
                  if path.is_file() and "__pycache__" not in path.parts) == [
        "models/increment_model/1/requirements.txt", "models/increment_model/1/serving.yaml",
        "models/increment_model/1/src/func_main.py"]
    assert [path.name for path in (config / "applications").iterdir()] == ["increment_app.yaml"]
