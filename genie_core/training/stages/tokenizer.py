"""The video tokenizer's training stage (Genie §2.1 and MagViT-2 §3): reconstruction, quantiser,
perceptual and GAN losses from ``VideoTokenizer.generator_loss``; the discriminator trains with its
own optimiser from ``train.tokenizer.disc_start_step`` on; validation scores PSNR, SSIM,
codebook usage and token stability on held-out clips."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from genie_core.io.frames import from_model, to_model
from genie_core.io.pictures import make_grid
from genie_core.metrics import codebook_usage, psnr, ssim, token_stability
from genie_core.training.stages import Stage, register

MAX_PICTURE_FRAMES = 8  # frames per row in the sample picture


def _detached(aux: dict) -> dict:
    return {k: v.detach() if torch.is_tensor(v) else v for k, v in aux.items()}


@register
class TokenizerStage(Stage):
    name = "tokenizer"
    kind = "tokenizer"

    def build_model(self) -> nn.Module:
        from genie_core.models.tokenizer import VideoTokenizer

        model = VideoTokenizer.from_config(self.cfg.tokenizer)
        self.has_discriminator = model.discriminator is not None
        if model.perceptual is not None:
            self._load_perceptual(model)
        return model

    def _load_perceptual(self, model: nn.Module) -> None:
        """Read the VGG16 weights now, so a bad file fails before the run folder exists. The
        issue's "perceptual (when weights are available)": a preset asking for VGG16 with no file
        in the torch hub cache trains without it and says so; a path named in the config must exist."""
        from genie_core.models.losses import default_vgg16_path

        if self.cfg.tokenizer.perceptual_weights is None and not default_vgg16_path().is_file():
            if not getattr(self, "_warned_perceptual", False):
                self.warn(f"perceptual loss off: no VGG16 weights at {default_vgg16_path()} "
                          "(put torchvision's vgg16-397923af.pth there to use it)")
                self._warned_perceptual = True
            model.perceptual = None  # its VGG buffers are not in state_dict, so checkpoints match
            return
        model.perceptual.load_weights()

    def gan_on(self, step: int) -> bool:
        return self.has_discriminator and step >= self.optim_config().disc_start_step

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor],
             step: int) -> tuple[torch.Tensor, dict]:
        video = to_model(batch["frames"])  # (B, 3, T, H, W) in [-1, 1]
        loss, aux, rec = model.generator_loss(video, use_gan=self.gan_on(step))
        batch["_video"], batch["_rec"] = video, rec.detach()  # reused by the discriminator step
        return loss, _detached(aux)

    def aux_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [] if model.discriminator is None else list(model.discriminator.parameters())

    def aux_active(self, step: int) -> bool:
        return self.gan_on(step)

    def aux_loss(self, model: nn.Module, batch: dict[str, torch.Tensor],
                 step: int) -> tuple[torch.Tensor, dict]:
        loss, aux = model.discriminator_loss(batch["_video"], batch["_rec"])
        return loss, _detached(aux)

    def _reconstruct(self, model: nn.Module, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(original, reconstruction) in [0, 1] as float (B, 3, T, H, W), and the token ids.

        A time-/f encoder gives ceil(T / f) latent frames; the decoder's ceil(T / f) * f frames
        are trimmed at the front to the input's T (as ``VideoTokenizer.reconstruct`` does)."""
        video = to_model(frames)
        codes, ids = model.tokenize(video)
        rec = model.decode(codes)[:, :, -video.shape[2]:].float().clamp(-1, 1)
        return (video + 1) / 2, (rec + 1) / 2, ids

    def evaluate(self, model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        psnrs, ssims, ids, frames = [], [], [], []
        for batch in batches:
            real, rec, batch_ids = self._reconstruct(model, batch["frames"])
            psnrs.append(psnr(rec, real))  # (B,) mean over frames
            ssims.append(ssim(rec, real))
            ids.append(batch_ids.cpu())
            frames.append(batch["frames"].cpu())
        usage, perplexity = codebook_usage(torch.cat(ids), model.vocab_size)
        metrics = {"psnr": float(torch.cat(psnrs).mean()), "ssim": float(torch.cat(ssims).mean()),
                   "codebook_usage": float(usage), "perplexity": float(perplexity)}
        if model.time_downsample == 1:  # one token frame per video frame: ids comparable in time
            stability = token_stability(torch.cat(frames), torch.cat(ids))
            if not math.isnan(stability):  # NaN when no patch stayed still
                metrics["token_stability"] = stability
        return metrics

    def sample_picture(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """Each clip's first frames, original above reconstruction."""
        _, rec, _ = self._reconstruct(model, batch["frames"])
        originals = batch["frames"][:, :MAX_PICTURE_FRAMES].cpu().numpy()
        recs = from_model(rec[:, :, :MAX_PICTURE_FRAMES] * 2 - 1)  # (B, T, H, W, 3) uint8
        rows, labels = [], []
        for orig, out in zip(originals, recs):
            rows += [orig, out]
            labels += ["real", "rec"]
        return make_grid(rows, labels=labels)

    def describe(self, model: nn.Module) -> dict:
        gen = sum(p.numel() for p in model.generator_parameters())
        return {"parameters": gen, "vocab_size": int(model.vocab_size)}
