"""Controllability, Genie §3.1 ("Metrics"): ΔtPSNR = PSNR(x_t, x̂_t) - PSNR(x_t, x̂'_t), where x̂_t
is generated from the prompt with the latent actions the LAM infers from the real clip and x̂'_t
with random latent actions (the paper reports t = 4). Plus the PSNR of the generated frames."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from einops import rearrange

from genie_core.errors import GenieError
from genie_core.frames import fit_frames
from genie_core.metrics import psnr
from genie_core.video import read_video

__all__ = ["ClipWindow", "ControllabilityReport", "controllability", "rollout_psnr", "sample_windows"]


@dataclass(frozen=True)
class ClipWindow:
    """``prompt_frames + horizon`` real frames, uint8 (T, H, W, 3), from ``source`` at ``start``."""

    source: str
    start: int
    frames: np.ndarray


@dataclass
class ControllabilityReport:
    """Per-clip PSNRs (dB) and their means. ``psnr_inferred[i, k]``: generated frame k+1 of clip i
    (inferred actions) against the real frame; ``psnr_random`` the same with random actions."""

    horizon: int
    prompt_frames: int
    seed: int
    sources: list[str] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    psnr_inferred: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (N, horizon)
    psnr_random: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (N, horizon)
    inferred_actions: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    random_actions: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))

    @property
    def delta(self) -> np.ndarray:
        """ΔtPSNR per clip at t = horizon, (N,)."""
        return self.psnr_inferred[:, -1] - self.psnr_random[:, -1]

    def summary(self) -> dict[str, Any]:
        """The headline numbers: means over clips (and their standard errors)."""
        n = len(self.sources)
        sem = (lambda x: float(x.std(ddof=1) / np.sqrt(n))) if n > 1 else (lambda x: None)  # noqa: E731
        t = self.horizon
        return {
            "clips": n, "horizon": t, "prompt_frames": self.prompt_frames, "seed": self.seed,
            f"psnr_inferred_t{t}": float(self.psnr_inferred[:, -1].mean()),
            f"psnr_random_t{t}": float(self.psnr_random[:, -1].mean()),
            f"delta_psnr_t{t}": float(self.delta.mean()),
            f"delta_psnr_t{t}_sem": sem(self.delta),
            "psnr_generated": float(self.psnr_inferred.mean()),  # all generated frames, inferred actions
            "psnr_generated_random": float(self.psnr_random.mean()),
            # per step t = 1..horizon: how the gap opens as the rollout goes on
            "psnr_inferred_by_t": [float(v) for v in self.psnr_inferred.mean(0)],
            "psnr_random_by_t": [float(v) for v in self.psnr_random.mean(0)],
        }

    def per_clip(self) -> list[dict[str, Any]]:
        return [{"source": s, "start": int(st), "psnr_inferred": float(pi[-1]), "psnr_random": float(pr[-1]),
                 "delta_psnr": float(pi[-1] - pr[-1]), "psnr_generated": float(pi.mean()),
                 "inferred_actions": [int(a) for a in ia], "random_actions": [int(a) for a in ra]}
                for s, st, pi, pr, ia, ra in zip(self.sources, self.starts, self.psnr_inferred,
                                                 self.psnr_random, self.inferred_actions, self.random_actions)]


def frame_psnr(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """PSNR (dB) of uint8 frames (..., H, W, 3) on [0, 1], one per frame: shape (...)."""
    lead = real.shape[:-3]
    a = torch.from_numpy(np.ascontiguousarray(real)).float() / 255
    b = torch.from_numpy(np.ascontiguousarray(fake)).float() / 255
    # (..., H, W, C) -> (N, C, H, W): 4-d, so metrics.psnr scores each image (a 5-d input would be
    # read as one video and averaged over its frames)
    a, b = (rearrange(x.reshape(-1, *x.shape[-3:]), "n h w c -> n c h w") for x in (a, b))
    return psnr(a, b).numpy().reshape(lead)


@torch.no_grad()
def rollout_psnr(world: Any, clips: np.ndarray, *, horizon: int = 4, prompt_frames: int = 1, seed: int = 0,
                 random_actions: np.ndarray | None = None,
                 rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Both rollouts for a batch of real clips uint8 (B, prompt_frames + horizon, H, W, 3).

    The prompt is each clip's first ``prompt_frames`` frames (with the LAM's actions between them);
    then ``horizon`` frames are generated with (a) the actions the LAM infers from the real clip,
    (b) ``random_actions`` (B, horizon) (default: uniform from ``rng``). Both use the same sampling
    seed, so they differ only through their actions. Returns PSNRs (B, horizon) and the actions.
    """
    clips = np.stack([fit_frames(c, world.resolution) for c in clips])  # (B, T, H, W, 3), world's size
    B, T = clips.shape[:2]
    if T != prompt_frames + horizon:
        raise GenieError(f"clips need prompt_frames + horizon = {prompt_frames + horizon} frames, got {T}")
    inferred = world.infer_actions(clips).cpu().numpy()  # (B, T-1): actions[:, t] took frame t to t+1
    prompt_actions = torch.from_numpy(inferred[:, :prompt_frames - 1]) if prompt_frames > 1 else None
    future = inferred[:, prompt_frames - 1:]  # (B, horizon): the transitions into frames to generate
    if random_actions is None:
        rng = rng if rng is not None else np.random.default_rng(seed)
        random_actions = rng.integers(0, world.num_actions, size=(B, horizon))
    random_actions = np.asarray(random_actions, dtype=np.int64).reshape(B, horizon)
    prompt, real = clips[:, :prompt_frames], clips[:, prompt_frames:]
    scores = {}
    for name, actions in (("inferred", future), ("random", random_actions)):
        video = world.rollout(prompt, actions, seed=seed, prompt_actions=prompt_actions)  # (B, T, H, W, 3)
        scores[name] = frame_psnr(real, video[:, prompt_frames:])  # (B, horizon)
    return {"psnr_inferred": scores["inferred"], "psnr_random": scores["random"],
            "inferred_actions": future, "random_actions": random_actions}


def controllability(world: Any, windows: Sequence[ClipWindow], *, horizon: int = 4, prompt_frames: int = 1,
                    seed: int = 0, batch_size: int = 8) -> ControllabilityReport:
    """ΔtPSNR over clip windows (see ``sample_windows``), ``batch_size`` clips per rollout."""
    if horizon < 1 or prompt_frames < 1:
        raise GenieError(f"horizon and prompt_frames must be >= 1, got {horizon}, {prompt_frames}")
    if not windows:
        raise GenieError("no clips to evaluate")
    rng = np.random.default_rng(seed)  # random actions: one stream for the whole evaluation
    parts = []
    for i in range(0, len(windows), batch_size):
        batch = np.stack([w.frames for w in windows[i:i + batch_size]])  # (B, T, H, W, 3)
        parts.append(rollout_psnr(world, batch, horizon=horizon, prompt_frames=prompt_frames,
                                  seed=seed, rng=rng))
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return ControllabilityReport(horizon, prompt_frames, seed, [w.source for w in windows],
                                 [w.start for w in windows], cat["psnr_inferred"], cat["psnr_random"],
                                 cat["inferred_actions"], cat["random_actions"])


def sample_windows(videos: Sequence[str | os.PathLike], count: int, length: int,
                   resolution: tuple[int, int], seed: int = 0,
                   warn: Callable[[str], None] | None = None) -> Iterator[ClipWindow]:
    """``count`` windows of ``length`` frames, seeded: videos taken in a shuffled order, each
    giving an even share of the windows still to make, each window at a random start. A video
    shorter than ``length`` is skipped (``warn`` is told) and its share moves on. Each video is
    decoded once, at ``resolution``, and only one is in memory at a time."""
    rng = np.random.default_rng(seed)
    order = [Path(videos[i]) for i in rng.permutation(len(videos))]
    remaining = count
    while remaining > 0 and order:
        usable = []
        for j, path in enumerate(order):
            if remaining <= 0:
                break
            frames, _ = read_video(path, size=resolution)  # (T, H, W, 3)
            if len(frames) < length:
                if warn is not None:
                    warn(f"{path}: {len(frames)} frames, fewer than the {length} a window needs; skipped")
                continue
            usable.append(path)
            share = math.ceil(remaining / (len(order) - j))
            for start in rng.integers(0, len(frames) - length + 1, size=share):
                yield ClipWindow(str(path), int(start), frames[start:start + length].copy())
            remaining -= share
        order = usable  # short videos skipped their share: go round the usable ones again
