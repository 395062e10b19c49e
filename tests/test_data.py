"""Training data (genie_core.training.data): frame cache built once and reused, rebuilt on change, exact
frames, action alignment (actions[t] takes frame t to t+1), deterministic split, corrupt files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genie_core.errors import GenieError
from genie_core.training.data import CACHE_DIRNAME, ClipSet, FrameCache, load_dataset, split_videos


def write_gif(path: Path, frames: np.ndarray) -> None:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=66, loop=0)


def numbered_clip(index: int, frames: int, size: int = 8) -> np.ndarray:
    """Frame t of video i is a flat grey level 10*t + 100*i: its value tells which frame it is.
    A flat 2-colour GIF keeps the exact level, so the cache can be checked frame by frame."""
    clip = np.zeros((frames, size, size, 3), np.uint8)
    for t in range(frames):
        clip[t] = (10 * t + 100 * index) % 256
    return clip


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    (root / "nested" / "deeper").mkdir(parents=True)
    for i, (sub, n) in enumerate([(".", 6), ("nested", 8), ("nested/deeper", 5)]):
        write_gif(root / sub / f"v{i}.gif", numbered_clip(i, n))
        actions = [100 * i + t for t in range(n)]  # action at frame t encodes (video, t)
        (root / sub / f"v{i}.json").write_text(json.dumps({"actions": [0] * n, "actions_effective": actions}))
    return root


def silent(msg: str) -> None:
    pass


def test_cache_holds_every_frame_and_is_reused(folder):
    cache = FrameCache.open(folder, (8, 8), warn=silent)
    assert [v.path for v in cache.videos] == ["nested/deeper/v2.gif", "nested/v1.gif", "v0.gif"]
    assert cache.frames.shape == (5 + 8 + 6, 8, 8, 3) and cache.frames.dtype == np.uint8
    for v in cache.videos:
        i = int(v.path[-5])
        got = np.asarray(cache.frames[v.offset:v.offset + v.num_frames])
        np.testing.assert_array_equal(got, numbered_clip(i, v.num_frames))
        assert v.action_key == "actions_effective"  # preferred over raw actions
    root = cache.root
    mtime = (root / "frames.u8").stat().st_mtime_ns
    again = FrameCache.open(folder, (8, 8), warn=silent)
    assert again.root == root and (root / "frames.u8").stat().st_mtime_ns == mtime  # not rebuilt
    assert root.parent == folder / CACHE_DIRNAME
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".build")]  # no leftovers


def test_cache_rebuilt_when_files_change(folder):
    first = FrameCache.open(folder, (8, 8), warn=silent).root
    write_gif(folder / "v9.gif", numbered_clip(2, 4))
    second = FrameCache.open(folder, (8, 8), warn=silent)
    assert second.root != first and not first.exists()  # stale cache at this resolution removed
    assert len(second.videos) == 4
    other_res = FrameCache.open(folder, (16, 16), warn=silent)
    assert other_res.root.exists() and second.root.exists()  # caches per resolution coexist


def test_clip_actions_aligned_with_frames(folder):
    cache = FrameCache.open(folder, (8, 8), warn=silent)
    clips = ClipSet(cache, list(range(3)), num_frames=3, stride=2)
    assert len(clips) == (5 - 4) + (8 - 4) + (6 - 4)
    for j in range(len(clips)):
        frames, actions = clips.clip(j)
        level = frames[:, 0, 0, 0].astype(int)
        video, t0 = divmod(int(level[0]), 100)[0], int(level[0]) % 100 // 10
        assert list(level) == [100 * video + 10 * (t0 + 2 * k) for k in range(3)]  # stride 2
        # actions[k] is the action taken at frame k of the clip (it leads to frame k+1).
        assert list(actions) == [100 * video + t0 + 2 * k for k in range(2)]
    batch = clips.sample(np.random.default_rng(0), 4)
    assert batch["frames"].shape == (4, 3, 8, 8, 3) and batch["actions"].shape == (4, 2)
    again = clips.sample(np.random.default_rng(0), 4)
    np.testing.assert_array_equal(batch["frames"], again["frames"])  # a pure function of the seed


def test_no_actions_key_without_sidecars(folder):
    (folder / "v0.json").unlink()
    data = load_dataset(folder, num_frames=2, resolution=(8, 8), val_fraction=0.0, warn=silent)
    assert "actions" not in data.train.sample(np.random.default_rng(0), 2)
    assert data.val_is_train


def test_split_is_deterministic_and_by_file(folder):
    cache = FrameCache.open(folder, (8, 8), warn=silent)
    train, val = split_videos(cache, 0.3)
    assert len(val) == 1 and sorted(train + val) == [0, 1, 2]
    assert split_videos(cache, 0.3) == (train, val)
    ranks = [load_dataset(folder, 2, (8, 8), val_fraction=0.3, rank=r, world_size=2, warn=silent)
             for r in range(2)]
    assert set(ranks[0].train.video_ids).isdisjoint(ranks[1].train.video_ids)  # sharded by file
    assert ranks[0].val.video_ids == ranks[1].val.video_ids == val


def test_corrupt_and_short_videos(folder, tmp_path):
    (folder / "broken.mp4").write_bytes(b"garbage" * 10)
    warnings: list[str] = []
    cache = FrameCache.open(folder, (8, 8), warn=warnings.append)
    assert len(cache.videos) == 3 and any("broken.mp4" in w for w in warnings)
    warnings.clear()
    FrameCache.open(folder, (8, 8), warn=warnings.append)  # reused cache still names it
    assert any("broken.mp4" in w for w in warnings)
    with pytest.raises(GenieError, match="frames a clip needs"):
        load_dataset(folder, num_frames=9, resolution=(8, 8), warn=silent)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GenieError, match="no videos"):
        FrameCache.open(empty, (8, 8), warn=silent)
    with pytest.raises(GenieError, match="not found"):
        FrameCache.open(tmp_path / "missing", (8, 8), warn=silent)


def test_read_only_folder_caches_elsewhere(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("GENIE_CACHE_DIR", str(tmp_path / "user-cache"))
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # as for a read-only folder (root ignores chmod)
    cache = FrameCache.open(folder, (8, 8), warn=silent)
    assert str(cache.root).startswith(str(tmp_path / "user-cache"))
    assert FrameCache.open(folder, (8, 8), warn=silent).root == cache.root


# ---- a damaged or hostile cache folder -------------------------------------------------------

def _truncate(root: Path) -> None:
    with open(root / "frames.u8", "r+b") as fh:
        fh.truncate((root / "frames.u8").stat().st_size - 5)


def _index(edit):
    def damage(root: Path) -> None:
        index = json.loads((root / "index.json").read_text())
        edit(index)
        (root / "index.json").write_text(json.dumps(index))
    return damage


DAMAGE = {
    "garbage index": lambda root: (root / "index.json").write_bytes(b"\x00{not json"),
    "index cut short": lambda root: (root / "index.json").write_text((root / "index.json").read_text()[:-9]),
    "index not a mapping": lambda root: (root / "index.json").write_text("[1, 2]"),
    "index missing": lambda root: (root / "index.json").unlink(),
    "frame count off": _index(lambda ix: ix.update(total_frames=ix["total_frames"] + 1)),
    "offsets overlap": _index(lambda ix: ix["videos"][1].update(offset=0)),
    "actions too short": _index(lambda ix: ix["videos"][0].update(actions=[1])),
    "frames truncated": _truncate,
    "frames missing": lambda root: (root / "frames.u8").unlink(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_cache_is_named_and_rebuilt(folder, damage):
    good = FrameCache.open(folder, (8, 8), warn=silent)
    expected, videos = np.array(good.frames), good.videos
    DAMAGE[damage](good.root)
    warnings: list[str] = []
    cache = FrameCache.open(folder, (8, 8), warn=warnings.append)
    assert any(str(good.root) in w and "damaged" in w for w in warnings), warnings
    assert cache.videos == videos
    np.testing.assert_array_equal(np.asarray(cache.frames), expected)
    assert FrameCache.open(folder, (8, 8), warn=silent).root == cache.root  # and reused after


def test_damaged_cache_without_build_is_a_one_line_error(folder):
    good = FrameCache.open(folder, (8, 8), warn=silent)
    _truncate(good.root)
    with pytest.raises(GenieError, match="damaged"):
        FrameCache.open(folder, (8, 8), warn=silent, build=False)


def _dead_pid() -> int:
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_builds_left_by_killed_processes_are_removed(folder):
    cache_root = FrameCache.open(folder, (8, 8), warn=silent).root.parent
    dead = cache_root / f".build-0123456789abcdef-{_dead_pid()}-x1y2"
    old = cache_root / ".build-0123456789abcdef-abcd1234"  # a build without a process id, untouched for days
    live = cache_root / f".build-0123456789abcdef-{os.getppid()}-live"  # its builder still runs
    recent = cache_root / ".build-fedcba9876543210-efgh5678"
    for d in (dead, old, live, recent):
        d.mkdir()
        (d / "frames.u8").write_bytes(b"\0" * 10)
    os.utime(old / "frames.u8", (1, 1))
    os.utime(old, (1, 1))
    FrameCache.open(folder, (8, 8), warn=silent)  # reused, and still cleaned
    assert not dead.exists() and not old.exists()
    assert live.is_dir() and recent.is_dir()


def test_symlinked_cache_folder_is_not_written_or_deleted_through(folder, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    victim = elsewhere / "0000000000000000"  # looks like a stale cache at the same resolution
    victim.mkdir()
    (victim / "index.json").write_text(json.dumps({"resolution": [8, 8]}))
    (elsewhere / ".build-0123456789abcdef-abcd1234").mkdir()
    os.utime(elsewhere / ".build-0123456789abcdef-abcd1234", (1, 1))
    before = sorted(str(p.relative_to(elsewhere)) for p in elsewhere.rglob("*"))
    (folder / CACHE_DIRNAME).symlink_to(elsewhere, target_is_directory=True)
    monkeypatch.setenv("GENIE_CACHE_DIR", str(tmp_path / "user_cache"))
    warnings: list[str] = []
    cache = FrameCache.open(folder, (8, 8), warn=warnings.append)
    assert sorted(str(p.relative_to(elsewhere)) for p in elsewhere.rglob("*")) == before
    assert (elsewhere / "precious.txt").read_text() == "keep me"
    assert (tmp_path / "user_cache") in cache.root.parents
    assert any("symlink" in w and CACHE_DIRNAME in w for w in warnings)
    assert len(cache.videos) == 3


def test_a_cache_entry_that_is_a_symlink_is_replaced_not_followed(folder, tmp_path):
    good = FrameCache.open(folder, (8, 8), warn=silent)
    target = tmp_path / "target"
    good.root.rename(target)
    good.root.symlink_to(target, target_is_directory=True)
    before = sorted(p.name for p in target.iterdir())
    cache = FrameCache.open(folder, (8, 8), warn=silent)
    assert not cache.root.is_symlink() and cache.root == good.root
    assert sorted(p.name for p in target.iterdir()) == before  # the link's target is untouched


@pytest.mark.parametrize("actions", [[2 ** 63, 0, 0, 0, 0, 0], [0, -2, 0, 0, 0, 0], [0, 1.5, 0, 0, 0, 0],
                                     [2 ** 31, 0, 0, 0, 0, 0]])
def test_sidecar_actions_out_of_range_are_ignored_with_a_warning(folder, actions):
    (folder / "v0.json").write_text(json.dumps({"actions": actions}))
    warnings: list[str] = []
    cache = FrameCache.open(folder, (8, 8), warn=warnings.append)
    assert next(v for v in cache.videos if v.path == "v0.gif").actions is None
    assert any("v0.json" in w for w in warnings)
