"""ΔtPSNR (Genie §3.1) on the tiny preset: ΔtPSNR is exactly 0 when the random actions equal the
inferred ones, the actions are aligned with the frames, numbers are finite, windows are seeded
slices of the videos, the copy baselines equal independent computations, PSNR is capped before
averaging, frequency-drawn random actions stay on the codes in use, and `genie evaluate` prints
a table or JSON and rejects bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from genie_cli.app import app
from genie_core.errors import GenieError
from genie_core.tasks.evaluate import (
    PSNR_CAP_DB,
    ROLLOUTS,
    ClipWindow,
    ControllabilityReport,
    controllability,
    copy_token_frames,
    frame_psnr,
    frame_ssim,
    rollout_psnr,
    sample_windows,
    true_actions,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def world():
    from genie_core.models.world import World

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
    from genie_core.io.video import find_videos

    windows = list(sample_windows(find_videos(clips), 5, 5, world.resolution, seed=1))
    report = controllability(world, windows, horizon=4, seed=0, batch_size=2)
    assert report.psnr_inferred.shape == report.psnr_random.shape == (5, 4)
    summary = report.summary()
    for key in ("clips", "psnr_inferred_t4", "psnr_random_t4", "delta_psnr_t4", "psnr_generated"):
        assert key in summary
    assert summary["clips"] == 5
    assert all(np.isfinite(summary[k]) for k in ("psnr_inferred_t4", "psnr_random_t4", "delta_psnr_t4"))
    # Δ at t = 4 from rollouts run here, batch by batch (sampling seed 0), with the actions the
    # report drew: the mean of the capped inferred PSNR minus that of the capped random one.
    inferred, random = [], []
    for i in range(0, 5, 2):
        part = np.stack([w.frames for w in windows[i:i + 2]])
        out = rollout_psnr(world, part, horizon=4, seed=0, random_actions=report.actions["random"][i:i + 2])
        inferred.append(out["psnr_inferred"][:, 3])
        random.append(out["psnr_random"][:, 3])
    inferred = np.minimum(np.concatenate(inferred), PSNR_CAP_DB)
    random = np.minimum(np.concatenate(random), PSNR_CAP_DB)
    assert not np.allclose(inferred, random)  # the actions matter, so Δ is not 0 by construction
    np.testing.assert_allclose(summary["delta_psnr_t4"], inferred.mean() - random.mean(), atol=1e-4)
    assert len(report.per_clip()) == 5


def test_windows_are_seeded_slices(clips: Path) -> None:
    from genie_core.io.video import find_videos, read_video

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
    for key in BY_T:
        assert len(record[key]) == 4, key
    assert record["horizon"] == 4 and record["windows"] == 3 and record["psnr_cap_db"] == 50
    assert sum(record["code_usage"]["counts"]) == 3 * 4 and record["action_source"] == "lam"
    assert {"psnr_copy", "psnr_copy_tokens", "ssim_copy", "random_freq_actions"} <= record["per_clip"][0].keys()
    assert record["precision"] == "fp32"


@pytest.mark.parametrize("native, want", [(False, "fp32"), (True, "bf16")])
def test_cli_json_records_the_precision_auto_chose(world_file: Path, clips: Path, monkeypatch, native, want) -> None:
    """The default --precision auto is recorded resolved: what the evaluation ran under."""
    import torch
    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", lambda: {"avx512_bf16": native})
    result = runner.invoke(app, ["evaluate", str(clips), "-w", str(world_file), "--clips", "1",
                                 "--horizon", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["precision"] == want


def test_cli_paths_from_stdin_match_the_folder(world_file: Path, clips: Path, tmp_path: Path) -> None:
    from genie_core.io.video import find_videos

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
    assert "copy (pixels)" in result.stdout and "copy (tokens)" in result.stdout
    assert "world vs copy: +" in result.stdout or "world loses to copy by" in result.stdout
    def number(cell: str) -> bool:
        try:
            return np.isfinite(float(cell))
        except ValueError:
            return False

    rows = [r for r in (line.split() for line in result.stdout.splitlines())
            if len(r) == 8 and all(map(number, r[:7])) and "±" in r[7]]
    assert [r[0] for r in rows] == ["1", "2"]  # t, 5 rollouts, Δ, inferred - copy ± s.e. per frame
    for r in rows:
        vs, sem = map(float, r[7].split("±"))
        assert vs == pytest.approx(float(r[1]) - float(r[4]), abs=0.011) and sem > 0


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


def _windows(clip_frames: Callable[..., np.ndarray], n: int, length: int) -> list[ClipWindow]:
    return [ClipWindow(f"clip{i}", 0, clip_frames(length, (16, 16), seed=i)) for i in range(n)]


BY_T = [f"{kind}_{name}{median}_by_t" for kind in ("psnr", "ssim") for name in ROLLOUTS
        for median in ("", "_median")]


def test_report_keys_one_entry_per_step(world, clip_frames) -> None:
    windows = _windows(clip_frames, 3, 4)
    report = controllability(world, windows, horizon=3, seed=0, batch_size=2)
    summary = report.summary()
    for key in BY_T + ["delta_psnr_by_t", "delta_psnr_freq_by_t", "delta_psnr_sem_by_t",
                       "world_vs_copy_by_t", "world_vs_copy_sem_by_t", "world_vs_copy_median_by_t"]:
        assert len(summary[key]) == 3, key
        assert all(np.isfinite(summary[key])), key
    assert summary["horizon"] == 3 and summary["windows"] == summary["clips"] == 3
    assert summary["psnr_cap_db"] == PSNR_CAP_DB == 50
    assert "uniform" in summary["headline"]
    assert summary["delta_psnr"] == summary["delta_psnr_t3"]
    np.testing.assert_allclose(summary["delta_psnr_freq"],
                               summary["psnr_inferred_by_t"][-1] - summary["psnr_random_freq_by_t"][-1], atol=1e-4)
    counts = np.bincount(world.infer_actions(np.stack([w.frames for w in windows])).numpy().ravel(),
                         minlength=world.num_actions)
    usage = summary["code_usage"]
    assert usage["counts"] == counts.tolist() and usage["used"] == int((counts > 0).sum())
    np.testing.assert_allclose(usage["frequencies"], counts / counts.sum())
    rows = report.per_clip()
    assert len(rows) == 3 and {"psnr_copy", "psnr_copy_tokens", "ssim_inferred", "delta_psnr_freq"} <= rows[0].keys()


def test_same_sampling_seed_for_every_rollout(world, clip_frames) -> None:
    clips = _batch(clip_frames)
    first = rollout_psnr(world, clips, horizon=4, seed=3)
    same = rollout_psnr(world, clips, horizon=4, seed=3, random_actions=first["inferred_actions"],
                        random_freq_actions=first["inferred_actions"])
    for kind in ("psnr", "ssim"):
        np.testing.assert_array_equal(same[f"{kind}_random_freq"], same[f"{kind}_inferred"])
        np.testing.assert_array_equal(same[f"{kind}_random"], same[f"{kind}_inferred"])


def test_copy_prompt_baseline_independent(world, clip_frames) -> None:
    clips = _batch(clip_frames, B=2, T=6)  # at the world's 16x16: no resizing
    out = rollout_psnr(world, clips, horizon=4, prompt_frames=2, seed=0)
    held = clips[:, 1].astype(np.float64) / 255  # the last prompt frame
    for k in range(4):
        real = clips[:, 2 + k].astype(np.float64) / 255
        mse = ((real - held) ** 2).mean(axis=(1, 2, 3))
        np.testing.assert_allclose(out["psnr_copy"][:, k], 10 * np.log10(1 / mse), rtol=1e-4)
    # SSIM of the copy: 1 only for a frame equal to the prompt's; the moving square makes them differ
    assert (out["ssim_copy"] < 1).all() and (out["ssim_copy"] > -1).all()
    np.testing.assert_allclose(frame_ssim(clips, clips), 1.0, atol=1e-5)


def test_copy_tokens_are_what_a_copying_world_draws(world, clip_frames, monkeypatch) -> None:
    clips = _batch(clip_frames, B=2, T=7)
    prompt = clips[:, :2]
    last = world.tokenize(prompt)[:, -1]  # (B, h, w)
    expected = copy_token_frames(world, prompt, 5)
    assert expected.shape == (2, 5, 16, 16, 3)
    # a dynamics model that always predicts the previous frame's tokens: the perfect copier
    monkeypatch.setattr(world.dynamics, "generate_next", lambda cache, act, **kw: last.clone())
    video = world.rollout(prompt, np.zeros((2, 5), np.int64), seed=0)
    np.testing.assert_array_equal(video[:, 2:], expected)
    out = rollout_psnr(world, clips, horizon=5, prompt_frames=2, seed=0)
    np.testing.assert_allclose(out["psnr_copy_tokens"], frame_psnr(clips[:, 2:], expected), rtol=1e-6)
    np.testing.assert_allclose(out["psnr_inferred"], out["psnr_copy_tokens"], rtol=1e-6)  # the copier's rollout


def test_static_clip_copy_psnr_is_the_cap(world) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    windows = [ClipWindow("still", 0, np.repeat(frame[None], 5, axis=0)) for _ in range(2)]
    report = controllability(world, windows, horizon=4, seed=0)
    assert (report.psnr["copy"] == 100.0).all()  # the metric's MSE floor: uncapped
    summary = report.summary()
    assert summary["psnr_copy_by_t"] == [50.0] * 4 and summary["psnr_copy_median_by_t"] == [50.0] * 4
    assert summary["ssim_copy_by_t"] == pytest.approx([1.0] * 4)
    assert max(summary["psnr_inferred_by_t"]) <= 50.0


def test_median_and_mean_on_a_hand_built_report() -> None:
    t4 = np.array([10.0, 20.0, 90.0, 30.0])  # one window above the cap
    psnr = {name: np.stack([t4 - 5, t4], axis=1) for name in ROLLOUTS}
    psnr["random"] = psnr["random_freq"] = np.full((4, 2), 15.0)
    psnr["copy"] = np.full((4, 2), 25.0)
    report = ControllabilityReport(
        2, 1, 0, ["a", "b", "c", "d"], [0] * 4, psnr=psnr,
        ssim={name: np.zeros((4, 2)) for name in ROLLOUTS},
        actions={k: np.zeros((4, 2), np.int64) for k in ("inferred", "random", "random_freq")},
        code_counts=np.array([6, 0, 2]))
    s = report.summary()
    assert s["psnr_inferred_by_t"][1] == pytest.approx((10 + 20 + 50 + 30) / 4)  # capped, then the mean
    assert s["psnr_inferred_median_by_t"][1] == pytest.approx(25.0)  # median of 10, 20, 30, 50
    assert s["psnr_inferred_median_by_t"][0] == pytest.approx(20.0)  # 5, 15, 25 and 85 -> 50
    assert s["delta_psnr"] == pytest.approx(27.5 - 15) and s["delta_psnr_t2"] == s["delta_psnr"]
    assert s["world_vs_copy_db"] == pytest.approx(2.5) and s["world_vs_copy_median_db"] == pytest.approx(0.0)
    assert s["world_beats_copy_share"] == pytest.approx(0.5)  # 50 and 30 beat 25; 25 ties
    vs = np.array([[5, 15, 50, 25], [10, 20, 50, 30]], float).T - 25  # capped inferred minus copy
    np.testing.assert_allclose(s["world_vs_copy_by_t"], vs.mean(0))
    np.testing.assert_allclose(s["world_vs_copy_median_by_t"], np.median(vs, 0))
    np.testing.assert_allclose(s["world_vs_copy_sem_by_t"], vs.std(0, ddof=1) / 2)  # sqrt(4) windows
    assert s["world_vs_copy_by_t"][-1] == pytest.approx(s["world_vs_copy_db"])
    assert s["world_vs_copy_sem_by_t"][-1] == pytest.approx(s["world_vs_copy_sem"])
    assert s["delta_psnr_sem_by_t"][-1] == pytest.approx(s["delta_psnr_sem"])
    assert s["code_usage"]["used"] == 2 and s["code_usage"]["frequencies"] == [0.75, 0.0, 0.25]
    assert report.per_clip()[2]["psnr_inferred"] == 50.0


def test_frequency_drawn_actions_use_only_the_codes_in_use(world, clip_frames) -> None:
    windows = _windows(clip_frames, 6, 5)
    used = (1, 3)

    def two_codes(part, clips):  # an action source that only ever gives codes 1 and 3
        assert clips.shape == (len(part), 5, 16, 16, 3)
        return np.where(np.arange(4)[None] % 2 == 0, used[0], used[1]).repeat(len(part), 0)

    report = controllability(world, windows, horizon=4, seed=0, batch_size=4, actions=two_codes,
                             action_source="test")
    drawn = report.actions["random_freq"]
    assert drawn.shape == (6, 4) and set(np.unique(drawn)) <= set(used)
    assert len(set(np.unique(drawn))) == 2  # 24 draws at p = 1/2 each: both appear
    assert set(np.unique(report.actions["random"])) - set(used)  # uniform ones reach the other codes
    np.testing.assert_array_equal(report.actions["inferred"], two_codes(windows, np.zeros((6, 5, 16, 16, 3))))
    summary = report.summary()
    assert summary["code_usage"]["counts"] == [0, 12, 0, 12] and summary["action_source"] == "test"
    with pytest.raises(GenieError, match="actions must be in"):
        controllability(world, windows, horizon=4, actions=lambda p, c: np.full((len(p), 4), 7))


def test_long_horizon_past_the_window(world, clip_frames) -> None:
    report = controllability(world, _windows(clip_frames, 1, 33), horizon=32, seed=0)
    summary = report.summary()
    assert all(len(summary[key]) == 32 for key in BY_T)
    assert all(np.isfinite(summary["psnr_inferred_by_t"]))


def test_true_actions_from_the_sidecar(make_clip: Callable[..., Path], tmp_path: Path) -> None:
    video = make_clip(tmp_path / "a.mp4", frames=8, size=(16, 16))
    truth = [2, 0, 1, 1, 3, 0, 2]
    video.with_suffix(".json").write_text(json.dumps({"actions": truth}))
    windows = [ClipWindow(str(video), 2, np.zeros((4, 16, 16, 3), np.uint8)),
               ClipWindow(str(video), 4, np.zeros((4, 16, 16, 3), np.uint8))]
    got = true_actions(windows, np.zeros((2, 4, 16, 16, 3), np.uint8))
    np.testing.assert_array_equal(got, [truth[2:5], truth[4:7]])
    bare = make_clip(tmp_path / "b.mp4", frames=8, size=(16, 16))
    with pytest.raises(GenieError, match="no true action"):
        true_actions([ClipWindow(str(bare), 0, windows[0].frames)], np.zeros((1, 4, 16, 16, 3), np.uint8))
