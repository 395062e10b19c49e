"""`genie infer-actions` and genie_core.tasks.infer_actions (Genie §2.1): one action per transition in JSON / npz,
folders mirrored, stdin, --json, world bundles, windowing of long videos, --against-truth, and
bad inputs (exit 2, one line, nothing written; exit 3 for skipped files in folder mode)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from genie_cli.app import app
from genie_cli.common import EXIT_SKIPPED, EXIT_USAGE
from genie_core.config import load_preset
from genie_core.io.frames import to_model
from genie_core.io.video import read_video
from genie_core.models.lam import LatentActionModel
from genie_core.tasks import infer_actions as api

runner = CliRunner()


def invoke(*args, stdin: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=stdin)


def assert_clean_error(result, code: int = EXIT_USAGE) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    return errors[0]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def lam_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny LAM whose codebook was initialised from data, saved as `genie train`
    saves it (resolution 16x16 recorded in its config)."""
    import dataclasses

    torch.manual_seed(0)
    cfg = dataclasses.replace(load_preset("tiny").lam, resolution=(16, 16))
    model = LatentActionModel(cfg)
    model(torch.rand(4, 3, 4, 16, 16) * 2 - 1)  # training mode: codebook from these latents
    path = tmp_path_factory.mktemp("lam") / "lam.safetensors"
    model.eval().save(path, step=3)
    return path


def write_clip_with_truth(path: Path, frames: int = 8, seed: int = 0, sidecar: bool = True) -> Path:
    """A GIF of a square stepping left/right (16x16) and a sidecar with its actions."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    clip = np.full((frames, 16, 16, 3), 30, np.uint8)
    x = 6
    actions = rng.integers(0, 2, size=frames)
    for t in range(frames):
        clip[t, 6:10, x:x + 4] = (250, 200, 40)
        clip[t, 0, 0] = 8 * t  # every frame differs (GIF writers merge repeated frames)
        x = int(np.clip(x + (2 if actions[t] else -2), 0, 12))
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in clip]
    images[0].save(path, save_all=True, append_images=images[1:], duration=66, loop=0)
    if sidecar:
        names = ["RIGHT" if a else "LEFT" for a in actions]
        path.with_suffix(".json").write_text(json.dumps(
            {"actions": actions.tolist(), "actions_effective": actions.tolist(), "action_names": names}))
    return path


def expected_actions(ckpt: Path, clip: Path) -> list[int]:
    model = api.load_lam(ckpt, device="cpu").model
    frames, _ = read_video(clip, size=(16, 16))
    return model.infer_actions(to_model(frames))[0].tolist()


# ---------------------------------------------------------------------------- happy paths


def test_single_file_json(tmp_path: Path, lam_ckpt: Path) -> None:
    clip = write_clip_with_truth(tmp_path / "clip.gif", frames=8)
    out = tmp_path / "out" / "actions.json"
    result = invoke("infer-actions", clip, "-c", lam_ckpt, "-o", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert len(record["actions"]) == 7  # T frames -> T-1 transitions
    assert record["actions"] == expected_actions(lam_ckpt, clip)
    assert record["num_actions"] == 4 and record["num_frames"] == 8
    assert record["source"] == str(clip) and record["fps"] > 0 and "format_version" in record
    actions, meta = api.load_actions(out)
    assert actions.dtype == np.int64 and actions.tolist() == record["actions"]


def test_npz_by_suffix_round_trip(tmp_path: Path, lam_ckpt: Path) -> None:
    clip = write_clip_with_truth(tmp_path / "clip.gif")
    out = tmp_path / "actions.npz"
    assert invoke("infer-actions", clip, "-c", lam_ckpt, "-o", out, "--device", "cpu").exit_code == 0
    with np.load(out, allow_pickle=False) as data:
        assert data["actions"].dtype == np.int32
    actions, meta = api.load_actions(out)
    assert actions.tolist() == expected_actions(lam_ckpt, clip)
    assert meta["num_actions"] == 4 and meta["checkpoint_digest"]


def test_long_video_is_windowed_one_action_per_transition(tmp_path: Path, lam_ckpt: Path) -> None:
    clip = write_clip_with_truth(tmp_path / "long.gif", frames=23)  # context_frames is 4
    result = invoke("infer-actions", clip, "-c", lam_ckpt, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(record["actions"]) == 22
    assert record["actions"] == expected_actions(lam_ckpt, clip)
    # The window only bounds the past a transition sees, so a bigger one may differ, but the
    # count never does.
    result = invoke("infer-actions", clip, "-c", lam_ckpt, "--json", "--window", "9", "--overlap", "3",
                    "--device", "cpu")
    assert len(json.loads(result.stdout.strip().splitlines()[-1])["actions"]) == 22


def test_folder_is_mirrored_with_json_lines(tmp_path: Path, lam_ckpt: Path) -> None:
    src = tmp_path / "clips"
    write_clip_with_truth(src / "a.gif", seed=0)
    write_clip_with_truth(src / "sub" / "b.gif", seed=1)
    out = tmp_path / "acts"
    result = invoke("infer-actions", src, "-c", lam_ckpt, "-o", out, "--json", "--format", "npz",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert files_under(out) == {"a.npz", "sub/b.npz"}
    lines = [json.loads(x) for x in result.stdout.strip().splitlines()]
    assert [Path(x["input"]).name for x in lines] == ["a.gif", "b.gif"]
    assert all(x["status"] == "ok" and len(x["actions"]) == 7 for x in lines)


def test_stdin_paths(tmp_path: Path, lam_ckpt: Path) -> None:
    a = write_clip_with_truth(tmp_path / "x" / "a.gif", seed=0)
    b = write_clip_with_truth(tmp_path / "y" / "b.gif", seed=1)
    out = tmp_path / "acts"
    result = invoke("infer-actions", "-", "-c", lam_ckpt, "-o", out, "--device", "cpu",
                    stdin=f"{a}\n{b}\n")
    assert result.exit_code == 0, result.output
    assert files_under(out) == {"x/a.json", "y/b.json"}


def test_world_bundle_uses_its_lam(tmp_path: Path) -> None:
    from genie_core.models.world import World

    torch.manual_seed(0)
    world = World.from_preset("tiny")
    bundle = tmp_path / "world.safetensors"
    world.save(bundle)
    clip = write_clip_with_truth(tmp_path / "clip.gif")
    result = invoke("infer-actions", clip, "--world", bundle, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout.strip().splitlines()[-1])["actions"]
    frames, _ = read_video(clip, size=(16, 16))
    assert got == world.lam.eval().infer_actions(to_model(frames))[0].tolist()


def test_against_truth_table_and_json(tmp_path: Path, lam_ckpt: Path) -> None:
    src = tmp_path / "clips"
    for i in range(3):
        write_clip_with_truth(src / f"c{i}.gif", seed=i)
    write_clip_with_truth(src / "no_truth.gif", seed=9, sidecar=False)
    result = invoke("infer-actions", src, "-c", lam_ckpt, "--against-truth", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "LEFT" in result.stdout and "RIGHT" in result.stdout  # true action names as columns
    assert "NMI" in result.stdout and "mapping accuracy" in result.stdout
    assert "no ground-truth sidecar" in result.stderr

    result = invoke("infer-actions", src, "-c", lam_ckpt, "--against-truth", "--json", "--device", "cpu")
    report = json.loads(result.stdout.strip().splitlines()[-1])["against_truth"]
    assert report["transitions"] == 21 and report["files"] == 3
    table = np.array(report["table"])
    assert table.shape == (4, 2) and table.sum() == 21
    assert report["true_names"] == ["LEFT", "RIGHT"]
    assert report["mapping_accuracy"] == pytest.approx(table.max(axis=1).sum() / 21)
    assert 0.0 <= report["nmi"] <= 1.0 and 0.5 <= report["majority_accuracy"] <= 1.0


def test_compare_with_truth_perfect_and_shifted() -> None:
    truth = np.array([0, 1, 2, 1, 0, 2, 2, 1])
    perfect = api.compare_with_truth([(truth + 3, truth)], num_actions=6)  # a relabelling
    assert perfect.nmi == pytest.approx(1.0) and perfect.mapping_accuracy == 1.0
    assert perfect.mapping == {3: 0, 4: 1, 5: 2}
    unknown = api.compare_with_truth([(truth, np.where(truth == 2, -1, truth))], num_actions=3)
    assert unknown.transitions == 5  # -1 (unknown truth) left out


# ---------------------------------------------------------------------------- bad input


def _not_a_video(tmp_path: Path) -> Path:
    path = tmp_path / "notes.gif"
    path.write_text("text with a video's name")
    return path


def _one_frame(tmp_path: Path) -> Path:
    return write_clip_with_truth(tmp_path / "one.gif", frames=1, sidecar=False)


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.mp4"


@pytest.mark.parametrize("make_bad", [_not_a_video, _one_frame, _missing])
def test_bad_video_is_one_line_exit_2(tmp_path: Path, lam_ckpt: Path, make_bad: Callable) -> None:
    src = make_bad(tmp_path)
    before = files_under(tmp_path)
    result = invoke("infer-actions", src, "-c", lam_ckpt, "-o", tmp_path / "out.json", "--device", "cpu")
    line = assert_clean_error(result)
    assert src.name in line
    assert files_under(tmp_path) == before  # nothing half-written


def test_bad_checkpoints_and_usage(tmp_path: Path, lam_ckpt: Path) -> None:
    from genie_core.io.checkpoint_format import save_checkpoint

    clip = write_clip_with_truth(tmp_path / "clip.gif")
    wrong = tmp_path / "tok.safetensors"
    save_checkpoint(wrong, {"w": torch.zeros(2)}, kind="tokenizer", config={})
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    before = files_under(tmp_path)
    cases = [
        (["-c", tmp_path / "nope.safetensors"], "nope.safetensors"),
        (["-c", wrong], "expected a lam"),
        (["-c", junk], "junk.safetensors"),
        (["--world", lam_ckpt], "world"),
        ([], "--checkpoint"),
        (["-c", lam_ckpt, "-o", tmp_path / "out.txt"], ".json or .npz"),
        (["-c", lam_ckpt, "--format", "csv"], "--format"),
        (["-c", lam_ckpt, "--size", "18x18"], "patch size"),
    ]
    for args, fragment in cases:
        result = invoke("infer-actions", clip, *args, "--device", "cpu")
        assert fragment in assert_clean_error(result), (args, result.stderr)
    assert files_under(tmp_path) == before


def test_world_flag_rejects_a_plain_lam_but_checkpoint_accepts_world(tmp_path: Path) -> None:
    """--world names a bundle; --checkpoint takes a lam or a bundle (its LAM)."""
    from genie_core.models.world import World

    torch.manual_seed(0)
    bundle = tmp_path / "world.safetensors"
    World.from_preset("tiny").save(bundle)
    clip = write_clip_with_truth(tmp_path / "clip.gif")
    result = invoke("infer-actions", clip, "-c", bundle, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output


def test_folder_skips_bad_files_exit_3(tmp_path: Path, lam_ckpt: Path) -> None:
    src = tmp_path / "clips"
    write_clip_with_truth(src / "good.gif")
    (src / "bad.gif").write_text("not a gif")
    out = tmp_path / "acts"
    result = invoke("infer-actions", src, "-c", lam_ckpt, "-o", out, "--device", "cpu")
    assert result.exit_code == EXIT_SKIPPED, result.output
    assert files_under(out) == {"good.json"}
    assert "bad.gif" in result.stderr and "skipped 1" in result.stderr


def test_help_lists_the_command() -> None:
    result = subprocess.run(["python", "-m", "genie_cli", "infer-actions", "--help"],
                            capture_output=True, text=True, timeout=600)  # a hang guard
    assert result.returncode == 0 and "--against-truth" in result.stdout
