"""ΔtPSNR (Genie §3.1) on the tiny preset: ΔtPSNR is exactly 0 when the random actions equal the
inferred ones, the actions are aligned with the frames, numbers are finite, windows are seeded
slices of the videos, and `genie evaluate` prints a table or JSON and rejects bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from genie_cli.app import app
from genie_core.evaluate import controllability, frame_psnr, rollout_psnr, sample_windows

runner = CliRunner()


@pytest.fixture(scope="module")
def world():
    from genie_core.world import World

    torch.manual_seed(0)
    w = World.from_preset("tiny")
    w.precision = "fp32"
    return w


@pytest.fixture(scope="module")
def world_file(world, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("world") / "world.safetensors"
    world.save(path)
    return path


@pytest.fixture
def clips(make_clip: Callable[..., Path], tmp_path: Path) -> Path:
    root = tmp_path / "heldout"
    make_clip(root / "a.mp4", frames=9, size=(32, 32), seed=0)
    make_clip(root / "sub" / "b.mp4", frames=7, size=(24, 40), seed=1)
    make_clip(root / "short.mp4", frames=3, size=(32, 32), seed=2)
    return root


def _batch(clip_frames: Callable[..., np.ndarray], B: int = 2, T: int = 5) -> np.ndarray:
    return np.stack([clip_frames(T, (16, 16), seed=i) for i in range(B)])  # (B, T, 16, 16, 3)


def test_delta_is_zero_when_random_actions_equal_inferred(world, clip_frames) -> None:
    clips = _batch(clip_frames)
    first = rollout_psnr(world, clips, horizon=4, seed=5)
    same = rollout_psnr(world, clips, horizon=4, seed=5, random_actions=first["inferred_actions"])
    np.testing.assert_array_equal(same["psnr_inferred"], same["psnr_random"])
    np.testing.assert_array_equal(same["psnr_inferred"], first["psnr_inferred"])  # seeded
    other = rollout_psnr(world, clips, horizon=4, seed=5,
                         random_actions=(first["inferred_actions"] + 1) % world.num_actions)
    assert not np.array_equal(other["psnr_inferred"], other["psnr_random"])  # actions do matter


def test_actions_are_the_lams_transitions_into_generated_frames(world, clip_frames) -> None:
    clips = _batch(clip_frames, T=6)
    out = rollout_psnr(world, clips, horizon=4, prompt_frames=2, seed=0)
    inferred = world.infer_actions(clips).numpy()  # (B, 5): actions[:, t] took frame t to t+1
    np.testing.assert_array_equal(out["inferred_actions"], inferred[:, 1:])
    assert out["psnr_inferred"].shape == out["psnr_random"].shape == (2, 4)
    assert out["random_actions"].shape == (2, 4)
    assert ((0 <= out["random_actions"]) & (out["random_actions"] < world.num_actions)).all()


def test_frame_psnr_closed_form() -> None:
    a = np.full((2, 3, 8, 8, 3), 100, np.uint8)
    b = a + np.uint8(5)
    scores = frame_psnr(a, b)
    assert scores.shape == (2, 3)
    np.testing.assert_allclose(scores, 10 * np.log10(255 ** 2 / 5 ** 2), rtol=1e-5)
    np.testing.assert_allclose(frame_psnr(b, a), scores)
    assert (frame_psnr(a, a) == 100.0).all()  # identical frames: the metrics' cap, not inf


def test_controllability_report(world, clips: Path) -> None:
    from genie_core.video import find_videos

    windows = list(sample_windows(find_videos(clips), 5, 5, world.resolution, seed=1))
    report = controllability(world, windows, horizon=4, seed=0, batch_size=2)
    assert report.psnr_inferred.shape == report.psnr_random.shape == (5, 4)
    summary = report.summary()
    for key in ("clips", "psnr_inferred_t4", "psnr_random_t4", "delta_psnr_t4", "psnr_generated"):
        assert key in summary
    assert summary["clips"] == 5
    assert all(np.isfinite(summary[k]) for k in ("psnr_inferred_t4", "psnr_random_t4", "delta_psnr_t4"))
    np.testing.assert_allclose(summary["delta_psnr_t4"], summary["psnr_inferred_t4"] - summary["psnr_random_t4"],
                               atol=1e-4)
    assert len(report.per_clip()) == 5


def test_windows_are_seeded_slices(clips: Path) -> None:
    from genie_core.video import find_videos, read_video

    videos = find_videos(clips)
    warnings: list[str] = []
    a = list(sample_windows(videos, 6, 5, (16, 16), seed=3, warn=warnings.append))
    b = list(sample_windows(videos, 6, 5, (16, 16), seed=3))
    assert len(a) == 6 and all(w.frames.shape == (5, 16, 16, 3) for w in a)
    assert [(w.source, w.start) for w in a] == [(w.source, w.start) for w in b]
    assert any("short.mp4" in m for m in warnings) and all("short" not in w.source for w in a)
    for w in a:
        real, _ = read_video(w.source, size=(16, 16))
        np.testing.assert_array_equal(w.frames, real[w.start:w.start + 5])


def test_cli_json(world_file: Path, clips: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(clips), "-w", str(world_file), "--clips", "3", "--json",
                                 "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    for key in ("psnr_inferred_t4", "psnr_random_t4", "delta_psnr_t4", "psnr_generated", "per_clip"):
        assert key in record
    assert record["clips"] == 3 and len(record["per_clip"]) == 3
    assert all(np.isfinite(record[k]) for k in ("psnr_inferred_t4", "psnr_random_t4", "delta_psnr_t4"))


def test_cli_paths_from_stdin_match_the_folder(world_file: Path, clips: Path, tmp_path: Path) -> None:
    from genie_core.video import find_videos

    args = ["-w", str(world_file), "--clips", "3", "--json", "--precision", "fp32"]
    folder = runner.invoke(app, ["evaluate", str(clips), *args])
    listed = "".join(f"{v}\n" for v in find_videos(clips))  # what genie train writes to heldout.txt
    piped = runner.invoke(app, ["evaluate", "-", *args], input=listed)
    assert folder.exit_code == 0 and piped.exit_code == 0, piped.output
    assert json.loads(piped.stdout)["delta_psnr_t4"] == json.loads(folder.stdout)["delta_psnr_t4"]
    bad = runner.invoke(app, ["evaluate", "-", *args], input=listed + f"{tmp_path / 'gone.mp4'}\n")
    assert bad.exit_code == 2 and "not a file" in bad.stderr


def test_cli_table(world_file: Path, clips: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(clips), "-w", str(world_file), "--clips", "2",
                                 "--horizon", "2"])
    assert result.exit_code == 0, result.output
    assert "Δ2PSNR" in result.stdout


@pytest.mark.parametrize("case, fragment", [
    ("empty", "no videos"),
    ("too_short", "frames a window needs"),
    ("missing", "not found"),
])
def test_cli_bad_input_exit_2(world_file: Path, make_clip: Callable[..., Path], tmp_path: Path, case: str,
                              fragment: str) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    if case == "too_short":
        make_clip(folder / "a.mp4", frames=3, size=(16, 16))
    target = tmp_path / "nope" if case == "missing" else folder
    result = runner.invoke(app, ["evaluate", str(target), "-w", str(world_file)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
