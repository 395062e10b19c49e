"""Action files and sidecars: the action files ``genie infer-actions`` writes (``.json`` or
``.npz``, never unpickled) and the ground-truth actions a recorded clip carries in its JSON
sidecar (``clip.json`` beside ``clip.mp4``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genie_core.errors import GenieError
from genie_core.io.atomic import atomic_path
from genie_core.version import ACTION_FORMAT_VERSION

ACTION_SUFFIXES = (".json", ".npz")
ACTION_KEYS = ("actions_effective", "actions")  # sidecar keys, preferred first (tools/README.md)


class ActionFileError(GenieError):
    """An action file that is missing or not a genie action file."""


def save_actions(path: str | os.PathLike, actions: Any, meta: dict[str, Any]) -> None:
    """Write an action file atomically: ``.json`` ({"actions": [...], "num_actions": N, ...meta})
    or ``.npz`` (int32 ``actions`` and the metadata as a JSON string ``meta``), by suffix."""
    path = Path(path)
    actions = np.asarray(actions)
    if actions.ndim != 1 or not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(f"actions must be a 1-d integer array, got {actions.dtype} {actions.shape}")
    full = {**meta, "format_version": ACTION_FORMAT_VERSION}
    suffix = path.suffix.lower()
    if suffix == ".json":
        record = {"actions": [int(a) for a in actions], **full}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(record) + "\n")
    elif suffix == ".npz":
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, actions=actions.astype(np.int32), meta=np.array(json.dumps(full, sort_keys=True)))
    else:
        raise GenieError(f"action file {path} must end in .json or .npz")


def load_actions(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """(actions int64 (T-1,), meta) of an action file (.json or .npz); never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise ActionFileError(f"action file not found: {path}")
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                actions, meta = data["actions"], json.loads(str(data["meta"]))
        else:
            meta = json.loads(path.read_text())
            actions = np.asarray(meta.pop("actions"))
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ActionFileError(f"{path}: not a genie action file") from None
    if actions.ndim != 1 or (actions.size and not np.issubdtype(actions.dtype, np.integer)):
        raise ActionFileError(f"{path}: 'actions' is not a list of integers")
    return actions.astype(np.int64), meta


def read_sidecar_actions(video: Path, num_frames: int, warn: Callable[[str], None]) -> tuple[tuple[int, ...] | None, str | None]:
    """Ground-truth actions from ``clip.json`` beside ``clip.mp4``: one per frame, -1 padded."""
    sidecar = video.with_suffix(".json")
    if not sidecar.is_file():
        return None, None
    try:
        data = json.loads(sidecar.read_text())
    except OSError as err:
        warn(f"{sidecar}: cannot read ({err.strerror or type(err).__name__}), its actions are ignored")
        return None, None
    except (UnicodeDecodeError, json.JSONDecodeError):
        warn(f"{sidecar}: not valid JSON, its actions are ignored")
        return None, None
    for key in ACTION_KEYS:
        raw = data.get(key) if isinstance(data, dict) else None
        if raw is None:
            continue
        plain = lambda a: isinstance(a, int) and not isinstance(a, bool) and -1 <= a < 2 ** 31  # noqa: E731
        if not isinstance(raw, list) or not all(plain(a) for a in raw):
            warn(f"{sidecar}: '{key}' is not a list of integers in [-1, 2**31), ignored")
            return None, None
        if len(raw) < num_frames - 1:
            warn(f"{sidecar}: {len(raw)} actions for {num_frames} frames, ignored")
            return None, None
        actions = list(raw[:num_frames]) + [-1] * max(0, num_frames - len(raw))  # last may be unknown
        return tuple(actions), key
    return None, None


def read_true_actions(video: str | os.PathLike, num_frames: int,
                      warn: Callable[[str], None] | None = None) -> tuple[np.ndarray | None, list[str] | None]:
    """Ground truth for a video's ``num_frames - 1`` transitions from its JSON sidecar
    (``actions_effective`` preferred, else ``actions``; -1 where unknown), and the names of the
    true action ids when the sidecar lists them per frame (``action_names``). (None, None) when
    there is no usable sidecar; ``warn`` is told why a sidecar that exists is not usable (not
    JSON, unreadable, no action list, wrong values or too few actions)."""
    problems: list[str] = []
    actions, key = read_sidecar_actions(Path(video), num_frames, warn=problems.append)
    if actions is None:
        sidecar = Path(video).with_suffix(".json")
        if not problems and sidecar.is_file():
            problems.append(f"{sidecar}: no {' or '.join(repr(k) for k in ACTION_KEYS)} list")
        if warn is not None:
            for message in problems:
                warn(message)
        return None, None
    truth = np.asarray(actions[: num_frames - 1], dtype=np.int64)
    names = None
    try:
        per_frame = json.loads(Path(video).with_suffix(".json").read_text()).get("action_names")
    except (OSError, ValueError, AttributeError):
        per_frame = None
    if isinstance(per_frame, list) and len(per_frame) >= len(truth):
        # The name each true id carries most often (merged "effective" ids keep the main name).
        votes: dict[int, dict[str, int]] = {}
        for a, name in zip(truth.tolist(), per_frame):
            if a >= 0 and isinstance(name, str):
                votes.setdefault(a, {}).setdefault(name, 0)
                votes[a][name] += 1
        top = {a: max(v, key=v.get) for a, v in votes.items()}
        names = [top.get(i, str(i)) for i in range(max(top, default=-1) + 1)]
    return truth, names
