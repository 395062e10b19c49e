"""Shipped worlds: the registry (listing, name or file, unknown names), ``genie play`` with no
``--world``, ``--list``; the names of a world's true actions (set on a shipped file, and read by
the dynamics stage from the clips' sidecars)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from genie_cli.app import app
from genie_core import WorldEnv
from genie_core.errors import ArgumentError
from genie_core.tasks.worlds import (
    UnknownWorld,
    cast_world,
    default_world,
    find_world,
    list_worlds,
    resolve_world,
    set_action_names,
    set_world_sampling,
)
from genie_core.training.data import VideoEntry
from genie_core.training.stages.dynamics import true_action_names

SHIPPED = ("sprites", "sprites-truth", "coinrun")
SPRITE_NAMES = ["NOOP", "LEFT", "RIGHT", "UP", "DOWN"]  # examples/sprite_clips.py's ids 0..4


def _read_frames(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return np.asarray(iio.imread(path, index=None))


def _one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0]
    return errors[0]


# ---- the registry --------------------------------------------------------------------------

def test_shipped_worlds_are_complete_and_small() -> None:
    from genie_core.io.checkpoint_format import read_metadata

    worlds = list_worlds()
    assert [w.name for w in worlds][:3] == list(SHIPPED)
    assert [w.name for w in worlds if w.is_default] == [default_world().name]
    for w in worlds:
        assert w.weights.is_file() and w.size_bytes <= 25 * 2 ** 20
        assert read_metadata(w.weights)["kind"] == "world"
        report = w.evaluation()
        t = report["horizon"]
        for key in ("psnr_inferred_by_t", "psnr_random_by_t", "psnr_copy_by_t", "ssim_inferred_by_t",
                    "ssim_copy_by_t"):
            assert len(report[key]) == t
        assert report["world"] == w.name and w.trained_with and w.evaluated_with
        assert f"{report['psnr_copy_by_t'][-1]:.2f} dB" in w.headline()  # beside its copy baseline
        if t > 4:  # the paper's t = 4 first, with its standard error
            assert w.headline().startswith(f"Δ4PSNR {report['delta_psnr_by_t'][3]:+.2f} ± "
                                           f"{report['delta_psnr_sem_by_t'][3]:.2f} dB")


def test_shipped_reports_were_taken_with_the_worlds_own_sampling() -> None:
    """Each shipped world's evaluation report records the sampling it ran with: the one the world
    file stores (what play and evaluate use without options), so the figures describe the world."""
    from genie_core.io.checkpoint_format import read_metadata

    for w in list_worlds():
        stored = json.loads(read_metadata(w.weights)["config"])["dynamics"]["sampling"]
        assert w.evaluation()["sampling"] == stored, w.name


def test_listing_is_torch_free() -> None:
    code = ("import sys, genie_core.tasks.worlds as w; names = [x.name for x in w.list_worlds()]; "
            "assert 'torch' not in sys.modules, 'torch imported'; print(','.join(names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().split(",")[:3] == list(SHIPPED)


def test_a_world_is_its_files_plus_a_manifest_entry(tmp_path: Path) -> None:
    src = find_world("sprites")
    for name in ("alpha", "beta", "gamma"):
        for got, suffix in ((src.weights, ".safetensors"), (src.prompt, ".png"), (src.report, ".eval.json")):
            shutil.copy(got, tmp_path / f"{name}{suffix}")
    (tmp_path / "gamma.png").unlink()  # incomplete: left out
    manifest = {"default": "beta", "worlds": {n: {"description": f"world {n}"} for n in ("alpha", "beta", "gamma")}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    worlds = list_worlds(tmp_path)
    assert [w.name for w in worlds] == ["alpha", "beta"]
    assert default_world(tmp_path).name == "beta" and worlds[0].description == "world alpha"
    assert resolve_world("beta", tmp_path) == (tmp_path / "beta.safetensors", worlds[1])
    with pytest.raises(UnknownWorld, match=r"'gamma'.*shipped: alpha, beta"):
        find_world("gamma", tmp_path)
    with pytest.raises(ValueError):
        default_world(tmp_path / "empty")


def test_resolve_name_or_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "mine.safetensors"
    file.write_bytes(b"x")
    assert resolve_world(file) == (file, None)
    weights, shipped = resolve_world("sprites-truth")
    assert shipped.name == "sprites-truth" and weights == shipped.weights
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sprites").write_bytes(b"x")  # an existing file wins over a name
    assert resolve_world("sprites") == (Path("sprites"), None)
    with pytest.raises(ValueError, match="world not found: gone.safetensors"):
        resolve_world("gone.safetensors")
    with pytest.raises(UnknownWorld, match="shipped: sprites, sprites-truth"):
        resolve_world("sprite")


# ---- the command line ----------------------------------------------------------------------

def test_play_without_world_plays_the_default_from_its_prompt(tmp_path: Path) -> None:
    from genie_core.io.video import read_image

    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(app, ["play", "--actions", "0,1,2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(_read_frames(out)) == 4  # the prompt + one frame per action
    gif = tmp_path / "out.gif"  # the first frame is the shipped prompt (up to GIF's 256-colour palette)
    result = CliRunner().invoke(app, ["play", "--actions", "3", "-o", str(gif), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames"] == 2
    frames = _read_frames(gif)[..., :3]
    world = default_world()
    prompt = read_image(world.prompt, size=tuple(frames.shape[1:3])).astype(np.int64)
    assert np.abs(frames[0].astype(np.int64) - prompt).mean() < 4.0
    assert np.abs(frames[0].astype(np.int64) - prompt).mean() < np.abs(frames[1].astype(np.int64) - prompt).mean()


def test_play_list_and_worlds_command() -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["play", "--list"])
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    worlds = list_worlds()
    assert len(lines) == len(worlds)
    for line, w in zip(lines, worlds):
        assert line.split()[:2] == (["*", w.name] if w.is_default else [w.name, f"{w.size_bytes / 1e6:.1f}"])
        assert w.headline() in line and w.description in line
    assert runner.invoke(app, ["worlds"]).stdout == listed.stdout
    records = [json.loads(x) for x in runner.invoke(app, ["worlds", "--json"]).stdout.splitlines()]
    assert [r["name"] for r in records] == [w.name for w in worlds]
    assert sum(r["default"] for r in records) == 1


@pytest.mark.parametrize("command", ["play", "evaluate", "infer-actions"])
def test_unknown_world_name_lists_the_shipped_ones(command: str, tmp_path: Path) -> None:
    from conftest import write_clip

    clip = write_clip(tmp_path / "clip.mp4")
    args = {"play": ["play", "--actions", "0", "-o", str(tmp_path / "o.mp4")],
            "evaluate": ["evaluate", str(clip)], "infer-actions": ["infer-actions", str(clip)]}[command]
    result = CliRunner().invoke(app, [*args, "--world", "no-such-world"])
    _one_line_error(result, "unknown world 'no-such-world'", "shipped: sprites, sprites-truth")
    assert not (tmp_path / "o.mp4").exists()


def test_play_with_a_file_still_needs_a_prompt(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["play", "-w", str(find_world("sprites").weights), "--actions", "0",
                                      "-o", str(tmp_path / "o.mp4")])
    _one_line_error(result, "--prompt")


def test_evaluate_and_infer_actions_take_a_name(tmp_path: Path) -> None:
    from conftest import write_clip

    clip = write_clip(tmp_path / "clip.gif", frames=6, size=(32, 32))
    runner = CliRunner()
    result = runner.invoke(app, ["infer-actions", str(clip), "--world", "sprites", "--json", "--threads", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[0])
    assert record["num_actions"] == 8 and len(record["actions"]) == 5
    result = runner.invoke(app, ["evaluate", str(clip), "--world", "sprites-truth", "--clips", "1",
                                 "--horizon", "2", "--json", "--threads", "1"])
    assert result.exit_code == 2 and "sidecar" in result.stderr  # a truth world needs true actions
    result = runner.invoke(app, ["evaluate", str(clip), "--world", "sprites", "--clips", "1",
                                 "--horizon", "2", "--json", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["world"] == "sprites"


# ---- names of true actions -----------------------------------------------------------------

def test_set_action_names_keeps_the_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from genie_core.tasks.env import load_world

    src = find_world("sprites-truth").weights
    dst = tmp_path / "named.safetensors"
    set_action_names(src, dst, ["stay", "west", "east", "north", "south"])
    assert load_world(dst).action_names == ("stay", "west", "east", "north", "south")
    assert load_world("sprites-truth").action_names == tuple(SPRITE_NAMES)
    a, b = load_file(src), load_file(dst)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    with pytest.raises(ValueError, match="takes 5 actions"):
        set_action_names(src, tmp_path / "bad.safetensors", ["a", "b"])
    with pytest.raises(ValueError, match="latent actions"):
        set_action_names(find_world("sprites").weights, tmp_path / "bad.safetensors", ["a"] * 8)
    assert not (tmp_path / "bad.safetensors").exists()


def test_set_world_sampling_changes_the_defaults_only(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from genie_core.tasks.env import load_world

    src = find_world("sprites").weights
    before = load_world(src).sampling
    dst = tmp_path / "fast.safetensors"
    assert (before.steps, before.render) != (2, "tokens")
    set_world_sampling(src, dst, steps=2, render="tokens")
    after = load_world(dst).sampling
    assert (after.steps, after.render) == (2, "tokens")
    assert (after.temperature, after.unmask, after.schedule) == (before.temperature, before.unmask, before.schedule)
    a, b = load_file(src), load_file(dst)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    for bad in ({"steps": 0}, {"render": "pixels"}, {"speed": 3}, {"unmask": "rand"}, {"schedule": "cos"},
                {"steps": 4.5}):  # what loading would refuse is refused before anything is written
        with pytest.raises(ValueError):
            set_world_sampling(src, tmp_path / "bad.safetensors", **bad)
    assert not (tmp_path / "bad.safetensors").exists()


def test_true_action_names_from_sidecars_and_meta(tmp_path: Path) -> None:
    # clip a: id 1 is LEFT twice, and (an "effective" merge) LEFT+FIRE once; id 2 is never named
    (tmp_path / "a.json").write_text(json.dumps({"action_names": ["LEFT", "NOOP", "LEFT+FIRE", "LEFT"]}))
    (tmp_path / "b.json").write_text("not json")
    videos = [VideoEntry("a.gif", 0, 5, (1, 0, 1, 1, -1), "actions_effective"),
              VideoEntry("b.gif", 5, 3, (2, 2, -1), "actions")]
    cache = SimpleNamespace(folder=tmp_path, videos=videos)
    assert true_action_names(cache, 4) == ("NOOP", "LEFT", "2", "3")
    (tmp_path / "meta.json").write_text(json.dumps({"action_names": ["N", "L", "R", "U", "D"]}))
    assert true_action_names(cache, 4) == ("NOOP", "LEFT", "R", "U")  # the recording's list fills gaps
    (tmp_path / "meta.json").unlink()
    (tmp_path / "a.json").write_text(json.dumps({"actions": [1, 0, 1, 1]}))
    assert true_action_names(cache, 4) == ()  # nothing names an action
    assert true_action_names(SimpleNamespace(folder=None, videos=videos), 4) == ()


def test_truth_world_trained_on_named_sidecars_stores_the_names(tmp_path: Path) -> None:
    import dataclasses

    import torch
    from conftest import write_clip

    from genie_core.config import load_preset
    from genie_core.models.lam import LatentActionModel
    from genie_core.models.tokenizer import VideoTokenizer
    from genie_core.tasks.env import load_world

    cfg = load_preset("tiny")
    torch.manual_seed(0)
    tok, lam = tmp_path / "tok.safetensors", tmp_path / "lam.safetensors"
    VideoTokenizer.from_config(cfg.tokenizer).save(tok)
    LatentActionModel.from_config(dataclasses.replace(cfg.lam, resolution=(16, 16), num_actions=6)).save(lam)
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for i in range(3):
        write_clip(data / f"clip{i}.gif", frames=8, size=(16, 16), seed=i)
        actions = [int(a) for a in rng.integers(0, 3, size=7)]
        actions[0] = 2 if i == 0 else actions[0]  # the count is max + 1 = 3
        (data / f"clip{i}.json").write_text(json.dumps(
            {"actions": actions, "action_names": [("STAY", "JUMP", "DUCK")[a] for a in actions]}))
    result = CliRunner().invoke(app, [
        "train", "--data", str(data), "--preset", "tiny", "--stage", "dynamics", "--steps", "2",
        "--tokenizer", str(tok), "--lam", str(lam), "--device", "cpu", "--threads", "1",
        "--set", "dynamics.action_source=truth", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    world = load_world(tmp_path / "run" / "world.safetensors")
    assert world.num_actions == 3 and world.action_names == ("STAY", "JUMP", "DUCK")


@pytest.mark.parametrize("name", SHIPPED)
def test_play_legend_names_true_actions(name: str) -> None:
    from genie_cli.play import _Session
    from genie_core.io.video import read_image
    from genie_core.tasks.env import load_world

    game = load_world(name)
    game.encode_prompt(read_image(game.prompt_path, size=game.resolution), seed=0)
    session = _Session(game, None, 10.0)
    session.act(2)
    status, keys = session.legend()
    if game.action_names:
        assert "1 NOOP 2 LEFT 3 RIGHT 4 UP 5 DOWN |" in keys and "action RIGHT" in status
    else:
        assert f"keys 1-{game.num_actions}: latent actions 0-{game.num_actions - 1}" in keys
        assert "latent action 2" in status


def test_cast_world_halves_the_file_and_plays_like_the_original(tmp_path: Path) -> None:
    """A bf16 copy loads into the same models (weights equal to the original's rounded to bf16),
    is about half the size, and its first generated frame stays close to the original's."""
    import torch

    from genie_core import load_world

    src = find_world("sprites").weights
    dst = tmp_path / "half.safetensors"
    cast_world(src, dst)
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    a, b = load_world(src), load_world(dst)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        if pa.is_floating_point():
            assert pb.dtype == pa.dtype, name
            assert torch.equal(pb, pa.to(torch.bfloat16).to(pa.dtype)), name
    from PIL import Image

    prompt = np.asarray(Image.open(find_world("sprites").prompt).convert("RGB"))
    frames = []
    for world in (a, b):
        env = WorldEnv(world, max_steps=2)
        env.reset(seed=0, options={"prompt": prompt})
        frames.append(env.step(0)[0].astype(np.float64))
    assert np.abs(frames[0] - frames[1]).mean() < 8.0
    with pytest.raises(ArgumentError):
        cast_world(src, tmp_path / "x.safetensors", dtype="fp8")
