"""genie record: the missing-packages message, clips and sidecars from a fake game (actions[t] takes
frame t to frame t+1, clips never cross episodes, merged actions), --verify on good and damaged
folders, the policies' statistics and determinism, nothing half-written, and a recorded folder
that `genie train --stage lam` and `infer-actions --against-truth` read."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from genie_core.errors import GenieError
from genie_core.io.video import read_video
from genie_core.tasks.record import Policy, record, verify_recording
from genie_core.tasks.record import sources as sources_mod

SIDE, CELL = 32, 8  # the fake screen is a 4x4 grid of 8-pixel cells
MOVES = {0: (0, 0), 1: (0, -1), 2: (0, 1), 3: (-1, 0), 4: (1, 0), 5: (0, 0)}  # 5 (WAIT) acts as 0


class FakeGame:
    """A white cell on a 4x4 torus: actions move it one cell (WAIT does what NOOP does). Each
    episode lasts ``episode_len`` steps and starts at a cell drawn from its level seed; reward 1
    for RIGHT."""

    name = "fake:Sprite"
    fps = 10.0
    action_names = ["NOOP", "LEFT", "RIGHT", "UP", "DOWN", "WAIT"]
    action_set = [0, 1, 2, 3, 4, 5]
    effective = [0, 1, 2, 3, 4, 0]

    def __init__(self, num: int, seed: int, episode_len: int = 20, can_restart: bool = True,
                 fail_after: int | None = None) -> None:
        self.num, self.episode_len, self.can_restart = num, episode_len, can_restart
        self.rng = np.random.default_rng(seed)
        self.pos = [(0, 0)] * num
        self.seeds, self.steps = [0] * num, [0] * num
        self.calls, self.fail_after, self.closed = 0, fail_after, False

    @staticmethod
    def start(level_seed: int) -> tuple[int, int]:
        return level_seed % 4, (level_seed // 4) % 4

    def _frame(self, i: int) -> np.ndarray:
        frame = np.zeros((SIDE, SIDE, 3), np.uint8)
        y, x = self.pos[i]
        frame[y * CELL:(y + 1) * CELL, x * CELL:(x + 1) * CELL] = 255
        return frame

    def restart(self, i: int) -> tuple[np.ndarray, int]:
        self.seeds[i] = int(self.rng.integers(0, 2 ** 20))
        self.pos[i], self.steps[i] = self.start(self.seeds[i]), 0
        return self._frame(i), self.seeds[i]

    def reset(self) -> tuple[np.ndarray, list[int]]:
        starts = [self.restart(i) for i in range(self.num)]
        return np.stack([f for f, _ in starts]), [s for _, s in starts]

    def step(self, actions: np.ndarray):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise GenieError("the fake game broke")
        frames, firsts = [], []
        for i, a in enumerate(actions):
            self.steps[i] += 1
            if self.steps[i] >= self.episode_len:
                frame, _ = self.restart(i)
                firsts.append(True)
            else:
                dy, dx = MOVES[int(a)]
                self.pos[i] = ((self.pos[i][0] + dy) % 4, (self.pos[i][1] + dx) % 4)
                frame = self._frame(i)
                firsts.append(False)
            frames.append(frame)
        rewards = np.asarray([1.0 if a == 2 else 0.0 for a in actions], np.float32)
        return np.stack(frames), rewards, np.asarray(firsts), list(self.seeds)

    def close(self) -> None:
        self.closed = True


def cell_of(frame: np.ndarray) -> tuple[int, int]:
    """The bright cell of a decoded frame."""
    grid = frame.mean(axis=2).reshape(4, CELL, 4, CELL).mean(axis=(1, 3))  # (4, 4)
    y, x = np.unravel_index(int(grid.argmax()), grid.shape)
    return int(y), int(x)


def invoke(*args: object):
    from genie_cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def fake_recording(out: Path, num_clips: int = 6, frames: int = 6, **game: object) -> dict:
    game_args = {"num": 3, "seed": 1, **game}
    source = FakeGame(**game_args)  # type: ignore[arg-type]
    return record(source, out, num_clips, frames, Policy("sticky", source.action_set, source.num, 1),
                  seed=1, clips_per_episode=2)


# ---- missing packages -------------------------------------------------------------------------

def test_game_packages_are_imported_lazily() -> None:
    code = ("import sys, genie_cli.app, genie_core.tasks.record; "
            "print(sorted({'procgen', 'gym3', 'ale_py', 'gymnasium'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize("env, needles", [
    ("procgen:coinrun", ["pip install 'genie[record]'", "--no-deps procgen-mirror==0.10.7 gym3==0.3.3"]),
    ("atari:Breakout", ["pip install 'genie[record]'"]),
])
def test_without_game_packages_one_line_naming_the_extra(tmp_path, monkeypatch, env, needles) -> None:
    for module in ("procgen", "gym3", "ale_py", "gymnasium"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    out = tmp_path / "out"
    result = invoke("record", "--env", env, "--num-clips", 2, "-o", out)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert all(n in lines[0] for n in needles) and "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


# ---- clips and sidecars -----------------------------------------------------------------------

@pytest.mark.parametrize("can_restart", [True, False])
def test_clips_follow_their_actions_within_one_episode(tmp_path, can_restart) -> None:
    out = tmp_path / "rec"
    meta = fake_recording(out, num_clips=8, frames=6, can_restart=can_restart)
    assert meta["clips"] == [f"clip_{k:06d}" for k in range(8)]
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["effective_map"] == FakeGame.effective and meta["resolution"] == [SIDE, SIDE]
    assert sorted(p.name for p in out.iterdir()) == ["clips", "meta.json"]
    per_episode: dict[int, int] = {}
    for name in meta["clips"]:
        frames, fps = read_video(out / "clips" / f"{name}.mp4")
        side = json.loads((out / "clips" / f"{name}.json").read_text())
        assert frames.shape == (6, SIDE, SIDE, 3) and fps == pytest.approx(FakeGame.fps)
        assert all(len(side[k]) == 6 for k in ("actions", "actions_effective", "action_names", "rewards"))
        assert side["actions_effective"] == [FakeGame.effective[a] for a in side["actions"]]
        assert side["action_names"] == [FakeGame.action_names[a] for a in side["actions"]]
        assert side["rewards"] == [1.0 if a == 2 else 0.0 for a in side["actions"]]
        cells = [cell_of(f) for f in frames]
        for t in range(5):  # actions[t] takes frame t to frame t+1, inside one episode
            dy, dx = MOVES[side["actions"][t]]
            assert cells[t + 1] == ((cells[t][0] + dy) % 4, (cells[t][1] + dx) % 4), (name, t)
        if side["episode_start_step"] == 0:
            assert cells[0] == FakeGame.start(side["level_seed"])
        per_episode[side["episode"]] = per_episode.get(side["episode"], 0) + 1
    assert max(per_episode.values()) <= 2  # clips_per_episode
    assert verify_recording(out).ok


def test_same_seed_same_recording(tmp_path) -> None:
    sides = []
    for run in ("a", "b"):
        fake_recording(tmp_path / run)
        sides.append([json.loads(p.read_text()) for p in sorted((tmp_path / run / "clips").glob("*.json"))])
    assert sides[0] == sides[1]


def test_a_failed_recording_leaves_nothing(tmp_path) -> None:
    with pytest.raises(GenieError, match="broke"):
        fake_recording(tmp_path / "rec", num_clips=8, frames=6, fail_after=9)
    assert list(tmp_path.iterdir()) == []


def test_policy_statistics_and_determinism() -> None:
    actions = list(range(6))
    draws = {}
    for mode in ("random", "sticky"):
        policy = Policy(mode, actions, num=4, seed=3)
        draws[mode] = np.stack([policy() for _ in range(5000)])  # (steps, streams)
        again = Policy(mode, actions, num=4, seed=3)
        assert np.array_equal(draws[mode], np.stack([again() for _ in range(5000)]))
        other = Policy(mode, actions, num=4, seed=4)
        assert not np.array_equal(draws[mode], np.stack([other() for _ in range(5000)]))
        share = np.bincount(draws[mode].ravel(), minlength=6) / draws[mode].size
        assert np.abs(share - 1 / 6).max() < 0.02  # both draw every action equally often
    repeats = {m: float((d[1:] == d[:-1]).mean()) for m, d in draws.items()}
    assert abs(repeats["random"] - 1 / 6) < 0.02
    assert abs(repeats["sticky"] - (0.75 + 0.25 / 6)) < 0.02


# ---- the command ------------------------------------------------------------------------------

@pytest.fixture
def fake_env(monkeypatch):
    made: list[FakeGame] = []

    def factory(game: str, num: int, size: tuple[int, int], seed: int) -> FakeGame:
        assert size == (SIDE, SIDE)
        made.append(FakeGame(num, seed))
        return made[-1]

    monkeypatch.setitem(sources_mod.SOURCES, "fake", factory)
    return made


def test_cli_records_and_verifies(tmp_path, fake_env) -> None:
    out = tmp_path / "rec"
    result = invoke("record", "--env", "fake:Sprite", "--num-clips", 5, "--frames", 4,
                    "--resolution", SIDE, "--num-envs", 2, "--policy", "random", "-o", out)
    assert result.exit_code == 0, result.output
    assert "5 clips of 4 frames (32x32) from fake:Sprite" in result.stdout
    assert fake_env[0].closed and fake_env[0].num == 2
    meta = json.loads((out / "meta.json").read_text())
    assert meta["policy"] == {"mode": "random", "p_repeat": 0.0} and meta["num_clips"] == 5
    result = invoke("record", "--verify", out, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["clips"] == 5, result.output
    again = invoke("record", "--env", "fake:Sprite", "--num-clips", 1, "--resolution", SIDE, "-o", out)
    assert again.exit_code == 2 and "not empty" in again.output  # never records over a folder


@pytest.mark.parametrize("args, needle", [
    (["--env", "nope"], "--env must be"),
    (["--env", "mame:Pacman"], "unknown game source"),
    (["--env", "procgen:pacman"], "unknown Procgen game"),
    (["--env", "fake:Sprite", "--resolution", "big"], "--resolution"),
    (["--env", "fake:Sprite", "--resolution", SIDE, "--policy", "lazy"], "--policy"),
    (["--env", "fake:Sprite", "--resolution", SIDE, "--frames", "1"], "--frames"),
])
def test_cli_bad_input_is_one_line(tmp_path, fake_env, args, needle) -> None:
    out = tmp_path / "rec"
    result = invoke("record", *args, "-o", out)
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists() and not fake_env


def test_cli_needs_output_or_verify(tmp_path) -> None:
    result = invoke("record", "--env", "procgen:coinrun")
    assert result.exit_code == 2 and "-o OUT" in result.output


def _damage(folder: Path, clip: str, key: str, value: object) -> None:
    path = folder / "clips" / f"{clip}.json"
    side = json.loads(path.read_text())
    side[key] = value
    path.write_text(json.dumps(side))


def test_verify_names_what_is_wrong(tmp_path) -> None:
    good = tmp_path / "good"
    fake_recording(good, num_clips=4, frames=5)
    cases = {
        "short": lambda f: _damage(f, "clip_000001", "actions", [0, 1, 2]),
        "range": lambda f: _damage(f, "clip_000002", "actions", [0, 1, 9, 2, 1]),
        "merge": lambda f: _damage(f, "clip_000000", "actions_effective", [5, 5, 5, 5, 5]),
        "gone": lambda f: (f / "clips" / "clip_000003.mp4").unlink(),
        "cut": lambda f: (f / "clips" / "clip_000003.mp4").write_bytes(
            (f / "clips" / "clip_000003.mp4").read_bytes()[:300]),
    }
    needles = {"short": "3 'actions' for 5 frames", "range": "outside [0, 6)", "merge": "effective_map",
               "gone": "clip_000003.mp4", "cut": "clip_000003.mp4"}
    for case, damage in cases.items():
        folder = tmp_path / case
        shutil.copytree(good, folder)
        damage(folder)
        report = verify_recording(folder)
        assert not report.ok and needles[case] in report.problems[0], (case, report.problems)
        result = invoke("record", "--verify", folder)
        assert result.exit_code == 2 and needles[case] in result.output, (case, result.output)
    (tmp_path / "bare").mkdir()
    result = invoke("record", "--verify", tmp_path / "bare")
    assert result.exit_code == 2 and "no meta.json" in result.output


def test_recorded_folder_trains_and_scores_against_truth(tmp_path) -> None:
    data, run = tmp_path / "rec", tmp_path / "run"
    fake_recording(data, num_clips=10, frames=6)
    result = invoke("train", "--preset", "tiny", "--stage", "lam", "--data", data, "--out", run,
                    "--steps", 3, "--threads", 1)
    assert result.exit_code == 0, result.output
    assert "ground-truth actions from sidecars ('actions_effective')" in result.output
    result = invoke("infer-actions", data / "clips", "-c", run / "lam" / "last.safetensors",
                    "--against-truth", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    truth = json.loads(result.stdout.strip().splitlines()[-1])["against_truth"]
    assert truth["files"] == 10 and truth["transitions"] == 10 * 5
    assert set(truth["true_ids"]) <= {0, 1, 2, 3, 4}  # WAIT (5) is scored as NOOP (0)
    assert np.asarray(truth["table"]).sum() == 50
