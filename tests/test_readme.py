"""The README's examples, run as written against a real `gateway serve` of the example config.

A fenced block right after a line `<!-- readme-test -->` is a test (its id: the nearest heading):

- ```` ```console ````: each line starting with `$ ` is a command (a line ending in `\\` goes on
  on the next), run with `bash -o pipefail -c` from the checkout root within 30 s, which must
  exit 0, every command of a pipe included (so `| sed -n 1p`, which reads all, not `| head -1`,
  whose early exit kills the writer with SIGPIPE); the
  lines after it, up to the next command, are its expected stdout (each line compared with its
  trailing whitespace stripped; a line `...` stands for any number of lines).
- ```` ```python ````: a script run with the checkout's Python; it must exit 0 (it asserts what
  it shows).

`127.0.0.1:8000` and `localhost:8000` become the live gateway's address; `GATEWAY_URL` is set to
it, `TMPDIR` is the test's own temporary folder (examples write `"${TMPDIR:-/tmp}/..."`) and
`.venv/bin` leads PATH. The gateway serves a copy of `config/` whose request logs are
written under the test's temporary folder (not into the checkout).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CONFIG_DIR, REPO
from tests.e2e.processes import running_gateway

README = REPO / "README.md"
MARKER = "<!-- readme-test -->"
COMMAND_TIMEOUT_S = 30
_FENCE = re.compile(r"^```(\w+)\s*$")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$")
_ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):8000")


@dataclasses.dataclass(frozen=True)
class Example:
    id: str
    language: str
    line: int  # of the opening fence, 1-based
    text: str


def examples(markdown: str) -> list[Example]:
    """Every marked block of `markdown`, with an id from its heading (numbered when several)."""
    found: list[Example] = []
    heading = "top"
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if (title := _HEADING.match(line)) and not line.startswith("#!"):
            heading = re.sub(r"[^a-z0-9]+", "-", title.group(1).lower()).strip("-")
        if line.strip() == MARKER:
            fence = _FENCE.match(lines[index + 1].strip()) if index + 1 < len(lines) else None
            if fence is None:
                raise AssertionError(f"README.md:{index + 1}: {MARKER} is not followed by a fenced block")
            end = next(i for i in range(index + 2, len(lines)) if lines[i].strip() == "```")
            body = "\n".join(_dedent(lines[index + 2:end], lines[index + 1]))
            found.append(Example(heading, fence.group(1), index + 2, body))
            index = end
        elif line.lstrip().startswith("```"):  # skip unmarked blocks: '#' lines in them are not headings
            index = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        index += 1
    counts: dict[str, int] = {}
    named = []
    for example in found:
        counts[example.id] = counts.get(example.id, 0) + 1
        suffix = f"-{counts[example.id]}" if counts[example.id] > 1 else ""
        named.append(dataclasses.replace(example, id=example.id + suffix))
    return named


def _dedent(lines: list[str], fence: str) -> list[str]:
    """A block indented in a list item (its fence indented) loses that indentation."""
    indent = len(fence) - len(fence.lstrip())
    return [line[indent:] if line[:indent].strip() == "" else line for line in lines]


@dataclasses.dataclass
class Step:
    command: str
    expected: list[str]


def steps(text: str) -> list[Step]:
    """The commands of a console block, each with its expected output lines."""
    found: list[Step] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\") and index + 1 < len(lines):
                index += 1
                command = command[:-1] + " " + lines[index]
            found.append(Step(command, []))
        elif found:
            found[-1].expected.append(line.rstrip())
        elif line.strip():
            raise AssertionError(f"output before any command: {line!r}")
        index += 1
    return found


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether `actual` has the `expected` lines, a `...` line standing for any lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[start:]) for start in range(len(actual) + 1))
    return bool(actual) and actual[0] == expected[0] and matches(expected[1:], actual[1:])


def _trimmed(lines: list[str]) -> list[str]:
    while lines and not lines[-1]:
        lines = lines[:-1]
    return lines


README_EXAMPLES = examples(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`gateway serve` of a copy of config/ whose request logs go to a temporary folder."""
    root = tmp_path_factory.mktemp("readme")
    config = root / "config"
    shutil.copytree(CONFIG_DIR, config, ignore=shutil.ignore_patterns(".gateway", "__pycache__"))
    for manifest in (config / "applications").glob("*.yaml"):
        text = manifest.read_text()
        manifest.write_text(text.replace("dir: .gateway/request-logs", f"dir: {root / 'request-logs'}"))
    with running_gateway(config, log=root / "gateway.log") as (_, url):
        yield url


def _environment(url: str) -> dict[str, str]:
    env = dict(os.environ, GATEWAY_URL=url)
    env.pop("GATEWAY_API_KEY", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_readme_has_examples() -> None:
    assert len(README_EXAMPLES) >= 5
    assert {example.language for example in README_EXAMPLES} <= {"console", "python"}


@pytest.mark.parametrize("example", README_EXAMPLES, ids=[example.id for example in README_EXAMPLES])
def test_readme_example(example: Example, gateway_url: str, tmp_path: Path) -> None:
    address = gateway_url.removeprefix("http://")
    env = _environment(gateway_url) | {"TMPDIR": str(tmp_path)}  # examples write "${TMPDIR:-/tmp}/..."
    where = f"README.md:{example.line} ({example.id})"
    if example.language == "python":
        done = subprocess.run([sys.executable, "-c", _ADDRESS.sub(address, example.text)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        assert done.returncode == 0, f"{where}: the script failed:\n{done.stdout}\n{done.stderr}"
        return
    assert example.language == "console", f"{where}: a marked block is console or python"
    for step in steps(example.text):
        command = _ADDRESS.sub(address, step.command)
        done = run_command(command, env)
        assert done.returncode == 0, f"{where}: `{step.command}` exited {done.returncode}:\n{done.stderr}"
        expected = [_ADDRESS.sub(address, line) for line in _trimmed(step.expected)]
        actual = _trimmed([line.rstrip() for line in done.stdout.splitlines()])
        assert matches(expected, actual), (f"{where}: `{step.command}` printed\n" + "\n".join(actual)
                                           + "\nexpected\n" + "\n".join(expected))


def run_command(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One console command, a failure anywhere in its pipe failing it."""
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT_S)


def test_a_failure_anywhere_in_a_pipe_fails_the_command() -> None:
    env = dict(os.environ)
    assert run_command("false | cat", env).returncode == 1
    assert run_command("printf 'a\\nb\\n' | sed -n 1p", env).stdout == "a\n"


@pytest.mark.parametrize(("expected", "actual", "result"), [
    (["a", "b"], ["a", "b"], True),
    (["a", "..."], ["a", "x", "y"], True),
    (["...", "z"], ["a", "z"], True),
    (["...", "z"], ["z", "a"], False),
    (["a", "...", "c"], ["a", "c"], True),
    (["a"], ["a", "b"], False),
    ([], [], True),
])
def test_expected_output_matching(expected: list[str], actual: list[str], result: bool) -> None:
    assert matches(expected, actual) is result


def test_blocks_and_commands_are_read_as_documented() -> None:
    markdown = "\n".join([
        "## Run it", MARKER, "```console", "$ echo a \\", "  b", "a b", "$ true", "```",
        "```sh", "# not a heading", "```", MARKER, "  ```python", "  print(1)", "  ```"])
    found = examples(markdown)
    assert [(e.id, e.language) for e in found] == [("run-it", "console"), ("run-it-2", "python")]
    assert found[1].text == "print(1)"
    assert [(s.command, s.expected) for s in steps(found[0].text)] == [("echo a    b", ["a b"]), ("true", [])]
