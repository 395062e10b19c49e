"""Training data (genie_core.data): frame cache built once and reused, rebuilt on change, exact
frames, action alignment (actions[t] takes frame t to t+1), deterministic split, corrupt files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genie_core.data import CACHE_DIRNAME, ClipSet, FrameCache, load_dataset, split_videos
from genie_core.errors import GenieError


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
