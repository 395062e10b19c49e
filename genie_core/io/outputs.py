"""Checks every command makes before it writes (torch-free): an output never resolves to one of the
command's inputs or to a video's ground-truth sidecar (same path, hard link or symlink), and its
folder can be written. ``describe_os_error`` turns an OSError into the one-line message the CLI
prints."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterable

from genie_core.errors import OutputError

SIDECAR_SUFFIX = ".json"  # clip.mp4's ground-truth actions live in clip.json


def sidecar_of(video: str | os.PathLike) -> Path:
    """The JSON sidecar path beside a video (whether or not it exists)."""
    return Path(video).with_suffix(SIDECAR_SUFFIX)


def describe_os_error(err: OSError, path: str | os.PathLike | None = None) -> str:
    """``PATH: reason`` for an OSError, naming ``path`` when the error does not."""
    name = path if path is not None else err.filename
    reason = err.strerror or type(err).__name__
    if err.errno == errno.ENOTDIR:
        reason = "a part of the path is a file, not a folder"
    return f"{name}: {reason}" if name is not None else reason


class InputGuard:
    """The files a command reads, and the sidecars of its videos: ``check(output)`` refuses an
    output that is one of them by path (symlinks resolved) or by inode (hard links).

    Sidecar paths are protected even when no sidecar exists yet: a file written there would be
    read as ground truth later."""

    def __init__(self, inputs: Iterable[str | os.PathLike | None] = (),
                 videos: Iterable[str | os.PathLike] = ()) -> None:
        self._paths: dict[str, str] = {}
        self._inodes: dict[tuple[int, int], str] = {}
        for video in videos:
            self._add(sidecar_of(video), f"the ground-truth sidecar of {video}")
        for path in inputs:
            if path is not None:
                self._add(Path(path), f"the input {path}")

    def _add(self, path: Path, what: str) -> None:
        self._paths[os.path.realpath(path)] = what
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return
        self._inodes[(st.st_dev, st.st_ino)] = what

    def check(self, output: str | os.PathLike | None) -> None:
        if output is None:
            return
        what = self._paths.get(os.path.realpath(output))
        if what is None:
            try:
                st = os.stat(output)
                what = self._inodes.get((st.st_dev, st.st_ino))
            except (OSError, ValueError):
                pass
        if what is not None:
            raise OutputError(f"output {output} is {what}; not writing there (choose another output)")


def check_writable(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Refuse early an output that cannot be written: an existing folder where a file is asked
    for (or a file where a folder is), a path running through a file, a dangling symlink, or a
    folder without write permission (read-only mounts included)."""
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise OutputError(f"output folder {path} is a file")
        probe = path
    else:
        if path.is_dir():
            raise OutputError(f"output {path} is a folder, expected a file")
        probe = path.parent
    while not probe.exists():
        if probe.is_symlink():
            raise OutputError(f"cannot write {path}: {probe} is a dangling symlink")
        if probe == probe.parent:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"cannot write {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: {probe} is not writable")


def check_outputs(outputs: Iterable[str | os.PathLike | None],
                  inputs: Iterable[str | os.PathLike | None] = (),
                  videos: Iterable[str | os.PathLike] = ()) -> None:
    """``check_writable`` and ``InputGuard.check`` for each output file, and no two outputs alike."""
    guard = InputGuard(inputs, videos)
    seen: dict[str, Path] = {}
    for out in outputs:
        if out is None:
            continue
        out = Path(out)
        guard.check(out)
        check_writable(out)
        real = os.path.realpath(out)
        if real in seen:
            raise OutputError(f"two outputs are the same file: {seen[real]} and {out}")
        seen[real] = out
