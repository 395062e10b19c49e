"""Latent action model and VQ bottleneck (Genie §2.1): shapes, causality, no information path
around the bottleneck, straight-through gradients, dead-code reset, action/frame alignment."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from genie_core.config import load_preset
from genie_core.errors import GenieError
from genie_core.io.checkpoint_format import read_metadata
from genie_core.models.lam import LatentActionModel
from genie_core.models.load import load_checkpoint
from genie_core.models.vq import QuantizerOutput, VectorQuantizer


def tiny_model(seed: int = 0, **changes) -> LatentActionModel:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(load_preset("tiny").lam, **changes)
    return LatentActionModel(cfg)


def video(b: int = 2, t: int = 5, size: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, size, size, generator=g) * 2 - 1


# ---------------------------------------------------------------------------- shapes, losses


def test_golden_shapes_tiny_preset():
    model = tiny_model()
    x = video(b=2, t=5)
    assert model.encode(x).shape == (2, 4, model.config.action_dim)
    loss, aux = model(x)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert aux["ids"].shape == (2, 4) and aux["ids"].dtype == torch.int64
    assert aux["prediction"].shape == (2, 3, 4, 16, 16)
    model.eval()
    ids = model.infer_actions(x)
    assert ids.shape == (2, 4) and ids.dtype == torch.int64
    assert int(ids.min()) >= 0 and int(ids.max()) < model.num_actions
    assert model.decode_ids(x[:, :, :-1], ids).shape == (2, 3, 4, 16, 16)
    # Batch size 1 keeps its batch dimension.
    assert model.infer_actions(x[:1]).shape == (1, 4)


def test_bad_shapes_raise_genie_error():
    model = tiny_model().eval()
    with pytest.raises(GenieError, match="at least 2 frames"):
        model.infer_actions(video(t=1))
    with pytest.raises(GenieError, match="patch size"):
        model.infer_actions(video(size=18))
    with pytest.raises(GenieError):
        model.infer_actions(torch.zeros(1, 4, 3, 16, 16))


def test_loss_is_the_same_in_eval_mode_and_nonzero():
    model = tiny_model(commitment_weight=0.25)  # the default weight is 0 (EMA codebook)
    x = video()
    model.train()
    model(x)  # initialise the codebook from data
    model.eval()
    loss_a, aux = model(x)
    loss_b, _ = model(x)
    assert torch.equal(loss_a, loss_b) and loss_a > 0 and aux["vq_loss"] > 0


def test_overfit_one_batch_loss_falls():
    model = tiny_model()
    x = video(b=2, t=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(20):
        loss, _ = model(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    assert float(loss.detach()) < 0.5 * first


def test_fresh_model_predicts_a_copy_exactly_even_under_bf16():
    """Zero-initialised residual head: the first prediction of x_{t+1} is x_t, bit for bit, and
    the pixel head stays fp32 under bf16 autocast."""
    model = tiny_model()
    x = video()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, aux = model(x)
    assert aux["prediction"].dtype == torch.float32
    assert torch.equal(aux["prediction"], x[:, :, :-1])


def test_continuous_warmup_feeds_the_latent_and_skips_the_codebook():
    model = tiny_model()
    x = video()
    loss, aux = model(x, quantize=False)
    assert aux["vq_loss"] == 0 and aux["ids"].shape == (2, 4)
    assert not bool(model.vq.initialized)  # no codebook bookkeeping while continuous
    model(x)
    assert bool(model.vq.initialized)


@pytest.mark.parametrize("override,fragment", [
    ("lam.heads=3", "heads"), ("lam.num_actions=1", "num_actions"),
    ("lam.window_overlap=4", "window_overlap"), ("lam.resolution=[18, 16]", "patch_size"),
    ("lam.stem=conv", "power-of-two"), ("lam.codebook_ema=1.0", "codebook_ema"),
    ("lam.patch_stride=0", "patch_stride"), ("lam.patch_stride=3", "patch_stride"),
    ("lam.spatial_positions=learned", "spatial_positions")])
def test_bad_lam_configs_are_config_errors(override, fragment):
    from genie_core.errors import ConfigError

    extra = ["lam.patch_size=6"] if "stem" in override else []
    with pytest.raises(ConfigError, match=fragment):
        load_preset("tiny", extra + [override])


# ---------------------------------------------------------------------------- causality


@pytest.mark.parametrize("stem,pooling,positions,stride", [
    ("linear", "token", "sincos", None), ("conv", "mean", "sincos", None),
    ("linear", "token", "rotary", None), ("conv", "mean", "rotary", None),
    ("linear", "token", "sincos", 2), ("linear", "mean", "rotary", 1)])
def test_encoder_is_causal_action_t_sees_frames_up_to_t_plus_1(stem, pooling, positions, stride):
    model = tiny_model(stem=stem, pooling=pooling, spatial_positions=positions,
                       patch_stride=stride).eval()
    x = video(b=1, t=6)
    base = model.encode(x)
    for k in range(1, 6):
        y = x.clone()
        y[:, :, k] = -y[:, :, k]  # perturb frame k
        out = model.encode(y)
        # Latents 0..k-2 name transitions ending at frames <= k-1: untouched by frame k.
        assert torch.allclose(out[:, : k - 1], base[:, : k - 1], atol=1e-6), k
        # Latent k-1 (transition k-1 -> k) must see frame k.
        assert not torch.allclose(out[:, k - 1], base[:, k - 1], atol=1e-4), k


class ReplacedBottleneck(torch.nn.Module):
    """Stands in for the VQ: passes the latent through unchanged (``constant=False``, a
    continuous bottleneck, so any dependence through the action shows) or sends the decoder the
    same vector whatever the encoder says (``constant=True``)."""

    def __init__(self, vq: VectorQuantizer, constant: bool) -> None:
        super().__init__()
        self.vq, self.constant = vq, constant

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        out = torch.full_like(z, 0.5) if self.constant else z
        zero = z.new_zeros(())
        return QuantizerOutput(out, torch.zeros(z.shape[:-1], dtype=torch.long), zero, zero, zero, zero)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        return self.vq.lookup(ids)


def _predictions_change(model: LatentActionModel, x: torch.Tensor, k: int) -> torch.Tensor:
    """Per predicted frame, whether perturbing input frame k changes the prediction."""
    y = x.clone()
    y[:, :, k] = -y[:, :, k]
    _, a = model(x)
    _, b = model(y)
    return (a["prediction"] - b["prediction"]).abs().amax(dim=(0, 1, 3, 4)) > 1e-5  # (T-1,)


@pytest.mark.parametrize("positions", ["sincos", "rotary"])
def test_no_path_around_the_bottleneck(positions):
    """With the bottleneck's output constant, the prediction of frame k cannot depend on frame k
    (nor on later frames); with the real bottleneck it does (through the action only)."""
    model = tiny_model(spatial_positions=positions)
    # Give the decoder weights so that its output depends on its inputs at all.
    torch.nn.init.normal_(model.decoder_out.weight, std=0.2)
    model.eval()
    x = video(b=1, t=6)
    vq = model.vq
    model.vq = ReplacedBottleneck(vq, constant=False)
    for k in range(1, 6):
        real = _predictions_change(model, x, k)
        assert bool(real[k - 1]), f"prediction of frame {k} ignores the action naming it"
    model.vq = ReplacedBottleneck(vq, constant=True)
    for k in range(1, 6):
        leaked = _predictions_change(model, x, k)
        # Prediction index j is frame j+1: frames 1..k must be unaffected by frame k.
        assert not leaked[:k].any(), f"frame {k} reaches predictions {leaked.nonzero().flatten().tolist()}"
        assert leaked[k:].all()  # later predictions do see frame k (it is their context)


# ---------------------------------------------------------------------------- VQ


def test_vq_straight_through_gradient_and_values():
    torch.manual_seed(0)
    vq = VectorQuantizer(6, 4)
    vq.train()
    z = torch.randn(10, 3, 4, requires_grad=True)
    out = vq(z)
    # Forward value: exactly the chosen code vectors.
    assert torch.allclose(out.quantized, vq.codebook[out.ids], atol=1e-6)
    w = torch.randn_like(z)
    (out.quantized * w).sum().backward()
    assert torch.allclose(z.grad, w)  # identity gradient through the quantiser
    # The losses train both sides: commitment reaches z, the codebook loss reaches the codes.
    vq.zero_grad()
    z2 = z.detach().clone().requires_grad_(True)
    vq(z2).loss.backward()
    assert z2.grad.abs().sum() > 0 and vq.codebook.grad.abs().sum() > 0


def test_vq_nearest_is_nearest():
    torch.manual_seed(0)
    vq = VectorQuantizer(5, 3).eval()
    z = torch.randn(50, 3)
    brute = torch.cdist(z, vq.codebook).argmin(-1)
    assert torch.equal(vq.nearest(z), brute)
    assert torch.equal(vq(z).ids, brute)


def test_dead_code_reset_revives_an_unused_code():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 2, usage_decay=0.9, dead_code_fraction=0.2)
    vq.train()
    data = lambda: torch.randn(64, 2)  # noqa: E731
    vq(data())  # data-dependent init
    with torch.no_grad():
        vq.codebook[3] = torch.tensor([1e3, 1e3])  # unreachable: no latent ever picks it
    revived_at = None
    for step in range(100):
        out = vq(data())
        if vq.codebook[3].abs().max() < 100:
            revived_at = step
            break
        assert not (out.ids == 3).any()
    assert revived_at is not None, "dead code was never reset"
    # Revived: it now sits among the data and wins assignments.
    hits = sum(int((vq(data()).ids == 3).sum()) for _ in range(5))
    assert hits > 0


def test_vq_ema_moves_codes_to_their_cluster_means():
    torch.manual_seed(0)
    vq = VectorQuantizer(2, 2, ema_decay=0.8, dead_code_fraction=0.0)
    vq.train()
    centres = torch.tensor([[3.0, 0.0], [-3.0, 0.0]])
    def batch() -> torch.Tensor:
        return centres.repeat(32, 1) + 0.1 * torch.randn(64, 2)
    vq(batch())
    with torch.no_grad():  # start the codes off-centre, one per cluster
        vq.codebook.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))
        vq.ema_sum.copy_(vq.codebook)
    for _ in range(60):
        vq(batch())
    dist = torch.cdist(vq.codebook, centres).min(dim=1).values
    assert (dist < 0.2).all(), vq.codebook


def test_kmeans_init_finds_separated_clusters():
    from genie_core.models.vq import kmeans

    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    x = centres.repeat_interleave(30, dim=0) + 0.1 * torch.randn(90, 2)
    found = kmeans(x, 3)
    assert torch.cdist(centres, found).min(dim=1).values.max() < 0.2
    assert kmeans(x[:2], 4).shape == (4, 2)  # fewer points than codes still gives k centres


# ---------------------------------------------------------------------------- windowing


class FrameIndexLam(LatentActionModel):
    """infer_window returns, for each transition, the absolute index of its first frame (frames
    carry their index as pixel value), so the windowing plumbing can be checked exactly."""

    def infer_window(self, frames: torch.Tensor) -> torch.Tensor:
        return frames[:, 0, :-1, 0, 0].round().long()


@pytest.mark.parametrize("total,window,overlap,chunk", [
    (2, 4, 2, 7), (4, 4, 2, 4), (5, 4, 1, 3), (17, 4, 2, 1), (30, 8, 3, 5), (31, 16, 8, 16),
    (9, 2, 1, 4)])
def test_windowing_gives_every_transition_exactly_one_action(total, window, overlap, chunk):
    model = FrameIndexLam(load_preset("tiny").lam).eval()
    frames = torch.arange(total, dtype=torch.float32)[None, None, :, None, None].expand(2, 3, total, 16, 16)
    chunks = [frames[:, :, i:i + chunk] for i in range(0, total, chunk)]
    ids = model.infer_actions_stream(chunks, window, overlap)
    assert ids.tolist() == [list(range(total - 1))] * 2


def test_windowed_equals_whole_when_video_fits():
    model = tiny_model().eval()
    x = video(b=1, t=4)
    assert torch.equal(model.infer_actions(x), model.infer_window(x))


# ---------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path):
    model = tiny_model()
    x = video()
    model(x)  # codebook initialised from data: the buffers must survive the round trip
    model.eval()
    path = tmp_path / "lam.safetensors"
    model.save(path, step=7)
    meta = read_metadata(path)
    assert meta["kind"] == "lam" and meta["step"] == "7"
    loaded = load_checkpoint(path, expect_kind="lam")
    assert isinstance(loaded, LatentActionModel) and loaded.config == model.config
    assert torch.equal(loaded.infer_actions(x), model.infer_actions(x))
    assert torch.equal(loaded(x)[0], model(x)[0])


# ---------------------------------------------------------------------------- alignment


SHIFTS = torch.tensor([[0.25, 0.0, 0.0], [-0.25, 0.0, 0.0], [0.0, 0.25, 0.0], [0.0, -0.25, 0.0]])


def colour_walk_clips(actions: torch.Tensor, size: int = 16, seed: int = 0) -> torch.Tensor:
    """(N, 3, T, size, size) in [-1, 1]: each clip a fixed random texture whose colour drifts;
    actions[n, t] (0 redder, 1 less red, 2 greener, 3 less green) is the change from frame t to
    t+1, so frame t+1 depends on actions[:, t] and nothing else unknown."""
    g = torch.Generator().manual_seed(seed)
    n, steps = actions.shape
    texture = torch.rand(n, 3, 1, size, size, generator=g) * 0.4 - 0.2
    level = torch.cumsum(torch.cat((torch.zeros(n, 1, 3), SHIFTS[actions]), dim=1), dim=1)  # (N, T, 3)
    return (texture + level.permute(0, 2, 1)[..., None, None]).clamp(-1, 1)


def _best_mapping_accuracy(latent: torch.Tensor, truth: torch.Tensor) -> float:
    """Each latent mapped to its most frequent true action."""
    correct = 0
    for code in latent.unique():
        correct += int(torch.bincount(truth[latent == code]).max())
    return correct / truth.numel()


def test_inferred_actions_align_with_true_actions_not_shifted():
    """After a short fit, latent t names true action t (up to relabelling), not action t-1 or
    t+1 (the off-by-one two public ports shipped), and every code is in use."""
    torch.manual_seed(0)
    model = tiny_model(pooling="mean")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    test_actions = torch.randint(0, 4, (32, 5), generator=g)
    test_clips = colour_walk_clips(test_actions, seed=10**6)
    acc = 0.0
    for step in range(200):
        actions = torch.randint(0, 4, (16, 3), generator=g)
        loss, _ = model(colour_walk_clips(actions, seed=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9:
            model.eval()
            ids = model.infer_actions(test_clips)  # 6 frames: windows of 4 with overlap 2
            model.train()
            acc = _best_mapping_accuracy(ids.flatten(), test_actions.flatten())
            if acc > 0.95:
                break
    assert acc > 0.95, acc
    assert ids.unique().numel() == 4
    for shift in (1, -1):
        a, b = (ids[:, shift:], test_actions[:, :-shift]) if shift > 0 else (ids[:, :shift], test_actions[:, -shift:])
        assert _best_mapping_accuracy(a.flatten(), b.flatten()) < 0.5


# ---------------------------------------------------------------------------- training stage


def write_action_clips(folder, count: int = 6, frames: int = 8, size: int = 16, sidecars: bool = True):
    """GIF clips of a square stepping left or right (actions 0/1), with action sidecars."""
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        clip = np.full((frames, size, size, 3), 30, np.uint8)
        x, y = (int(v) for v in rng.integers(4, size - 8, size=2))
        actions = rng.integers(0, 2, size=frames)
        for t in range(frames):
            clip[t, y:y + 4, x:x + 4] = (250, 200, 40)
            x = int(np.clip(x + (2 if actions[t] else -2), 0, size - 4))
        images = [Image.fromarray(f) for f in clip]
        images[0].save(folder / f"clip{i}.gif", save_all=True, append_images=images[1:], duration=66, loop=0)
        if sidecars:
            (folder / f"clip{i}.json").write_text(json.dumps({"actions": actions.tolist()}))
    return folder


def test_lam_stage_trains_and_validates_against_truth(tmp_path):
    import json

    from genie_core.training.stages import get_stage
    from genie_core.training.train import train

    assert get_stage("lam").kind == "lam"
    data = write_action_clips(tmp_path / "data")
    out = tmp_path / "run"
    result = train(load_preset("tiny"), data, out, stage="lam", device="cpu")["lam"]
    for key in ("psnr", "psnr_copy_baseline", "codebook_usage", "perplexity", "nmi",
                "mapping_accuracy", "majority_accuracy"):
        assert key in result, key
    # the best many-to-one map is never worse than naming the most common action everywhere
    assert result["mapping_accuracy"] >= result["majority_accuracy"] > 0
    assert 0 < result["codebook_usage"] <= 1
    lines = [json.loads(x) for x in (out / "lam" / "metrics.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if x["split"] == "train"]
    assert "perplexity" in train_lines[-1] and "codes_alive" in train_lines[-1]
    model = load_checkpoint(out / "lam" / "last.safetensors", expect_kind="lam")
    assert model.config.resolution == (16, 16)  # filled in from data.resolution
    assert any((out / "lam" / "samples").iterdir())


class _FixedIds(torch.nn.Module):
    """Stands in for the LAM in ``LamStage.evaluate``: batch i gets ``ids[i]`` as its actions
    and a perfect prediction."""

    def __init__(self, ids: list[torch.Tensor], num_actions: int) -> None:
        super().__init__()
        self.queue, self.num_actions = list(ids), num_actions

    def forward(self, video: torch.Tensor, quantize: bool = True):
        return video.new_zeros(()), {"prediction": video[:, :, 1:], "ids": self.queue.pop(0)}


def _score(tmp_path: Path, ids: list[torch.Tensor], truth: list[torch.Tensor]) -> dict:
    from genie_core.training.stages.lam import LamStage

    stage = LamStage(load_preset("tiny"), tmp_path, torch.device("cpu"))
    batches = [{"frames": torch.zeros(t.shape[0], t.shape[1] + 1, 4, 4, 3, dtype=torch.uint8),
                "actions": t} for t in truth]
    return stage.evaluate(_FixedIds(ids, 4), batches)


def _nmi_by_hand(latent: list[int], truth: list[int]) -> float:
    """2 I(L; T) / (H(L) + H(T)) from the joint counts, written out term by term."""
    import math
    from collections import Counter

    n = len(latent)
    joint, pl, pt = Counter(zip(latent, truth)), Counter(latent), Counter(truth)
    mutual = sum(c / n * math.log((c / n) / (pl[a] / n * pt[b] / n)) for (a, b), c in joint.items())
    entropy = lambda counts: -sum(c / n * math.log(c / n) for c in counts.values())  # noqa: E731
    return 2 * mutual / (entropy(pl) + entropy(pt))


def test_stage_scores_latents_against_truth_on_known_labellings(tmp_path):
    """The stage's NMI / mapping accuracy / majority figures on labellings whose answers are
    known: a relabelling of the truth (unknown transitions, -1, left out), a hand-built table,
    and labels independent of the truth."""
    g = torch.Generator().manual_seed(0)
    truth = [torch.randint(0, 4, (3, 5), generator=g) for _ in range(2)]
    truth[0][0, 1] = truth[1][2, 4] = -1  # no true action there
    perm = torch.tensor([2, 0, 3, 1])
    ids = [torch.where(t >= 0, perm[t.clamp_min(0)], 0) for t in truth]
    ids[0][0, 1], ids[1][2, 4] = 1, 2  # labels that would break the relabelling if counted
    out = _score(tmp_path, ids, truth)
    known = torch.cat([t.flatten() for t in truth])
    known = known[known >= 0]
    assert out["nmi"] == pytest.approx(1.0) and out["mapping_accuracy"] == 1.0
    assert out["majority_accuracy"] == pytest.approx(int(torch.bincount(known).max()) / 28)

    # latent 0 -> action 0 (2 of 2), 1 -> 1 (2 of 3), 2 -> 2 (2 of 2), 3 -> 2 (1 of 1): 7 of 8
    latent, true = [0, 0, 1, 1, 1, 2, 2, 3], [0, 0, 0, 1, 1, 2, 2, 2]
    out = _score(tmp_path, [torch.tensor([latent])], [torch.tensor([true])])
    assert out["mapping_accuracy"] == pytest.approx(7 / 8)
    assert out["majority_accuracy"] == pytest.approx(3 / 8)
    assert out["nmi"] == pytest.approx(_nmi_by_hand(latent, true)) and 0.5 < out["nmi"] < 1

    truth = [torch.randint(0, 4, (100, 10), generator=g) for _ in range(2)]
    ids = [torch.randint(0, 4, (100, 10), generator=g) for _ in range(2)]
    out = _score(tmp_path, ids, truth)
    assert out["nmi"] < 0.01 and out["mapping_accuracy"] < out["majority_accuracy"] + 0.05


def test_lam_resolution_must_match_data():
    from genie_core.config import lam_config_for_data
    from genie_core.errors import ConfigError

    cfg = load_preset("tiny", ["lam.resolution=[32, 32]"])
    with pytest.raises(ConfigError, match="data.resolution"):
        lam_config_for_data(cfg)


def _lam_ddp_worker(rank: int, world: int, port: int, data: str, out: str,
                    overrides: tuple[str, ...]) -> None:
    import os

    from safetensors.torch import save_file

    from genie_core.training import train as train_mod
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    original = train_mod.run_loop

    def run_loop(run, stop_at=None):  # keep each rank's final weights and VQ buffers
        result = original(run, stop_at)
        save_file({k: v.contiguous() for k, v in run.model.state_dict().items()},
                  str(Path(out).parent / f"rank{rank}.safetensors"))
        return result

    train_mod.run_loop = run_loop
    cfg = load_preset("tiny", list(overrides))
    train_mod.train(cfg, data, out, stage="lam", device="cpu")


def _run_lam_ddp(spawn_ranks, tmp_path: Path, overrides: tuple[str, ...]) -> tuple[dict, dict]:
    import socket

    from safetensors.torch import load_file

    data = write_action_clips(tmp_path / "data", count=8)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spawn_ranks(_lam_ddp_worker, (2, port, str(data), str(tmp_path / "run"), overrides))
    return load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")


@pytest.mark.slow
def test_ddp_ranks_keep_the_same_codebook(spawn_ranks, tmp_path):
    """Codebook init (k-means), EMA updates and dead-code resets are synchronised across ranks."""
    w0, w1 = _run_lam_ddp(spawn_ranks, tmp_path, ("train.lam.steps=4", "train.lam.eval_every=4",
                                     "lam.continuous_steps=1",
                                     "lam.dead_code_fraction=0.9"))  # resets on most steps
    assert bool(w0["vq.initialized"])
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key


def test_ddp_learned_codebook_through_the_continuous_phase(spawn_ranks, tmp_path):
    """A learned (non-EMA) codebook gets no gradient while the decoder is fed the continuous
    latent: two gloo ranks still train through that phase and into the quantised one, and end
    with the same weights (the codebook trained by its loss once quantisation starts)."""
    w0, w1 = _run_lam_ddp(spawn_ranks, tmp_path, ("train.lam.steps=3", "train.lam.eval_every=3",
                                     "train.lam.save_every=3", "lam.codebook_ema=0",
                                     "lam.continuous_steps=2"))
    assert "vq.ema_sum" not in w0 and bool(w0["vq.initialized"])
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key


def test_crossfit_mapping_accuracy_is_not_fooled_by_windows_that_share_one_action():
    """Windows whose transitions share one latent and one true action, unrelated to each other:
    a map fitted on the same windows scores high, the cross-fitted one does not; a latent that
    names the true action scores 1 either way."""
    from genie_core.metrics import mapping_accuracy
    from genie_core.training.stages.lam import _crossfit_mapping_accuracy

    g = torch.Generator().manual_seed(0)
    n, t = 24, 7
    latent = torch.randint(0, 6, (n, 1), generator=g).expand(n, t)
    truth = torch.randint(0, 9, (n, 1), generator=g).expand(n, t)
    same = mapping_accuracy(latent.flatten(), truth.flatten())[0]
    crossed = _crossfit_mapping_accuracy(latent, truth)
    assert same > 0.3 and crossed < same - 0.15
    paired = ((torch.arange(n) // 2) % 6)[:, None].expand(n, t)  # every code in both halves
    assert _crossfit_mapping_accuracy(paired, paired * 2 + 1) == 1.0
    assert _crossfit_mapping_accuracy(latent[:1], truth[:1]) is None


def test_overlapping_encoder_patches_see_every_offset_of_the_frame():
    """patch_stride < patch_size: the encoder's tokens are the patches at every stride (each
    pixel in patch_size / stride patches a side), and each token's input is exactly its
    window of the frame and of the frame difference; the decoder keeps non-overlapping patches."""
    model = tiny_model(patch_stride=2)  # tiny: 16 x 16 frames, 4-pixel patches
    x = video(b=1, t=3)
    tokens = model._overlapping_patches(torch.cat((x, x - x.roll(1, dims=2)), dim=1))
    assert tokens.shape == (1, 3, 7 * 7, 6 * 4 * 4)  # (16 - 4) / 2 + 1 = 7 a side
    # token (row 2, col 5) of frame 1 is the 4 x 4 window at pixel (4, 10) of frame 1
    window = x[0, :, 1, 4:8, 10:14]  # (3, 4, 4)
    assert torch.equal(tokens[0, 1, 2 * 7 + 5, :].view(4, 4, 6)[..., :3], window.permute(1, 2, 0))
    _, aux = model(x)
    assert aux["prediction"].shape == (1, 3, 2, 16, 16)


# ---- lam.moving_weight: the reconstruction loss weighted where pixels move ---------------------

def test_moving_weight_weighs_the_pixels_that_move() -> None:
    import torch.nn.functional as F

    from genie_core.models.lam import reconstruction_errors

    g = torch.Generator().manual_seed(0)
    previous = torch.zeros(2, 3, 3, 8, 8)
    target = previous.clone()
    target[..., :2, :] = 0.5  # the top two rows move (a quarter of the pixels)
    moving = torch.zeros_like(target, dtype=torch.bool)
    moving[..., :2, :] = True
    noise = torch.randn(target.shape, generator=g)
    on_moving, on_still = target + noise * moving, target + noise * ~moving
    plain = reconstruction_errors(on_moving, target, previous)
    assert plain[0] == pytest.approx(float(F.mse_loss(on_moving, target)))
    assert plain[1] == pytest.approx(float(F.l1_loss(on_moving, target)))
    for err in (0, 1):  # mse, l1
        assert reconstruction_errors(on_moving, target, previous, 3.0)[err] > reconstruction_errors(on_moving, target, previous)[err]
        assert reconstruction_errors(on_still, target, previous, 3.0)[err] < reconstruction_errors(on_still, target, previous)[err]
    # weights of mean 1: where every pixel moves (or none does) the weighted loss is the plain one
    everywhere = previous - 1
    for prev in (everywhere, target):
        a, b = reconstruction_errors(on_moving, target, prev, 3.0), reconstruction_errors(on_moving, target, prev)
        assert a[0] == pytest.approx(float(b[0]), rel=1e-5) and a[1] == pytest.approx(float(b[1]), rel=1e-5)
    # below the threshold a change is not a move
    faint = previous + 0.5 / 32
    assert reconstruction_errors(on_moving, faint, previous, 3.0)[0] == pytest.approx(
        float(reconstruction_errors(on_moving, faint, previous)[0]), rel=1e-5)
