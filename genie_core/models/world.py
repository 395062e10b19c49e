"""The world: tokenizer + latent action model + dynamics in one bundle (kind ``world``): its
paired config, its checkpoint, frames in and out at its resolution, and the settings of its play
session (Genie §2.2, "Inference: action-controllable video generation"; the session's state
machine, prompt in and one frame per latent action out with past keys/values cached, is
``genie_core.models.session.PlaySession``, reached through ``world.session`` or the methods below).

Session API (what ``genie play`` and the ΔtPSNR evaluation use)::

    world = load_model("RUN/world.safetensors")           # or World.from_preset("tiny")
    world.encode_prompt(frames, seed=0)   # uint8 (H,W,3) | (T,H,W,3) | (B,T,H,W,3), any size
    frame = world.step(3)                 # uint8 (B, H, W, 3): the frame latent action 3 leads to
    world.reset()                         # back to the prompt (same seed, same rollout)
    video = world.session_frames()        # uint8 (B, T, H, W, 3): prompt + generated frames
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from genie_core.config.base import from_dict, to_dict
from genie_core.config.dynamics import DynamicsConfig, SamplingConfig
from genie_core.config.lam import LamConfig
from genie_core.config.tokenizer import TokenizerConfig
from genie_core.errors import ArgumentError, GenieError
from genie_core.io.checkpoint_format import (
    Checkpointable,
    checkpoint_config,
    save_checkpoint,
    sub_state,
)
from genie_core.models.dynamics import DynamicsModel
from genie_core.models.tokenizer import TRAINING_ONLY
from genie_core.runtime import inference

__all__ = ["World", "WorldConfig", "paired_dynamics_config", "inference_tokenizer_config"]

PARTS = ("tokenizer", "lam", "dynamics")
# Tokenizer parts that only training needs; a world bundle leaves them out.
_TRAINING_ONLY = tuple("tokenizer." + prefix for prefix in TRAINING_ONLY)


@dataclass(frozen=True)
class WorldConfig:
    """What a world bundle's metadata holds: the frame size and the three models' configs."""

    resolution: tuple[int, int]
    tokenizer: TokenizerConfig
    lam: LamConfig
    dynamics: DynamicsConfig


def inference_tokenizer_config(cfg: TokenizerConfig) -> TokenizerConfig:
    """The tokenizer config without its training-only parts (GAN discriminator, perceptual loss)."""
    return dataclasses.replace(cfg, disc=None, perceptual_model=None, perceptual_weights=None)


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def paired_values(cfg: DynamicsConfig, tokenizer: Any, lam: Any, resolution: Sequence[int]) -> dict[str, Any]:
    """What a dynamics model paired with ``tokenizer`` and ``lam`` at ``resolution`` must have:
    ``code_bits``, ``token_size`` and ``num_actions`` (true actions: ``cfg``'s own count, which
    the training stage takes from the data). One latent frame per video frame is required."""
    if tokenizer.time_downsample != 1:
        raise ArgumentError(f"a world needs a tokenizer with one latent frame per video frame; "
                            f"this one compresses time by {tokenizer.time_downsample} (use a preset "
                            "with time stride 1)")
    H, W = resolution
    s = tokenizer.space_downsample
    if H % s or W % s:
        raise ArgumentError(f"frame size {H}x{W} is not a multiple of the tokenizer's downsampling {s}")
    # Latent actions come from the LAM; true actions are the game's (the stage counts them).
    num_actions = lam.num_actions if cfg.action_source == "latent" else cfg.num_actions
    if num_actions is None:
        raise ArgumentError("dynamics.action_source=truth needs dynamics.num_actions (the game's action count)")
    return {"code_bits": int(tokenizer.code_bits), "token_size": (H // s, W // s), "num_actions": int(num_actions)}


def paired_dynamics_config(cfg: DynamicsConfig, tokenizer: Any, lam: Any, resolution: Sequence[int],
                           warn: Callable[[str], None] = _stderr) -> DynamicsConfig:
    """``cfg`` with the vocabulary, token grid and action count of the given tokenizer and LAM.
    A value ``cfg`` states that disagrees is reported through ``warn`` (naming both), then the
    models' value is used: the trained models are what the dynamics model must fit."""
    values = paired_values(cfg, tokenizer, lam, resolution)
    for key, want in values.items():
        got = getattr(cfg, key)
        if got is not None and tuple(np.atleast_1d(got)) != tuple(np.atleast_1d(want)):
            source = "tokenizer" if key == "code_bits" else "tokenizer and frame size" if key == "token_size" else "LAM"
            shown = list(want) if isinstance(want, tuple) else want
            warn(f"dynamics.{key} is {list(got) if isinstance(got, tuple) else got} in the config but the "
                 f"trained {source} give{'s' if source != 'tokenizer and frame size' else ''} {shown}; "
                 f"using {shown} (leave dynamics.{key} unset to follow them)")
    return dataclasses.replace(cfg, **values)


class World(nn.Module, Checkpointable):
    """A playable world model: ``tokenizer``, ``lam`` and ``dynamics`` submodules (eval mode).

    ``precision`` ("auto" | "bf16" | "fp32"; auto: bf16 where the device has bf16 matmuls in
    hardware, else fp32), ``decode_context`` (how many of the latest frames' ids
    the causal decoder sees to draw the newest frame) and ``use_cache`` (False: each frame is
    recomputed from the session's ids by the banded forward of training instead of read from
    the KV cache; the same frames, slower) and ``use_compile`` (True: the session's dynamics
    runs its per-frame spatial attention and feed-forward through ``torch.compile``, one graph
    for the frame's fixed shape; the first frames wait for the compiler) are plain attributes a
    caller may change (they take effect at the next ``encode_prompt``).
    """

    kind = "world"
    config_section = ""  # not a GenieConfig section: config_dict / from_checkpoint_state below

    def __init__(self, tokenizer: nn.Module, lam: nn.Module, dynamics: DynamicsModel,
                 resolution: Sequence[int] | None = None) -> None:
        super().__init__()
        resolution = resolution or lam.config.resolution
        if resolution is None:
            raise GenieError("World needs the frame resolution (the LAM config has none)")
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.tokenizer, self.lam, self.dynamics = tokenizer, lam, dynamics
        for key, want in paired_values(dynamics.config, tokenizer, lam, self.resolution).items():
            got = getattr(dynamics.config, key)
            if tuple(np.atleast_1d(got)) != tuple(np.atleast_1d(want)):
                raise GenieError(f"dynamics.{key} is {got} but the tokenizer/LAM give {want}")
        self.precision = "auto"
        self.decode_context = 2  # 1: 11 ms, 2: 14 ms, 4: 23 ms per frame for small's decoder
        self.use_cache = True
        self.use_compile = False
        self.sampling: SamplingConfig = dynamics.config.sampling
        self.eval()
        self.reset_session()

    # ---- construction and checkpoints ------------------------------------------------------
    @property
    def config(self) -> WorldConfig:
        lam_cfg = self.lam.config
        if lam_cfg.resolution is None:
            lam_cfg = dataclasses.replace(lam_cfg, resolution=self.resolution)
        return WorldConfig(self.resolution, inference_tokenizer_config(self.tokenizer.config),
                           lam_cfg, self.dynamics.config)

    @classmethod
    def from_config(cls, cfg: WorldConfig) -> "World":
        from genie_core.models.lam import LatentActionModel
        from genie_core.models.tokenizer import VideoTokenizer

        tokenizer = VideoTokenizer.from_config(inference_tokenizer_config(cfg.tokenizer))
        lam = LatentActionModel.from_config(cfg.lam)
        return cls(tokenizer, lam, DynamicsModel(cfg.dynamics), cfg.resolution)

    @classmethod
    def from_preset(cls, name: str, overrides: tuple[str, ...] | list[str] = ()) -> "World":
        """An UNTRAINED world of a preset (the dynamics fitted to its tokenizer and LAM)."""
        from genie_core.config import dynamics_config_for_preset, lam_config_for_data, load_preset
        from genie_core.models.lam import LatentActionModel
        from genie_core.models.tokenizer import VideoTokenizer

        cfg = load_preset(name, overrides)
        resolution = tuple(cfg.data.resolution)
        tokenizer = VideoTokenizer.from_config(inference_tokenizer_config(cfg.tokenizer))
        lam = LatentActionModel.from_config(lam_config_for_data(cfg))
        dyn_cfg = paired_dynamics_config(dynamics_config_for_preset(cfg), tokenizer, lam, resolution)
        return cls(tokenizer, lam, DynamicsModel(dyn_cfg), resolution)

    def config_dict(self) -> dict:
        return to_dict(self.config)

    def bundle_state(self) -> dict[str, Tensor]:
        """The state dict without the tokenizer's training-only parts (prefixes ``tokenizer.``,
        ``lam.``, ``dynamics.``)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(_TRAINING_ONLY)}

    def save(self, path: Any, step: int = 0, extra: dict[str, str] | None = None) -> None:
        save_checkpoint(path, self.bundle_state(), kind=self.kind, config=self.config_dict(),
                        step=step, extra=extra)

    @classmethod
    def from_checkpoint_state(cls, tensors: dict[str, Tensor], meta: dict[str, str]) -> "World":
        raw = checkpoint_config(meta)
        cfg = from_dict(WorldConfig, raw, source="world checkpoint config")
        world = cls.from_config(cfg)
        for part in PARTS:
            getattr(world, part).load_state_dict(sub_state(tensors, part), strict=True)
        unknown = sorted({k.split(".", 1)[0] for k in tensors} - set(PARTS))
        if unknown:
            raise ValueError(f"unexpected tensors under {', '.join(unknown)}")
        return world

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def num_actions(self) -> int:
        """Actions the world takes: the LAM's latent codes, or the game's true actions."""
        return self.dynamics.num_actions

    @property
    def action_source(self) -> str:
        """"latent" (the LAM's codes, Genie) or "truth" (trained on the game's own actions)."""
        return self.dynamics.config.action_source

    @property
    def action_names(self) -> tuple[str, ...]:
        """Names of the actions where the training data gave them (true actions), else ()."""
        return self.dynamics.config.action_names

    # ---- pixels <-> model ------------------------------------------------------------------
    def _frames_in(self, frames: Any) -> np.ndarray:
        """uint8 (H,W,3) | (T,H,W,3) | (B,T,H,W,3), numpy or torch, any size -> (B,T,H,W,3) at
        the world's resolution (centre-crop + resize)."""
        from genie_core.io.frames import fit_frames

        arr = frames.detach().cpu().numpy() if isinstance(frames, Tensor) else np.asarray(frames)
        if arr.dtype != np.uint8:
            raise ArgumentError(f"prompt frames must be uint8, got {arr.dtype}")
        if arr.ndim == 3:
            arr = arr[None, None]
        elif arr.ndim == 4:
            arr = arr[None]
        if arr.ndim != 5 or arr.shape[-1] not in (1, 3, 4):
            raise ArgumentError(f"prompt frames must be (H, W, 3), (T, H, W, 3) or (B, T, H, W, 3), "
                                f"got shape {arr.shape}")
        return np.stack([fit_frames(clip, self.resolution) for clip in arr])

    def _to_model(self, frames: np.ndarray) -> Tensor:
        from genie_core.io.frames import to_model
        return to_model(frames, device=self.device)

    def _decode(self, tokenizer: nn.Module, ids: Tensor) -> np.ndarray:
        """ids (B, k, h, w) -> the last frame as uint8 (B, H, W, 3)."""
        from genie_core.io.frames import from_model
        video = tokenizer.decode_ids(ids, last=True)  # (B, 3, 1, H, W)
        return from_model(video.float())[:, 0]

    @torch.no_grad()
    def tokenize(self, frames: Any) -> Tensor:
        """Token ids (B, T, h, w) of uint8 frames (any size; resized to the world's)."""
        with inference(self.device, self.precision):
            return self.tokenizer.tokenize(self._to_model(self._frames_in(frames)))[1]

    @torch.no_grad()
    def infer_actions(self, frames: Any) -> Tensor:
        """The LAM's latent actions (B, T-1) for uint8 frames; ``actions[:, t]`` took frame t to t+1."""
        with inference(self.device, self.precision):
            return self.lam.infer_actions(self._to_model(self._frames_in(frames)))

    # ---- the play session (genie_core.models.session) ------------------------------------
    def reset_session(self) -> None:
        """Forget the prompt and everything generated: a fresh session."""
        from genie_core.models.session import PlaySession
        self.session = PlaySession(self)

    def encode_prompt(self, frames: Any, *, actions: Tensor | None = None, seed: int | None = 0) -> Tensor:
        """``PlaySession.encode_prompt``: start the session from prompt frames."""
        return self.session.encode_prompt(frames, actions=actions, seed=seed)

    def reset(self) -> None:
        """``PlaySession.reset``: back to the prompt, the sampler reseeded."""
        self.session.reset()

    def step(self, action: int | Sequence[int] | Tensor, *, generator: torch.Generator | None = None,
             **sampling: Any) -> np.ndarray:
        """``PlaySession.step``: the frame ``action`` leads to, uint8 (B, H, W, 3)."""
        return self.session.step(action, generator=generator, **sampling)

    def rollout(self, frames: Any, actions: Any, *, seed: int | None = 0,
                prompt_actions: Tensor | None = None, **sampling: Any) -> np.ndarray:
        """``PlaySession.rollout``: prompt frames, then one generated frame per action."""
        return self.session.rollout(frames, actions, seed=seed, prompt_actions=prompt_actions, **sampling)

    def session_frames(self) -> np.ndarray:
        return self.session.frames()

    def session_ids(self) -> Tensor:
        return self.session.ids()

    @property
    def session_length(self) -> int:
        return self.session.length

    @property
    def generator(self) -> torch.Generator | None:
        return self.session.generator

    def describe(self) -> dict[str, Any]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"resolution": list(self.resolution), "num_actions": self.num_actions,
                "tokens": list(self.dynamics.token_size), "code_bits": self.dynamics.config.code_bits,
                **{f"{part}_parameters": count(getattr(self, part)) for part in PARTS}}

    def __repr__(self) -> str:  # the default nn.Module repr of three models is pages long
        return f"World({json.dumps(self.describe())})"
