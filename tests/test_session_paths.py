"""`genie play`, `genie evaluate` and examples/rollout_grid.py generate frames through one play
session: ``World.session``, a ``PlaySession``. Each is run on a tiny untrained world while the
session's methods and the dynamics model's frame generator count their calls: every generated
frame must come from ``PlaySession.step`` on the world's own session, one step per action."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from genie_cli.app import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def prompt_png(tmp_path: Path) -> Path:
    from genie_core.io.pictures import write_png

    path = tmp_path / "start.png"
    write_png(path, np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return path


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Counts PlaySession.encode_prompt / step / rollout (each noting whether the session is its
    world's ``session``) and DynamicsModel.generate_next, each still doing its work."""
    from genie_core.models.dynamics import DynamicsModel
    from genie_core.models.session import PlaySession

    seen: dict[str, list[Any]] = {"encode_prompt": [], "step": [], "rollout": [], "generate_next": []}

    def counted(cls: type, name: str, note: Callable[..., Any]) -> None:
        original = getattr(cls, name)

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            seen[name].append(note(self, *args))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    for name in ("encode_prompt", "step"):
        counted(PlaySession, name, lambda self, *a: self is getattr(self.world, "session", None))
    counted(PlaySession, "rollout", lambda self, frames, actions, *a: (
        self is getattr(self.world, "session", None), np.asarray(actions).shape[-1]))
    counted(DynamicsModel, "generate_next", lambda self, *a: True)
    return seen


def _check_all_through_the_session(seen: dict[str, list[Any]]) -> None:
    assert seen["step"], "no frame was generated through PlaySession.step"
    assert all(seen["step"]) and all(seen["encode_prompt"]), "a session that is not World.session"
    # every generated frame came from a session step (nothing called the generator around it)
    assert len(seen["generate_next"]) == len(seen["step"])


def test_genie_play_goes_through_the_session(world_file: Path, prompt_png: Path, tmp_path: Path,
                                             calls: dict[str, list[Any]]) -> None:
    result = CliRunner().invoke(app, ["play", "-w", str(world_file), "--prompt", str(prompt_png),
                                      "--actions", "0,1,3", "-o", str(tmp_path / "out.gif"),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    _check_all_through_the_session(calls)
    assert len(calls["encode_prompt"]) == 1 and len(calls["step"]) == 3


def test_genie_evaluate_goes_through_the_session(world_file: Path, make_clip: Callable[..., Path],
                                                 tmp_path: Path, calls: dict[str, list[Any]]) -> None:
    clips = tmp_path / "clips"
    make_clip(clips / "a.mp4", frames=6, size=(16, 16), seed=0)
    make_clip(clips / "b.mp4", frames=6, size=(16, 16), seed=1)
    result = CliRunner().invoke(app, ["evaluate", str(clips), "-w", str(world_file), "--clips", "2",
                                      "--horizon", "2", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    _check_all_through_the_session(calls)
    assert calls["rollout"] and all(own for own, _ in calls["rollout"])
    # each rollout is one session: a prompt, then one step per action
    assert len(calls["encode_prompt"]) == len(calls["rollout"])
    assert len(calls["step"]) == sum(n for _, n in calls["rollout"]) == 2 * len(calls["rollout"])


def test_rollout_grid_goes_through_the_session(world_file: Path, prompt_png: Path, tmp_path: Path,
                                               calls: dict[str, list[Any]],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("rollout_grid", EXAMPLES / "rollout_grid.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "grid.png"
    monkeypatch.setattr(sys, "argv", ["rollout_grid.py", "--world", str(world_file), "--prompt",
                                      str(prompt_png), "-o", str(out), "--steps-ahead", "2"])
    module.main()
    assert out.is_file()
    _check_all_through_the_session(calls)
    assert calls["rollout"] and all(own for own, _ in calls["rollout"])
    assert len(calls["step"]) == sum(n for _, n in calls["rollout"]) == 2 * len(calls["rollout"])
