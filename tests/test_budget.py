"""Time-budgeted stages (train.<stage>.minutes): the horizon estimate on its own, then the loop on a
fake clock (every perf_counter call advances one second), so nothing depends on the machine's speed."""

from __future__ import annotations

import json
import os
import signal
import sys
import types
from pathlib import Path

import pytest

from genie_core.config import OptimConfig
from genie_core.io.checkpoint_format import read_metadata
from genie_core.training import stages
from genie_core.training import train as train_mod
from genie_core.training.budget import MIN_SAMPLES, WARM_STEPS, Horizon
from genie_core.training.optim import learning_rate
from genie_core.training.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import ToyStage, _free_port, cli, moving_square_clips, toy_cfg  # noqa: E402

# ---- the estimate ---------------------------------------------------------------------------------

def feed(h: Horizon, steps: int, step_s: float, start: int = 0, elapsed: float = 0.0,
         wall: float = 0.0) -> tuple[float, float]:
    for s in range(start + 1, start + steps + 1):
        elapsed, wall = elapsed + step_s, wall + step_s
        h.update(s, elapsed, wall)
    return elapsed, wall


def test_no_budget_keeps_the_configured_steps():
    h = Horizon.for_stage(cap=50, minutes=0, eval_every=10, save_every=10)
    feed(h, 20, 100.0)  # however slow the steps
    assert not h.timed and h.end == 50 and not h.done(49) and h.done(50)


def test_horizon_is_the_last_step_that_fits():
    h = Horizon.for_stage(cap=10_000, minutes=10, eval_every=100, save_every=10_000)  # 600 s
    feed(h, WARM_STEPS, 30.0)  # slow warm-up steps (compilation) are left out
    assert h.end == 10_000  # nothing measured yet: the cap
    elapsed, wall = feed(h, MIN_SAMPLES, 1.0, start=WARM_STEPS, elapsed=90.0, wall=90.0)
    step = WARM_STEPS + MIN_SAMPLES
    assert h.end == step + int((600 - wall) / 1.0)
    h.eval_s = 20.0  # an evaluation every 100 steps costs 0.2 s a step, and one more at the end
    h.update(step, elapsed, wall)
    assert h.end == step + int((600 - wall - 20.0) / 1.2)
    h.save_s = 100.0  # a checkpoint every 10000 steps: 0.01 s a step, and one more at the end
    h.update(step, elapsed, wall)
    assert h.end == step + int((600 - wall - 120.0) / 1.21)


def test_horizon_never_passes_the_cap_and_stops_when_the_budget_is_spent():
    h = Horizon.for_stage(cap=40, minutes=60, eval_every=10, save_every=10)
    feed(h, 20, 0.01)
    assert h.end == 40  # fast steps: the step cap ends the stage
    h = Horizon.for_stage(cap=1000, minutes=1, eval_every=10, save_every=10)
    feed(h, 12, 1.0)
    h.update(13, 13.0, 61.0)  # a long stall: the budget is spent
    assert h.end == 13 and h.done(13)


def test_resumed_horizon():
    h = Horizon.for_stage(cap=1000, minutes=10, eval_every=10, save_every=100)
    h.resumed(120, 120.0, 200.0, {"minutes": 10.0, "horizon": 300, "finished_by": None})
    assert h.end == 120 + int((600 - 200) / 1.0)  # interrupted: the saved mean step time (1 s)
    finished = {"minutes": 10.0, "steps": 1000, "horizon": 300, "finished_by": "budget", "eval_s": 2.0}
    h = Horizon.for_stage(cap=1000, minutes=10, eval_every=10, save_every=100)
    h.resumed(300, 570.0, 590.0, finished)
    assert h.done(300)  # spent its budget: the same budget leaves it alone
    h = Horizon.for_stage(cap=1000, minutes=20, eval_every=10, save_every=100)
    h.resumed(300, 570.0, 590.0, finished)
    step_s = 570.0 / 300 + 2.0 / 10  # a larger budget continues at once, without a jump to the cap
    assert h.end == 300 + int((1200 - 590 - 2.0) / step_s) and not h.done(300)
    h = Horizon.for_stage(cap=1000, minutes=5, eval_every=10, save_every=100)
    h.resumed(300, 570.0, 590.0, {"finished_by": None})
    assert h.done(300)  # already past a smaller budget
    ended_at_cap = {"minutes": 600.0, "steps": 6, "horizon": 6, "finished_by": "steps"}
    h = Horizon.for_stage(cap=6, minutes=600, eval_every=10, save_every=100)
    h.resumed(6, 6.0, 8.0, ended_at_cap)
    assert h.done(6)
    h = Horizon.for_stage(cap=10, minutes=600, eval_every=10, save_every=100)
    h.resumed(6, 6.0, 8.0, ended_at_cap)
    assert h.end == 10  # reached its steps: more steps lengthen it
    h = Horizon.for_stage(cap=1000, minutes=0, eval_every=10, save_every=100)
    h.resumed(300, 570.0, 590.0, finished)
    assert h.end == 1000  # the budget dropped: train to the steps


def test_schedule_spans_the_horizon():
    oc = OptimConfig(steps=10_000, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(99, oc, total=100) == pytest.approx(0.1, abs=1e-3)
    assert learning_rate(99, oc) > 0.99  # the cap's schedule has barely begun
    wsd = OptimConfig(steps=10_000, lr=1.0, warmup_steps=10, min_lr_ratio=0.0, schedule="wsd",
                      cooldown_fraction=0.2)
    assert learning_rate(79, wsd, total=100) == 1.0 and learning_rate(90, wsd, total=100) == pytest.approx(0.5)


def test_minutes_must_be_a_sane_number():
    for bad in (-1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="minutes"):
            OptimConfig(minutes=bad)


# ---- the loop on a fake clock ---------------------------------------------------------------------

@pytest.fixture()
def toy(monkeypatch):
    monkeypatch.setitem(stages._REGISTRY, "tokenizer", ToyStage)


@pytest.fixture()
def clips(tmp_path: Path) -> Path:
    return moving_square_clips(tmp_path / "data")


@pytest.fixture()
def clock(monkeypatch):
    """Every perf_counter call in the loop advances one second: a step, an evaluation and a
    checkpoint (two calls each) take one second."""
    state = {"now": 0.0}

    def perf_counter() -> float:
        state["now"] += 1.0
        return state["now"]

    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(perf_counter=perf_counter))
    return state


def budget_cfg(minutes: float, steps: int = 1000):
    return toy_cfg(steps=steps, minutes=minutes, eval_every=4, save_every=8, log_every=2,
                   grad_accum=1, warmup_steps=2)


def test_budgeted_stage_stops_within_its_budget_with_the_schedule_at_its_floor(toy, clips, tmp_path, clock):
    events = []
    out = tmp_path / "run"
    train(budget_cfg(minutes=0.5), clips, out, device="cpu", on_event=events.append)  # 30 s
    steps = [e for e in events if e["event"] == "step"]
    last = steps[-1]
    assert 10 <= last["step"] < 30  # not the 1000-step cap: 1 s a step plus evaluations
    meta = read_metadata(out / "tokenizer" / "state.safetensors")
    info = json.loads(meta["train_state"])
    assert info["step"] == last["step"] and info["horizon"] == last["step"] and info["minutes"] == 0.5
    assert info["finished_by"] == "budget" and info["eval_s"] == 1.0 and info["save_s"] == 1.0
    assert info["wall"] <= 30.0 + 1.0  # within a step of the budget
    oc = budget_cfg(0.5).train.tokenizer
    floor = oc.lr * oc.min_lr_ratio
    assert last["lr"] <= floor + 0.1 * (oc.lr - floor)  # the schedule decayed over the steps that fit
    assert last["total"] == last["step"]
    val = [json.loads(x) for x in (out / "tokenizer" / "metrics.jsonl").read_text().splitlines()
           if json.loads(x)["split"] == "val"]
    assert val[-1]["step"] == last["step"]  # a final evaluation at the end of the budget
    assert any("budget 0.5 min" in e.get("message", "") for e in events)
    # Finished: resuming with the same budget does nothing; with a larger one it continues.
    assert train(budget_cfg(minutes=0.5), clips, out, device="cpu", resume=True) == {}
    train(budget_cfg(minutes=1.0), clips, out, device="cpu", resume=True)
    more = json.loads(read_metadata(out / "tokenizer" / "state.safetensors")["train_state"])
    assert more["step"] > info["step"] and more["wall"] <= 60.0 + 1.0


def test_a_budget_that_ends_inside_the_warmup_is_named(toy, clips, tmp_path, clock):
    def warnings(warmup: int) -> list[str]:
        events = []
        cfg = toy_cfg(steps=1000, minutes=0.25, eval_every=4, save_every=8, log_every=2, grad_accum=1,
                      warmup_steps=warmup)
        train(cfg, clips, tmp_path / f"run{warmup}", device="cpu", on_event=events.append)
        return [e["message"] for e in events if e["event"] == "warning"]

    assert not [m for m in warnings(2) if "warm-up" in m]
    named = [m for m in warnings(500) if "warm-up" in m]
    assert len(named) == 1 and "warmup_steps=500" in named[0] and "0.25-minute" in named[0]


def test_budget_larger_than_the_steps_stops_at_the_cap(toy, clips, tmp_path, clock):
    out = tmp_path / "run"
    train(budget_cfg(minutes=600, steps=6), clips, out, device="cpu")
    assert read_metadata(out / "tokenizer" / "last.safetensors")["step"] == "6"
    info = json.loads(read_metadata(out / "tokenizer" / "state.safetensors")["train_state"])
    assert info["finished_by"] == "steps"
    assert train(budget_cfg(minutes=600, steps=6), clips, out, device="cpu", resume=True) == {}
    train(budget_cfg(minutes=600, steps=10), clips, out, device="cpu", resume=True)  # more steps
    assert read_metadata(out / "tokenizer" / "last.safetensors")["step"] == "10"


def test_stop_after_inside_a_budget_then_resume_to_it(toy, clips, tmp_path, clock):
    out = tmp_path / "run"
    train(budget_cfg(minutes=0.5), clips, out, device="cpu", stop_at=5)
    info = json.loads(read_metadata(out / "tokenizer" / "state.safetensors")["train_state"])
    assert info["step"] == 5 and info["finished_by"] is None
    train(budget_cfg(minutes=0.5), clips, out, device="cpu", resume=True)
    done = json.loads(read_metadata(out / "tokenizer" / "state.safetensors")["train_state"])
    assert done["finished_by"] == "budget" and 5 < done["step"] < 30 and done["wall"] <= 31.0


def test_interrupted_budgeted_stage_resumes_to_its_budget(toy, clips, tmp_path, clock):
    def on_event(e):
        if e["event"] == "step" and e["step"] == 6:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "run"
    train(budget_cfg(minutes=0.5), clips, out, device="cpu", on_event=on_event)
    info = json.loads(read_metadata(out / "tokenizer" / "state.safetensors")["train_state"])
    assert info["step"] == 6 and info["horizon"] > 6
    train(budget_cfg(minutes=0.5), clips, out, device="cpu", resume=True)
    done = json.loads(read_metadata(out / "tokenizer" / "state.safetensors")["train_state"])
    assert done["step"] > 6 and done["horizon"] == done["step"] and done["wall"] <= 31.0


def test_cli_minutes_sets_every_stage_budget(toy, clips, tmp_path, clock):
    out = tmp_path / "run"
    result = cli("--preset", "tiny", "--data", str(clips), "--out", str(out), "--precision", "fp32",
                 "--batch-size", "2", "--minutes", "0.25", "--steps", "500",
                 "--set", "train.tokenizer.eval_every=4")
    assert result.exit_code == 0, result.output
    info = json.loads(read_metadata(out / "tokenizer" / "state.safetensors")["train_state"])
    assert info["minutes"] == 0.25 and info["step"] < 500 and info["wall"] <= 16.0
    assert "time budget 0.25 min" in result.output
    bad = cli("--preset", "tiny", "--data", str(clips), "--out", str(tmp_path / "bad"), "--minutes", "-3")
    assert bad.exit_code == 2 and "Traceback" not in bad.output and not (tmp_path / "bad").exists()


# ---- DDP: two ranks whose clocks disagree ---------------------------------------------------------

def _ddp_budget_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    import torch
    from safetensors.torch import save_file

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    stages._REGISTRY["tokenizer"] = ToyStage
    # Rank 1's clock runs three times as fast as rank 0's: alone, each rank would stop at its own
    # step, and the first to stop would leave the other waiting in a collective for ever.
    state, tick = {"now": 0.0}, 1.0 if rank == 0 else 3.0

    def perf_counter() -> float:
        state["now"] += tick
        return state["now"]

    train_mod.time = types.SimpleNamespace(perf_counter=perf_counter)
    original = train_mod.run_loop

    def run_loop(run, stop_at=None):
        result = original(run, stop_at)
        save_file({k: v.contiguous() for k, v in run.model.state_dict().items()},
                  str(Path(out).parent / f"rank{rank}.safetensors"))
        (Path(out).parent / f"step{rank}.txt").write_text(str(run.step))
        return result

    train_mod.run_loop = run_loop
    train(budget_cfg(minutes=0.5), data, out, device="cpu")


def test_ddp_ranks_stop_a_budgeted_stage_at_the_same_step(clips, tmp_path, spawn_ranks):
    import torch
    from safetensors.torch import load_file

    spawn_ranks(_ddp_budget_worker, (2, _free_port(), str(clips), str(tmp_path / "run")))
    steps = [int((tmp_path / f"step{r}.txt").read_text()) for r in (0, 1)]
    assert steps[0] == steps[1] and 2 < steps[0] < 1000, steps  # stopped by the budget, together
    w0, w1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    info = json.loads(read_metadata(tmp_path / "run" / "tokenizer" / "state.safetensors")["train_state"])
    assert info["finished_by"] == "budget" and info["step"] == steps[0]
