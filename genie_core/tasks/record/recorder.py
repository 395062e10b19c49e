"""Recording gameplay clips with their true actions: a random or sticky policy plays a source's
parallel streams, and every run of ``frames`` consecutive frames inside one episode becomes a
clip (``clips/clip_000000.mp4``) with a JSON sidecar; ``meta.json`` describes the whole set.

Convention: ``actions[t]`` is applied at frame t and produces frame t+1, so a clip of T frames
holds T actions and the last one's result is not in the clip. Clips never cross an episode.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genie_core.errors import GenieError, OutputError
from genie_core.io.atomic import atomic_path
from genie_core.tasks.record.sources import Source

FORMAT_VERSION = 1
CONVENTION = "actions[t] is applied at frame t and produces frame t+1; clips never cross episodes"
POLICIES = ("random", "sticky")
MAX_CLIPS = 999_999  # six-digit clip names
CRF = 12  # H.264 constant quality, 4:4:4 (visually lossless at 64x64)


class Policy:
    """Actions for ``num`` streams from ``action_set``: 'random' draws each uniformly and
    independently; 'sticky' repeats a stream's previous action with probability ``p_repeat``,
    otherwise draws uniformly (so motion builds up over several frames). Seeded: the same seed
    gives the same actions."""

    def __init__(self, mode: str, action_set: list[int], num: int, seed: int,
                 p_repeat: float = 0.75) -> None:
        if mode not in POLICIES:
            raise GenieError(f"--policy must be one of {', '.join(POLICIES)}, got '{mode}'")
        if not 0.0 <= p_repeat <= 1.0:
            raise GenieError(f"--p-repeat must be in [0, 1], got {p_repeat}")
        self.mode, self.p_repeat = mode, p_repeat
        self.action_set = np.asarray(action_set, np.int64)
        self.rng = np.random.default_rng(seed)
        self.previous = self.rng.choice(self.action_set, size=num)

    def __call__(self) -> np.ndarray:
        fresh = self.rng.choice(self.action_set, size=len(self.previous))
        if self.mode == "sticky":
            keep = self.rng.random(len(self.previous)) < self.p_repeat
            fresh = np.where(keep, self.previous, fresh)
        self.previous = fresh
        return fresh


@dataclass
class _Stream:
    """One stream's clip in the making."""

    episode: int
    level_seed: int
    frames: list[np.ndarray] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    step: int = 0  # steps into the episode
    start: int = 0  # episode step of the clip's first frame
    clips: int = 0  # clips taken from this episode
    waiting: bool = False  # enough clips from this episode: wait for the next one

    def clear(self) -> None:
        self.frames, self.actions, self.rewards = [], [], []


def record(source: Source, out: str | os.PathLike, num_clips: int, frames: int, policy: Policy,
           seed: int, clips_per_episode: int = 4,
           on_clip: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Record ``num_clips`` clips of ``frames`` frames from ``source`` into the new folder
    ``out`` and return its metadata (what ``meta.json`` holds). At most ``clips_per_episode``
    consecutive clips come from one episode (0: no limit), for more levels per set.

    Nothing half-written: everything goes to a hidden folder beside ``out``, renamed to ``out``
    only when the last clip and ``meta.json`` are written; on any error it is removed."""
    out = Path(out)
    if not 1 <= num_clips <= MAX_CLIPS:
        raise GenieError(f"--num-clips must be in [1, {MAX_CLIPS}], got {num_clips}")
    if frames < 2:
        raise GenieError(f"--frames must be at least 2 (one transition), got {frames}")
    if clips_per_episode < 0:
        raise GenieError(f"--clips-per-episode must be >= 0, got {clips_per_episode}")
    check_new_folder(out)
    staging = _staging_folder(out)
    try:
        meta = _record_into(staging, source, num_clips, frames, policy, seed, clips_per_episode, on_clip)
        meta["folder"] = out.name
        with atomic_path(staging / "meta.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=1))
        if out.is_dir():
            out.rmdir()  # empty (checked above); a folder that filled meanwhile raises here
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return meta


def check_new_folder(out: Path) -> None:
    """``out`` must not exist yet, or be an empty folder."""
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise OutputError(f"{out} exists and is not a folder; choose a new output folder")
        if any(out.iterdir()):
            raise OutputError(f"{out} is not empty; choose a new output folder")


def _staging_folder(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.record-", dir=out.parent))
        (staging / "clips").mkdir()
    except OSError as err:
        from genie_core.io.outputs import describe_os_error

        raise OutputError(f"cannot write {describe_os_error(err, out)}") from None
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it 0700; the recording is a plain folder
    return staging


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _record_into(folder: Path, source: Source, num_clips: int, frames: int, policy: Policy,
                 seed: int, clips_per_episode: int,
                 on_clip: Callable[[int, int], None] | None) -> dict[str, Any]:
    from genie_core.io.video_write import write_video

    started = time.perf_counter()
    names, effective = source.action_names, source.effective
    first_frames, seeds = source.reset()
    streams = [_Stream(episode=i, level_seed=seeds[i], frames=[first_frames[i]]) for i in range(source.num)]
    next_episode = source.num
    clips: list[str] = []
    histogram = np.zeros(len(names), np.int64)
    clip_seeds: set[int] = set()
    env_steps, idle_steps = 0, 0
    idle_limit = max(100 * frames, 5000)  # loop steps without a clip before giving up

    while len(clips) < num_clips:
        actions = policy()
        next_frames, rewards, firsts, seeds = source.step(actions)
        env_steps += source.num
        idle_steps += 1
        for i, s in enumerate(streams):
            if not s.waiting:
                s.actions.append(int(actions[i]))
                s.rewards.append(float(rewards[i]))
                if len(s.frames) == frames and len(clips) < num_clips:
                    name = f"clip_{len(clips):06d}"
                    clip = np.stack(s.frames)  # (T, H, W, 3)
                    write_video(folder / "clips" / f"{name}.mp4", clip, source.fps, crf=CRF,
                                full_chroma=True)
                    sidecar = _sidecar(name, source, clip, s)
                    with atomic_path(folder / "clips" / f"{name}.json") as tmp:
                        tmp.write_text(json.dumps(sidecar))
                    clips.append(name)
                    histogram += np.bincount(s.actions, minlength=len(names))
                    clip_seeds.add(s.level_seed)
                    idle_steps = 0
                    if on_clip is not None:
                        on_clip(len(clips), num_clips)
                    s.clips += 1
                    s.clear()
                    s.start = s.step + 1
                    s.waiting = clips_per_episode > 0 and s.clips >= clips_per_episode
                elif firsts[i]:
                    s.clear()  # the episode ended inside the clip: drop it
            s.step += 1
            if firsts[i] or (s.waiting and source.can_restart):
                level_seed = seeds[i]
                if not firsts[i]:
                    next_frames[i], level_seed = source.restart(i)
                streams[i] = s = _Stream(episode=next_episode, level_seed=level_seed)
                next_episode += 1
            if not s.waiting:
                s.frames.append(next_frames[i])
        if idle_steps > idle_limit:
            raise GenieError(f"no episode of {source.name} lasted {frames} frames in {idle_limit} "
                             "steps; record shorter clips (--frames)")

    h, w = first_frames.shape[1:3]
    return {
        "format_version": FORMAT_VERSION, "env": source.name, "num_clips": len(clips),
        "frames_per_clip": frames, "resolution": [int(h), int(w)], "fps": source.fps, "seed": seed,
        "num_streams": source.num, "action_names": list(names), "action_set": list(source.action_set),
        "effective_map": list(effective),
        "policy": {"mode": policy.mode, "p_repeat": policy.p_repeat if policy.mode == "sticky" else 0.0},
        "clips_per_episode": clips_per_episode, "convention": CONVENTION,
        "stats": {"env_steps": env_steps, "episodes": next_episode,
                  "distinct_level_seeds": len(clip_seeds),
                  "action_histogram": {names[a]: int(n) for a, n in enumerate(histogram) if n}},
        "seconds": round(time.perf_counter() - started, 2),
        "versions": _versions(),
        "clips": clips,
    }


def _sidecar(name: str, source: Source, clip: np.ndarray, s: _Stream) -> dict[str, Any]:
    return {
        "clip": name, "env": source.name, "num_frames": len(clip), "fps": source.fps,
        "resolution": list(clip.shape[1:3]),
        "actions": s.actions,
        "actions_effective": [source.effective[a] for a in s.actions],
        "action_names": [source.action_names[a] for a in s.actions],
        "rewards": s.rewards,
        "level_seed": s.level_seed, "episode": s.episode, "episode_start_step": s.start,
        "convention": CONVENTION,
    }


def _versions() -> dict[str, str]:
    from importlib import metadata

    from genie_core.version import __version__

    found = {"genie": __version__, "numpy": np.__version__}
    for package in ("procgen-mirror", "procgen", "gym3", "ale-py", "gymnasium"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found
