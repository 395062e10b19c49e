"""The dynamics model's training stage (Genie §2.1 and §3): MaskGIT on the frozen tokenizer's ids with
the frozen LAM's latent actions. Both are computed once per data cache and kept on disk (token
files in the ``genie tokenize`` format), so a training step never runs the tokenizer. When the
stage has trained, ``RUN/world.safetensors`` bundles tokenizer, LAM and dynamics for ``genie play``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genie_core.errors import GenieError
from genie_core.io.checkpoint_format import atomic_path
from genie_core.io.frames import from_model, to_model
from genie_core.io.pictures import make_grid
from genie_core.io.tokens import TokenFileError, file_digest, load_tokens, save_tokens
from genie_core.metrics import psnr
from genie_core.models.dynamics import DynamicsModel
from genie_core.models.load import load_model
from genie_core.models.window_encode import encode_ids, token_meta, warmup_frames
from genie_core.models.world import World, paired_dynamics_config
from genie_core.runtime import inference
from genie_core.training.stages import Stage, register

WORLD_FILE = "world.safetensors"
BATCH_WINDOWS = 8  # tokenizer windows encoded together
LAM_CHUNK = 64  # frames handed to the LAM at a time


def true_action_names(cache: Any, count: int) -> tuple[str, ...]:
    """Names of true actions 0..count-1 from the data folder's sidecars: the name each id carries
    most often in their per-frame ``action_names`` (ids merged as "effective" keep their main
    name), else the recording's ``meta.json`` list (``genie record``), else the id. () when no
    sidecar names any action."""
    import json
    from collections import Counter

    if cache.folder is None:
        return ()
    votes: dict[int, Counter] = {}
    for video in cache.videos:
        try:
            per_frame = json.loads((cache.folder / video.path).with_suffix(".json").read_text()).get("action_names")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(per_frame, list):
            for a, name in zip(video.actions or (), per_frame):
                if 0 <= a < count and isinstance(name, str) and name:
                    votes.setdefault(a, Counter())[name] += 1
    recorded: list = []
    for meta in (cache.folder / "meta.json", cache.folder.parent / "meta.json"):  # data: DIR or DIR/clips
        try:
            recorded = json.loads(meta.read_text()).get("action_names") or []
            break
        except (OSError, ValueError, AttributeError):
            continue
    if not votes and not recorded:
        return ()
    fallback = lambda i: recorded[i] if i < len(recorded) and isinstance(recorded[i], str) else str(i)  # noqa: E731
    return tuple(votes[i].most_common(1)[0][0] if i in votes else fallback(i) for i in range(count))


@register
class DynamicsStage(Stage):
    name = "dynamics"
    kind = "dynamics"

    # ---- frozen inputs ---------------------------------------------------------------------
    def _source(self, part: str) -> Path:
        """``--tokenizer`` / ``--lam`` when given, else the same run's earlier stage."""
        if part in self.inputs:
            return self.inputs[part]
        path = self.checkpoint_path(part)
        if path.is_file():
            return path
        raise GenieError(f"the dynamics stage needs a trained {part}: pass --{part} FILE "
                         f"(a {part} or world checkpoint) or train --stage {part} into {self.run_dir} first")

    def prepare(self, data: Any) -> None:
        tok_path, lam_path = self._source("tokenizer"), self._source("lam")
        # Name the token and action caches, and go into the state (a resume on others is refused).
        self._digests = {"tokenizer": file_digest(tok_path), "lam": file_digest(lam_path)}
        self.tokenizer = load_model(tok_path, "tokenizer", device=self.device, inference=True).requires_grad_(False)
        self.lam = load_model(lam_path, "lam", device=self.device).requires_grad_(False)
        self.resolution = tuple(self.cfg.data.resolution)
        if tuple(data.cache.resolution) != self.resolution:
            raise GenieError(f"data cache is {data.cache.resolution}, the preset wants {self.resolution}")
        lam_res = self.lam.config.resolution
        if lam_res is not None and tuple(lam_res) != self.resolution:
            raise GenieError(f"{lam_path}: the LAM was trained at {tuple(lam_res)}, the data is {self.resolution}")
        self.cache = data.cache
        dyn = self.cfg.dynamics
        if dyn.action_source == "truth":
            dyn = self._true_action_config(dyn)
        self.dyn_cfg = paired_dynamics_config(dyn, self.tokenizer, self.lam, self.resolution, warn=self.warn)
        self.tokens = torch.from_numpy(self._token_table(tok_path))  # (N, h, w) int32
        # Actions of stride-1 neighbours; clips with a frame stride take them per batch.
        self.actions = None
        if dyn.action_source == "truth":
            self.actions = torch.from_numpy(self._true_action_table())
        elif self.cfg.data.frame_stride == 1:
            self.actions = torch.from_numpy(self._action_table())  # (N,) int64

    def input_digests(self) -> dict[str, str]:
        return dict(getattr(self, "_digests", {}))

    def _true_action_config(self, dyn: Any) -> Any:
        """The oracle: the sidecars' true actions drive the model; their count comes from the data
        (or from ``dynamics.action_names`` when the preset names them)."""
        if self.cfg.data.frame_stride != 1:
            raise GenieError("dynamics.action_source=truth needs data.frame_stride=1")
        missing = [v.path for v in self.cache.videos if v.actions is None]
        if missing:
            raise GenieError(f"dynamics.action_source=truth needs true actions in every video's sidecar; "
                             f"{len(missing)} have none (e.g. {missing[0]})")
        top = max(max(v.actions) for v in self.cache.videos)
        count = len(dyn.action_names) or top + 1
        if top >= count:
            raise GenieError(f"the sidecars hold action {top}, dynamics.action_names names only {count}")
        if dyn.num_actions is not None and dyn.num_actions != count:
            self.warn(f"dynamics.num_actions is {dyn.num_actions} in the config but the data's true actions "
                      f"number {count}; using {count} (leave dynamics.num_actions unset to follow the data)")
        names = dyn.action_names or true_action_names(self.cache, count)
        return dataclasses.replace(dyn, num_actions=count, action_names=names)

    def _true_action_table(self) -> np.ndarray:
        """The sidecars' true action at every frame of the frame cache, (N,) int64 (-1 unknown)."""
        table = np.full(len(self.cache.frames), -1, np.int64)
        for video in self.cache.videos:
            table[video.offset: video.offset + video.num_frames] = np.asarray(video.actions, np.int64)
        return table

    def _token_table(self, tok_path: Path) -> np.ndarray:
        """Ids of every frame of the frame cache, (N, h, w) int32, from per-video token files
        (``genie tokenize`` format) under ``<cache>/tokens/<tokenizer digest>/``."""
        digest = self._digests["tokenizer"]
        root = self.cache.root / "tokens" / digest
        h, w = self.dyn_cfg.token_size
        table = np.zeros((len(self.cache.frames), h, w), np.int32)
        warmup = warmup_frames(self.tokenizer)
        for video in self.cache.videos:
            path = root / f"{video.path}.npz"
            ids = None
            if path.is_file():
                try:
                    ids, meta = load_tokens(path)
                    # A file without the warm-up came from independent windows, one without the
                    # precision from before it was recorded (bf16 and fp32 ids differ): encode again.
                    if (ids.shape != (video.num_frames, h, w) or meta.get("tokenizer_digest") != digest
                            or meta.get("window_warmup") != warmup or meta.get("precision") != self.precision):
                        ids = None
                except TokenFileError:
                    ids = None
            if ids is None:
                ids = self._tokenize(self.cache.frames[video.offset: video.offset + video.num_frames])
                save_tokens(path, ids, token_meta(
                    self.tokenizer, source=video.path, fps=None, num_frames=video.num_frames,
                    frame_size=self.resolution, tokenizer=str(tok_path), digest=digest,
                    window=self.cfg.data.num_frames, precision=self.precision))
            table[video.offset: video.offset + video.num_frames] = ids
        return table

    def _tokenize(self, frames: np.ndarray) -> np.ndarray:
        """Ids (n, h, w) of one video's frames (n, H, W, 3): windows of the training clip length,
        each encoded after a causal warm-up (as ``genie tokenize`` does), so the ids equal one
        continuous encoding of the video; batched."""
        window = self.cfg.data.num_frames
        windows = (frames[i: i + window] for i in range(0, len(frames), window))
        return encode_ids(self.tokenizer, windows, device=self.device, precision=self.precision,
                          batch_windows=BATCH_WINDOWS)[0]

    def _action_table(self) -> np.ndarray:
        """Latent action at every frame of the frame cache (taking it to the next), (N,) int64;
        -1 at each video's last frame. Cached as ``<cache>/lam_actions/<lam digest>-<precision>.npz``."""
        path = self.cache.root / "lam_actions" / f"{self._digests['lam']}-{self.precision}.npz"
        N = len(self.cache.frames)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    table = data["actions"].astype(np.int64)
                if table.shape == (N,):
                    return table
            except (ValueError, OSError, KeyError):
                pass
        table = np.full(N, -1, np.int64)
        for video in self.cache.videos:
            if video.num_frames < 2:
                continue
            frames = self.cache.frames[video.offset: video.offset + video.num_frames]
            chunks = (to_model(np.array(frames[i: i + LAM_CHUNK]), device=self.device)
                      for i in range(0, len(frames), LAM_CHUNK))
            with inference(self.device, self.precision):
                acts = self.lam.infer_actions_stream(chunks).cpu().numpy()[0]  # (n-1,)
            table[video.offset: video.offset + video.num_frames - 1] = acts
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, actions=table.astype(np.int32))
        return table

    def _batch_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached ids (B, T, h, w) and latent actions (B, T-1) of a batch's clips."""
        index = batch["frame_index"].cpu()  # (B, T)
        ids = self.tokens[index].to(self.device, torch.long)
        if self.actions is not None:
            actions = self.actions[index[:, :-1]].to(self.device)
        else:
            with torch.no_grad():
                actions = self.lam.infer_actions(to_model(batch["frames"]))
        if (actions < 0).any():
            raise GenieError("a training clip crosses the end of a video (no latent action there)")
        return ids, actions

    # ---- the stage -------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        return DynamicsModel(self.dyn_cfg)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict]:
        ids, actions = self._batch_inputs(batch)
        return model.loss(ids, actions)

    def evaluate(self, model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Masked-token loss/accuracy (fixed masks) and one-step generation: the last frame of each
        clip from the others, with the clip's action and with a random one, both sampled from the
        same seed (PSNR, token accuracy). Token accuracy stands beside its trivial baseline, the
        copy level (the last frame's tokens equal the one before), and is also reported where the
        token changes (``next_token_acc_changed``): a model that only copies scores 0 there."""
        g = torch.Generator().manual_seed(0)
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}

        def add(key: str, value: float, weight: float) -> None:
            sums[key] = sums.get(key, 0.0) + value * weight
            weights[key] = weights.get(key, 0.0) + weight

        for i, batch in enumerate(batches):
            ids, actions = self._batch_inputs(batch)
            B = ids.shape[0]
            _, m = model.loss(ids, actions, generator=g)
            for k, v in m.items():
                add(k, float(v), B)
            real = (to_model(batch["frames"][:, -1:]) + 1) / 2  # (B, 3, 1, H, W) in [0, 1]
            random = torch.randint(0, model.num_actions, (B,), generator=g).to(self.device)
            target, prev = ids[:, -1], ids[:, -2]
            changed = target != prev
            add("next_copy_acc", float((prev == target).float().mean()), B)
            cache = model.prefill(ids[:, :-1], actions[:, :-1])
            psnrs = {}
            for name, act in (("", actions[:, -1]), ("_random", random)):
                seed = torch.Generator().manual_seed(1000 + i)  # the same sampling noise for both
                new = model.generate_next(cache.copy(), act, generator=seed, previous=prev)  # (B, h, w)
                frame = self._decode_last(torch.cat((ids[:, :-1], new[:, None]), dim=1))
                psnrs[name] = float(psnr(frame, real).mean())
                add(f"next_psnr{name}", psnrs[name], B)
                hit = new == target
                add(f"next_token_acc{name}", float(hit.float().mean()), B)
                if changed.any():
                    add(f"next_token_acc_changed{name}", float(hit[changed].float().mean()), float(changed.sum()))
            add("next_delta_psnr", psnrs[""] - psnrs["_random"], B)
        return {k: v / weights[k] for k, v in sums.items()}

    def _decode_last(self, ids: torch.Tensor, context: int = 4) -> torch.Tensor:
        """The last frame of ids (B, T, h, w), decoded from its last ``context`` frames: (B, 3, 1, H, W) in [0, 1]."""
        video = self.tokenizer.decode_ids(ids[:, -context:], last=True).float()
        return ((video + 1) / 2).clamp(0, 1)

    def sample_picture(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """Per clip: the real frames above frames generated from its first frame with the LAM's actions."""
        ids, actions = self._batch_inputs(batch)
        g = torch.Generator().manual_seed(0)
        cache = model.prefill(ids[:, :1])
        generated = [ids[:, 0]]
        for t in range(actions.shape[1]):
            generated.append(model.generate_next(cache, actions[:, t], generator=g, previous=generated[-1]))
        video = self.tokenizer.decode_ids(torch.stack(generated, dim=1)).float()  # (B, 3, T, H, W)
        fakes = from_model(video)
        rows, labels = [], []
        for real, fake, acts in zip(batch["frames"].cpu().numpy(), fakes, actions.tolist()):
            rows += [real, fake]
            labels += ["real", "gen " + "".join(str(a) for a in acts)[:24]]
        return make_grid(rows, labels=labels)

    def finish(self) -> None:
        """Bundle tokenizer, LAM and the trained dynamics into ``RUN/world.safetensors``."""
        dyn_path = self.checkpoint_path("dynamics")
        dynamics = load_model(dyn_path, "dynamics")
        step = dynamics.checkpoint_step  # checked when loaded
        world = World(self.tokenizer.cpu(), self.lam.cpu(), dynamics, self.resolution)
        world.save(self.run_dir / WORLD_FILE, step=step)
        self.tokenizer.to(self.device)
        self.lam.to(self.device)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        return {"parameters": sum(p.numel() for p in model.parameters()),
                "vocab_bits": model.config.code_bits, "token_size": list(model.token_size),
                "frames_tokenized": int(len(self.tokens)), "tokens_per_frame": math.prod(model.token_size)}
