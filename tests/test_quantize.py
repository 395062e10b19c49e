"""Lookup-free quantisation (MagViT-2 §3.1): id <-> code round trips, exact factorised entropies
against brute force, bounded memory for a 2**18 codebook."""

from __future__ import annotations

import math

import pytest
import torch

from genie_core.models.lfq import LFQ, binary_entropy_from_logits, codebook_entropy, split_bits


def _all_codes(bits: int) -> torch.Tensor:
    """(2**bits, bits) every code in {-1, 1}, most significant bit first."""
    ids = torch.arange(2 ** bits)
    shifts = torch.arange(bits - 1, -1, -1)
    return ((ids[:, None] >> shifts) & 1).float() * 2 - 1


@pytest.mark.parametrize("d, n", [(8, 1), (3, 2), (1, 1)])
def test_ids_codes_round_trip_whole_codebook(d, n):
    q = LFQ(d * n, d, n)
    ids = torch.arange(q.vocab_size).view(1, -1)  # (B=1, N): every id once
    codes = q.ids_to_codes(ids)
    assert codes.shape == (1, d * n, q.vocab_size)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(q.codes_to_ids(codes), ids)
    # all codes distinct: a bijection between ids and sign patterns
    assert codes[0].T.unique(dim=0).shape[0] == q.vocab_size


def test_quantise_ids_match_codes_and_keep_batch_of_one():
    q = LFQ(6, 6).eval()
    z = torch.randn(1, 6, 2, 3, 3)
    out = q(z)
    assert out.ids.shape == (1, 2, 3, 3) and out.ids.dtype == torch.int64
    assert out.codes.shape == z.shape
    assert torch.equal(out.codes, torch.where(z > 0, 1.0, -1.0))
    assert torch.equal(q.ids_to_codes(out.ids), out.codes)


def test_projection_when_channels_differ():
    q = LFQ(16, 5, use_bias=True)
    z = q.project_in(torch.randn(2, 16, 3, 4, 4))
    assert z.shape == (2, 5, 3, 4, 4)
    assert q.project_out(q(z).codes).shape == (2, 16, 3, 4, 4)


def test_ids_out_of_range_rejected():
    q = LFQ(4, 4)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        q.ids_to_codes(torch.tensor([[16]]))


def test_binary_entropy_stable_and_positive():
    l = torch.tensor([-400.0, -40.0, 0.0, 3.0, 40.0, 400.0])
    h = binary_entropy_from_logits(l)
    assert torch.isfinite(h).all() and (h >= 0).all()
    assert h[2].item() == pytest.approx(math.log(2))
    assert h[1].item() > 0 and h[4].item() > 0  # no 1 - p cancellation at large |l|


def _brute_force_entropies(z: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed-style: softmax over the whole codebook of 2 beta <z, c> (tokens x 2**d)."""
    codes = _all_codes(z.shape[-1]).to(z.dtype)
    probs = torch.softmax(2 * beta * z @ codes.T, dim=-1)
    ent = lambda p: -(p * p.clamp_min(1e-30).log()).sum(-1)  # noqa: E731
    return ent(probs).mean(), ent(probs.mean(0))


def test_entropies_match_brute_force_when_groups_cover_the_code():
    torch.manual_seed(0)
    tokens = torch.randn(64, 6, dtype=torch.float64) * 0.01  # soft assignments: entropies far from 0
    beta = 100.0
    sample_bf, book_bf = _brute_force_entropies(tokens, beta)
    logits = 4 * beta * tokens
    sample = binary_entropy_from_logits(logits).sum(-1).mean()
    assert sample.item() == pytest.approx(sample_bf.item(), rel=1e-6)  # exact factorisation
    assert codebook_entropy(logits, 6).item() == pytest.approx(book_bf.item(), rel=1e-6)
    # split into groups: an upper bound (subadditivity), exact per group
    assert codebook_entropy(logits, 3).item() >= book_bf.item() - 1e-9


def test_split_bits_balanced():
    assert split_bits(18, 9) == [9, 9]
    assert split_bits(10, 9) == [5, 5]
    assert split_bits(7, 9) == [7]
    assert sum(split_bits(62, 10)) == 62 and max(split_bits(62, 10)) <= 10


@pytest.mark.parametrize("train", [True, False])
def test_loss_terms_real_in_train_and_eval(train):
    torch.manual_seed(0)
    q = LFQ(8, 8).train(train)
    z = (torch.randn(2, 8, 2, 4, 4) * 0.05).requires_grad_(train)
    out = q(z)
    for name, value in out.aux.items():
        assert torch.isfinite(value) and value.item() != 0.0, name
    assert out.loss.item() != 0.0
    if train:
        out.loss.backward()
        assert z.grad is not None and z.grad.abs().sum() > 0


def test_straight_through_gradient_reaches_input():
    q = LFQ(4, 4)
    z = torch.randn(1, 4, 3, requires_grad=True)
    out = q(z)
    out.codes.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # d codes / d z = identity (STE)
    assert torch.equal(out.codes.detach(), torch.where(z > 0, 1.0, -1.0))


def test_frac_sample_eval_is_deterministic():
    q = LFQ(8, 8, frac_sample=0.25).eval()
    z = torch.randn(2, 8, 4, 4, 4)
    assert torch.equal(q(z).loss, q(z).loss)


def test_entropy_memory_does_not_grow_with_codebook():
    """d = 18 (2**18 codes) trains on a batch with no tensor near tokens x 2**18: every tensor
    autograd keeps is at most tokens x 2**9 (two 9-bit groups)."""
    q = LFQ(18, 18, group_bits=9)
    z = torch.randn(4, 18, 2, 8, 8, requires_grad=True)  # 512 tokens
    tokens = 4 * 2 * 8 * 8
    biggest = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal biggest
        biggest = max(biggest, t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = q(z)
    out.loss.backward()
    assert biggest <= tokens * 2 ** 9
    assert biggest < tokens * 2 ** 18 // 100
    assert torch.isfinite(z.grad).all()
