"""Uploaded model archives: plain files and folders only, bounded, modes the gateway's own."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import BadRequest, PayloadTooLarge
from gateway.store.archive import unpack_model_archive

SERVING = b"kind: Model\nname: m\ncontract:\n  inputs:\n    x: {shape: [-1], type: int32}\n"
LIMIT = 1 << 20


def entry(name: str, data: bytes = b"", mode: int = 0o644, kind: bytes = tarfile.REGTYPE,
          linkname: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname, info.uid, info.uname = kind, mode, linkname, 4242, "someone"
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return add


def archive(path: Path, *entries: Callable[[tarfile.TarFile], None]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for add in entries:
            add(tar)
    return path


def unpack(tmp_path: Path, *entries: Callable[[tarfile.TarFile], None], max_bytes: int = LIMIT,
           max_members: int = 100) -> Path:
    destination = tmp_path / "out"
    unpack_model_archive(archive(tmp_path / "a.tar.gz", *entries), destination, max_bytes, max_members)
    return destination


def test_a_model_folder_is_unpacked_with_the_gateways_modes(tmp_path: Path) -> None:
    out = unpack(tmp_path, entry("./", kind=tarfile.DIRTYPE, mode=0o700),
                 entry("./serving.yaml", SERVING, mode=0o666),
                 entry("src", kind=tarfile.DIRTYPE, mode=0o777),
                 entry("src/func_main.py", b"def predict(x):\n    return x\n", mode=0o4777),
                 entry("bin/run.sh", b"#!/bin/sh\n", mode=0o700),  # its folder has no entry
                 entry("data/weights.bin", b"\0" * 10, mode=0o400))
    assert (out / "serving.yaml").read_bytes() == SERVING
    modes = {str(path.relative_to(out)): stat.S_IMODE(path.stat().st_mode) for path in out.rglob("*")}
    assert modes == {"serving.yaml": 0o644, "src": 0o755, "src/func_main.py": 0o755, "bin": 0o755,
                     "bin/run.sh": 0o755, "data": 0o755, "data/weights.bin": 0o644}
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert (out / "src" / "func_main.py").stat().st_uid == os.getuid()  # the archive's owner is ignored


@pytest.mark.parametrize(("bad", "says"), [
    (entry("/etc/evil", b"x"), "'/etc/evil' has an absolute path"),
    (entry("../evil", b"x"), "'../evil' goes up with '..'"),
    (entry("src/../../evil", b"x"), "goes up with '..'"),
    (entry("link", kind=tarfile.SYMTYPE, linkname="/etc/passwd"), "'link' is a symbolic link (to '/etc/passwd')"),
    (entry("inside", kind=tarfile.SYMTYPE, linkname="serving.yaml"), "'inside' is a symbolic link"),
    (entry("hard", kind=tarfile.LNKTYPE, linkname="serving.yaml"), "'hard' is a hard link (to 'serving.yaml')"),
    (entry("dev", kind=tarfile.CHRTYPE), "'dev' is a device"),
    (entry("disk", kind=tarfile.BLKTYPE), "'disk' is a device"),
    (entry("pipe", kind=tarfile.FIFOTYPE), "'pipe' is a FIFO"),
])
def test_anything_but_plain_files_and_folders_inside_is_refused_by_name(
        tmp_path: Path, bad: Callable[[tarfile.TarFile], None], says: str) -> None:
    with pytest.raises(BadRequest) as caught:
        unpack(tmp_path, entry("serving.yaml", SERVING), bad)
    assert says in caught.value.message
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "out" / "link").exists()
    assert not (tmp_path / "out" / "hard").exists()


def test_serving_yaml_must_be_at_the_root(tmp_path: Path) -> None:
    with pytest.raises(BadRequest) as caught:
        unpack(tmp_path, entry("increment_model/serving.yaml", SERVING))
    assert caught.value.message == ("the archive has no serving.yaml at its root (found increment_model/serving.yaml: "
                                    "pack the model folder's contents, not the folder itself)")


def test_an_archive_unpacking_beyond_its_bound_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PayloadTooLarge) as caught:  # declared sizes add up beyond the bound
        unpack(tmp_path, entry("serving.yaml", SERVING), entry("a", b"\0" * 600), entry("b", b"\0" * 600),
               max_bytes=1000)
    assert "unpacks to more than 1000 bytes (at entry 'b')" in caught.value.message
    assert not (tmp_path / "out" / "b").exists()
    (tmp_path / "many").mkdir()
    with pytest.raises(PayloadTooLarge) as caught:
        unpack(tmp_path / "many", *(entry(f"f{n}") for n in range(11)), max_members=10)
    assert caught.value.message == "the archive holds more than 10 entries"


def test_a_bomb_in_a_header_is_cut_off_while_decompressing(tmp_path: Path) -> None:
    # A PAX header is read whole by tarfile: 20 MB of it compresses to ~20 kB.
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("serving.yaml")
        info.pax_headers = {"comment": "x" * 20_000_000}
        info.size = len(SERVING)
        tar.addfile(info, io.BytesIO(SERVING))
    assert path.stat().st_size < 100_000
    with pytest.raises(PayloadTooLarge) as caught:
        unpack_model_archive(path, tmp_path / "out", max_bytes=1000)
    assert "decompresses to more than" in caught.value.message


@pytest.mark.parametrize(("body", "says"), [
    (b"", "not a gzip-compressed tar archive"),
    (b"PK\x03\x04 a zip file", "not a gzip-compressed tar archive"),
    (gzip.compress(b"just some text, not a tar" * 40, mtime=0), "not a tar archive once decompressed"),
    (b"\x1f\x8b\x08\x00garbage-after-the-magic" * 3, "gzip"),
])
def test_a_body_that_is_not_a_gzip_tar_is_a_clear_400(tmp_path: Path, body: bytes, says: str) -> None:
    path = tmp_path / "body"
    path.write_bytes(body)
    with pytest.raises(BadRequest) as caught:
        unpack_model_archive(path, tmp_path / "out", LIMIT)
    assert says in caught.value.message


def test_a_truncated_archive_is_a_clear_400(tmp_path: Path) -> None:
    whole = archive(tmp_path / "a.tar.gz", entry("serving.yaml", SERVING),
                    entry("big", os.urandom(50_000))).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BadRequest) as caught:
        unpack_model_archive(cut, tmp_path / "out", LIMIT)
    assert "truncated" in caught.value.message or "corrupt" in caught.value.message
