"""Controllability, Genie §3.1 ("Metrics"): ΔtPSNR = PSNR(x_t, x̂_t) - PSNR(x_t, x̂'_t), where x̂_t
is generated from the prompt with the latent actions the LAM infers from the real clip and x̂'_t
with random latent actions (the paper reports t = 4), beside the trivial baselines a world must
beat: the last prompt frame held still, in pixels and as a world that copies its tokens would
draw it. PSNR and SSIM per generated step t; per-window PSNR capped before averaging."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from einops import rearrange

from genie_core.errors import GenieError, VideoError
from genie_core.io.frames import fit_frames, from_model
from genie_core.io.video import read_video
from genie_core.metrics import codebook_usage, psnr, ssim
from genie_core.runtime import check_memory, inference

__all__ = ["ActionFn", "ClipWindow", "ControllabilityReport", "PSNR_CAP_DB", "ROLLOUTS", "actions_for",
           "controllability", "copy_token_frames", "frame_psnr", "frame_ssim", "lam_actions",
           "rollout_psnr", "sample_windows", "true_actions"]

PSNR_CAP_DB = 50.0  # per-window PSNR is capped here before averaging: identical frames (100 dB
# from the metrics' MSE floor) would otherwise dominate the copy baseline's mean
ROLLOUTS = ("inferred", "random", "random_freq", "copy", "copy_tokens")  # what is scored per window
HEADLINE = ("delta_psnr: PSNR with the inferred actions minus PSNR with actions drawn uniformly over "
            "all codes (Genie's ΔtPSNR); delta_psnr_freq draws them from the codes' frequencies on these clips")


@dataclass(frozen=True)
class ClipWindow:
    """``prompt_frames + horizon`` real frames, uint8 (T, H, W, 3), from ``source`` at ``start``."""

    source: str
    start: int
    frames: np.ndarray


ActionFn = Callable[[Sequence[ClipWindow], np.ndarray], np.ndarray]
"""(windows, their frames uint8 (B, T, H, W, 3) at the world's size) -> the actions int64 (B, T-1)
that drive the world; ``actions[:, t]`` took frame t to t+1."""


def lam_actions(world: Any) -> ActionFn:
    """The LAM's latent actions inferred from the real frames (Genie's ΔtPSNR)."""
    return lambda windows, clips: world.infer_actions(clips).cpu().numpy().astype(np.int64)


def true_actions(windows: Sequence[ClipWindow], clips: np.ndarray) -> np.ndarray:
    """The game's own actions from each video's JSON sidecar (for a world trained on them)."""
    from genie_core.tasks.infer_actions import read_true_actions

    T = clips.shape[1]
    out = []
    for w in windows:
        truth, _ = read_true_actions(w.source, w.start + T)
        part = None if truth is None else truth[w.start:w.start + T - 1]
        if part is None or len(part) != T - 1 or (part < 0).any():
            raise GenieError(f"{w.source}: no true action for every transition of frames "
                             f"{w.start}..{w.start + T - 1} in its JSON sidecar")
        out.append(part)
    return np.stack(out).astype(np.int64)


def actions_for(world: Any) -> tuple[str, ActionFn]:
    """The action source a world was trained on: ("lam", LAM inference) or ("truth", sidecars)."""
    if getattr(world, "action_source", "latent") == "truth":
        return "truth", true_actions
    return "lam", lam_actions(world)


@dataclass
class ControllabilityReport:
    """Per-window scores, (N, horizon) each: ``psnr[name]`` / ``ssim[name]`` of generated frame
    t = k+1 against the real one, for every rollout in ROLLOUTS (PSNR uncapped here; ``summary``
    caps it at ``psnr_cap_db``). ``code_counts`` (num_actions,): how often each action was inferred
    over all the windows' transitions, the distribution that ``random_freq`` actions are drawn from."""

    horizon: int
    prompt_frames: int
    seed: int
    sources: list[str] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    psnr: dict[str, np.ndarray] = field(default_factory=dict)
    ssim: dict[str, np.ndarray] = field(default_factory=dict)
    actions: dict[str, np.ndarray] = field(default_factory=dict)  # inferred, random, random_freq: (N, horizon)
    code_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    action_source: str = "lam"
    psnr_cap_db: float = PSNR_CAP_DB

    @property
    def psnr_inferred(self) -> np.ndarray:
        return self.psnr["inferred"]

    @property
    def psnr_random(self) -> np.ndarray:
        return self.psnr["random"]

    def capped(self, name: str) -> np.ndarray:
        """PSNR of rollout ``name`` per window, capped at ``psnr_cap_db``: (N, horizon)."""
        return np.minimum(self.psnr[name], self.psnr_cap_db)

    @property
    def delta(self) -> np.ndarray:
        """ΔtPSNR per window at t = horizon (uniform random actions, capped PSNRs), (N,)."""
        return self.capped("inferred")[:, -1] - self.capped("random")[:, -1]

    def summary(self) -> dict[str, Any]:
        """The headline numbers: means over windows (their standard errors), medians, baselines."""
        n = len(self.sources)
        sem = (lambda x: float(x.std(ddof=1) / np.sqrt(n))) if n > 1 else (lambda x: None)  # noqa: E731
        sem_by_t = (lambda x: [float(v) for v in x.std(0, ddof=1) / np.sqrt(n)]) if n > 1 else (lambda x: None)  # noqa: E731
        by_t = lambda x: [float(v) for v in x]  # noqa: E731
        t = self.horizon
        p = {name: self.capped(name) for name in ROLLOUTS}
        delta, delta_freq = p["inferred"] - p["random"], p["inferred"] - p["random_freq"]
        vs_copy = p["inferred"] - p["copy"]  # (N, horizon): the world minus the still frame
        world_vs_copy = vs_copy[:, -1]
        counts = self.code_counts
        out: dict[str, Any] = {
            "clips": n, "windows": n, "horizon": t, "prompt_frames": self.prompt_frames, "seed": self.seed,
            "action_source": self.action_source, "psnr_cap_db": self.psnr_cap_db, "headline": HEADLINE,
            f"psnr_inferred_t{t}": float(p["inferred"][:, -1].mean()),
            f"psnr_random_t{t}": float(p["random"][:, -1].mean()),
            f"psnr_random_freq_t{t}": float(p["random_freq"][:, -1].mean()),
            f"psnr_copy_t{t}": float(p["copy"][:, -1].mean()),
            f"psnr_copy_tokens_t{t}": float(p["copy_tokens"][:, -1].mean()),
            f"delta_psnr_t{t}": float(delta[:, -1].mean()), f"delta_psnr_t{t}_sem": sem(delta[:, -1]),
            "delta_psnr": float(delta[:, -1].mean()), "delta_psnr_sem": sem(delta[:, -1]),
            "delta_psnr_freq": float(delta_freq[:, -1].mean()), "delta_psnr_freq_sem": sem(delta_freq[:, -1]),
            "delta_psnr_by_t": by_t(delta.mean(0)), "delta_psnr_freq_by_t": by_t(delta_freq.mean(0)),
            "delta_psnr_sem_by_t": sem_by_t(delta), "delta_psnr_freq_sem_by_t": sem_by_t(delta_freq),
            # per step t = 1..horizon: the world minus the still prompt frame, per window
            "world_vs_copy_by_t": by_t(vs_copy.mean(0)), "world_vs_copy_sem_by_t": sem_by_t(vs_copy),
            "world_vs_copy_median_by_t": by_t(np.median(vs_copy, 0)),
            # the world against holding the last prompt frame still, at t = horizon
            "world_vs_copy_db": float(world_vs_copy.mean()), "world_vs_copy_sem": sem(world_vs_copy),
            "world_vs_copy_median_db": float(np.median(world_vs_copy)),
            "world_beats_copy_share": float((world_vs_copy > 0).mean()),
            "psnr_generated": float(p["inferred"].mean()),  # all generated frames, inferred actions
            "psnr_generated_random": float(p["random"].mean()),
            "code_usage": {"counts": [int(c) for c in counts],
                           "frequencies": [float(c) for c in counts / max(1, counts.sum())],
                           "used": int((counts > 0).sum()),
                           "perplexity": _perplexity(counts)},
        }
        for name in ROLLOUTS:  # per step t = 1..horizon: how the gap opens as the rollout goes on
            out[f"psnr_{name}_by_t"] = by_t(p[name].mean(0))
            out[f"psnr_{name}_median_by_t"] = by_t(np.median(p[name], 0))
            out[f"ssim_{name}_by_t"] = by_t(self.ssim[name].mean(0))
            out[f"ssim_{name}_median_by_t"] = by_t(np.median(self.ssim[name], 0))
        return out

    def per_clip(self) -> list[dict[str, Any]]:
        """One record per window, scores at t = horizon (PSNR capped)."""
        p = {name: self.capped(name) for name in ROLLOUTS}
        rows = []
        for i, (s, st) in enumerate(zip(self.sources, self.starts)):
            row: dict[str, Any] = {"source": s, "start": int(st)}
            row.update({f"psnr_{name}": float(p[name][i, -1]) for name in ROLLOUTS})
            row.update({f"ssim_{name}": float(self.ssim[name][i, -1]) for name in ROLLOUTS})
            row["delta_psnr"] = float(p["inferred"][i, -1] - p["random"][i, -1])
            row["delta_psnr_freq"] = float(p["inferred"][i, -1] - p["random_freq"][i, -1])
            row["psnr_generated"] = float(p["inferred"][i].mean())
            row.update({f"{k}_actions": [int(a) for a in v[i]] for k, v in self.actions.items()})
            rows.append(row)
        return rows


def _perplexity(counts: np.ndarray) -> float | None:
    if counts.sum() == 0:
        return None
    return codebook_usage(np.repeat(np.arange(len(counts)), counts), len(counts))[1]


def _per_frame(metric: Callable[..., torch.Tensor], real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    lead = real.shape[:-3]
    # copies (the frames may be read-only views, which torch.from_numpy warns about)
    a = torch.tensor(real, dtype=torch.float32) / 255
    b = torch.tensor(fake, dtype=torch.float32) / 255
    # (..., H, W, C) -> (N, C, H, W): 4-d, so the metric scores each image (a 5-d input would be
    # read as one video and averaged over its frames)
    a, b = (rearrange(x.reshape(-1, *x.shape[-3:]), "n h w c -> n c h w") for x in (a, b))
    return metric(a, b).numpy().reshape(lead)


def frame_psnr(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """PSNR (dB) of uint8 frames (..., H, W, 3) on [0, 1], one per frame: shape (...)."""
    return _per_frame(psnr, real, fake)


def frame_ssim(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """SSIM of uint8 frames (..., H, W, 3) on [0, 1], one per frame: shape (...)."""
    return _per_frame(ssim, real, fake)


@torch.no_grad()
def copy_token_frames(world: Any, prompt: np.ndarray, horizon: int) -> np.ndarray:
    """What a world that copies the last prompt frame's tokens would draw: the prompt's own ids,
    the last frame's repeated ``horizon`` times, decoded as ``World.step`` decodes (each frame
    from the latest ``decode_context`` frames' ids). uint8 (B, horizon, H, W, 3)."""
    ids = world.tokenize(prompt)  # (B, P, h, w)
    P = ids.shape[1]
    seq = torch.cat([ids, ids[:, -1:].expand(-1, horizon, -1, -1)], dim=1)  # (B, P + horizon, h, w)
    k = max(1, int(world.decode_context))
    frames: list[np.ndarray] = []
    with inference(world.device, world.precision):
        for n in range(horizon):
            if n >= k and frames:  # the context is all copies from here on: the same frame
                frames.append(frames[-1])
                continue
            end = P + n + 1
            video = world.tokenizer.decode_ids(seq[:, max(0, end - k):end], last=True)  # (B, 3, 1, H, W)
            frames.append(from_model(video.float())[:, 0])
    return np.stack(frames, axis=1)


@torch.no_grad()
def rollout_psnr(world: Any, clips: np.ndarray, *, horizon: int = 4, prompt_frames: int = 1, seed: int = 0,
                 random_actions: np.ndarray | None = None, random_freq_actions: np.ndarray | None = None,
                 actions: np.ndarray | None = None,
                 rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Rollouts and baselines for a batch of real clips uint8 (B, prompt_frames + horizon, H, W, 3).

    The prompt is each clip's first ``prompt_frames`` frames (with the actions between them);
    then ``horizon`` frames are generated with (a) ``actions`` (B, T-1) (default: the LAM's
    inferred from the real clip), (b) ``random_actions`` (B, horizon) (default: uniform from
    ``rng``) and, when given, (c) ``random_freq_actions``. All use the same sampling seed, so
    they differ only through their actions. Baselines: the last prompt frame held still
    ("copy") and its tokens decoded ("copy_tokens"). Returns ``psnr_<name>`` and ``ssim_<name>``
    (B, horizon) per rollout, and the actions used.
    """
    clips = np.stack([fit_frames(c, world.resolution) for c in clips])  # (B, T, H, W, 3), world's size
    B, T = clips.shape[:2]
    if T != prompt_frames + horizon:
        raise GenieError(f"clips need prompt_frames + horizon = {prompt_frames + horizon} frames, got {T}")
    if actions is None:
        actions = world.infer_actions(clips).cpu().numpy()  # (B, T-1): actions[:, t] took frame t to t+1
    actions = np.asarray(actions, dtype=np.int64).reshape(B, T - 1)
    prompt_actions = torch.from_numpy(actions[:, :prompt_frames - 1]) if prompt_frames > 1 else None
    future = actions[:, prompt_frames - 1:]  # (B, horizon): the transitions into frames to generate
    if random_actions is None:
        rng = rng if rng is not None else np.random.default_rng(seed)
        random_actions = rng.integers(0, world.num_actions, size=(B, horizon))
    runs = {"inferred": future, "random": np.asarray(random_actions, dtype=np.int64).reshape(B, horizon)}
    if random_freq_actions is not None:
        runs["random_freq"] = np.asarray(random_freq_actions, dtype=np.int64).reshape(B, horizon)
    prompt, real = clips[:, :prompt_frames], clips[:, prompt_frames:]
    out: dict[str, np.ndarray] = {}
    for name, acts in runs.items():
        video = world.rollout(prompt, acts, seed=seed, prompt_actions=prompt_actions)  # (B, T, H, W, 3)
        fake = video[:, prompt_frames:]
        out[f"psnr_{name}"], out[f"ssim_{name}"] = frame_psnr(real, fake), frame_ssim(real, fake)
        out[f"{name}_actions"] = acts
    held = np.broadcast_to(prompt[:, -1:], real.shape)  # the last prompt frame, held still
    copied = copy_token_frames(world, prompt, horizon)
    for name, fake in (("copy", held), ("copy_tokens", copied)):
        out[f"psnr_{name}"], out[f"ssim_{name}"] = frame_psnr(real, fake), frame_ssim(real, fake)
    return out


def controllability(world: Any, windows: Sequence[ClipWindow], *, horizon: int = 4, prompt_frames: int = 1,
                    seed: int = 0, batch_size: int = 8, actions: ActionFn | None = None,
                    action_source: str | None = None,
                    on_batch: Callable[[int], None] | None = None) -> ControllabilityReport:
    """ΔtPSNR and the baselines over clip windows (see ``sample_windows``), ``batch_size`` windows
    per rollout. ``actions`` gives each window's actions (default: ``actions_for(world)``, the
    LAM's for a latent-action world); their frequencies over all the windows are the
    ``random_freq`` rollout's distribution. Uniform random actions come from one stream seeded by
    ``seed`` (as they always have), frequency-drawn ones from a second; every rollout of a batch
    uses sampling seed ``seed``. ``on_batch(n)`` is told after each batch of ``n`` windows is rolled out."""
    if horizon < 1 or prompt_frames < 1:
        raise GenieError(f"horizon and prompt_frames must be >= 1, got {horizon}, {prompt_frames}")
    if not windows:
        raise GenieError("no clips to evaluate")
    if actions is None:
        action_source, actions = actions_for(world)
    batches = [list(windows[i:i + batch_size]) for i in range(0, len(windows), batch_size)]
    driven = []  # pass 1: every window's actions, so their frequencies are known before rolling out
    for part in batches:
        clips = np.stack([fit_frames(w.frames, world.resolution) for w in part])
        acts = np.asarray(actions(part, clips), dtype=np.int64)
        if acts.shape != (len(part), clips.shape[1] - 1):
            raise GenieError(f"the action source gave shape {acts.shape}, expected {(len(part), clips.shape[1] - 1)}")
        if acts.min() < 0 or acts.max() >= world.num_actions:
            raise GenieError(f"actions must be in 0..{world.num_actions - 1}, got {sorted(set(acts.ravel().tolist()))}")
        driven.append(acts)
    counts = np.bincount(np.concatenate(driven).ravel(), minlength=world.num_actions)
    rng = np.random.default_rng(seed)  # uniform random actions: one stream for the whole evaluation
    freq_rng = np.random.default_rng([seed, 1])  # frequency-drawn: a stream of their own
    freq = counts / counts.sum()
    parts = []
    for part, acts in zip(batches, driven):
        drawn = freq_rng.choice(world.num_actions, size=(len(part), horizon), p=freq)
        parts.append(rollout_psnr(world, np.stack([w.frames for w in part]), horizon=horizon,
                                  prompt_frames=prompt_frames, seed=seed, rng=rng, actions=acts,
                                  random_freq_actions=drawn))
        if on_batch is not None:
            on_batch(len(part))
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return ControllabilityReport(
        horizon, prompt_frames, seed, [w.source for w in windows], [w.start for w in windows],
        psnr={n: cat[f"psnr_{n}"] for n in ROLLOUTS}, ssim={n: cat[f"ssim_{n}"] for n in ROLLOUTS},
        actions={n: cat[f"{n}_actions"] for n in ("inferred", "random", "random_freq")},
        code_counts=counts, action_source=action_source or "custom")


def rollout_bytes_per_clip(world: Any, length: int) -> int:
    """A rough estimate of the memory one clip of ``length`` frames takes in a rollout batch: its
    float32 frames beside the tokenizer's widest activation, and per token one transformer
    layer's activations plus the logits (100000 tiny-preset clips in one batch: about 90 GiB
    estimated; the run had passed 15 GiB and was still growing when stopped at 2 minutes)."""
    H, W = world.resolution
    h, w = world.dynamics.config.token_size
    cfg = world.dynamics.config
    widest = max([getattr(m, "out_channels", 0) for m in world.tokenizer.modules()] + [3])
    pixels = H * W * (3 + 2 * widest)
    tokens = h * w * (cfg.model_dim * (4 + cfg.ffw_mult) + sum(2 ** b for b in cfg.group_bits))
    return int(4 * length * (pixels + tokens))


def check_evaluation_memory(world: Any, count: int, length: int, batch_size: int) -> None:
    """Refuse, before any video is read, an evaluation whose windows (uint8, all held at once) or
    whose rollout batches would not fit in this machine's memory."""
    H, W = world.resolution
    check_memory(count * length * H * W * 3, f"{count} clip windows of {length} frames at {H}x{W}")
    batch = min(count, batch_size)
    check_memory(batch * rollout_bytes_per_clip(world, length),
                 f"rollout batches of {batch} clips of {length} frames (--batch)")


def sample_windows(videos: Sequence[str | os.PathLike], count: int, length: int,
                   resolution: tuple[int, int], seed: int = 0,
                   warn: Callable[[str], None] | None = None,
                   on_error: Callable[[Path, str], None] | None = None) -> Iterator[ClipWindow]:
    """``count`` windows of ``length`` frames, seeded: videos taken in a shuffled order, each
    giving an even share of the windows still to make, each window at a random start. A video
    shorter than ``length`` is skipped (``warn`` is told) and its share moves on; so is one that
    cannot be read or decoded (``on_error(path, reason)`` is told, else ``warn``). Each video is
    decoded once, at ``resolution``, and only one is in memory at a time."""
    rng = np.random.default_rng(seed)
    order = [Path(videos[i]) for i in rng.permutation(len(videos))]
    remaining = count
    while remaining > 0 and order:
        usable = []
        for j, path in enumerate(order):
            if remaining <= 0:
                break
            try:
                frames, _ = read_video(path, size=resolution)  # (T, H, W, 3)
            except (VideoError, OSError) as err:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                if on_error is not None:
                    on_error(path, reason)
                elif warn is not None:
                    warn(f"skipped {reason}" if reason.startswith(str(path)) else f"skipped {path}: {reason}")
                continue
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
