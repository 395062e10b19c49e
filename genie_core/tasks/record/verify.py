"""Checking a recorded folder: ``meta.json`` readable, every clip it lists decodes to the recorded
frame count and size, and every sidecar's lists have one entry per frame (or per transition),
actions in range and merged as the set's ``effective_map`` says."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from genie_core.errors import GenieError

PER_FRAME_KEYS = ("actions", "actions_effective", "action_names", "rewards")


@dataclass
class VerifyReport:
    folder: Path
    clips: int = 0
    frames: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def load_meta(folder: Path) -> dict[str, Any]:
    """A recorded folder's meta.json; a GenieError when it is missing or damaged."""
    path = folder / "meta.json"
    if not folder.is_dir():
        raise GenieError(f"{folder}: no such folder")
    if not path.is_file():
        raise GenieError(f"{folder}: no meta.json, not a recorded folder (or an unfinished one)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GenieError(f"{path}: not readable JSON ({type(err).__name__})") from None
    needed = ("clips", "frames_per_clip", "resolution", "action_names", "effective_map")
    missing = [k for k in needed if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise GenieError(f"{path}: no {', '.join(missing)}")
    if not isinstance(meta["clips"], list) or not all(isinstance(c, str) for c in meta["clips"]):
        raise GenieError(f"{path}: 'clips' is not a list of names")
    return meta


def verify_recording(folder: str | os.PathLike,
                     on_clip: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Check every clip ``meta.json`` lists (decoding it whole); a folder that is not a
    recording at all (no or damaged ``meta.json``) is a GenieError."""
    from genie_core.io.video import read_video

    folder = Path(folder)
    meta = load_meta(folder)
    report = VerifyReport(folder)
    frames, size = meta["frames_per_clip"], tuple(meta["resolution"])
    num_actions, effective = len(meta["action_names"]), meta["effective_map"]
    for k, name in enumerate(meta["clips"]):
        video, sidecar = folder / "clips" / f"{name}.mp4", folder / "clips" / f"{name}.json"
        report.clips += 1
        try:
            clip, _ = read_video(video)
        except GenieError as err:
            report.problems.append(str(err).splitlines()[0])
            continue
        report.frames += len(clip)
        if len(clip) != frames or clip.shape[1:3] != size:
            report.problems.append(f"{video}: {len(clip)} frames of {clip.shape[1]}x{clip.shape[2]}, "
                                   f"meta.json says {frames} of {size[0]}x{size[1]}")
        problem = _check_sidecar(sidecar, len(clip), num_actions, effective)
        if problem:
            report.problems.append(problem)
        if on_clip is not None:
            on_clip(k + 1, len(meta["clips"]))
    listed = {f"{name}.mp4" for name in meta["clips"]}
    extra = sorted(p.name for p in (folder / "clips").glob("*.mp4") if p.name not in listed)
    if extra:
        report.problems.append(f"{folder / 'clips'}: {len(extra)} clip(s) not in meta.json "
                               f"(first: {extra[0]})")
    return report


def _check_sidecar(path: Path, frames: int, num_actions: int, effective: list[int]) -> str | None:
    """What is wrong with one sidecar, or None."""
    try:
        side = json.loads(path.read_text())
    except OSError as err:
        return f"{path}: cannot read ({err.strerror or type(err).__name__})"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"{path}: not valid JSON"
    if not isinstance(side, dict):
        return f"{path}: not a JSON object"
    for key in PER_FRAME_KEYS:
        value = side.get(key)
        if not isinstance(value, list):
            return f"{path}: no '{key}' list"
        if len(value) not in (frames, frames - 1):
            return f"{path}: {len(value)} '{key}' for {frames} frames (expected {frames} or {frames - 1})"
    actions = side["actions"]
    if not all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a < num_actions for a in actions):
        return f"{path}: 'actions' outside [0, {num_actions})"
    if side["actions_effective"] != [effective[a] for a in actions]:
        return f"{path}: 'actions_effective' is not meta.json's effective_map of 'actions'"
    if not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in side["rewards"]):
        return f"{path}: 'rewards' are not numbers"
    if not isinstance(side.get("level_seed"), int):
        return f"{path}: no integer 'level_seed'"
    return None
