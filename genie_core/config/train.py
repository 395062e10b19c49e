"""Data and optimisation configs shared by all three training stages (Genie §3; nanoGPT-style loop)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MAX_SEED = 2 ** 63 - 1  # torch and numpy generators take seeds in [0, 2**63)
MAX_COUNT = 2 ** 31 - 1  # steps, batch sizes and intervals: beyond this no run is real
MAX_FRAME_SIDE = 8192  # pixels; a larger frame does not fit any model's first layer in memory


def check_seed(seed: int, what: str = "seed") -> int:
    """``seed`` when it is an integer in [0, MAX_SEED], else ValueError naming ``what``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{what} must be an integer in [0, 2**63 - 1], got {seed!r}")
    return seed


@dataclass(frozen=True)
class DataConfig:
    """Clips cut from a folder of videos: resolution, frames per clip, frame stride."""

    resolution: tuple[int, int] = (64, 64)  # (H, W) every frame is resized/centre-cropped to
    num_frames: int = 16  # frames per training clip (also the dynamics context window)
    frame_stride: int = 1  # take every k-th frame
    val_fraction: float = 0.1  # files held out for validation (deterministic by file name)
    val_clips: int = 16  # fixed held-out clips scored at every validation pass
    sample_clips: int = 4  # clips shown (original above reconstruction) in the sample PNG

    def __post_init__(self) -> None:
        if min(self.resolution) < 8 or max(self.resolution) > MAX_FRAME_SIDE:
            raise ValueError(f"resolution must be between 8x8 and {MAX_FRAME_SIDE}x{MAX_FRAME_SIDE}, "
                             f"got {self.resolution}")
        if not 2 <= self.num_frames <= MAX_COUNT:
            raise ValueError(f"num_frames must be in [2, {MAX_COUNT}], got {self.num_frames}")
        if not 1 <= self.frame_stride <= MAX_COUNT:
            raise ValueError(f"frame_stride must be in [1, {MAX_COUNT}], got {self.frame_stride}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_clips < 1 or self.sample_clips < 1:
            raise ValueError("val_clips and sample_clips must be >= 1")


@dataclass(frozen=True)
class OptimConfig:
    """One stage's optimiser and schedule: AdamW, linear warmup, then cosine decay to
    ``min_lr_ratio * lr`` ("cosine") or constant lr with a linear cooldown over the last
    ``cooldown_fraction`` of the steps ("wsd": warmup-stable-decay, good for time-boxed runs)."""

    steps: int = 1000
    batch_size: int = 8  # clips per micro-batch per process (global batch x grad_accum x ranks)
    num_frames: int = 0  # frames per training clip for this stage; 0: data.num_frames (validation
    #                      always uses data.num_frames, so scores stay comparable)
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # schedule floor as a fraction of lr
    warmup_steps: int = 100
    schedule: Literal["cosine", "wsd"] = "cosine"
    cooldown_fraction: float = 0.2  # "wsd" only: share of the steps spent decaying to the floor
    weight_decay: float = 0.01  # applied to matrices / conv kernels only
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0  # 0 disables
    grad_accum: int = 1
    ema_decay: float = 0.0  # 0 disables EMA weights
    disc_lr: float = 0.0  # second optimiser (tokenizer GAN discriminator); 0 means use lr
    disc_start_step: int = 0  # the discriminator and the generator's GAN term start here
    eval_every: int = 200
    save_every: int = 1000
    log_every: int = 10
    compile: bool = False  # run this stage's loss passes through torch.compile (as --compile does
    #                        for every stage); without a C++ compiler on a CPU the stage trains eagerly
    minutes: float = 0.0  # time budget (training steps, evaluations, checkpoints; not the stage's
    #                       set-up): train until it is spent or `steps` is reached, the schedule
    #                       stretched over the steps that fit at the measured step time; 0: `steps`

    def __post_init__(self) -> None:
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be true or false, got {self.compile!r}")
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "save_every", "log_every"):
            if not 1 <= getattr(self, name) <= MAX_COUNT:
                raise ValueError(f"{name} must be in [1, {MAX_COUNT}], got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 < self.cooldown_fraction <= 1.0:
            raise ValueError(f"cooldown_fraction must be in (0, 1], got {self.cooldown_fraction}")
        if self.num_frames == 1 or self.num_frames < 0:
            raise ValueError(f"num_frames must be 0 (data.num_frames) or >= 2, got {self.num_frames}")
        if isinstance(self.minutes, bool) or not (0.0 <= self.minutes <= 1e6):  # also rejects NaN
            raise ValueError(f"minutes must be 0 (no time budget) or a positive number of minutes, "
                             f"got {self.minutes!r}")
        if self.warmup_steps < 0 or self.disc_start_step < 0 or self.disc_lr < 0:
            raise ValueError("warmup_steps, disc_start_step and disc_lr must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """Per-stage optimisation plus settings shared by every stage."""

    tokenizer: OptimConfig = field(default_factory=OptimConfig)
    lam: OptimConfig = field(default_factory=OptimConfig)
    dynamics: OptimConfig = field(default_factory=OptimConfig)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    num_threads: int = 0  # 0: torch's default
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {self.num_threads}")
        check_seed(self.seed, "seed")
