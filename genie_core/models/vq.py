"""Vector quantisation for the latent action bottleneck (VQ-VAE, van den Oord et al. 2017; Genie
§2.1): nearest-code lookup, straight-through gradients, codebook + commitment losses or EMA
codebook updates, and dead-code reset so a small codebook does not collapse onto a few codes."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class QuantizerOutput(NamedTuple):
    quantized: Tensor  # (..., D) code vectors with straight-through gradient to the input
    ids: Tensor  # (...) int64 code indices
    loss: Tensor  # scalar: weighted codebook + commitment loss (0-weight terms really are 0)
    commitment: Tensor  # scalar ||z - sg(q)||^2
    codebook: Tensor  # scalar ||sg(z) - q||^2 (reported, not optimised, with an EMA codebook)
    perplexity: Tensor  # scalar exp(entropy) of this batch's code histogram


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


@torch.no_grad()
def kmeans(x: Tensor, k: int, iters: int = 10) -> Tensor:
    """(k, D) centres of x (N, D): k-means++ seeding, then Lloyd steps (global torch RNG).

    With fewer than k distinct points some centres repeat a point; tiny noise keeps them apart.
    """
    x = x.float()
    centres = x[torch.randint(x.shape[0], (1,), device=x.device)]
    for _ in range(k - 1):
        d2 = torch.cdist(x, centres).pow(2).min(dim=1).values  # (N,)
        pick = torch.multinomial(d2, 1) if d2.sum() > 0 else torch.randint(x.shape[0], (1,), device=x.device)
        centres = torch.cat((centres, x[pick]))
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(dim=1)  # (N,)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()[:, None]
        centres = torch.where(counts > 0, sums / counts.clamp_min(1.0), centres)  # empty: stay
    return centres + 1e-4 * x.std().clamp_min(1e-3) * torch.randn_like(centres)


class VectorQuantizer(nn.Module):
    """Quantise (..., dim) latents onto ``num_codes`` learned vectors.

    Training mode also updates the running code usage and, when a code's share of assignments
    falls below ``dead_code_fraction / num_codes``, moves it onto a random latent of the batch
    (the revived code restarts with a fair share so it has time to win assignments). The
    codebook is initialised by k-means on the first training batch's latents. Under torch.distributed
    the statistics are all-reduced and the replacement vectors come from rank 0, so every rank
    keeps the same codebook.
    """

    def __init__(self, num_codes: int, dim: int, *, commitment_weight: float = 0.25,
                 codebook_weight: float = 1.0, ema_decay: float = 0.0, normalize: bool = False,
                 dead_code_fraction: float = 0.1, usage_decay: float = 0.95) -> None:
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.commitment_weight, self.codebook_weight = commitment_weight, codebook_weight
        self.ema_decay, self.normalize = ema_decay, normalize
        self.dead_code_fraction, self.usage_decay = dead_code_fraction, usage_decay
        init = torch.randn(num_codes, dim) / dim**0.5
        if ema_decay > 0:
            # EMA codebook: a buffer moved towards the mean of its assigned latents, no gradient.
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("usage", torch.full((num_codes,), 1.0 / num_codes))
        self.register_buffer("initialized", torch.tensor(False))
        self.last_reset_count = 0  # codes revived by the latest training step (for logging)

    def codes(self) -> Tensor:
        """The (num_codes, dim) vectors latents snap to (unit length when ``normalize``)."""
        return F.normalize(self.codebook, dim=-1) if self.normalize else self.codebook

    def lookup(self, ids: Tensor) -> Tensor:
        """Code vectors for int ids: (...) -> (..., dim)."""
        return F.embedding(ids, self.codes())

    def nearest(self, z: Tensor) -> Tensor:
        """Nearest code index of each latent: (..., dim) -> (...) int64."""
        flat = z.detach().float().reshape(-1, self.dim)  # (N, D)
        if self.normalize:
            flat = F.normalize(flat, dim=-1)
        codes = self.codes().detach().float()
        # ||z - c||^2 = ||z||^2 - 2 z.c + ||c||^2; ||z||^2 is constant per row, so drop it.
        dist = codes.pow(2).sum(-1)[None, :] - 2.0 * flat @ codes.t()  # (N, K)
        return dist.argmin(-1).reshape(z.shape[:-1])

    def forward(self, z: Tensor) -> QuantizerOutput:
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self._quantize(z)

    def _quantize(self, z_in: Tensor) -> QuantizerOutput:
        z = z_in.float()
        if self.normalize:
            z = F.normalize(z, dim=-1)
        if self.training:
            self._maybe_initialize(z)
        ids = self.nearest(z)
        if self.training:
            self._update(z.detach(), ids)
        q = self.lookup(ids)  # (..., D)
        commitment = F.mse_loss(z, q.detach())
        codebook = F.mse_loss(q, z.detach())
        loss = self.commitment_weight * commitment
        if self.ema_decay == 0:
            loss = loss + self.codebook_weight * codebook
        # Straight-through estimator: forward value q, gradient of the identity w.r.t. z.
        quantized = z + (q - z).detach()
        counts = torch.bincount(ids.reshape(-1), minlength=self.num_codes).float()
        probs = counts / counts.sum().clamp_min(1.0)
        perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
        return QuantizerOutput(quantized.to(z_in.dtype), ids, loss, commitment.detach(),
                               codebook.detach(), perplexity)

    @torch.no_grad()
    def _maybe_initialize(self, z: Tensor) -> None:
        """Data-dependent init: the codebook starts as k-means centres of the first batch."""
        if bool(self.initialized):
            return
        new = kmeans(z.reshape(-1, self.dim), self.num_codes)
        if _distributed():
            torch.distributed.broadcast(new, 0)
        self._set_codes(torch.ones(self.num_codes, dtype=torch.bool, device=z.device), new)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, z: Tensor, ids: Tensor) -> None:
        """Running usage, EMA codebook step (if enabled) and dead-code reset."""
        flat, flat_ids = z.reshape(-1, self.dim), ids.reshape(-1)
        counts = torch.bincount(flat_ids, minlength=self.num_codes).float()  # (K,)
        if self.ema_decay > 0:
            sums = torch.zeros_like(self.ema_sum).index_add_(0, flat_ids, flat)  # (K, D)
        if _distributed():
            torch.distributed.all_reduce(counts)
            if self.ema_decay > 0:
                torch.distributed.all_reduce(sums)
        self.usage.mul_(self.usage_decay).add_(counts / counts.sum().clamp_min(1.0),
                                               alpha=1.0 - self.usage_decay)
        if self.ema_decay > 0:
            d = self.ema_decay
            self.ema_count.mul_(d).add_(counts, alpha=1.0 - d)
            self.ema_sum.mul_(d).add_(sums, alpha=1.0 - d)
            # Laplace smoothing keeps an empty code's mean finite (Sonnet's VQ-VAE-EMA).
            total = self.ema_count.sum()
            smoothed = (self.ema_count + 1e-5) / (total + self.num_codes * 1e-5) * total
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        dead = self.usage < self.dead_code_fraction / self.num_codes
        self.last_reset_count = int(dead.sum())
        if self.last_reset_count:
            # Revive onto the latents the codebook serves worst (farthest from their code), as
            # k-means++ seeds a new centre: it splits the cluster that mixes the most.
            codes = self.codes().float()
            error = (flat - codes[flat_ids]).pow(2).sum(-1)  # (N,)
            n = min(self.last_reset_count, flat.shape[0])
            picks = error.topk(n).indices.repeat(self.last_reset_count // n + 1)[: self.last_reset_count]
            new = flat[picks] + 1e-3 * torch.randn_like(flat[picks])
            if _distributed():
                torch.distributed.broadcast(new, 0)
            self._set_codes(dead, new)

    @torch.no_grad()
    def _set_codes(self, mask: Tensor, vectors: Tensor) -> None:
        self.codebook.data[mask] = vectors.to(self.codebook.dtype)
        self.usage[mask] = 1.0 / self.num_codes
        if self.ema_decay > 0:
            self.ema_count[mask] = 1.0
            self.ema_sum[mask] = vectors.to(self.ema_sum.dtype)
