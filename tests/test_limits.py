"""Values far out of range are refused up front, in one line with exit 2: config values when the
config is built, frame sizes and seeds before any model runs, memory asks before any video is
read (checked against a fixed machine size, so the tests do not depend on this machine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from genie_cli.app import app
from genie_core.config import load_preset
from genie_core.errors import ConfigError, GenieError

runner = CliRunner()
HUGE = str(2 ** 70)


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.output


@pytest.fixture()
def clip(tmp_path: Path) -> Path:
    from conftest import write_clip
    return write_clip(tmp_path / "clip.mp4", frames=8, size=(16, 16))


@pytest.fixture()
def world_file(tmp_path: Path) -> Path:
    from genie_core.models.world import World
    torch.manual_seed(0)
    path = tmp_path / "world.safetensors"
    World.from_preset("tiny").save(path)
    return path


@pytest.fixture()
def small_machine(monkeypatch):
    """A machine of 8 GiB, whatever this one has."""
    import genie_core.runtime as runtime
    monkeypatch.setattr(runtime, "physical_memory", lambda: 8 * 2 ** 30)


@pytest.mark.parametrize("override,key", [
    ("tokenizer.d_codebook=62", "d_codebook"),      # ids beyond int32 token files
    ("tokenizer.d_codebook=32", "d_codebook"),
    (f"train.seed={HUGE}", "seed"),
    ("train.seed=-1", "seed"),
    ("data.resolution=[100000, 100000]", "resolution"),
    ("data.num_frames=10000000000000", "num_frames"),
    ("train.tokenizer.batch_size=10000000000000", "batch_size"),
    ("train.lam.steps=10000000000000", "steps"),
    ("train.num_threads=-1", "num_threads"),
])
def test_config_values_out_of_range_fail_when_the_config_is_built(override, key):
    with pytest.raises(ConfigError, match=key) as err:
        load_preset("tiny", [override])
    assert "\n" not in str(err.value)


def test_codebook_beyond_token_files_fails_before_any_model_is_built(clip, tmp_path, monkeypatch):
    from genie_core.models.tokenizer import VideoTokenizer

    def never(*args, **kwargs):
        raise AssertionError("a model was built for a config that cannot be written")
    monkeypatch.setattr(VideoTokenizer, "__init__", never)
    out = tmp_path / "tokens.npz"
    result = invoke("tokenize", clip, "-p", "tiny", "--set", "tokenizer.d_codebook=62", "-o", out)
    assert "d_codebook" in one_line_error(result) and not out.exists()


@pytest.mark.parametrize("command", ["tokenize", "reconstruct", "infer-actions"])
@pytest.mark.parametrize("size", ["100000x100000", "16x100000", "0x16"])
def test_frame_sizes_out_of_range_are_refused(command, size, clip, tmp_path):
    out = tmp_path / ("out.npz" if command == "tokenize" else "out.mp4" if command == "reconstruct" else "out.json")
    result = invoke(command, clip, "-p", "tiny", "--size", size, "-o", out)
    assert "--size" in one_line_error(result) and not out.exists()


def test_frame_sizes_out_of_range_are_refused_by_the_library():
    from genie_core.tasks.tokenize import frame_size, load_tokenizer
    tok = load_tokenizer(preset="tiny", device="cpu")
    with pytest.raises(GenieError, match="larger than"):
        frame_size(tok, (16, 16), (100000, 100000))


@pytest.mark.parametrize("seed", [2 ** 63, 2 ** 70, -1])
def test_seeds_out_of_range_are_refused(seed, world_file, tmp_path):
    from genie_core.models.load import load_checkpoint
    from genie_core.tasks.infer_actions import load_lam
    from genie_core.tasks.tokenize import load_tokenizer

    world = load_checkpoint(world_file)
    frames = np.zeros((1, 16, 16, 3), np.uint8)
    with pytest.raises(GenieError, match="seed"):
        world.encode_prompt(frames, seed=seed)
    with pytest.raises(GenieError, match="seed"):
        load_tokenizer(preset="tiny", device="cpu", seed=seed)
    with pytest.raises(GenieError, match="seed"):
        load_lam(preset="tiny", device="cpu", seed=seed)
    out = tmp_path / "session.gif"
    result = invoke("play", "-w", world_file, "--actions", "0", "-o", out, "--seed", seed)
    assert "seed" in one_line_error(result) and not out.exists()
    assert world.encode_prompt(frames, seed=2 ** 63 - 1).shape[0] == 1  # the largest seed works


def test_evaluation_larger_than_memory_is_refused_before_reading(world_file, clip, small_machine, monkeypatch):
    import genie_core.tasks.evaluate as ev

    def never(*args, **kwargs):
        raise AssertionError("videos were read for an evaluation that cannot fit")
    monkeypatch.setattr(ev, "read_video", never)
    for clips, batch in (("100000", "100000"), ("100000000", "8")):
        result = invoke("evaluate", clip, "-w", world_file, "--clips", clips, "--batch", batch)
        assert "GiB" in one_line_error(result)
    from genie_core.models.load import load_checkpoint
    ev.check_evaluation_memory(load_checkpoint(world_file), 32, 5, 8)  # ordinary sizes pass


def test_training_batches_larger_than_memory_are_refused_before_any_folder(clip, tmp_path, small_machine):
    from genie_core.training.train import train
    cfg = load_preset("tiny", ["train.tokenizer.batch_size=1000000"])
    with pytest.raises(GenieError, match="GiB"):
        train(cfg, clip.parent, tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()
