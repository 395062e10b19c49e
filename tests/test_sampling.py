"""MaskGIT decoding (genie_core.models.sampling) against fake logits functions: every masked position is
filled, prompt tokens never change, temperature acts on logits, schedules, determinism."""

from __future__ import annotations

import pytest
import torch

from genie_core.models.sampling import MASK_ID, SCHEDULES, decode, mask_schedule, sample_logits

B, N, V = 3, 20, 16


def _inputs(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (B, N), generator=g)
    masked = torch.rand(B, N, generator=g) < 0.6
    masked[:, 0] = True
    return torch.where(masked, torch.full_like(x, MASK_ID), x)


def _fixed_logits(seed: int = 1) -> torch.Tensor:
    return torch.randn(B, N, V, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("unmask", ["confidence", "random"])
@pytest.mark.parametrize("steps", [1, 3, 12])
def test_fills_every_mask_and_keeps_prompt(schedule: str, unmask: str, steps: int) -> None:
    inputs, logits = _inputs(), _fixed_logits()
    calls = []

    def fn(tokens: torch.Tensor) -> torch.Tensor:
        calls.append(tokens.clone())
        return logits

    out = decode(inputs, torch.Generator().manual_seed(0), fn, steps=steps, schedule=schedule, unmask=unmask)
    known = inputs != MASK_ID
    assert out.shape == inputs.shape and out.dtype == inputs.dtype
    assert (out >= 0).all() and (out < V).all()
    assert torch.equal(out[known], inputs[known])
    assert 1 <= len(calls) <= steps
    # Each row's masked count shrinks every round (strictly while above one); the prompt is
    # intact in every round.
    counts = torch.stack([(c == MASK_ID).sum(-1) for c in calls])  # (rounds, B)
    for before, after in zip(counts[:-1], counts[1:]):
        assert ((after < before) | ((after == 1) & (before == 1))).all()
    assert all(torch.equal(c[known], inputs[known]) for c in calls)


def test_tokens_once_unmasked_stay_fixed() -> None:
    inputs = _inputs()
    rounds = []

    def fn(tokens: torch.Tensor) -> torch.Tensor:
        rounds.append(tokens.clone())
        return torch.randn(B, N, V)  # changes every call: kept tokens must still not move

    out = decode(inputs, torch.Generator().manual_seed(0), fn, steps=6)
    for tokens in rounds[1:] + [out]:
        prev = rounds[0]
        fixed = prev != MASK_ID
        assert torch.equal(tokens[fixed], prev[fixed])
        rounds.pop(0)


def test_confidence_unmasks_most_likely_first() -> None:
    """With peaked logits at some positions, the confident positions are filled in round one."""
    inputs = torch.full((1, 8), MASK_ID)
    logits = torch.zeros(1, 8, V)
    logits[0, :4, 3] = 20.0  # positions 0-3 are certain, 4-7 uniform
    seen = []

    def fn(tokens: torch.Tensor) -> torch.Tensor:
        seen.append(tokens.clone())
        return logits

    decode(inputs, torch.Generator().manual_seed(0), fn, steps=2, schedule="linear", temperature=1.0)
    assert (seen[1][0, :4] == 3).all() and (seen[1][0, 4:] == MASK_ID).all()


def test_temperature_acts_on_logits() -> None:
    """T -> 0 gives the argmax, T = 1 follows softmax(logits), large T flattens the distribution."""
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, 4)
    g = torch.Generator().manual_seed(0)
    assert (sample_logits(logits, 0.0, g) == 0).all()
    freq = {}
    for t in (0.5, 1.0, 5.0):
        ids = sample_logits(logits, t, g)
        freq[t] = torch.bincount(ids, minlength=4).float() / len(ids)
    torch.testing.assert_close(freq[1.0], torch.softmax(logits[0], -1), atol=0.015, rtol=0)
    torch.testing.assert_close(freq[0.5], torch.softmax(logits[0] / 0.5, -1), atol=0.015, rtol=0)
    assert freq[0.5][0] > freq[1.0][0] > freq[5.0][0]


def test_temperature_changes_decoded_distribution() -> None:
    inputs = torch.full((2000, 1), MASK_ID)
    logits = torch.tensor([3.0, 0.0, 0.0, 0.0]).expand(2000, 1, 4)
    g = torch.Generator().manual_seed(0)
    cold = decode(inputs, g, lambda t: logits, steps=1, temperature=0.3)
    hot = decode(inputs, g, lambda t: logits, steps=1, temperature=3.0)
    assert (cold == 0).float().mean() > 0.99
    assert (hot == 0).float().mean() < 0.6


def test_factorised_groups_compose_mixed_radix() -> None:
    """Two digit heads (4-way low, 8-way high) give ids in [0, 32) = low + 4 * high."""
    inputs = torch.full((2, 5), MASK_ID)
    low = torch.full((2, 5, 4), -30.0)
    low[..., 3] = 30.0
    high = torch.full((2, 5, 8), -30.0)
    high[..., 6] = 30.0
    out = decode(inputs, torch.Generator().manual_seed(0), lambda t: [low, high], steps=3)
    assert (out == 3 + 4 * 6).all()


def test_same_generator_seed_same_sample() -> None:
    inputs, logits = _inputs(), _fixed_logits()
    a = decode(inputs, torch.Generator().manual_seed(7), lambda t: logits, steps=4, choice_temperature=4.5)
    b = decode(inputs, torch.Generator().manual_seed(7), lambda t: logits, steps=4, choice_temperature=4.5)
    c = decode(inputs, torch.Generator().manual_seed(8), lambda t: logits, steps=4, choice_temperature=4.5)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_nothing_masked_is_identity() -> None:
    x = torch.randint(0, V, (B, N))
    assert torch.equal(decode(x, None, lambda t: pytest.fail("no call expected"), steps=3), x)


def test_schedules_run_from_one_to_zero() -> None:
    for name in SCHEDULES:
        assert mask_schedule(name, 0.0) == pytest.approx(1.0)
        assert mask_schedule(name, 1.0) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        decode(_inputs(), None, lambda t: _fixed_logits(), schedule="nope")


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("unmask,choice_temperature", [("confidence", 0.0), ("confidence", 2.0), ("random", 0.0)])
def test_steps_beyond_the_masked_count_change_nothing(schedule: str, unmask: str,
                                                      choice_temperature: float) -> None:
    """More rounds than masked tokens cannot fix more tokens: the result (and the work) of any
    larger ``steps`` is that of ``steps`` = the largest masked count of a row."""
    inputs = _inputs()
    most = int((inputs == MASK_ID).sum(-1).max())
    weights = torch.randn(V, V, generator=torch.Generator().manual_seed(3))

    def run(steps: int) -> tuple[torch.Tensor, int]:
        calls = []

        def fn(tokens: torch.Tensor) -> torch.Tensor:  # logits depend on the tokens known so far
            calls.append(1)
            known = torch.nn.functional.one_hot(tokens.clamp(min=0), V).float() * (tokens >= 0)[..., None]
            return known.mean(1, keepdim=True) @ weights + _fixed_logits()

        out = decode(inputs, torch.Generator().manual_seed(5), fn, steps=steps, schedule=schedule,
                     unmask=unmask, choice_temperature=choice_temperature)
        return out, len(calls)

    capped, calls = run(most)
    for steps in (most + 1, 3 * most, 100_000):
        out, more_calls = run(steps)
        assert torch.equal(out, capped), steps
        assert more_calls == calls <= most


def test_nucleus_draws_only_the_ids_that_make_up_top_p() -> None:
    # Row probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps {0, 1} (0.5 < 0.7 <= 0.8), top_p 0.5
    # keeps {0} only, and the draw frequencies within the nucleus follow the renormalised model.
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(20000, 4)
    g = torch.Generator().manual_seed(0)
    ids = sample_logits(logits, 1.0, g, top_p=0.7)
    counts = torch.bincount(ids, minlength=4).float() / ids.numel()
    assert counts[2] == 0 and counts[3] == 0
    assert abs(counts[0].item() - 0.5 / 0.8) < 0.02
    assert (sample_logits(logits, 1.0, g, top_p=0.5) == 0).all()
    full = torch.bincount(sample_logits(logits, 1.0, g, top_p=1.0), minlength=4).float() / ids.numel()
    assert full[3] > 0.03  # the whole distribution still reaches the tail


def test_top_p_one_is_todays_sampling_and_tiny_top_p_is_greedy() -> None:
    inputs, logits = _inputs(), _fixed_logits()

    def run(**kw: float) -> torch.Tensor:
        return decode(inputs, torch.Generator().manual_seed(3), lambda t: logits, steps=4, unmask="random", **kw)

    assert torch.equal(run(), run(top_p=1.0))
    greedy = torch.where(inputs == MASK_ID, logits.argmax(-1), inputs)
    assert torch.equal(run(top_p=1e-6), greedy)
    with pytest.raises(ValueError, match="top_p"):
        run(top_p=0.0)
