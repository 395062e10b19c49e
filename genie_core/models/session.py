"""A play session over a world bundle: the state machine behind ``genie play``, ``genie
evaluate``, ``WorldEnv`` and the rollout picture. A prompt is tokenized and run through the
dynamics model into its KV cache; each ``step(action)`` samples the next frame's ids (MaskGIT),
appends them to the cache and decodes the newest frame to pixels; ``reset`` goes back to the
prompt with the same seed. The world (``genie_core.models.world.World``) holds the models and the
settings a session reads when it starts (precision, decode_context, use_cache, use_compile,
sampling)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from genie_core.errors import ArgumentError, GenieError
from genie_core.models.dynamics import DynamicsModel
from genie_core.models.layers.st_transformer import KVCache
from genie_core.runtime import inference, resolve_precision, valid_seed


def _compiled_session_dynamics(dynamics: DynamicsModel) -> DynamicsModel:
    """A session's own dynamics copy with each block's spatial attention and feed-forward compiled
    for static shapes: in play they see (B, 1, S, D) at every MaskGIT step. The cached temporal
    attention, whose cache length and slots change frame by frame, stays eager."""
    from genie_core.runtime import compile_in_place

    for block in dynamics.transformer.blocks:
        compile_in_place(block.spatial, dynamic=False)
        compile_in_place(block.ffw, dynamic=False)
    return dynamics


def replenish(previous: np.ndarray, frame: np.ndarray, previous_ids: Tensor, ids: Tensor) -> np.ndarray:
    """Conditional replenishment: ``frame`` (B, H, W, 3) where a token's id changed from
    ``previous_ids`` to ``ids`` (B, h, w), ``previous`` (B, H, W, 3) in the token patches whose id
    did not. H and W must be multiples of h and w."""
    B, h, w = ids.shape
    H, W = frame.shape[1:3]
    if H % h or W % w or previous.shape != frame.shape or previous_ids.shape != ids.shape:
        raise GenieError(f"replenish: frames {frame.shape} / {previous.shape} do not tile into ids "
                         f"{tuple(ids.shape)} / {tuple(previous_ids.shape)}")
    same = (ids == previous_ids).cpu().numpy()
    keep = same.repeat(H // h, axis=1).repeat(W // w, axis=2)[..., None]  # (B, H, W, 1)
    return np.where(keep, previous, frame)


class PlaySession:
    """The prompt, the ids and frames generated since, the KV cache and the sampler's generator
    of one session over ``world`` (batched: B independent rollouts)."""

    def __init__(self, world: Any) -> None:
        self.world = world
        self._prompt_frames: np.ndarray | None = None  # (B, T0, H, W, 3)
        self._prompt_ids: Tensor | None = None  # (B, T0, h, w)
        self._prompt_cache: KVCache | None = None  # None when the session recomputes
        self._prompt_actions: Tensor | None = None  # (B, T0-1)
        self._cache: KVCache | None = None
        self._ids: list[Tensor] = []  # per frame (B, h, w)
        self._actions: list[Tensor] = []  # per transition (B,): _actions[t] took frame t to t+1
        self._frames: list[np.ndarray] = []  # per frame (B, H, W, 3)
        self._seed: int | None = None
        self._models: tuple[DynamicsModel, nn.Module] | None = None  # not submodules: a tuple
        self.generator: torch.Generator | None = None

    def _session_models(self) -> tuple[DynamicsModel, nn.Module]:
        """(dynamics, tokenizer) for a session: under bf16, copies with bf16 weights (autocast
        re-casts fp32 weights at every call, ~20% of a frame's time); under fp32, the models."""
        if resolve_precision(self.world.precision, self.world.device) == "fp32":
            dynamics, tokenizer = self.world.dynamics, self.world.tokenizer
        else:
            half = lambda m: copy.deepcopy(m).to(torch.bfloat16).eval()  # noqa: E731
            dynamics, tokenizer = half(self.world.dynamics), half(self.world.tokenizer)
        if self.world.use_compile:
            dynamics = _compiled_session_dynamics(dynamics if dynamics is not self.world.dynamics
                                                  else copy.deepcopy(dynamics))
        return dynamics, tokenizer

    @torch.no_grad()
    def encode_prompt(self, frames: Any, *, actions: Tensor | None = None, seed: int | None = 0) -> Tensor:
        """Start a session from prompt frames (uint8, any size): tokenize them, run them through
        the dynamics model into its cache, and return their ids (B, T0, h, w).

        A prompt of several frames takes the LAM's actions between them unless ``actions``
        (B, T0-1) are given. ``seed`` fixes the sampling of the whole session (None: random).
        """
        clips = self.world._frames_in(frames)
        B, T0 = clips.shape[:2]
        device = self.world.device
        dynamics, tokenizer = self._session_models()
        with inference(device, self.world.precision):
            video = self.world._to_model(clips)
            ids = self.world.tokenizer.tokenize(video)[1]  # (B, T0, h, w)
            if T0 > 1 and actions is None:
                actions = self.world.lam.infer_actions(video)
            if actions is not None:
                actions = torch.as_tensor(actions, device=device).long().reshape(B, T0 - 1)
                self._check_actions(actions)
            cache = dynamics.prefill(ids, actions) if self.world.use_cache else None
        self._models = (dynamics, tokenizer)
        self._prompt_frames = clips
        self._prompt_ids = ids
        self._prompt_actions = actions
        self._prompt_cache = None if cache is None else cache.copy()
        self._seed = None if seed is None else valid_seed(seed)
        self.reset()
        self._cache = cache
        return ids

    def reset(self) -> None:
        """Back to the prompt: generated frames dropped, the sampler reseeded (same seed, same rollout)."""
        if self._prompt_frames is None:
            raise GenieError("no prompt: call encode_prompt(frames) first")
        self._cache = None if self._prompt_cache is None else self._prompt_cache.copy()
        self._ids = list(self._prompt_ids.unbind(1))
        self._actions = [] if self._prompt_actions is None else list(self._prompt_actions.unbind(1))
        self._frames = list(self._prompt_frames.transpose(1, 0, 2, 3, 4))
        self.generator = torch.Generator(device=self.world.device)
        if self._seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(self._seed)

    def _check_actions(self, actions: Tensor) -> None:
        if actions.numel() and (actions.min() < 0 or actions.max() >= self.world.num_actions):
            raise ArgumentError(f"latent actions must be in 0..{self.world.num_actions - 1}, got "
                                f"{sorted(set(actions.flatten().tolist()))}")

    @torch.no_grad()
    def step(self, action: int | Sequence[int] | Tensor, *, generator: torch.Generator | None = None,
             **sampling: Any) -> np.ndarray:
        """Generate the frame that latent ``action`` (an int, or one per batch row) leads to;
        returns it as uint8 (B, H, W, 3). ``sampling`` overrides single fields of
        ``self.world.sampling`` (steps, temperature, schedule, unmask, choice_temperature, top_p, ...)."""
        if self._prompt_frames is None:
            raise GenieError("no prompt: call encode_prompt(frames) first")
        B = self._prompt_frames.shape[0]
        act = torch.as_tensor(action, device=self.world.device).long().reshape(-1)
        if act.numel() == 1:
            act = act.expand(B)
        if act.numel() != B:
            raise ArgumentError(f"expected 1 or {B} actions, got {act.numel()}")
        self._check_actions(act)
        cfg = dataclasses.replace(self.world.sampling, **sampling)
        dynamics, tokenizer = self._models
        with inference(self.world.device, self.world.precision):
            context, context_actions = self._context(dynamics)
            ids = dynamics.generate_next(context, act, context_actions=context_actions, sampling=cfg,
                                         previous=self._ids[-1],
                                         generator=generator or self.generator)
            self._ids.append(ids)
            self._actions.append(act)
            context = torch.stack(self._ids[-self.world.decode_context:], dim=1)  # (B, k, h, w)
            frame = self.world._decode(tokenizer, context)
        if cfg.render == "replenish":
            frame = replenish(self._frames[-1], frame, self._ids[-2], ids)
        self._frames.append(frame)
        return frame

    def _context(self, dynamics: DynamicsModel) -> tuple[KVCache | Tensor, Tensor | None]:
        """generate_next's context: the cache, or the session's ids and actions (only the last
        receptive_frames + 1: earlier ones cannot reach the next frame)."""
        if self._cache is not None:
            return self._cache, None
        n = min(len(self._ids), dynamics.receptive_frames + 1)
        ids = torch.stack(self._ids[len(self._ids) - n:], dim=1)
        acts = self._actions[len(self._actions) - (n - 1):] if n > 1 else []
        return ids, torch.stack(acts, dim=1) if acts else None

    def frames(self) -> np.ndarray:
        """Prompt and generated frames so far, uint8 (B, T, H, W, 3)."""
        if not self._frames:
            raise GenieError("no prompt: call encode_prompt(frames) first")
        return np.stack(self._frames, axis=1)

    def ids(self) -> Tensor:
        """Token ids of the prompt and generated frames so far, (B, T, h, w)."""
        return torch.stack(self._ids, dim=1)

    @property
    def length(self) -> int:
        return len(self._frames)

    @torch.no_grad()
    def rollout(self, frames: Any, actions: Any, *, seed: int | None = 0,
                prompt_actions: Tensor | None = None, **sampling: Any) -> np.ndarray:
        """Prompt frames, then one generated frame per action: actions (N,) shared by the batch
        or (B, N); returns uint8 (B, T0 + N, H, W, 3)."""
        self.encode_prompt(frames, actions=prompt_actions, seed=seed)
        acts = torch.as_tensor(np.asarray(actions)).long()
        if acts.ndim == 1:
            acts = acts[None].expand(self._prompt_frames.shape[0], -1)
        for n in range(acts.shape[1]):
            self.step(acts[:, n], **sampling)
        return self.frames()
