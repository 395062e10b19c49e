"""Dynamics options: 2-D rotary spatial positions (relative offsets only), the clean-history
training mask, the changed-token loss weight, the stage's copy-level / changed-token validation
metrics, and the true-action oracle (``dynamics.action_source=truth``) through train and evaluate."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genie_core.config import dynamics_config_for_preset, load_preset
from genie_core.models.dynamics import DynamicsModel, masked_cross_entropy, random_future_mask, split_ids
from genie_core.models.layers.st_transformer import STTransformer, apply_grid_rotary, grid_angles
from genie_core.models.sampling import MASK_ID


def _cfg(**changes):
    return dataclasses.replace(dynamics_config_for_preset(load_preset("tiny")), **changes)


# ---------------------------------------------------------------------------- 2-D rotary positions


def _rotated_dots(h: int, w: int, head_dim: int, seed: int = 0) -> torch.Tensor:
    """(S, S) q.k of ONE query vector and ONE key vector placed at every grid position, rotated."""
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(head_dim, generator=g), torch.randn(head_dim, generator=g)
    angles = grid_angles(h, w, head_dim)
    qr = apply_grid_rotary(q.expand(h * w, head_dim), angles)
    kr = apply_grid_rotary(k.expand(h * w, head_dim), angles)
    return qr @ kr.T


def test_grid_rotary_dot_depends_only_on_the_offset() -> None:
    h, w = 4, 5
    dots = _rotated_dots(h, w, 16)
    by_offset: dict[tuple[int, int], list[float]] = {}
    for a in range(h * w):
        for b in range(h * w):
            (ya, xa), (yb, xb) = divmod(a, w), divmod(b, w)
            by_offset.setdefault((yb - ya, xb - xa), []).append(float(dots[a, b]))
    # the same offset anywhere on the grid: the same dot product (shift both by (dy, dx))
    for values in by_offset.values():
        assert max(values) - min(values) < 1e-4
    # different offsets (a row offset, a column offset, their mirror images): different dots
    levels = {off: v[0] for off, v in by_offset.items()}
    assert len(levels) == (2 * h - 1) * (2 * w - 1)
    for off in [(0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (1, -1)]:
        assert abs(levels[off] - levels[(0, 0)]) > 1e-3, off
    assert abs(levels[(0, 1)] - levels[(1, 0)]) > 1e-3  # rows and columns rotate differently
    assert abs(levels[(0, 1)] - levels[(0, -1)]) > 1e-3  # direction matters


def test_grid_rotary_keeps_norms_and_checks_head_size() -> None:
    angles = grid_angles(3, 3, 8)
    x = torch.randn(2, 9, 8)
    torch.testing.assert_close(apply_grid_rotary(x, angles).norm(dim=-1), x.norm(dim=-1))
    with pytest.raises(ValueError, match="divisible by 4"):
        grid_angles(3, 3, 6)
    with pytest.raises(ValueError, match="divisible by 4"):
        STTransformer(12, 1, 2, grid=(3, 3))  # head size 6


def test_st_transformer_grid_breaks_permutation_symmetry() -> None:
    """Without positions spatial attention is permutation-equivariant over the S tokens of a
    frame; with the grid it is not (positions are used); a wrong token count is refused."""
    torch.manual_seed(0)
    plain = STTransformer(16, 2, 2).eval()
    with torch.no_grad():  # weights large enough that attention is far from uniform
        for param in plain.parameters():
            param.copy_(torch.randn_like(param) * 0.5)
    grid = STTransformer(16, 2, 2, grid=(2, 3)).eval()
    grid.load_state_dict(plain.state_dict())  # the same weights: only the positions differ
    x = torch.randn(1, 2, 6, 16)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        torch.testing.assert_close(plain(x[:, :, perm]), plain(x)[:, :, perm], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(grid(x[:, :, perm]), grid(x)[:, :, perm], atol=1e-3)
        assert not torch.allclose(grid(x), plain(x), atol=1e-3)
        with pytest.raises(ValueError, match="tokens per frame"):
            grid(torch.randn(1, 2, 4, 16))


@pytest.mark.parametrize("positions, learned", [("learned", True), ("rotary", False), ("both", True)])
def test_dynamics_spatial_positions_parameters(positions: str, learned: bool, tmp_path) -> None:
    torch.manual_seed(0)
    model = DynamicsModel(_cfg(spatial_positions=positions)).eval()
    assert ("pos_emb" in model.state_dict()) == learned
    assert ("pos_emb" in dict(model.named_parameters())) == learned
    assert model.transformer.grid == (None if positions == "learned" else tuple(model.token_size))
    # a checkpoint round trip gives the same logits
    h, w = model.token_size
    ids = torch.randint(0, model.config.vocab_size, (1, 3, h, w), generator=torch.Generator().manual_seed(1))
    actions = torch.zeros(1, 2, dtype=torch.long)
    path = tmp_path / "dyn.safetensors"
    model.save(path)
    from genie_core.models.load import load_checkpoint

    again = load_checkpoint(path).eval()
    assert again.config.spatial_positions == positions
    with torch.no_grad():
        torch.testing.assert_close(again(ids, actions)[0], model(ids, actions)[0])


def test_spatial_positions_head_size_is_checked() -> None:
    _cfg(model_dim=12, heads=2)  # head size 6: fine with learned positions
    for positions in ("rotary", "both"):
        with pytest.raises(ValueError, match="divisible by 4"):
            _cfg(model_dim=12, heads=2, spatial_positions=positions)


# ---------------------------------------------------------------------------- clean-history mask


def test_clean_history_full_rate_masks_exactly_from_a_cut() -> None:
    """rate 1 and clean_history=1: every sample's mask is frames >= k for a cut k in [1, T), and
    the cuts spread over that range."""
    B, T = 200, 6
    mask = random_future_mask((B, T, 3, 3), 1.0, 1.0, torch.Generator().manual_seed(0), clean_history=1.0)
    per_frame = mask.flatten(2)  # (B, T, 9)
    assert not per_frame[:, 0].any()
    full, empty = per_frame.all(-1), ~per_frame.any(-1)  # (B, T)
    assert (full | empty).all()  # each frame all or nothing
    cut = full.float().argmax(dim=1)  # first masked frame
    for b in range(B):
        k = int(cut[b])
        assert 1 <= k < T and empty[b, :k].all() and full[b, k:].all()
    assert set(cut.tolist()) == set(range(1, T))


def test_clean_history_keeps_the_past_clean_and_masks_the_rest_at_the_rate() -> None:
    B, T = 400, 6
    mask = random_future_mask((B, T, 3, 3), 0.5, 1.0, torch.Generator().manual_seed(1), clean_history=1.0)
    per_frame = mask.flatten(2)
    assert not per_frame[:, 0].any()
    masked_frames = per_frame.any(-1)
    assert masked_frames.any(1).all()  # a target in every sample
    first = masked_frames.float().argmax(dim=1)
    # frame 1 is clean whenever the cut is past it: about (T - 2) / (T - 1) of samples (a rate
    # >= 0.5 over 9 tokens almost never leaves a masked frame empty)
    assert (first > 1).float().mean().item() == pytest.approx((T - 2) / (T - 1), abs=0.06)
    # from the first masked frame on, tokens are masked at the per-sample rate ~ U(0.5, 1)
    after = torch.stack([per_frame[b, int(first[b]):].float().mean() for b in range(B)])
    assert after.mean().item() == pytest.approx(0.75, abs=0.05) and (after < 1).any()

    # the paper's scheme (clean_history=0) almost never leaves frame 1 clean
    plain = random_future_mask((B, T, 3, 3), 0.5, 1.0, torch.Generator().manual_seed(1))
    assert (~plain[:, 1].flatten(1).any(-1)).float().mean().item() < 0.02
    # about half the samples are clean-history ones with clean_history=0.5
    half = random_future_mask((B, T, 3, 3), 0.5, 1.0, torch.Generator().manual_seed(2), clean_history=0.5)
    frame1_clean = (~half[:, 1].flatten(1).any(-1)).float().mean().item()
    assert frame1_clean == pytest.approx(0.5 * (T - 2) / (T - 1), abs=0.08)
    assert not half[:, 0].any()


def test_clean_history_zero_is_the_default_draw_and_tiny_rates_keep_a_target() -> None:
    shape = (16, 5, 2, 2)
    default = random_future_mask(shape, 0.5, 1.0, torch.Generator().manual_seed(3))
    zero = random_future_mask(shape, 0.5, 1.0, torch.Generator().manual_seed(3), clean_history=0.0)
    assert torch.equal(default, zero)
    tiny = random_future_mask(shape, 1e-4, 1e-4, torch.Generator().manual_seed(3), clean_history=1.0)
    assert not tiny[:, 0].any() and tiny.flatten(1).any(1).all()
    with pytest.raises(ValueError, match="clean_history"):
        _cfg(clean_history=1.5)


# ---------------------------------------------------------------------------- changed-token weight


def test_weighted_cross_entropy_is_a_weighted_mean() -> None:
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(5, 8, generator=g)]
    targets = torch.tensor([1, 7, 0, 3, 3])
    weight = torch.tensor([1.0, 4.0, 1.0, 0.5, 2.0])
    logp = logits[0].log_softmax(-1)
    nll = [-float(logp[i, targets[i]]) for i in range(5)]
    manual = sum(wi * li for wi, li in zip(weight.tolist(), nll)) / float(weight.sum())
    loss, _ = masked_cross_entropy(logits, targets, (3,), weight)
    assert float(loss) == pytest.approx(manual, rel=1e-5)
    plain, _ = masked_cross_entropy(logits, targets, (3,))
    assert float(plain) == pytest.approx(sum(nll) / 5, rel=1e-5)
    ones, _ = masked_cross_entropy(logits, targets, (3,), torch.ones(5))
    assert float(ones) == pytest.approx(float(plain), rel=1e-6)
    # two bit groups: the weighted mean of each group's CE, summed
    two = [torch.randn(5, 4, generator=g), torch.randn(5, 2, generator=g)]
    digits = split_ids(targets, (2, 1))
    manual2 = sum(float((F.cross_entropy(lg, d, reduction="none") * weight).sum() / weight.sum())
                  for lg, d in zip(two, digits))
    assert float(masked_cross_entropy(two, targets, (2, 1), weight)[0]) == pytest.approx(manual2, rel=1e-5)


def test_loss_weights_changed_tokens() -> None:
    """DynamicsModel.loss with changed_weight=c: the weighted CE at masked positions, weight c where
    the id differs from the previous frame's, 1 elsewhere (and at frame 0)."""
    torch.manual_seed(0)
    model = DynamicsModel(_cfg(changed_weight=5.0)).eval()
    with torch.no_grad():  # losses that differ a lot between positions
        model.head.bias.copy_(torch.randn_like(model.head.bias) * 3)
    h, w = model.token_size
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, model.config.vocab_size, (2, 4, h, w), generator=g)
    ids[:, 2] = ids[:, 1]  # a static frame
    ids[:, 3, : h // 2] = ids[:, 2, : h // 2]  # half of the next one static
    actions = torch.randint(0, model.num_actions, (2, 3), generator=g)
    with torch.no_grad():
        loss, _ = model.loss(ids, actions, generator=torch.Generator().manual_seed(7))
        mask = random_future_mask(tuple(ids.shape), model.config.mask_rate_min, model.config.mask_rate_max,
                                  torch.Generator().manual_seed(7))
        logits = model(ids.masked_fill(mask, MASK_ID), actions, select=mask)[0]
    nll = F.cross_entropy(logits, ids[mask], reduction="none")
    changed = torch.zeros_like(mask)
    changed[:, 1:] = ids[:, 1:] != ids[:, :-1]
    weight = torch.where(changed[mask], 5.0, 1.0)
    assert changed[mask].any() and (~changed[mask]).any()
    assert float(loss) == pytest.approx(float((nll * weight).sum() / weight.sum()), rel=1e-5)
    assert abs(float(loss) - float(nll.mean())) > 1e-3  # the weight matters here (100x the tolerance)
    model.config = dataclasses.replace(model.config, changed_weight=1.0)
    with torch.no_grad():
        plain, _ = model.loss(ids, actions, generator=torch.Generator().manual_seed(7))
    assert float(plain) == pytest.approx(float(nll.mean()), rel=1e-5)
    with pytest.raises(ValueError, match="changed_weight"):
        _cfg(changed_weight=0.0)


# ---------------------------------------------------------------------------- stage validation metrics


class _Copier:
    """Stands in for the dynamics model in ``DynamicsStage.evaluate``: predicts the last frame by
    copying the one before it."""

    num_actions = 4

    class _Context:
        def __init__(self, ids: torch.Tensor) -> None:
            self.ids = ids

        def copy(self) -> "_Copier._Context":
            return self

    def loss(self, ids, actions, generator=None):
        return torch.zeros(()), {"loss": 0.0}

    def prefill(self, ids, actions=None):
        return self._Context(ids)

    def generate_next(self, context, action, *, generator=None, previous=None):
        return context.ids[:, -1]


def test_stage_evaluate_copy_level_and_changed_accuracy() -> None:
    """next_copy_acc is the share of last-frame tokens equal to the previous frame's (from the
    token table); a copying model scores exactly that and 0 where tokens change."""
    from genie_core.models.tokenizer import VideoTokenizer
    from genie_core.training.stages.dynamics import DynamicsStage

    torch.manual_seed(0)
    tokenizer = VideoTokenizer.from_config(load_preset("tiny").tokenizer).eval()
    stage = DynamicsStage.__new__(DynamicsStage)  # only what evaluate reads
    stage.tokenizer, stage.device = tokenizer, torch.device("cpu")
    g = torch.Generator().manual_seed(5)
    N, (h, w) = 12, (8, 8)
    table = torch.randint(0, tokenizer.vocab_size, (N, h, w), generator=g, dtype=torch.int32)
    copied = torch.rand(N, h, w, generator=g) < 0.6
    for t in range(1, N):  # many tokens repeat the frame before
        table[t] = torch.where(copied[t], table[t - 1], table[t])
    stage.tokens, stage.actions = table, torch.zeros(N, dtype=torch.long)
    index = [torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]), torch.tensor([[8, 9, 10, 11]])]
    batches = [{"frame_index": i, "frames": torch.zeros(*i.shape, 16, 16, 3, dtype=torch.uint8)} for i in index]
    with torch.no_grad():
        metrics = stage.evaluate(_Copier(), batches)
    last, prev = table[[3, 7, 11]], table[[2, 6, 10]]
    expected = float((last == prev).float().mean())
    assert 0.3 < expected < 0.9
    assert metrics["next_copy_acc"] == pytest.approx(expected, abs=1e-6)
    assert metrics["next_token_acc"] == pytest.approx(expected, abs=1e-6)
    assert metrics["next_token_acc_changed"] == 0.0 and metrics["next_token_acc_changed_random"] == 0.0


# ---------------------------------------------------------------------------- true-action oracle


def _action_clips(folder, count: int = 4, frames: int = 8, size: int = 16):
    """GIF clips of a square moved by actions 0..3 (left, right, up, down), with sidecars."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    steps = [(-2, 0), (2, 0), (0, -2), (0, 2)]
    for i in range(count):
        clip = np.full((frames, size, size, 3), 30, np.uint8)
        x, y = 6, 6
        actions = rng.integers(0, 4, size=frames)
        actions[0] = 3  # every action occurs: the count is max + 1 = 4
        for t in range(frames):
            clip[t, y:y + 4, x:x + 4] = (250, 200, 40)
            dx, dy = steps[int(actions[t])]
            x, y = int(np.clip(x + dx, 0, size - 4)), int(np.clip(y + dy, 0, size - 4))
        images = [Image.fromarray(f) for f in clip]
        images[0].save(folder / f"clip{i}.gif", save_all=True, append_images=images[1:], duration=66, loop=0)
        (folder / f"clip{i}.json").write_text(json.dumps({"actions": actions.tolist()}))
    return folder


def _untrained_inputs(folder, cfg):
    """An untrained tokenizer and 6-action LAM of ``cfg`` saved in ``folder``: their paths."""
    from genie_core.models.lam import LatentActionModel
    from genie_core.models.tokenizer import VideoTokenizer

    torch.manual_seed(0)
    tok, lam = folder / "tok.safetensors", folder / "lam.safetensors"
    VideoTokenizer.from_config(cfg.tokenizer).save(tok)
    LatentActionModel.from_config(dataclasses.replace(cfg.lam, resolution=(16, 16), num_actions=6)).save(lam)
    return tok, lam


def test_truth_world_trains_on_sidecar_actions_and_evaluates_with_them(tmp_path) -> None:
    from typer.testing import CliRunner

    from genie_cli.app import app
    from genie_core.models.load import load_checkpoint

    cfg = load_preset("tiny")
    tok, lam = _untrained_inputs(tmp_path, cfg)
    data = _action_clips(tmp_path / "data")
    runner = CliRunner()
    args = ["train", "--data", str(data), "--preset", "tiny", "--stage", "dynamics", "--steps", "4",
            "--tokenizer", str(tok), "--lam", str(lam), "--device", "cpu", "--threads", "1",
            "--set", "dynamics.action_source=truth", "--set", "train.dynamics.eval_every=4"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    world = load_checkpoint(tmp_path / "run" / "world.safetensors")
    assert world.action_source == "truth" and world.num_actions == 4 and world.lam.num_actions == 6
    log = [json.loads(x) for x in (tmp_path / "run" / "dynamics" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in log if r.get("split") == "val"]
    assert val and 0 <= val[-1]["next_copy_acc"] <= 1 and 0 <= val[-1]["next_token_acc_changed"] <= 1

    from genie_core.tasks.evaluate import actions_for, true_actions

    assert actions_for(world)[1] is true_actions
    result = runner.invoke(app, ["evaluate", str(data), "-w", str(tmp_path / "run" / "world.safetensors"),
                                 "--clips", "2", "--json", "--precision", "fp32", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["action_source"] == "truth"
    sidecar = {p.name: json.loads(p.with_suffix(".json").read_text())["actions"] for p in data.glob("*.gif")}
    assert len(record["per_clip"]) == 2
    for clip in record["per_clip"]:  # the world was driven by the sidecar's actions
        acts, start = clip["inferred_actions"], clip["start"]
        assert acts == sidecar[Path(clip["source"]).name][start:start + len(acts)]

    # a clip without a sidecar: a one-line error naming it, no run folder
    (data / "clip2.json").unlink()
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run2")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "clip2.gif" in errors[0] and "Traceback" not in result.output
    assert not (tmp_path / "run2" / "world.safetensors").exists()


def test_resume_refuses_a_dynamics_run_whose_tokenizer_changed(tmp_path) -> None:
    """The dynamics state records its frozen inputs' digests: resuming it on a tokenizer whose
    weights changed (new tokens) is a one-line error, exit 2; on the same inputs it continues."""
    from typer.testing import CliRunner

    from genie_cli.app import app
    from genie_core.models.tokenizer import VideoTokenizer

    cfg = load_preset("tiny")
    tok, lam = _untrained_inputs(tmp_path, cfg)
    data = _action_clips(tmp_path / "data")
    runner = CliRunner()
    args = ["train", "--data", str(data), "--preset", "tiny", "--stage", "dynamics", "--tokenizer", str(tok),
            "--lam", str(lam), "--device", "cpu", "--threads", "1", "--out", str(tmp_path / "run"),
            "--set", "train.dynamics.eval_every=100"]
    assert runner.invoke(app, [*args, "--steps", "2"]).exit_code == 0
    result = runner.invoke(app, [*args, "--steps", "3", "--resume"])  # same inputs: continues
    assert result.exit_code == 0, result.output
    state = tmp_path / "run" / "dynamics" / "state.safetensors"
    before = state.read_bytes()
    torch.manual_seed(1)
    VideoTokenizer.from_config(cfg.tokenizer).save(tok)  # other weights, other tokens
    result = runner.invoke(app, [*args, "--steps", "4", "--resume"])
    assert result.exit_code == 2
    assert "another tokenizer" in result.output and "Traceback" not in result.output
    assert state.read_bytes() == before  # nothing written
