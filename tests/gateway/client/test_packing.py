"""`pack_model_folder`: serving.yaml plus exactly what `payload` names, checked before anything is sent."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from gateway.client.packing import PackingError, pack_model_folder

SERVING = """kind: Model
name: "increment_model"
install-command: "pip install -r requirements.txt"
payload:
{payload}
contract:
  name: increment
  inputs:
    number: {{shape: [-1], type: int32}}
  outputs:
    number: {{shape: [-1], type: int32}}
"""


def model_folder(root: Path, payload: list[str]) -> Path:
    folder = root / "increment_model"
    (folder / "src" / "__pycache__").mkdir(parents=True)
    (folder / "src" / "func_main.py").write_text("def increment(number):\n    return {'number': number + 1}\n")
    (folder / "src" / "helpers.py").write_text("")
    (folder / "src" / "__pycache__" / "func_main.cpython-311.pyc").write_bytes(b"\0")
    (folder / "src" / "stale.pyc").write_bytes(b"\0")
    (folder / "requirements.txt").write_text("numpy\n")
    (folder / "notes.md").write_text("not part of the model\n")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "weights").mkdir()
    (folder / "weights" / "a.bin").write_bytes(b"a")
    (folder / "weights" / "b.bin").write_bytes(b"b")
    (folder / "weights" / "c.txt").write_bytes(b"c")
    (folder / "serving.yaml").write_text(SERVING.format(payload="\n".join(f'  - "{p}"' for p in payload)))
    return folder


def members(folder: Path) -> list[tarfile.TarInfo]:
    with pack_model_folder(folder) as packed:
        raw = b"".join(packed.chunks(chunk_bytes=100))
        assert len(raw) == packed.size
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw))) as archive:
        return archive.getmembers()


def names(folder: Path) -> list[str]:
    return [member.name for member in members(folder)]


def test_the_seed_payload_is_serving_yaml_src_and_requirements(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, ["src/", "requirements.txt"])
    assert names(folder) == ["serving.yaml", "requirements.txt", "src", "src/func_main.py", "src/helpers.py"]
    with pack_model_folder(folder) as packed:
        assert packed.model.name == "increment_model"
        assert packed.files == ("serving.yaml", "requirements.txt", "src/func_main.py", "src/helpers.py")


def test_globs_and_recursive_globs(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, ["src/func_main.py", "weights/*.bin"])
    assert names(folder) == ["serving.yaml", "src/func_main.py", "weights/a.bin", "weights/b.bin"]
    (folder / "weights" / "deep").mkdir()
    (folder / "weights" / "deep" / "d.bin").write_bytes(b"d")
    (folder / "serving.yaml").write_text(SERVING.format(payload='  - "src/func_main.py"\n  - "**/*.bin"'))
    assert names(folder) == ["serving.yaml", "src/func_main.py", "weights/a.bin", "weights/b.bin",
                             "weights/deep/d.bin"]


def test_an_entry_named_twice_is_packed_once(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, ["src/", "src/func_main.py", "serving.yaml", "requirements.txt"])
    assert names(folder).count("src/func_main.py") == 1
    assert names(folder).count("serving.yaml") == 1


def test_modes_are_sanitised_and_owners_dropped(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, ["src/", "requirements.txt"])
    (folder / "requirements.txt").chmod(0o600)
    (folder / "src" / "func_main.py").chmod(0o4777)
    by_name = {member.name: member for member in members(folder)}
    assert by_name["requirements.txt"].mode == 0o644
    assert by_name["src/func_main.py"].mode == 0o755
    assert by_name["src"].isdir()
    assert by_name["src"].mode == 0o755
    assert {(m.uid, m.gid, m.uname, m.gname) for m in by_name.values()} == {(0, 0, "", "")}


def test_the_archive_is_the_same_bytes_each_time(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, ["src/", "requirements.txt"])
    with pack_model_folder(folder) as first, pack_model_folder(folder) as second:
        assert b"".join(first.chunks()) == b"".join(second.chunks())


def test_a_link_inside_the_folder_is_packed_as_its_content(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, ["src/", "model.bin", "shared/"])
    (folder / "src" / "weights.bin").symlink_to(folder / "weights" / "a.bin")
    (folder / "model.bin").symlink_to("weights/b.bin")
    (folder / "shared").symlink_to("weights")
    by_name = {member.name: member for member in members(folder)}
    assert by_name["src/weights.bin"].isfile()
    assert by_name["src/weights.bin"].size == 1
    assert by_name["model.bin"].isfile()
    assert by_name["shared"].isdir()
    assert "shared/a.bin" in by_name
    assert not any(member.issym() or member.islnk() for member in by_name.values())


@pytest.mark.parametrize(("entry", "why"), [
    ("../outside.txt", "'../outside.txt' is outside the model folder"),
    ("/etc/hostname", "'/etc/hostname' is outside the model folder"),
    ("src/../../outside.txt", "is outside the model folder"),
    (".", "names the whole folder"),
    ("missing.txt", "'missing.txt' matches no file in"),
    ("data/*.csv", "'data/*.csv' matches no file in"),
    ("requirements.txt/", "names a folder but requirements.txt is not one"),
])
def test_entries_that_escape_or_match_nothing_are_refused(tmp_path: Path, entry: str, why: str) -> None:
    (tmp_path / "outside.txt").write_text("secret\n")
    folder = model_folder(tmp_path, ["src/", entry])
    with pytest.raises(PackingError) as raised:
        pack_model_folder(folder)
    assert str(raised.value).startswith(f"{folder / 'serving.yaml'}: payload: ")
    assert why in str(raised.value)


def test_a_linked_serving_yaml_is_packed_as_its_content(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, ["src/"])
    (folder / "definitions").mkdir()
    (folder / "serving.yaml").rename(folder / "definitions" / "increment.yaml")
    (folder / "serving.yaml").symlink_to("definitions/increment.yaml")
    entry = members(folder)[0]
    assert (entry.name, entry.isfile()) == ("serving.yaml", True)


def test_a_link_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("secret\n")
    folder = model_folder(tmp_path, ["src/"])
    (folder / "src" / "leak.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(PackingError, match=r"payload: src/leak.txt is a link to .*outside.txt, outside the model"):
        pack_model_folder(folder)


def test_a_link_loop_and_a_device_are_refused(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, ["src/"])
    (folder / "src" / "again").symlink_to(folder / "src")
    with pytest.raises(PackingError, match="src/again is a link to a folder that contains it"):
        pack_model_folder(folder)
    (folder / "src" / "again").unlink()
    os.mkfifo(folder / "src" / "pipe")
    with pytest.raises(PackingError, match="src/pipe is not a regular file or a folder"):
        pack_model_folder(folder)


def test_serving_yaml_missing_or_invalid_says_file_line_field(tmp_path: Path) -> None:
    with pytest.raises(PackingError, match=r"serving\.yaml: no such file"):
        pack_model_folder(tmp_path)
    folder = model_folder(tmp_path, ["src/"])
    (folder / "serving.yaml").write_text("kind: Model\nname: increment_model\npayload: [src/]\nworkers: 0\n"
                                         "contract:\n  inputs:\n    x: {shape: [-1], type: int32}\n"
                                         "  outputs:\n    y: {shape: [-1], type: int32}\n")
    with pytest.raises(PackingError, match=r"serving.yaml:4: workers: must be at least 1"):
        pack_model_folder(folder)
    (folder / "serving.yaml").write_text("kind: Model\nname: increment_model\ncontract:\n  inputs:\n"
                                         "    x: {shape: [-1], type: int32}\n  outputs:\n"
                                         "    y: {shape: [-1], type: int32}\n")
    with pytest.raises(PackingError, match="payload: names no files"):
        pack_model_folder(folder)
