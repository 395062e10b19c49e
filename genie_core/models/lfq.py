"""Lookup-free quantisation (MagViT-2, Yu et al. 2023 §3.1, Eq. 3-5): each latent channel is one
bit, q = sign(z); n codebooks of d bits combine into one int64 token id (vocabulary 2**(d n)).

The entropy penalty never materialises tokens x 2**d. With logits 2 beta <z, c> over codes
c in {-1, 1}^d the per-token distribution factorises over bits (P(c_k = 1) = sigmoid(4 beta z_k)),
so the per-sample entropy is EXACTLY a sum of binary entropies. The codebook (batch-average)
distribution is a mixture and does not factorise; it is estimated over groups of <= G bits
(exact within a group, memory tokens x 2**G) and the group entropies are summed. By
subadditivity that sum is an upper bound on the true codebook entropy, equal to it when the
groups are independent; maximising it makes every group's marginal uniform.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


class QuantizerOutput(NamedTuple):
    codes: Tensor  # (B, D, ...) in {-1, 1} (straight-through gradient when z needs grad)
    ids: Tensor  # (B, ...) int64
    loss: Tensor  # scalar: entropy_weight * entropy + commit_weight * commit
    aux: dict[str, Tensor]  # commit, entropy, sample_entropy, codebook_entropy


def binary_entropy_from_logits(logits: Tensor) -> Tensor:
    """H(sigmoid(l)) in nats, elementwise; stays > 0 for large |l| (no 1 - p cancellation)."""
    return torch.sigmoid(logits) * F.softplus(-logits) + torch.sigmoid(-logits) * F.softplus(logits)


def split_bits(num_bits: int, max_group: int) -> list[int]:
    """Balanced group sizes covering ``num_bits``, each <= ``max_group`` (18, 9 -> [9, 9])."""
    groups = -(-num_bits // max_group)
    base, extra = divmod(num_bits, groups)
    return [base + (1 if i < extra else 0) for i in range(groups)]


def _bit_table(bits: int, like: Tensor) -> Tensor:
    """(2**bits, bits) table of each code's bits (0/1, most significant first), dtype of ``like``."""
    codes = torch.arange(2 ** bits, device=like.device)
    shifts = torch.arange(bits - 1, -1, -1, device=like.device)
    return ((codes[:, None] >> shifts) & 1).to(like.dtype)


def codebook_entropy(logits: Tensor, max_group: int) -> Tensor:
    """Entropy of the token-averaged code distribution, summed over bit groups.

    logits: (N, d) per-bit logits of N tokens. Within a group of g bits the probability of code b
    for token n is exp(sum_k log sigmoid(-l_nk) + l_n . b); averaged over n it is exact.
    Memory: N x 2**g per group.
    """
    total = logits.new_zeros(())
    start = 0
    for g in split_bits(logits.shape[-1], max_group):
        lg = logits[:, start:start + g]
        start += g
        log_q = F.logsigmoid(-lg).sum(-1, keepdim=True) + lg @ _bit_table(g, lg).T  # (N, 2**g)
        avg = log_q.exp().mean(0)
        total = total - (avg * avg.clamp_min(1e-20).log()).sum()
    return total


class LFQ(nn.Module):
    """Lookup-free quantiser over the channel dim of (B, C, ...) latents.

    When ``in_channels`` != d * n, linear projections (bias: ``use_bias``) map to and from the
    code space, as in the seed. Bit k of the id (most significant first) is channel k of the codes;
    codebook i owns channels [i d, (i + 1) d).
    """

    def __init__(self, in_channels: int, d_codebook: int, n_codebook: int = 1, use_bias: bool = True,
                 frac_sample: float = 1.0, commit_weight: float = 0.25, entropy_weight: float = 0.1,
                 diversity_weight: float = 1.0, inv_temperature: float = 100.0,
                 group_bits: int = 9) -> None:
        super().__init__()
        self.d_codebook, self.n_codebook = d_codebook, n_codebook
        self.code_bits = d_codebook * n_codebook
        if self.code_bits > 62:
            raise ValueError(f"{self.code_bits} bits do not fit an int64 token id")
        self.frac_sample, self.group_bits = frac_sample, group_bits
        self.commit_weight, self.entropy_weight = commit_weight, entropy_weight
        self.diversity_weight, self.inv_temperature = diversity_weight, inv_temperature
        project = in_channels != self.code_bits
        self.proj_in = nn.Linear(in_channels, self.code_bits, bias=use_bias) if project else None
        self.proj_out = nn.Linear(self.code_bits, in_channels, bias=use_bias) if project else None
        shifts = torch.arange(self.code_bits - 1, -1, -1, dtype=torch.int64)
        self.register_buffer("shifts", shifts, persistent=False)

    @property
    def vocab_size(self) -> int:
        return 2 ** self.code_bits

    # ------------------------------------------------------------------ projections and ids
    @staticmethod
    def _channel_linear(layer: nn.Linear | None, x: Tensor) -> Tensor:
        if layer is None:
            return x
        return torch.movedim(layer(torch.movedim(x, 1, -1)), -1, 1)  # channels last and back

    def project_in(self, z: Tensor) -> Tensor:
        """(B, C, ...) encoder output -> (B, d n, ...) pre-quantisation latents."""
        return self._channel_linear(self.proj_in, z)

    def project_out(self, codes: Tensor) -> Tensor:
        """(B, d n, ...) codes -> (B, C, ...) decoder input."""
        return self._channel_linear(self.proj_out, codes)

    def codes_to_ids(self, codes: Tensor) -> Tensor:
        """(B, D, ...) codes (sign read) -> (B, ...) int64 ids. A batch of one keeps its dim."""
        shape = [1, -1] + [1] * (codes.ndim - 2)
        bits = (codes > 0).to(torch.int64)
        return (bits << self.shifts.view(shape)).sum(dim=1)

    def ids_to_codes(self, ids: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """(B, ...) int ids -> (B, D, ...) codes in {-1, 1}."""
        ids = ids.to(torch.int64)
        if (ids < 0).any() or (ids >= self.vocab_size).any():
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        shape = [1, -1] + [1] * (ids.ndim - 1)
        bits = (ids.unsqueeze(1) >> self.shifts.view(shape)) & 1
        return (bits * 2 - 1).to(dtype)

    # ------------------------------------------------------------------------------ forward
    def forward(self, z: Tensor) -> QuantizerOutput:
        """z: (B, D, ...) latents (already projected in). Returns codes, ids, loss and its terms."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            hard = torch.where(z > 0, 1.0, -1.0)
            # Straight-through estimator (Eq. 3): forward value is exactly the sign.
            codes = z + (hard - z).detach() if z.requires_grad else hard
            ids = self.codes_to_ids(hard)
            commit = F.mse_loss(z, hard)
            sample_ent, book_ent = self.entropy_terms(z)
            entropy = sample_ent - self.diversity_weight * book_ent
            loss = self.entropy_weight * entropy + self.commit_weight * commit
        aux = {"commit": commit, "entropy": entropy, "sample_entropy": sample_ent,
               "codebook_entropy": book_ent}
        return QuantizerOutput(codes, ids, loss, aux)

    def entropy_terms(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(mean per-token entropy, codebook entropy), both averaged over the n codebooks.

        A fraction ``frac_sample`` of the tokens feeds the estimate: random in training, evenly
        spaced (deterministic) in eval mode.
        """
        tokens = rearrange(z, "b d ... -> (b ...) d")
        n = tokens.shape[0]
        keep = max(1, round(self.frac_sample * n))
        if keep < n:
            idx = (torch.randperm(n, device=z.device)[:keep] if self.training else
                   torch.linspace(0, n - 1, keep, device=z.device).round().long())
            tokens = tokens[idx]
        logits = 4.0 * self.inv_temperature * tokens  # (N, D); P(bit = 1) = sigmoid(logit)
        logits = rearrange(logits, "n (c d) -> c n d", c=self.n_codebook)
        sample = binary_entropy_from_logits(logits).sum(-1).mean()
        book = torch.stack([codebook_entropy(lc, self.group_bits) for lc in logits]).mean()
        return sample, book
