"""--precision auto: bf16 only where the device multiplies bf16 matrices in hardware.

A CPU without AVX512-BF16 or AMX emulates bf16 matmuls several times slower than fp32, so there
``auto`` (every command's default) must mean fp32; explicit bf16 / fp32 are kept as asked."""

import contextlib

import numpy as np
import pytest
import torch

from genie_core import runtime
from genie_core.errors import ArgumentError
from genie_core.models.world import World

CPU = torch.device("cpu")


@contextlib.contextmanager
def cpu_features(**features: bool):
    """Pretend the CPU reports ``features`` (everything else absent)."""
    real = torch._C._cpu._get_cpu_capability
    torch._C._cpu._get_cpu_capability = lambda: dict(features)
    try:
        yield
    finally:
        torch._C._cpu._get_cpu_capability = real


@pytest.mark.parametrize("features, want", [
    ({"avx512_f": True, "avx512_bf16": False, "amx_bf16": False}, "fp32"),  # emulated bf16
    ({"avx512_f": True, "avx512_bf16": True}, "bf16"),
    ({"amx_bf16": True}, "bf16"),
    ({}, "fp32"),
])
def test_auto_follows_the_cpu_bf16_features(features: dict, want: str) -> None:
    with cpu_features(**features):
        assert runtime.resolve_precision("auto", CPU) == want
        assert runtime.resolve_precision("bf16", CPU) == "bf16"  # as asked, emulated or not
        assert runtime.resolve_precision("fp32", CPU) == "fp32"


def test_auto_is_fp32_when_the_cpu_cannot_be_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken():
        raise RuntimeError("no cpuinfo")
    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", broken)
    assert runtime.resolve_precision("auto", CPU) == "fp32"


def test_unknown_precision_is_a_user_error() -> None:
    with pytest.raises(ArgumentError, match="fp16"):
        runtime.resolve_precision("fp16", CPU)


@pytest.mark.parametrize("native", [False, True])
def test_autocast_auto_casts_only_where_bf16_is_native(native: bool) -> None:
    x = torch.randn(4, 4)
    with cpu_features(avx512_bf16=native):
        with runtime.autocast(CPU, "auto"):
            y = x @ x
    assert y.dtype == (torch.bfloat16 if native else torch.float32)


@pytest.mark.parametrize("native", [False, True])
def test_world_session_under_auto_uses_the_resolved_precision(native: bool) -> None:
    """A World plays under ``auto`` by default: with emulated bf16 its session runs the fp32
    models themselves (exactly an fp32 session's frames), with native bf16 bf16 copies."""
    torch.manual_seed(0)
    w = World.from_preset("tiny")
    assert w.precision == "auto"
    frames = (torch.rand(1, 1, 16, 16, 3) * 255).to(torch.uint8).numpy()
    with cpu_features(avx512_bf16=native):
        dynamics, _ = w.session._session_models()
        assert (dynamics is w.dynamics) == (not native)
        assert next(dynamics.parameters()).dtype == (torch.bfloat16 if native else torch.float32)
        got = w.rollout(frames, [0, 1], seed=3)
    if not native:
        w.precision = "fp32"
        np.testing.assert_array_equal(w.rollout(frames, [0, 1], seed=3), got)


@pytest.mark.parametrize("native, want", [(False, "fp32"), (True, "bf16")])
def test_training_under_auto_runs_the_resolved_precision_and_says_so(tmp_path, monkeypatch, native, want) -> None:
    """``train.precision: auto`` (the default) hands the stage the resolved precision and reports
    the choice as an info event."""
    from dataclasses import replace

    from test_train import ToyStage, moving_square_clips, toy_cfg

    from genie_core.training import stages
    from genie_core.training.train import train

    seen = []

    class Recording(ToyStage):
        def build_model(self):
            seen.append(self.precision)
            return super().build_model()

    monkeypatch.setitem(stages._REGISTRY, "tokenizer", Recording)
    cfg = toy_cfg(steps=1)
    cfg = replace(cfg, train=replace(cfg.train, precision="auto"))
    events = []
    with cpu_features(avx512_bf16=native):
        train(cfg, moving_square_clips(tmp_path / "data"), tmp_path / "run", device="cpu", on_event=events.append)
    assert seen and set(seen) == {want}  # the model and its EMA copy
    assert any(e.get("event") == "info" and f"precision auto: {want}" in e.get("message", "") for e in events)


def test_training_warns_when_bf16_is_forced_on_emulated_hardware(tmp_path, monkeypatch) -> None:
    from dataclasses import replace

    from test_train import ToyStage, moving_square_clips, toy_cfg

    from genie_core.training import stages
    from genie_core.training.train import train

    monkeypatch.setitem(stages._REGISTRY, "tokenizer", ToyStage)
    cfg = toy_cfg(steps=1)
    data = moving_square_clips(tmp_path / "data")
    for native, warned in ((False, True), (True, False)):
        events = []
        with cpu_features(avx512_bf16=native):
            train(replace(cfg, train=replace(cfg.train, precision="bf16")), data, tmp_path / f"run{native}",
                  device="cpu", on_event=events.append)
        said = [e["message"] for e in events if e.get("event") == "warning" and "emulated" in e.get("message", "")]
        assert bool(said) == warned, said


def test_resume_compares_the_precision_as_resolved_here(tmp_path, monkeypatch) -> None:
    """A run saved under bf16 (the default before auto) resumes under auto where auto means bf16,
    and is refused in one line where auto means fp32: it would not continue exactly."""
    from dataclasses import replace

    from test_train import ToyStage, moving_square_clips, toy_cfg

    from genie_core.errors import GenieError
    from genie_core.training import stages
    from genie_core.training.train import train

    monkeypatch.setitem(stages._REGISTRY, "tokenizer", ToyStage)
    cfg = toy_cfg(steps=2)
    data, out = moving_square_clips(tmp_path / "data"), tmp_path / "run"
    with cpu_features(avx512_bf16=True):
        train(replace(cfg, train=replace(cfg.train, precision="bf16")), data, out, device="cpu", stop_at=1)
    auto = replace(cfg, train=replace(cfg.train, precision="auto"))
    with cpu_features(avx512_bf16=False), pytest.raises(GenieError, match="train.precision"):
        train(auto, data, out, device="cpu", resume=True)
    with cpu_features(avx512_bf16=True):
        train(auto, data, out, device="cpu", resume=True)


def test_a_run_trained_under_auto_is_not_continued_in_another_precision(tmp_path, monkeypatch) -> None:
    """The run records the precision auto resolved to: resumed where auto means something else,
    it is refused (it would not continue exactly)."""
    from dataclasses import replace

    import yaml
    from test_train import ToyStage, moving_square_clips, toy_cfg

    from genie_core.errors import GenieError
    from genie_core.training import stages
    from genie_core.training.train import train

    monkeypatch.setitem(stages._REGISTRY, "tokenizer", ToyStage)
    cfg = toy_cfg(steps=2)
    cfg = replace(cfg, train=replace(cfg.train, precision="auto"))
    data, out = moving_square_clips(tmp_path / "data"), tmp_path / "run"
    with cpu_features(avx512_bf16=True):
        train(cfg, data, out, device="cpu", stop_at=1)
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["precision"] == "bf16"
    with cpu_features(avx512_bf16=False), pytest.raises(GenieError, match="train.precision.*--precision bf16"):
        train(cfg, data, out, device="cpu", resume=True)
    with cpu_features(avx512_bf16=False):  # what the message says to do: bf16 asked for explicitly
        train(replace(cfg, train=replace(cfg.train, precision="bf16")), data, out, device="cpu", stop_at=2,
              resume=True)
    with cpu_features(avx512_bf16=True):
        train(cfg, data, out, device="cpu", resume=True)
