"""What ``genie infer-actions`` calls (Genie §2.1, the latent action model): load a LAM (alone or
from a world bundle), infer one latent action per transition of a video (streamed in overlapping
windows), write / read action files, and score latent against ground-truth actions."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genie_core.config.train import MAX_FRAME_SIDE
from genie_core.errors import GenieError
from genie_core.io.actions import ACTION_SUFFIXES, ActionFileError, load_actions, read_true_actions, save_actions  # noqa: F401
from genie_core.io.checkpoint_format import (
    CheckpointError,
    LoadedModel,
    read_metadata,
)
from genie_core.runtime import inference, resolve_device, valid_seed
from genie_core.version import __version__

__all__ = ["LoadedLam", "load_lam", "infer_video_actions", "save_actions", "load_actions",
           "read_true_actions", "TruthReport", "compare_with_truth", "ACTION_SUFFIXES"]

@dataclass
class LoadedLam(LoadedModel):
    """A LAM (``model``: a LatentActionModel) in eval mode with what action files record about it."""

    @property
    def num_actions(self) -> int:
        return int(self.model.num_actions)


def load_lam(checkpoint: str | os.PathLike | None = None, *, world: str | os.PathLike | None = None,
             preset: str | None = None, overrides: tuple[str, ...] | list[str] = (),
             device: str | torch.device = "auto", seed: int = 0) -> LoadedLam:
    """A LAM from ``checkpoint`` (kind ``lam``, or a ``world`` bundle), from ``world`` (must be a
    bundle; only its ``lam.`` tensors are read), or, with ``preset`` alone, an untrained one
    seeded with ``seed`` (smoke tests)."""
    from genie_core.io.tokens import file_digest

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if checkpoint is not None and world is not None:
        raise GenieError("give a LAM checkpoint or a world bundle, not both")
    if world is not None:
        meta = read_metadata(world)
        if meta["kind"] != "world":
            raise CheckpointError(f"{world}: holds a {meta['kind']} checkpoint, expected a world bundle")
        checkpoint = world
    if checkpoint is not None:
        from genie_core.models.load import load_model

        path = Path(checkpoint)
        model = load_model(path, "lam")  # a LAM, or a world bundle's
        source, digest = str(path), file_digest(path)
        resolution = model.config.resolution
    elif preset is not None:
        from genie_core.config import lam_config_for_data, load_preset
        from genie_core.models.lam import LatentActionModel

        cfg = load_preset(preset, overrides)
        lam_cfg = lam_config_for_data(cfg)
        with torch.random.fork_rng(devices=[]):  # deterministic weights, global RNG untouched
            torch.manual_seed(valid_seed(seed))
            model = LatentActionModel.from_config(lam_cfg)
        source, digest, resolution = f"preset:{preset}", None, lam_cfg.resolution
    else:
        raise GenieError("a latent action model is needed: pass --checkpoint FILE, --world "
                         "BUNDLE (or --preset NAME for an untrained one)")
    resolution = None if resolution is None else (int(resolution[0]), int(resolution[1]))
    return LoadedLam(model.to(dev).eval(), dev, source, digest, resolution)


def infer_video_actions(lam: LoadedLam, path: str | os.PathLike, *,
                        size: tuple[int, int] | None = None, window: int | None = None,
                        overlap: int | None = None, precision: str = "fp32") -> tuple[np.ndarray, dict[str, Any]]:
    """Latent actions int64 (T-1,) of a video (``actions[t]`` takes frame t to t+1) and the
    metadata an action file records. Frames are fitted to ``size`` (default: the LAM's training
    size) and streamed; overlapping windows give every transition exactly one action."""
    from genie_core.io.frames import to_model
    from genie_core.io.video import iter_video, probe_video

    path = Path(path)
    info = probe_video(path)
    hw = size or lam.resolution or (info.height, info.width)
    if max(hw) > MAX_FRAME_SIDE:
        raise GenieError(f"frame size {hw[0]}x{hw[1]} is larger than {MAX_FRAME_SIDE}x{MAX_FRAME_SIDE}")
    p = lam.model.config.patch_size
    if hw[0] % p or hw[1] % p:
        raise GenieError(f"frame size {hw[0]}x{hw[1]} must be a multiple of the LAM patch size {p} "
                         "(choose --size)")
    cfg = lam.model.config
    window = window or cfg.context_frames
    overlap = cfg.window_overlap if overlap is None else overlap
    if window < 2 or not 1 <= overlap < window:
        raise GenieError(f"need --window >= 2 and 1 <= --overlap < window, got {window} and {overlap}")
    count = 0

    def chunks() -> Any:
        nonlocal count
        for frames in iter_video(path, size=hw, window=window):
            count += frames.shape[0]
            yield to_model(frames, device=lam.device)  # (1, 3, t, H, W)

    with inference(lam.device, precision):
        try:
            ids = lam.model.infer_actions_stream(chunks(), window, overlap)
        except GenieError as err:
            raise GenieError(f"{path}: {err}") from None
    actions = ids[0].cpu().numpy().astype(np.int64)
    meta = {"source": str(path), "fps": float(info.fps), "num_frames": count,
            "frame_size": [int(hw[0]), int(hw[1])], "num_actions": lam.num_actions,
            "checkpoint": lam.source, "checkpoint_digest": lam.digest, "window": window,
            "overlap": overlap, "genie_version": __version__}
    return actions, meta


# ---- latent against true actions -----------------------------------------------------------

@dataclass
class TruthReport:
    """Latent against true actions over a set of videos."""

    num_actions: int
    true_ids: list[int]  # the true action ids seen, ascending (the table's columns)
    true_names: list[str]
    table: np.ndarray  # int64 (num_actions, len(true_ids)): latent i met true true_ids[j]
    nmi: float
    mapping_accuracy: float
    mapping: dict[int, int]  # latent -> its most frequent true id
    majority_accuracy: float  # chance: always guessing the most frequent true action
    transitions: int
    files: int
    codebook_usage: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"num_actions": self.num_actions, "true_ids": self.true_ids,
                "true_names": self.true_names, "table": self.table.tolist(), "nmi": self.nmi,
                "mapping_accuracy": self.mapping_accuracy,
                "mapping": {str(k): v for k, v in self.mapping.items()},
                "majority_accuracy": self.majority_accuracy, "transitions": self.transitions,
                "files": self.files, "codebook_usage": self.codebook_usage}


def compare_with_truth(pairs: list[tuple[np.ndarray, np.ndarray]], num_actions: int,
                       names: dict[int, str] | None = None) -> TruthReport:
    """Score latent actions against true ones. ``pairs`` holds per video (latent (N,), truth
    (N,)) aligned by transition; transitions with unknown truth (-1) are left out."""
    from genie_core.metrics import codebook_usage, confusion, mapping_accuracy, nmi

    latent = np.concatenate([np.asarray(l, np.int64) for l, _ in pairs]) if pairs else np.zeros(0, np.int64)
    truth = np.concatenate([np.asarray(t, np.int64) for _, t in pairs]) if pairs else np.zeros(0, np.int64)
    known = truth >= 0
    latent, truth = latent[known], truth[known]
    if latent.size == 0:
        raise GenieError("no transitions with ground-truth actions to compare against")
    true_ids = sorted(int(t) for t in np.unique(truth))
    column = {t: j for j, t in enumerate(true_ids)}
    table = confusion(latent, np.array([column[int(t)] for t in truth]), num_actions, len(true_ids))
    acc, mapping = mapping_accuracy(latent, truth)
    counts = np.bincount(truth)
    names = names or {}
    return TruthReport(
        num_actions=num_actions, true_ids=true_ids,
        true_names=[names.get(t, str(t)) for t in true_ids], table=table, nmi=nmi(latent, truth),
        mapping_accuracy=acc, mapping=mapping, majority_accuracy=float(counts.max() / counts.sum()),
        transitions=int(latent.size), files=len(pairs),
        codebook_usage=codebook_usage(latent, num_actions)[0])
