"""What ``--resume`` checks before it continues a run: the same preset, data, settings and number
of processes (anything else would not continue it exactly), a readable training state, and a
metrics log cut back to the resumed step (a line cut short by a crash is dropped)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from genie_core.config import GenieConfig, to_dict
from genie_core.errors import CheckpointError, GenieError
from genie_core.io.atomic import atomic_path
from genie_core.io.checkpoint_format import read_metadata
from genie_core.training.data import Dataset

STATE_FILE = "state.safetensors"

# Settings --resume may change without breaking exactness: how long to train (a changed length
# or budget moves the end of the schedule, as a longer --steps does) and how often to
# log, evaluate and save (and train.num_threads). Every other setting of the stage is compared.
RESUME_FREE = ("steps", "minutes", "eval_every", "save_every", "log_every", "compile")  # compiled: the same steps
# Derived from the trained tokenizer and LAM (or the data's true actions), not set: a run that
# stated them, or one from before they were derived, resumes alike (the state's shapes are checked).
DERIVED = ("dynamics.code_bits", "dynamics.token_size", "dynamics.num_actions")


def exactness_settings(cfg: dict, stage: str) -> dict[str, Any]:
    """The dotted settings a resumed ``stage`` must share with its run: the data section, the
    stage's model, its optimiser (less ``RESUME_FREE``), precision and seed."""
    def flat(value: Any, prefix: str) -> dict[str, Any]:
        if isinstance(value, dict):
            return {k: v for key, sub in value.items() for k, v in flat(sub, f"{prefix}.{key}").items()}
        return {prefix: value}

    train_cfg = cfg.get("train", {})
    optim = {k: v for k, v in train_cfg.get(stage, {}).items() if k not in RESUME_FREE}
    settings = {**flat(cfg.get("data", {}), "data"), **flat(cfg.get(stage, {}), stage),
                **flat(optim, f"train.{stage}"), "train.precision": train_cfg.get("precision"),
                "train.seed": train_cfg.get("seed")}
    return {k: v for k, v in settings.items() if k not in DERIVED}


def saved_exactness_settings(saved: dict, stage: str) -> dict[str, Any]:
    """``exactness_settings`` of a saved run's config, where a setting it does not name is newer
    than the run, which then ran with what that setting's default does (new settings default to
    the behaviour from before them)."""
    defaults = exactness_settings(to_dict(GenieConfig()), stage)
    return {**defaults, **exactness_settings(saved, stage)}


def _shown(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value)


def check_resumable(cfg: GenieConfig, stage_dir: Path, stage: str) -> bool:
    """True when the stage has a state to resume; a GenieError naming the first setting that
    differs from the saved run's (nothing is written before this check). ``train.precision`` is
    compared as ``train`` resolves it (``auto`` -> what runs here; runs record the resolved one),
    so a run saved with ``bf16`` resumes under ``auto`` where auto means bf16."""
    path = stage_dir / STATE_FILE
    if not path.is_file():
        return False
    meta = read_metadata(path)
    try:
        saved = json.loads(meta["config"])
    except ValueError:
        saved = None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: its config is not a JSON mapping")
    if saved.get("name") != cfg.name:
        raise GenieError(f"{stage_dir.parent} was trained with preset '{saved.get('name')}', "
                         f"not '{cfg.name}'")
    saved_at, now_at = saved_exactness_settings(saved, stage), exactness_settings(to_dict(cfg), stage)
    for key in sorted(saved_at.keys() | now_at.keys()):
        if saved_at.get(key) != now_at.get(key):
            fix = (f"pass --precision {saved_at[key]} to continue it, or start a new run with another --out"
                   if key == "train.precision" and saved_at.get(key) in ("bf16", "fp32")
                   else "start a new run with another --out")
            raise GenieError(f"--resume: {stage_dir.parent} was trained with {key}="
                             f"{_shown(saved_at.get(key))}, not {_shown(now_at.get(key))}; resuming "
                             f"would not continue it exactly ({fix})")
    return True


def train_state_info(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    """The ``train_state`` JSON of a state file, with its step and times checked."""
    try:
        info = json.loads(meta.get("train_state", ""))
        step, elapsed, wall = info["step"], float(info["elapsed"]), float(info["wall"])
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError("step")
        if not (math.isfinite(elapsed) and math.isfinite(wall)):
            raise ValueError("times")
    except (ValueError, TypeError, KeyError):
        raise CheckpointError(f"{path}: its 'train_state' metadata is damaged") from None
    return {**info, "step": step, "elapsed": elapsed, "wall": wall}


def check_same_data(stage_dir: Path, data: Dataset, world_size: int) -> None:
    """A resumed stage must see the same decoded videos and the same number of processes."""
    path = stage_dir / STATE_FILE
    info = train_state_info(path, read_metadata(path))
    if info.get("data") not in (None, data.cache.fingerprint):  # None: a state from before it was kept
        raise GenieError(f"--resume: the videos in --data differ from those {stage_dir.parent} was "
                         f"trained on (other files, frame counts or actions); start a new run with "
                         f"another --out")
    if info.get("world_size", world_size) != world_size:
        raise GenieError(f"--resume: {stage_dir.parent} was trained on {info['world_size']} "
                         f"process(es), not {world_size}; resume with the same number")


def trim_metrics(log: Path, step: int, emit: Callable[[dict[str, Any]], None]) -> None:
    """Keep the lines of ``metrics.jsonl`` logged at or before ``step``; a damaged line (one cut
    short by a crash mid-append) is dropped with a warning."""
    if not log.is_file():
        return
    keep = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
            at = record.get("step", 0) if isinstance(record, dict) else None
        except ValueError:
            at = None
        if isinstance(at, int) and not isinstance(at, bool):
            if at <= step:
                keep.append(line)
        elif line.strip():
            emit({"event": "warning", "message": f"{log}: dropped a damaged line ({line[:40]!r})"})
    with atomic_path(log) as tmp:
        tmp.write_text("".join(line + "\n" for line in keep))
