"""The training loop (genie_core.training.train) on a toy stage and on the tokenizer stage: schedule,
overfit, exact resume, Ctrl-C, DDP on two CPU processes, run folder contents, bad inputs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from genie_core.config import GenieConfig, OptimConfig, load_preset
from genie_core.errors import GenieError
from genie_core.io.checkpoint_format import Checkpointable, read_metadata
from genie_core.io.video import find_videos
from genie_core.training import stages
from genie_core.training import train as train_mod
from genie_core.training.optim import adamw, learning_rate
from genie_core.training.stages import Stage
from genie_core.training.train import train

ROOT = Path(__file__).resolve().parents[1]


# ---- fixtures -----------------------------------------------------------------------------------

def write_gif(path: Path, frames: np.ndarray) -> None:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=66, loop=0)


def moving_square_clips(folder: Path, count: int = 6, frames: int = 10, size: int = 16,
                        actions: bool = True) -> Path:
    """Synthetic videos: a bright square moving one pixel per frame, with action sidecars."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        clip = np.zeros((frames, size, size, 3), np.uint8)
        clip[...] = rng.integers(0, 60, size=3, dtype=np.uint8)
        x, y = rng.integers(0, size - 4, size=2)
        moves = rng.integers(0, 2, size=frames)
        for t in range(frames):
            clip[t, y:y + 4, x:x + 4] = (250, 200, 40)
            x = (x + (1 if moves[t] else -1)) % (size - 4)
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        write_gif(sub / f"clip{i}.gif", clip)
        if actions:
            (sub / f"clip{i}.json").write_text(json.dumps({"actions": moves.tolist()}))
    return folder


@pytest.fixture()
def clips(tmp_path: Path) -> Path:
    return moving_square_clips(tmp_path / "data")


# ---- a toy stage: the loop's contract without the real models ------------------------------------

class ToyModel(Checkpointable, nn.Module):
    kind, config_section = "tokenizer", "tokenizer"

    def __init__(self) -> None:
        super().__init__()
        from genie_core.config import TokenizerConfig
        self.config = TokenizerConfig()
        self.enc = nn.Conv3d(3, 8, 1)
        self.dec = nn.Conv3d(8, 3, 1)
        self.disc = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.dropout(torch.tanh(self.enc(x)), 0.1, self.training)  # uses the RNG
        return self.dec(h)


class ToyStage(Stage):
    name, kind = "tokenizer", "tokenizer"

    def build_model(self) -> nn.Module:
        return ToyModel()

    def loss(self, model, batch, step):
        x = batch["frames"].permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # (B, 3, T, H, W)
        rec = model(x)
        batch["_rec"] = rec.detach()
        gan = -model.disc(rec.mean(dim=(2, 3, 4))).mean() * 0.01 if step >= 2 else 0.0
        mse = (rec.float() - x).pow(2).mean()
        return mse + gan, {"mse": mse.detach()}

    def aux_parameters(self, model):
        return list(model.disc.parameters())

    def aux_active(self, step):
        return step >= 2

    def aux_loss(self, model, batch, step):
        x = batch["frames"].permute(0, 4, 1, 2, 3).float() / 127.5 - 1
        real = model.disc(x.mean(dim=(2, 3, 4)))
        fake = model.disc(batch["_rec"].float().mean(dim=(2, 3, 4)))
        loss = torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()
        return loss, {"d_loss": loss.detach()}

    def evaluate(self, model, batches):
        errs = []
        for b in batches:
            x = b["frames"].permute(0, 4, 1, 2, 3).float() / 127.5 - 1
            errs.append((model(x).float() - x).pow(2).mean())
        return {"mse": float(torch.stack(errs).mean())}

    def sample_picture(self, model, batch):
        return batch["frames"][0, 0].cpu().numpy()


@pytest.fixture()
def toy(monkeypatch):
    monkeypatch.setitem(stages._REGISTRY, "tokenizer", ToyStage)
    return ToyStage


def toy_cfg(**optim) -> GenieConfig:
    base = dict(steps=8, batch_size=2, lr=1e-2, warmup_steps=2, eval_every=4, save_every=4,
                log_every=2, grad_accum=2, ema_decay=0.9)
    base.update(optim)
    cfg = load_preset("tiny")
    from dataclasses import replace
    return replace(cfg, train=replace(cfg.train, tokenizer=OptimConfig(**base), precision="fp32"))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


# ---- schedule -----------------------------------------------------------------------------------

def test_learning_rate_warmup_cosine_and_wsd():
    oc = OptimConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [learning_rate(s, oc) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # monotone decay after warmup
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
    wsd = OptimConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.0, schedule="wsd",
                      cooldown_fraction=0.2)
    assert learning_rate(50, wsd) == learning_rate(79, wsd) == 1.0
    assert learning_rate(90, wsd) == pytest.approx(0.5) and learning_rate(100, wsd) == 0.0


def test_weight_decay_only_on_matrices():
    model = ToyModel()
    opt, names = adamw(list(model.named_parameters()), 1e-3, OptimConfig(weight_decay=0.5), False)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.5 and opt.param_groups[1]["weight_decay"] == 0.0
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.ndim >= 2), name
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())


# ---- the loop -----------------------------------------------------------------------------------

def test_toy_overfit_and_run_folder(toy, clips, tmp_path):
    events = []
    out = tmp_path / "run"
    result = train(toy_cfg(steps=30, eval_every=10, ema_decay=0.0), clips, out, device="cpu",
                   on_event=events.append)
    lines = [json.loads(x) for x in (out / "tokenizer" / "metrics.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if x["split"] == "train"]
    assert train_lines[-1]["mse"] < 0.5 * train_lines[0]["mse"]  # a short overfit drops the loss
    assert [x["step"] for x in lines if x["split"] == "val"] == [10, 20, 30]
    assert result["tokenizer"]["mse"] == lines[-1]["mse"]
    assert "d_loss" in train_lines[-1] and "clips_per_s" in train_lines[-1]
    assert (out / "config.yaml").is_file()
    heldout = (out / "heldout.txt").read_text().splitlines()  # 6 videos, val_fraction 0.1: one
    assert len(heldout) == 1 and Path(heldout[0]).is_absolute()
    assert heldout[0] in {str(v.resolve()) for v in find_videos(clips)}
    assert sorted(p.name for p in (out / "tokenizer" / "samples").iterdir()) == [
        "step_0000010.png", "step_0000020.png", "step_0000030.png"]
    meta = read_metadata(out / "tokenizer" / "last.safetensors")
    assert meta["kind"] == "tokenizer" and meta["step"] == "30"
    assert (out / "tokenizer" / "step_0000004.safetensors").is_file()
    kinds = {e["event"] for e in events}
    assert {"start", "step", "eval", "checkpoint", "info"} <= kinds  # info: sidecar actions found
    assert any("'actions'" in e.get("message", "") for e in events)


def test_resume_equals_straight_run(toy, clips, tmp_path):
    """N steps, stop, resume to 2N == 2N straight: weights, EMA, optimiser, schedule, data, RNG."""
    cfg = toy_cfg()
    train(cfg, clips, tmp_path / "straight", device="cpu")
    train(cfg, clips, tmp_path / "split", device="cpu", stop_at=3)  # odd: mid-accumulation of nothing
    assert read_metadata(tmp_path / "split" / "tokenizer" / "state.safetensors")["step"] == "3"
    train(cfg, clips, tmp_path / "split", device="cpu", resume=True)
    a = weights(tmp_path / "straight" / "tokenizer" / "state.safetensors")
    b = weights(tmp_path / "split" / "tokenizer" / "state.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("aux_opt/") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    la = (tmp_path / "straight" / "tokenizer" / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "split" / "tokenizer" / "metrics.jsonl").read_text().splitlines()
    val = lambda ls: [{k: v for k, v in x.items() if k not in ("time", "wall")}
                      for x in map(json.loads, ls) if x["split"] == "val"]
    assert val(la) == val(lb) and len(val(la)) == 2


def test_interrupt_saves_and_stops(toy, clips, tmp_path):
    def on_event(e):
        if e["event"] == "step" and e["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    events = []
    train(toy_cfg(), clips, tmp_path / "run", device="cpu",
          on_event=lambda e: (events.append(e), on_event(e)))
    assert read_metadata(tmp_path / "run" / "tokenizer" / "state.safetensors")["step"] == "3"
    assert read_metadata(tmp_path / "run" / "tokenizer" / "last.safetensors")["step"] == "3"
    assert events[-1]["event"] == "interrupted"


def test_bad_inputs_leave_no_run_folder(toy, clips, tmp_path):
    out = tmp_path / "run"
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "broken.mp4").write_bytes(b"not a video at all")
    for data, pattern in [(tmp_path / "missing", "not found"), (empty, "no videos"),
                          (junk, "no readable video")]:
        with pytest.raises(GenieError, match=pattern):
            train(toy_cfg(), data, out, device="cpu")
        assert not out.exists()
    with pytest.raises(GenieError, match="no run folder"):
        train(toy_cfg(), clips, out, device="cpu", resume=True)
    with pytest.raises(GenieError, match="unknown stage"):
        train(toy_cfg(), clips, out, stage="nope", device="cpu")
    assert not out.exists()
    short = moving_square_clips(tmp_path / "short", count=2, frames=2)
    with pytest.raises(GenieError, match="frames a clip needs"):
        train(toy_cfg(), short, out, device="cpu")
    assert not out.exists()


def test_resume_checks_the_run(toy, clips, tmp_path):
    out = tmp_path / "run"
    train(toy_cfg(steps=2), clips, out, device="cpu")
    with pytest.raises(GenieError, match="already holds a training run"):
        train(toy_cfg(steps=2), clips, out, device="cpu")
    from dataclasses import replace
    other = replace(toy_cfg(steps=2), name="small")
    with pytest.raises(GenieError, match="preset 'tiny', not 'small'"):
        train(other, clips, out, device="cpu", resume=True)
    # Finished: resuming with more steps continues; with the same steps it does nothing.
    assert train(toy_cfg(steps=2), clips, out, device="cpu", resume=True) == {}
    train(toy_cfg(steps=4), clips, out, device="cpu", resume=True)
    assert read_metadata(out / "tokenizer" / "last.safetensors")["step"] == "4"


def test_corrupt_video_skipped_with_warning(toy, clips, tmp_path):
    (clips / "a" / "zz_broken.mp4").write_bytes(b"\x00" * 100)
    events = []
    train(toy_cfg(steps=1), clips, tmp_path / "run", device="cpu", on_event=events.append)
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("zz_broken.mp4" in w for w in warnings)


def test_stage_clip_length_override(toy, clips, tmp_path, monkeypatch):
    """train.<stage>.num_frames changes the training clips only; validation keeps data.num_frames."""
    seen = {"train": set(), "val": set()}
    loss, evaluate = ToyStage.loss, ToyStage.evaluate
    monkeypatch.setattr(ToyStage, "loss", lambda self, m, b, s: (seen["train"].add(b["frames"].shape[1]), loss(self, m, b, s))[1])
    monkeypatch.setattr(ToyStage, "evaluate", lambda self, m, bs: (seen["val"].update(b["frames"].shape[1] for b in bs), evaluate(self, m, bs))[1])
    train(toy_cfg(steps=2, num_frames=2, eval_every=2), clips, tmp_path / "run", device="cpu")
    assert seen == {"train": {2}, "val": {4}}


# ---- DDP: two CPU processes (gloo) ---------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    stages._REGISTRY["tokenizer"] = ToyStage
    original = train_mod.run_loop

    def run_loop(run, stop_at=None):  # keep each rank's final weights for the comparison
        result = original(run, stop_at)
        save_file({k: v.contiguous() for k, v in run.model.state_dict().items()},
                  str(Path(out).parent / f"rank{rank}.safetensors"))
        save_file({"frames": torch.from_numpy(run.data.train.sample(np.random.default_rng(0), 4)["frames"])},
                  str(Path(out).parent / f"batch{rank}.safetensors"))
        return result

    train_mod.run_loop = run_loop
    train(toy_cfg(steps=3, eval_every=3), data, out, device="cpu")


def _hanging_worker(rank: int) -> None:
    import time

    time.sleep(3600)


def test_spawn_ranks_turns_a_hang_into_a_failure(spawn_ranks):
    """The DDP tests' deadline works: a rank that never returns fails the test and is killed."""
    import time

    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="still running after 3 s"):
        spawn_ranks(_hanging_worker, (), nprocs=1, seconds=3)
    assert time.monotonic() - t0 < 60


def test_ddp_two_processes_identical_weights(clips, tmp_path, spawn_ranks):
    spawn_ranks(_ddp_worker, (2, _free_port(), str(clips), str(tmp_path / "run")))
    w0, w1 = weights(tmp_path / "rank0.safetensors"), weights(tmp_path / "rank1.safetensors")
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    # The data is sharded: the ranks draw from different files.
    b0, b1 = weights(tmp_path / "batch0.safetensors"), weights(tmp_path / "batch1.safetensors")
    assert not torch.equal(b0["frames"], b1["frames"])
    # Only rank 0 wrote the run folder, and its last checkpoint holds the (EMA) weights.
    assert read_metadata(tmp_path / "run" / "tokenizer" / "last.safetensors")["step"] == "3"


# ---- the command ---------------------------------------------------------------------------------

def cli(*args: str):
    from typer.testing import CliRunner

    from genie_cli.app import app
    return CliRunner().invoke(app, ["train", *args])


def test_cli_bad_inputs_exit_2_without_run_folder(toy, clips, tmp_path):
    out = tmp_path / "run"
    cases = [
        (["--preset", "nope"], "unknown preset"),
        (["--set", "train.tokenizer.nope=1"], "nope"),
        (["--set", "train.tokenizer.lr=fast"], "lr"),
        (["--stage", "everything"], "--stage"),
        (["--precision", "fp8"], "--precision"),
    ]
    for extra, needle in cases:
        result = cli("--preset", "tiny", "--data", str(clips), "--out", str(out), *extra)
        assert result.exit_code == 2, (extra, result.output)
        assert needle in result.output and "Traceback" not in result.output
        assert not out.exists()
    (tmp_path / "empty").mkdir()
    for data in (tmp_path / "missing", tmp_path / "empty"):
        result = cli("--preset", "tiny", "--data", str(data), "--out", str(out))
        assert result.exit_code == 2 and not out.exists(), result.output
    result = cli("--preset", "tiny", "--data", str(clips), "--out", str(out), "--resume")
    assert result.exit_code == 2 and "no run folder" in result.output and not out.exists()


def test_cli_trains_and_resumes(toy, clips, tmp_path):
    out = tmp_path / "run"
    args = ["--preset", "tiny", "--data", str(clips), "--out", str(out), "--precision", "fp32",
            "--set", "train.tokenizer.eval_every=2", "--steps", "4", "--batch-size", "2"]
    result = cli(*args, "--stop-after", "2")
    assert result.exit_code == 0, result.output
    assert read_metadata(out / "tokenizer" / "last.safetensors")["step"] == "2"
    result = cli(*args, "--resume", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["stage"] == "tokenizer" and "mse" in record
    assert read_metadata(out / "tokenizer" / "last.safetensors")["step"] == "4"
    other = tmp_path / "other.yaml"
    other.write_text("inherit: tiny\n")
    result = cli("--preset", str(other), "--data", str(clips), "--out", str(out), "--resume")
    assert result.exit_code == 2 and "preset 'tiny', not 'other'" in result.output


# ---- the real tokenizer stage --------------------------------------------------------------------

def test_tokenizer_stage_resume_exact(clips, tmp_path):
    """The real tokenizer on `tiny` (fp32): 2 steps + resume to 4 == 4 straight, bit for bit."""
    cfg = load_preset("tiny", ["train.tokenizer.steps=4", "train.tokenizer.eval_every=4",
                               "train.tokenizer.save_every=4", "train.precision=fp32"])
    events = []
    result = train(cfg, clips, tmp_path / "straight", device="cpu", on_event=events.append)
    assert {"psnr", "ssim", "codebook_usage", "perplexity"} <= result["tokenizer"].keys()
    train(cfg, clips, tmp_path / "split", device="cpu", stop_at=2)
    train(cfg, clips, tmp_path / "split", device="cpu", resume=True)
    a = weights(tmp_path / "straight" / "tokenizer" / "state.safetensors")
    b = weights(tmp_path / "split" / "tokenizer" / "state.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    from genie_core.models.load import load_checkpoint
    model = load_checkpoint(tmp_path / "straight" / "tokenizer" / "last.safetensors")
    assert model.checkpoint_step == 4
    assert (tmp_path / "straight" / "tokenizer" / "samples" / "step_0000004.png").is_file()


@pytest.mark.slow
def test_torchrun_cli_two_processes(clips, tmp_path):
    """`torchrun --nproc_per_node=2 -m genie_cli train` end to end (rank 0 writes the run)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
           str(_free_port()), "-m", "genie_cli", "train", "--preset", "tiny", "--data", str(clips),
           "--out", str(out), "--steps", "3", "--threads", "1", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_metadata(out / "tokenizer" / "last.safetensors")["step"] == "3"
    assert proc.stdout.count("tokenizer:") == 1  # only rank 0 prints results


# ---- resume: damaged logs and changed settings ------------------------------------------------

def test_partial_last_metrics_line_does_not_block_resume(toy, clips, tmp_path):
    """A crash mid-append leaves a cut-off line: resume drops it (with a warning) and continues
    exactly as an unbroken run."""
    cfg = toy_cfg()
    train(cfg, clips, tmp_path / "straight", device="cpu")
    out = tmp_path / "run"
    train(cfg, clips, out, device="cpu", stop_at=4)
    log = out / "tokenizer" / "metrics.jsonl"
    with open(log, "a") as fh:
        fh.write('{"split": "train", "step": 6, "ms')  # no newline: the process died here
    events = []
    train(cfg, clips, out, device="cpu", resume=True, on_event=events.append)
    lines = [json.loads(x) for x in log.read_text().splitlines()]  # every line parses
    assert any(e["event"] == "warning" and "metrics.jsonl" in e["message"] for e in events)
    strip = lambda ls: [{k: v for k, v in x.items() if k not in ("time", "wall", "clips_per_s")} for x in ls]  # noqa: E731
    straight = [json.loads(x) for x in (tmp_path / "straight" / "tokenizer" / "metrics.jsonl").read_text().splitlines()]
    assert strip(lines) == strip(straight)


def _changed(clips: Path, tmp_path: Path) -> dict:
    """Ways a --resume differs from its run that would break exactness: (config, data) each."""
    other = moving_square_clips(tmp_path / "other", count=5)
    return {
        "train.seed": (replace_cfg(toy_cfg(), seed=7), clips),
        "train.tokenizer.batch_size": (toy_cfg(batch_size=3), clips),
        "train.tokenizer.lr": (toy_cfg(lr=5e-3), clips),
        "train.precision": (replace_cfg(toy_cfg(), precision="bf16"), clips),
        "data.resolution": (load_preset_like(toy_cfg(), "data.resolution=[8, 8]"), clips),
        "tokenizer.d_codebook": (load_preset_like(toy_cfg(), "tokenizer.d_codebook=6"), clips),
        "videos in --data": (toy_cfg(), other),
    }


def replace_cfg(cfg: GenieConfig, **train_changes) -> GenieConfig:
    from dataclasses import replace
    return replace(cfg, train=replace(cfg.train, **train_changes))


def load_preset_like(cfg: GenieConfig, override: str) -> GenieConfig:
    from dataclasses import replace
    changed = load_preset("tiny", [override])
    return replace(changed, train=cfg.train)


def test_resume_refuses_any_change_that_breaks_exactness(toy, clips, tmp_path):
    out = tmp_path / "run"
    train(toy_cfg(), clips, out, device="cpu", stop_at=2)
    kept = {p: p.read_bytes() for p in (out / "config.yaml", out / "heldout.txt", out / "tokenizer" / "state.safetensors")}
    for name, (cfg, data) in _changed(clips, tmp_path).items():
        with pytest.raises(GenieError, match="--resume") as err:
            train(cfg, data, out, device="cpu", resume=True)
        message = str(err.value)
        assert name in message and "\n" not in message, (name, message)
        assert {p: p.read_bytes() for p in kept} == kept, name  # nothing rewritten
    # What leaves the run exact may change: length, logging, evaluation and save intervals, threads.
    free = replace_cfg(toy_cfg(steps=10, log_every=1, eval_every=5, save_every=5), num_threads=1)
    train(free, clips, out, device="cpu", resume=True)
    assert read_metadata(out / "tokenizer" / "last.safetensors")["step"] == "10"


def test_cli_resume_with_another_seed_is_one_line_exit_2(toy, clips, tmp_path):
    out = tmp_path / "run"
    args = ["--preset", "tiny", "--data", str(clips), "--out", str(out), "--precision", "fp32", "--steps", "4"]
    assert cli(*args, "--stop-after", "2").exit_code == 0
    config = (out / "config.yaml").read_bytes()
    result = cli(*args, "--resume", "--seed", "5")
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "train.seed=0, not 5" in errors[0], result.output
    assert (out / "config.yaml").read_bytes() == config


def test_damaged_train_state_metadata_is_a_one_line_error(toy, clips, tmp_path):
    out = tmp_path / "run"
    train(toy_cfg(), clips, out, device="cpu", stop_at=2)
    state = out / "tokenizer" / "state.safetensors"
    meta = read_metadata(state)
    for bad in ({"step": "abc"}, {"step": -3}, {"elapsed": "nan"}):
        info = {**json.loads(meta["train_state"]), **bad}
        save_file(load_file(str(state)), str(state), metadata={**meta, "train_state": json.dumps(info)})
        with pytest.raises(GenieError, match="train_state"):
            train(toy_cfg(), clips, out, device="cpu", resume=True)
