"""torch.compile in training and play (checkpoints keep plain key names, the same losses and frames),
device-name validation, and the benchmarks' FLOP counter and peak."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from genie_cli.app import app
from genie_core import runtime
from genie_core.config import load_preset
from genie_core.errors import ArgumentError, GenieError
from genie_core.models.lam import LatentActionModel
from genie_core.models.world import World
from genie_core.training.train import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peak import count_gflop, fraction_of_peak, matmul_peak_gflops  # noqa: E402
from test_train import moving_square_clips  # noqa: E402


@pytest.fixture()
def fast_compile(monkeypatch):
    """Graph capture and the autograd split without code generation (seconds, not minutes)."""
    monkeypatch.setattr(runtime, "COMPILE_BACKEND", "aot_eager")


def _train_losses(tmp_path: Path, name: str, compile: bool, steps: int = 2, resume: bool = False) -> list[float]:
    sets = [f"train.lam.steps={steps}", "train.lam.log_every=1", "train.lam.eval_every=100",
            "train.lam.save_every=100", "train.num_threads=1"]
    train(load_preset("tiny", sets), tmp_path / "data", tmp_path / name, stage="lam", device="cpu",
          compile=compile, resume=resume)
    lines = [json.loads(line) for line in open(tmp_path / name / "lam" / "metrics.jsonl")]
    return [r["loss"] for r in lines if r.get("split") == "train"]


def _check_compiled_training(tmp_path: Path) -> None:
    moving_square_clips(tmp_path / "data")
    plain = _train_losses(tmp_path, "plain", compile=False)
    compiled = _train_losses(tmp_path, "compiled", compile=True)
    assert compiled == pytest.approx(plain, rel=1e-4, abs=1e-6)
    for file in ("last.safetensors", "state.safetensors"):
        a, b = (load_file(str(tmp_path / run / "lam" / file)) for run in ("plain", "compiled"))
        assert sorted(a) == sorted(b) and not any("_orig_mod" in k for k in b)
    # loads strictly into the uncompiled model
    model = LatentActionModel.from_config(load_preset("tiny").lam)
    model.load_state_dict(load_file(str(tmp_path / "compiled" / "lam" / "last.safetensors")), strict=True)
    # resume a compiled run (compiled again) and an uncompiled one to step 3: the same third loss
    plain3 = _train_losses(tmp_path, "plain", compile=False, steps=3, resume=True)
    compiled3 = _train_losses(tmp_path, "compiled", compile=True, steps=3, resume=True)
    assert len(compiled3) == 3 and compiled3 == pytest.approx(plain3, rel=1e-4, abs=1e-6)


def test_compiled_training_same_losses_plain_checkpoint_keys(tmp_path, fast_compile):
    _check_compiled_training(tmp_path)


@pytest.mark.slow
def test_compiled_training_with_inductor(tmp_path):
    _check_compiled_training(tmp_path)


def _rollout(world: World, compile: bool) -> torch.Tensor:
    world.use_compile = compile
    prompt = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    world.rollout(prompt, [0, 1, 2, 3, 1], seed=5)
    return world.session_ids()


def _check_compiled_play(precision: str) -> None:
    torch.manual_seed(0)
    world = World.from_preset("tiny")
    world.precision = precision
    plain = _rollout(world, compile=False)
    compiled = _rollout(world, compile=True)
    session_dynamics = world.session._models[0]
    assert session_dynamics is not world.dynamics  # the world's own model stays uncompiled
    assert all(b.ffw._compiled_call_impl is not None for b in session_dynamics.transformer.blocks)
    assert all(b.ffw._compiled_call_impl is None for b in world.dynamics.transformer.blocks)
    assert torch.equal(plain, compiled)
    assert torch.equal(_rollout(world, compile=False), plain)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_play_same_frames(precision, fast_compile):
    _check_compiled_play(precision)


@pytest.mark.slow
def test_compiled_play_with_inductor():
    _check_compiled_play("fp32")


@pytest.mark.parametrize("command", ["train", "play"])
def test_compile_option_in_help(command):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--compile" in result.output


def test_device_names():
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "cudax", "cuda:", "cpu:0 "):
        with pytest.raises(ArgumentError):
            runtime.resolve_device(bad)
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(GenieError, match="no CUDA device"):
                runtime.resolve_device(name)
        assert runtime.resolve_device("auto") == torch.device("cpu")


def test_flop_counter_and_peak():
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    gflop, out = count_gflop(lambda: a @ b)
    assert gflop * 1e9 == 2 * 3 * 5 * 7 and out.shape == (3, 7)
    assert fraction_of_peak(10.0, 0.5, 40.0) == 0.5
    before = torch.get_num_threads()
    for precision in ("bf16", "fp32"):
        assert matmul_peak_gflops(precision, 1, size=64, repeats=2) > 0
    assert torch.get_num_threads() == before


def _spy_compiles(monkeypatch) -> list[str]:
    """The stage names whose loss passes ``setup_run`` hands to ``compile_in_place``."""
    import genie_core.training.run as run_mod

    seen: list[str] = []
    real = run_mod.compile_in_place

    def spy(module):
        seen.append(module.stage.name)
        return real(module)

    monkeypatch.setattr(run_mod, "compile_in_place", spy)
    return seen


def test_stage_compile_setting_compiles_that_stage_only(tmp_path, monkeypatch, fast_compile):
    moving_square_clips(tmp_path / "data")
    seen = _spy_compiles(monkeypatch)
    events: list[dict] = []
    sets = [f"train.{s}.{k}={v}" for s in ("tokenizer", "lam", "dynamics")
            for k, v in (("steps", 1), ("eval_every", 100), ("save_every", 100))]
    cfg = load_preset("tiny", sets + ["train.lam.compile=true", "train.num_threads=1"])
    train(cfg, tmp_path / "data", tmp_path / "run", stage="all", device="cpu", on_event=events.append)
    assert set(seen) == {"lam"}
    assert any(e.get("event") == "info" and e["message"].startswith("lam: torch.compile") for e in events)
    assert (tmp_path / "run" / "world.safetensors").is_file()
    # the setting does not change the steps, so a run resumes with it turned off
    cfg = load_preset("tiny", sets[:3] + ["train.lam.steps=2", "train.num_threads=1"])
    train(cfg, tmp_path / "data", tmp_path / "run", stage="lam", device="cpu", resume=True)
    assert set(seen) == {"lam"} and len(seen) <= 2


def test_compile_without_a_compiler(tmp_path, monkeypatch):
    """The preset's setting falls back to eager training with a warning; --compile refuses in one
    line before any run folder appears."""
    moving_square_clips(tmp_path / "data")
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    seen = _spy_compiles(monkeypatch)
    events: list[dict] = []
    sets = ["train.lam.steps=1", "train.lam.eval_every=100", "train.lam.save_every=100", "train.num_threads=1"]
    train(load_preset("tiny", sets + ["train.lam.compile=true"]), tmp_path / "data", tmp_path / "eager",
          stage="lam", device="cpu", on_event=events.append)
    assert seen == [] and (tmp_path / "eager" / "lam" / "last.safetensors").is_file()
    assert any(e.get("event") == "warning" and "no-such-c++-compiler" in e["message"] for e in events)
    with pytest.raises(GenieError, match="--compile: torch.compile needs a C\\+\\+ compiler"):
        train(load_preset("tiny", sets), tmp_path / "data", tmp_path / "refused", stage="lam", device="cpu",
              compile=True)
    assert not (tmp_path / "refused").exists()
    result = CliRunner().invoke(app, ["train", "--preset", "tiny", "--stage", "lam", "--data", str(tmp_path / "data"),
                                      "--out", str(tmp_path / "cli"), "--compile", "--set", "train.lam.steps=1"])
    assert result.exit_code == 2 and "C++ compiler" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "cli").exists()


def test_stage_compile_setting_must_be_a_bool():
    with pytest.raises((ValueError, GenieError)):
        load_preset("tiny", ["train.dynamics.compile=sometimes"])


def test_compiled_transformer_takes_rotary_tables_as_inputs():
    """The rotary tables are looked up outside the compiled graph (traced, their cos and sin were
    recomputed in every compiled forward and backward), and the compiled forward matches eager."""
    from genie_core.models.layers.st_transformer import STTransformer

    torch._dynamo.reset()
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch.manual_seed(0)
    model = STTransformer(dim=32, depth=2, heads=2, grid=(4, 4))
    x = torch.randn(1, 3, 16, 32)
    compiled = torch.compile(model, backend=capture)
    torch.testing.assert_close(compiled(x), model(x))
    ops = [str(node.target) for gm in graphs for node in gm.graph.nodes]
    assert graphs and any("linear" in op or "matmul" in op for op in ops)
    assert not [op for op in ops if "cos" in op or "sin" in op]
