"""The frame cache's folders on disk: an index checked against itself and its frame file before
it is trusted, removal that never follows a symlink, and clean-up of stale caches and of the
build folders a killed build leaves. Torch-free; ``genie_core.training.data`` builds and reads the cache."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

CACHE_VERSION = 1


def is_int(value: object, low: int = 0) -> bool:
    """A plain int (not a bool) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


class DamagedCache(Exception):
    """A cache folder whose index or frame file is unreadable or inconsistent (rebuilt)."""


def read_index(root: Path, resolution: tuple[int, int] | None) -> dict:
    """``root/index.json``, checked against itself and the size of ``root/frames.u8``."""
    if root.is_symlink():
        raise DamagedCache("a symlink")
    try:
        index = json.loads((root / "index.json").read_text())
        res = tuple(index["resolution"])
        if index["version"] != CACHE_VERSION or len(res) != 2 or not all(is_int(n, 1) for n in res):
            raise ValueError("bad version or resolution")
        if resolution is not None and res != tuple(resolution):
            raise ValueError(f"resolution {res} instead of {tuple(resolution)}")
        offset = 0
        for v in index["videos"]:
            actions = v["actions"]
            if not (isinstance(v["path"], str) and v["offset"] == offset and is_int(v["num_frames"], 1)):
                raise ValueError(f"bad entry for {v.get('path')!r}")
            if actions is not None and not (isinstance(actions, list) and len(actions) == v["num_frames"]
                                            and all(is_int(a, -1) for a in actions)):
                raise ValueError(f"bad actions for {v['path']!r}")
            offset += v["num_frames"]
        if not index["videos"] or index["total_frames"] != offset:
            raise ValueError("frame count does not add up")
        if not all(isinstance(x, list) and len(x) == 2 for x in index["skipped"]):
            raise ValueError("bad list of skipped files")
        frames = root / "frames.u8"
        expected = offset * res[0] * res[1] * 3
        if frames.is_symlink() or not frames.is_file() or frames.stat().st_size != expected:
            raise ValueError(f"frames.u8 is not {expected} bytes (truncated or missing)")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DamagedCache(f"index.json: {detail}" if isinstance(err, json.JSONDecodeError) else detail) from None
    return index


def remove_entry(path: Path) -> None:
    """Delete a cache entry without following symlinks (a link is removed, never its target)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


# A build folder of a process this machine no longer runs, or (for names without a process id)
# untouched for this long, was left by a killed build.
_ABANDONED_AFTER_S = 24 * 3600


def remove_abandoned_builds(root: Path) -> None:
    """``.build-<key>-<pid>-*`` folders whose builder is gone (killed mid-build)."""
    for tmp in root.glob(".build-*"):
        parts = tmp.name.split("-")
        if len(parts) >= 4 and parts[2].isdigit():
            alive = process_alive(int(parts[2]))
        else:
            try:
                newest = max([tmp.lstat().st_mtime, *(f.lstat().st_mtime for f in tmp.iterdir())])
            except OSError:
                continue
            alive = time.time() - newest < _ABANDONED_AFTER_S
        if not alive:
            remove_entry(tmp)


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists (another user's) or cannot tell: leave it
    return True


def remove_stale(root: Path, keep: str, resolution: tuple[int, int]) -> None:
    """Older caches of the same folder at the same resolution (the files changed since)."""
    for other in root.iterdir():
        if other.name == keep or other.name.startswith(".") or other.is_symlink():
            continue
        try:
            index = json.loads((other / "index.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(index, dict) and tuple(index.get("resolution", ())) == tuple(resolution):
            shutil.rmtree(other, ignore_errors=True)
