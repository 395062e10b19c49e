"""`genie tokenize` and `genie reconstruct` end to end on synthetic clips:
round trip, folder / stdin modes, JSON lines, every bad input (exit 2, one line, nothing written),
skip-and-continue (exit 3), and help without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from genie_cli.app import app
from genie_cli.common import EXIT_SKIPPED, EXIT_USAGE

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def count_frames(path: Path) -> int:
    import imageio.v2 as imageio

    with imageio.get_reader(path) as reader:
        return sum(1 for _ in reader)


def invoke(*args: str, stdin: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=stdin)


def assert_clean_error(result, code: int = EXIT_USAGE) -> str:
    """Exit ``code``, exactly one line on stderr starting with 'error:', no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    return errors[0]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def bare_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny tokenizer without a discriminator saved by ``model.save`` alone: no training frame
    size recorded anywhere."""
    from genie_core.models.tokenizer import VideoTokenizer

    path = tmp_path_factory.mktemp("bare") / "tok.safetensors"
    VideoTokenizer.from_preset("tiny", ["tokenizer.disc=null"]).save(path)
    return path


# ---- help ----------------------------------------------------------------------------------

def _commands() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    return sorted(group.commands)  # type: ignore[attr-defined]


def test_every_command_has_help() -> None:
    assert {"tokenize", "reconstruct"} <= set(_commands())
    for name in _commands():
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        assert "Usage" in result.output


def test_shared_options_are_spelt_once() -> None:
    """--world, --preset, --json, --size and --window come from genie_cli/options.py in every
    command (only their help is a command's own), so each takes the same flags: -w and -p too."""
    import re

    import typer.main

    shared = {"--world": "-w", "--preset": "-p", "--json": None, "--size": None, "--window": None}
    for path in sorted((REPO / "genie_cli").glob("*.py")):
        if path.name != "options.py":
            for flag in shared:
                assert not re.search(rf'Option\(\s*"{flag}"', path.read_text()), f"{path.name} spells {flag} itself"
    seen = set()
    for name, command in typer.main.get_command(app).commands.items():
        for param in command.params:
            for flag, short in shared.items():
                if flag in getattr(param, "opts", ()):
                    seen.add(flag)
                    assert short is None or short in param.opts, (name, flag, param.opts)
    assert seen == set(shared)


def test_help_does_not_import_torch() -> None:
    """`genie --help` and each command's --help stay instant: torch is never imported."""
    code = (
        "import sys\n"
        "from genie_cli.app import app\n"
        "for args in sys.argv[1:]:\n"
        "    try:\n"
        "        app(args.split(), standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO_TORCH', file=sys.stderr)\n"
    )
    helps = ["--help"] + [f"{name} --help" for name in _commands()]
    out = subprocess.run([sys.executable, "-c", code, *helps], capture_output=True, text=True,
                         cwd=REPO, timeout=600)  # a hang guard, not a speed limit
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "NO_TORCH"


# ---- round trip ----------------------------------------------------------------------------

def test_tokenize_then_reconstruct(make_clip: Callable[..., Path], tmp_path: Path, tok_ckpt: Path) -> None:
    from genie_core.io.tokens import file_digest, load_tokens

    clip = make_clip(tmp_path / "clip.mp4", frames=6, size=(32, 48), fps=10)
    out = tmp_path / "clip.npz"
    result = invoke("tokenize", clip, "-o", out, "-c", tok_ckpt, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip())
    ids, meta = load_tokens(out)
    assert record["status"] == "ok" and record["shape"] == list(ids.shape)
    # tiny: 16x16 frames, space /2, one latent frame per frame.
    assert ids.shape == (6, 8, 8)
    assert meta["num_frames"] == 6 and meta["fps"] == pytest.approx(10.0)
    assert meta["frame_size"] == [16, 16] and meta["source_size"] == [32, 48]
    assert meta["tokenizer_digest"] == file_digest(tok_ckpt)
    assert 0 <= ids.min() and ids.max() < meta["vocab_size"]

    rec, cmp_png = tmp_path / "rec.mp4", tmp_path / "side.png"
    result = invoke("reconstruct", clip, "-o", rec, "-c", tok_ckpt, "--compare", cmp_png,
                    "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip())
    assert record["num_frames"] == 6 and count_frames(rec) == 6
    assert record["fps"] == pytest.approx(10.0)
    # The reported figures are the per-frame means over the fitted source frames (read here)
    # and the library's in-memory reconstruction, PSNR recomputed with numpy on [0, 1].
    import torch

    from genie_core.io.video import read_video
    from genie_core.metrics import ssim
    from genie_core.tasks import tokenize as api
    originals, _ = read_video(clip, size=(16, 16))
    frames = api.reconstruct_video(api.load_tokenizer(tok_ckpt, device="cpu"), clip).frames
    assert originals.shape == frames.shape == (6, 16, 16, 3)
    mse = ((originals.astype(np.float64) - frames) / 255.0) ** 2
    expected_psnr = np.mean(10 * np.log10(1.0 / mse.mean(axis=(1, 2, 3))))
    assert 5 < expected_psnr < 60 and record["psnr"] == pytest.approx(expected_psnr, abs=1e-3)
    as_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).double() / 255  # noqa: E731
    expected_ssim = float(ssim(as_t(frames), as_t(originals)).mean())
    assert expected_ssim < 0.999 and record["ssim"] == pytest.approx(expected_ssim, abs=1e-4)
    import imageio.v2 as imageio
    picture = imageio.imread(cmp_png)
    assert picture.ndim == 3 and picture.shape[0] > 2 * 16 and picture.shape[1] > 6 * 16


def test_frame_size_without_recorded_resolution(make_clip: Callable[..., Path], tmp_path: Path,
                                                bare_ckpt: Path) -> None:
    """No training size in the checkpoint: the video's own size (cropped to a multiple of the
    spatial downsampling, 2 for tiny) with a warning, or --size."""
    from genie_core.io.tokens import load_tokens

    clip = make_clip(tmp_path / "clip.gif", frames=2, size=(21, 30))
    result = invoke("tokenize", clip, "-o", tmp_path / "a.npz", "-c", bare_ckpt, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "--size" in result.stderr
    assert load_tokens(tmp_path / "a.npz")[0].shape == (2, 10, 15)
    result = invoke("tokenize", clip, "-o", tmp_path / "b.npz", "-c", bare_ckpt, "--device", "cpu",
                    "--size", "8x12")
    assert result.exit_code == 0 and "warning" not in result.stderr
    ids, meta = load_tokens(tmp_path / "b.npz")
    assert ids.shape == (2, 4, 6) and meta["frame_size"] == [8, 12]


def test_reconstruct_gif_human_output(make_clip: Callable[..., Path], tmp_path: Path, tok_ckpt: Path) -> None:
    clip = make_clip(tmp_path / "clip.gif", frames=5, size=(16, 16))
    rec = tmp_path / "rec.gif"
    result = invoke("reconstruct", clip, "-o", rec, "-c", tok_ckpt, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.stdout and "SSIM" in result.stdout
    assert count_frames(rec) == 5


def test_untrained_preset_warns(make_clip: Callable[..., Path], tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=3)
    result = invoke("tokenize", clip, "-o", tmp_path / "t.npz", "--preset", "tiny", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "UNTRAINED" in result.stderr
    from genie_core.io.tokens import load_tokens
    _, meta = load_tokens(tmp_path / "t.npz")
    assert meta["tokenizer"] == "preset:tiny" and meta["tokenizer_digest"] is None


# ---- folder and stdin modes ----------------------------------------------------------------

def test_folder_is_mirrored(make_clip: Callable[..., Path], tmp_path: Path, tok_ckpt: Path) -> None:
    src = tmp_path / "videos"
    make_clip(src / "a.mp4", frames=3)
    make_clip(src / "sub" / "b.gif", frames=4, seed=1)
    make_clip(src / "sub" / "deeper" / "c.mp4", frames=2, seed=2)
    (src / "notes.txt").write_text("not a video, and not picked up")
    out = tmp_path / "tokens"
    result = invoke("tokenize", src, "-o", out, "-c", tok_ckpt, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert files_under(out) == {"a.npz", "sub/b.npz", "sub/deeper/c.npz"}
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert sorted(Path(r["output"]).name for r in records) == ["a.npz", "b.npz", "c.npz"]
    assert {r["shape"][0] for r in records} == {2, 3, 4}


def test_mirror_keeps_same_stem_apart(make_clip: Callable[..., Path], tmp_path: Path,
                                      tok_ckpt: Path) -> None:
    src = tmp_path / "videos"
    make_clip(src / "a.mp4", frames=2)
    make_clip(src / "a.gif", frames=3)
    make_clip(src / "b.mp4", frames=2)
    out = tmp_path / "tokens"
    result = invoke("tokenize", src, "-o", out, "-c", tok_ckpt, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert files_under(out) == {"a.mp4.npz", "a.gif.npz", "b.npz"}


def test_single_file_into_folder(make_clip: Callable[..., Path], tmp_path: Path, tok_ckpt: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=2)
    (tmp_path / "out").mkdir()
    result = invoke("tokenize", clip, "-o", tmp_path / "out", "-c", tok_ckpt, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert files_under(tmp_path / "out") == {"clip.npz"}


def test_stdin_paths(make_clip: Callable[..., Path], tmp_path: Path, tok_ckpt: Path) -> None:
    a = make_clip(tmp_path / "in" / "x" / "a.mp4", frames=3)
    b = make_clip(tmp_path / "in" / "y" / "b.mp4", frames=3, seed=1)
    out = tmp_path / "tokens"
    result = invoke("tokenize", "-", "-o", out, "-c", tok_ckpt, "--device", "cpu",
                    stdin=f"{a}\n\n{b}\n")
    assert result.exit_code == 0, result.output
    assert files_under(out) == {"x/a.npz", "y/b.npz"}
    assert len(result.stdout.strip().splitlines()) == 2


def test_folder_skips_bad_files_and_continues(make_clip: Callable[..., Path], tmp_path: Path, tok_ckpt: Path) -> None:
    src = tmp_path / "videos"
    make_clip(src / "good.mp4", frames=3)
    (src / "broken.mp4").write_bytes(b"this is not a video at all")
    out = tmp_path / "tokens"
    result = invoke("tokenize", src, "-o", out, "-c", tok_ckpt, "--device", "cpu", "--json")
    assert result.exit_code == EXIT_SKIPPED, result.output
    assert files_under(out) == {"good.npz"}
    records = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.strip().splitlines())}
    assert records["good.mp4"]["status"] == "ok" and records["broken.mp4"]["status"] == "error"
    assert "broken.mp4" in result.stderr and "Traceback" not in result.output


def test_stdin_missing_path_is_skipped(make_clip: Callable[..., Path], tmp_path: Path, tok_ckpt: Path) -> None:
    a = make_clip(tmp_path / "a.mp4", frames=2)
    out = tmp_path / "tokens"
    result = invoke("tokenize", "-", "-o", out, "-c", tok_ckpt, "--device", "cpu",
                    stdin=f"{a}\n{tmp_path / 'gone.mp4'}\n")
    assert result.exit_code == EXIT_SKIPPED, result.output
    assert files_under(out) == {"a.npz"} and "gone.mp4" in result.stderr


# ---- bad input: exit 2, one line, nothing written ------------------------------------------

def _truncated(make_clip: Callable[..., Path], tmp_path: Path) -> Path:
    clip = make_clip(tmp_path / "full.mp4", frames=8)
    data = clip.read_bytes()
    bad = tmp_path / "truncated.mp4"
    bad.write_bytes(data[: len(data) // 2])
    clip.unlink()
    return bad


def _not_a_video(make_clip: Callable[..., Path], tmp_path: Path) -> Path:
    path = tmp_path / "notes.mp4"
    path.write_text("hello, I am text with a video's name")
    return path


def _no_frames(make_clip: Callable[..., Path], tmp_path: Path) -> Path:
    """A well-formed mp4 that ffmpeg wrote with zero frames."""
    import imageio_ffmpeg

    path = tmp_path / "zero.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=red:s=16x16:r=10", "-frames:v", "0", "-c:v", "libx264", str(path)],
                   check=True, timeout=600)  # a hang guard
    return path


def _empty_file(make_clip: Callable[..., Path], tmp_path: Path) -> Path:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    return path


BAD_VIDEOS = {
    "missing": lambda make_clip, tmp_path: tmp_path / "missing.mp4",
    "not a video": _not_a_video,
    "truncated": _truncated,
    "no frames": _no_frames,
    "empty file": _empty_file,
}


@pytest.mark.parametrize("command", ["tokenize", "reconstruct"])
@pytest.mark.parametrize("case", sorted(BAD_VIDEOS))
def test_bad_video_is_one_line_exit_2(make_clip: Callable[..., Path], tmp_path: Path, tok_ckpt: Path, command: str, case: str) -> None:
    src = BAD_VIDEOS[case](make_clip, tmp_path)
    before = files_under(tmp_path)
    out = tmp_path / ("out.npz" if command == "tokenize" else "out.mp4")
    result = invoke(command, src, "-o", out, "-c", tok_ckpt, "--device", "cpu")
    line = assert_clean_error(result)
    assert src.name in line
    assert files_under(tmp_path) == before  # nothing half-written


def _not_safetensors(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    path.write_bytes(os.urandom(256))
    return path


def _wrong_kind(tmp_path: Path) -> Path:
    import torch

    from genie_core.io.checkpoint_format import save_checkpoint

    path = tmp_path / "lam.safetensors"
    save_checkpoint(path, {"w": torch.zeros(2)}, kind="lam", config={})
    return path


@pytest.mark.parametrize("command", ["tokenize", "reconstruct"])
@pytest.mark.parametrize("case", ["missing", "not safetensors", "wrong kind", "unknown preset"])
def test_bad_model_is_one_line_exit_2(make_clip: Callable[..., Path], tmp_path: Path, command: str, case: str) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=2)
    model_args = {
        "missing": lambda: ["-c", tmp_path / "nope.safetensors"],
        "not safetensors": lambda: ["-c", _not_safetensors(tmp_path)],
        "wrong kind": lambda: ["-c", _wrong_kind(tmp_path)],
        "unknown preset": lambda: ["--preset", "no-such-preset"],
    }[case]()
    before = files_under(tmp_path)
    out = tmp_path / ("out.npz" if command == "tokenize" else "out.mp4")
    result = invoke(command, clip, "-o", out, *model_args, "--device", "cpu")
    line = assert_clean_error(result)
    assert ("no-such-preset" if case == "unknown preset" else ".safetensors") in line
    assert files_under(tmp_path) == before


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CUDA present")
def test_cuda_without_cuda_is_one_line(make_clip: Callable[..., Path], tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=2)
    result = invoke("tokenize", clip, "-o", tmp_path / "o.npz", "--preset", "tiny", "--device", "cuda")
    assert "CUDA" in assert_clean_error(result)
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("command", ["tokenize", "reconstruct", "infer-actions", "play", "evaluate", "train"])
def test_precision_is_checked_alike_by_every_command(tmp_path: Path, command: str) -> None:
    """One check of --precision for all six commands: the value named, exit 2, nothing written."""
    result = invoke(command, "--precision", "fp16", str(tmp_path / "in.mp4"))
    message = assert_clean_error(result)
    assert "--precision" in message and "fp16" in message
    assert files_under(tmp_path) == set()


@pytest.mark.parametrize("command, flag, bad, choices", [
    ("train", "--stage", "everything", ("tokenizer", "lam", "dynamics", "all")),
    ("record", "--policy", "lazy", ("random", "sticky")),
    ("infer-actions", "--format", "csv", ("json", "npz")),
    ("tokenize", "--precision", "fp16", ("auto", "bf16", "fp32")),
    ("play", "--device", "tpu", ("auto", "cpu", "cuda", "cuda:N")),
])
def test_fixed_choices_are_listed_in_help_and_refused_in_one_line(
        tmp_path: Path, command: str, flag: str, bad: str, choices: tuple[str, ...]) -> None:
    """A fixed set of values is listed in the command's --help, and any other value is refused
    while parsing: one line that names the option, the value and every choice, exit 2."""
    shown = _help_text(command)
    assert "<" + "|".join(choices) + ">" in shown
    message = assert_clean_error(invoke(command, flag, bad, str(tmp_path / "in.mp4")))
    assert flag in message and bad in message and "Value error" not in message
    assert all(f"'{c}'" in message for c in choices)
    assert files_under(tmp_path) == set()


def _help_text(command: str) -> str:
    """--help rendered wide enough that no choice list is wrapped."""
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_choices_are_the_librarys() -> None:
    """The CLI's fixed sets (kept in genie_cli so --help never imports the library) are the sets
    the library accepts."""
    from genie_cli import options, record, train
    from genie_core.tasks.env import PRECISIONS
    from genie_core.tasks.record import POLICIES
    from genie_core.training.train import available_stages

    assert options.PRECISIONS == PRECISIONS
    assert record.POLICIES == POLICIES
    assert train.STAGE_CHOICES == (*available_stages(), "all")


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_pattern_accepts_every_documented_form(device: str) -> None:
    from genie_cli.options import device_choice

    assert device_choice(device) == device


@pytest.mark.parametrize("args, fragment", [
    (["tokenize", "{clip}", "-o", "{tmp}/out.txt", "--preset", "tiny"], ".npz"),
    (["reconstruct", "{clip}", "-o", "{tmp}/out.avi", "--preset", "tiny"], ".mp4"),
    (["reconstruct", "{clip}", "-o", "{tmp}/o.mp4", "--preset", "tiny", "--compare", "{tmp}/c.jpg"], ".png"),
    (["tokenize", "{clip}", "-o", "{tmp}/o.npz"], "--checkpoint"),
    (["tokenize", "{clip}", "-o", "{tmp}/o.npz", "--preset", "tiny", "--size", "big"], "--size"),
    (["tokenize", "{tmp}/empty_dir", "-o", "{tmp}/out", "--preset", "tiny"], "no videos"),
    (["tokenize", "-", "-o", "{tmp}/out", "--preset", "tiny"], "stdin"),
    (["tokenize", "{clip}", "-o", "{tmp}/o.npz", "--preset", "tiny", "--device", "tpu"], "tpu"),
    (["tokenize", "{clip}", "-o", "{tmp}/o.npz", "--preset", "tiny", "--precision", "fp8"], "fp8"),
    (["tokenize", "{clip}", "-o", "{tmp}/o.npz", "--preset", "tiny", "--set", "tokenizer.nope=1"], "nope"),
    (["tokenize", "{clip}", "-o", "{tmp}/o.npz", "--preset", "tiny", "--size", "15x16"], "multiple"),
    (["tokenize", "{clip}", "-o", "{tmp}/clip.mp4", "--preset", "tiny"], ".npz"),
    (["tokenize", "{tmp}", "-o", "{tmp}/out", "--preset", "tiny", "--size", "15x16"], "multiple"),
])
def test_usage_errors(make_clip: Callable[..., Path], tmp_path: Path, args: list[str], fragment: str) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=2)
    (tmp_path / "empty_dir").mkdir()
    before = files_under(tmp_path)
    result = invoke(*[a.format(clip=clip, tmp=tmp_path) for a in args], stdin="")
    assert fragment in assert_clean_error(result)
    assert files_under(tmp_path) == before
