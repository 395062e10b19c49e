"""Atomic writes: the target appears only on success, keeps the old file on failure, and gets the
permissions a plain open() would give (not mkstemp's 0600)."""

import os

import pytest

from genie_core.io.atomic import atomic_path


def test_success_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.bin"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_failure_keeps_previous_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_permissions_follow_umask_when_the_writer_recreates_the_file(tmp_path, umask, mode):
    """A writer that replaces the temporary file with its own 0600 one (as safetensors does) still
    leaves a final file with the umask's permissions."""
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "f.bin") as tmp:
            tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, b"x")
            os.close(fd)
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == mode
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
