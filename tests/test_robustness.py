"""Hostile but fair inputs across the commands, one test per class of defect: an output that is an
input or a sidecar, unreadable files, dangling symlinks and loops in a data folder, output-side
OS errors (read-only folder, a path through a file, a full disk), Click's own usage errors, and
a malformed sidecar under --against-truth. Each is one line ``error: ...`` with exit 2 (or
skip-and-name with exit 3 in folder / stdin mode) and nothing half-written."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from genie_cli.app import app
from genie_cli.common import EXIT_SKIPPED, EXIT_USAGE
from genie_core.errors import OutputError

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args, stdin: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=stdin)


def one_error_line(result, code: int = EXIT_USAGE) -> str:
    """Exit ``code``, exactly one stderr line, starting 'error:'; no traceback, no box."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output and "╭" not in result.stderr, result.stderr
    return errors[0]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def write_gif(path: Path, frames: int = 8, seed: int = 0, truth: str | None = None) -> Path:
    """A 16x16 GIF whose frames all differ; ``truth`` is written as its JSON sidecar."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    clip = rng.integers(0, 255, size=(frames, 16, 16, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in clip]
    images[0].save(path, save_all=True, append_images=images[1:], duration=66, loop=0)
    if truth is not None:
        path.with_suffix(".json").write_text(truth)
    return path


def truth_json(frames: int = 8, seed: int = 0) -> str:
    actions = np.random.default_rng(seed + 100).integers(0, 2, size=frames).tolist()
    return json.dumps({"actions": actions})


@pytest.fixture(scope="module")
def lam_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import dataclasses

    from genie_core.config import load_preset
    from genie_core.models.lam import LatentActionModel

    torch.manual_seed(0)
    model = LatentActionModel(dataclasses.replace(load_preset("tiny").lam, resolution=(16, 16)))
    path = tmp_path_factory.mktemp("lam") / "lam.safetensors"
    model.eval().save(path)
    return path


@pytest.fixture
def deny_read(monkeypatch: pytest.MonkeyPatch) -> Callable[[Iterable[Path]], None]:
    """Make files unreadable: chmod 000 for a normal user; as root (who reads anything) by
    making ``open`` refuse them with the PermissionError the kernel would raise."""
    denied: set[str] = set()
    chmodded: list[Path] = []

    def deny(paths: Iterable[Path]) -> None:
        for path in paths:
            if os.geteuid() != 0:
                path.chmod(0)
                chmodded.append(path)
            denied.add(os.path.realpath(path))
        if os.geteuid() == 0:
            real_open = builtins.open

            def guarded(file, *args, **kwargs):
                if isinstance(file, (str, os.PathLike)) and os.path.realpath(file) in denied:
                    raise PermissionError(errno.EACCES, "Permission denied", str(file))
                return real_open(file, *args, **kwargs)

            monkeypatch.setattr(builtins, "open", guarded)
            monkeypatch.setattr(io, "open", guarded)

    yield deny
    for path in chmodded:
        path.chmod(0o644)


def unprivileged_cli(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``genie ARGS`` in a subprocess that permission checks apply to, even as root (setpriv
    drops the capabilities that let root read and write anything)."""
    cmd = [sys.executable, "-m", "genie_cli", *map(str, args)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot drop the DAC capabilities")
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, timeout=300)


# ---- 1, 2: an output never replaces an input or a sidecar ------------------------------------

def test_infer_actions_into_the_clips_folder_refuses_to_touch_sidecars(tmp_path: Path, lam_ckpt: Path) -> None:
    clips = tmp_path / "clips"
    write_gif(clips / "a.gif", truth=truth_json())
    write_gif(clips / "sub" / "b.gif", seed=1)  # no sidecar yet: writing b.json would create one
    before = {p: (clips / p).read_bytes() for p in files_under(clips)}
    line = one_error_line(invoke("infer-actions", clips, "-c", lam_ckpt, "-o", clips, "--device", "cpu"))
    assert "sidecar" in line
    assert {p: (clips / p).read_bytes() for p in files_under(clips)} == before
    # One video, its own sidecar as the output; and through a symlinked folder.
    one_error_line(invoke("infer-actions", clips / "a.gif", "-c", lam_ckpt, "-o", clips / "a.json",
                          "--device", "cpu"))
    (tmp_path / "alias").symlink_to(clips, target_is_directory=True)
    one_error_line(invoke("infer-actions", clips / "sub" / "b.gif", "-c", lam_ckpt,
                          "-o", tmp_path / "alias" / "sub" / "b.json", "--device", "cpu"))
    assert {p: (clips / p).read_bytes() for p in files_under(clips)} == before
    # Elsewhere it writes as before.
    assert invoke("infer-actions", clips, "-c", lam_ckpt, "-o", tmp_path / "out", "--device", "cpu").exit_code == 0
    assert files_under(tmp_path / "out") == {"a.json", "sub/b.json"}


@pytest.mark.parametrize("how", ["same path", "hard link", "symlink"])
def test_reconstruct_never_replaces_its_input(make_clip: Callable[..., Path], tmp_path: Path,
                                              tok_ckpt: Path, how: str) -> None:
    src = make_clip("in.mp4", frames=4)
    original = src.read_bytes()
    out = {"same path": src, "hard link": tmp_path / "hard.mp4", "symlink": tmp_path / "link.mp4"}[how]
    if how == "hard link":
        os.link(src, out)
    elif how == "symlink":
        out.symlink_to(src)
    line = one_error_line(invoke("reconstruct", src, "-o", out, "-c", tok_ckpt, "--device", "cpu"))
    assert "input" in line
    assert src.read_bytes() == original
    assert out == src or (out.is_symlink() if how == "symlink" else os.path.samefile(out, src))


def test_every_writing_command_checks_its_inputs(make_clip: Callable[..., Path], tmp_path: Path,
                                                 tok_ckpt: Path) -> None:
    clip = make_clip("clip.mp4", frames=4)
    # tokenize: the output is a hard link to the checkpoint it reads.
    alias = tmp_path / "alias.npz"
    os.link(tok_ckpt, alias)
    digest = tok_ckpt.read_bytes()
    one_error_line(invoke("tokenize", clip, "-o", alias, "-c", tok_ckpt, "--device", "cpu"))
    assert tok_ckpt.read_bytes() == digest
    # play: the session video is the prompt video.
    original = clip.read_bytes()
    line = one_error_line(invoke("play", "--preset", "tiny", "--prompt", clip, "--actions", "0,1",
                                 "-o", clip, "--device", "cpu"))
    assert "input" in line and clip.read_bytes() == original
    # train: the run folder is the data folder.
    data = tmp_path / "data"
    write_gif(data / "a.gif")
    line = one_error_line(invoke("train", "--preset", "tiny", "--data", data, "--out", data))
    assert "data folder" in line
    assert files_under(data) == {"a.gif"}


def test_guard_by_inode_and_by_resolved_path(tmp_path: Path) -> None:
    from genie_core.io.outputs import InputGuard, check_outputs

    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    guard = InputGuard([video], videos=[video])
    for bad in (video, tmp_path / "v.json", tmp_path / "." / "v.mp4"):
        with pytest.raises(OutputError):
            guard.check(bad)
    os.link(video, tmp_path / "hard.bin")
    with pytest.raises(OutputError):
        guard.check(tmp_path / "hard.bin")
    guard.check(tmp_path / "v.npz")  # a different name beside the video is fine
    with pytest.raises(OutputError, match="same file"):
        check_outputs([tmp_path / "o.gif", tmp_path / "." / "o.gif"])


# ---- 3: unreadable inputs ---------------------------------------------------------------------

def test_unreadable_files_are_skipped_in_folder_and_stdin_mode(tmp_path: Path, tok_ckpt: Path,
                                                               lam_ckpt: Path, deny_read) -> None:
    clips = tmp_path / "clips"
    good, bad = write_gif(clips / "good.gif"), write_gif(clips / "bad.gif", seed=1)
    deny_read([bad])
    result = invoke("tokenize", clips, "-o", tmp_path / "tokens", "-c", tok_ckpt, "--device", "cpu")
    assert result.exit_code == EXIT_SKIPPED, result.output
    assert f"skipped {bad}" in result.stderr and "Permission denied" in result.stderr
    assert files_under(tmp_path / "tokens") == {"good.npz"}
    result = invoke("infer-actions", "-", "-c", lam_ckpt, "-o", tmp_path / "actions", "--device", "cpu",
                    stdin=f"{good}\n{bad}\n")
    assert result.exit_code == EXIT_SKIPPED, result.output
    assert str(bad) in result.stderr and "Traceback" not in result.output
    assert files_under(tmp_path / "actions") == {"good.json"}
    # One unreadable input: one line, exit 2, nothing written.
    line = one_error_line(invoke("tokenize", bad, "-o", tmp_path / "one.npz", "-c", tok_ckpt,
                                 "--device", "cpu"))
    assert str(bad) in line and "Permission denied" in line
    assert not (tmp_path / "one.npz").exists()
    line = one_error_line(invoke("infer-actions", bad, "-c", lam_ckpt, "--device", "cpu"))
    assert str(bad) in line


def test_unreadable_checkpoint_is_one_line(tmp_path: Path, make_clip: Callable[..., Path], tok_ckpt: Path,
                                           lam_ckpt: Path, deny_read) -> None:
    clip = make_clip("clip.mp4", frames=4)
    tok, lam = tmp_path / "tok.safetensors", tmp_path / "lam.safetensors"
    shutil.copy(tok_ckpt, tok)
    shutil.copy(lam_ckpt, lam)
    deny_read([tok, lam])
    for args in (["tokenize", clip, "-o", tmp_path / "t.npz", "-c", tok],
                 ["reconstruct", clip, "-o", tmp_path / "r.mp4", "-c", tok],
                 ["infer-actions", clip, "-c", lam],
                 ["play", "-w", lam, "--prompt", clip, "--actions", "0", "-o", tmp_path / "p.gif"]):
        line = one_error_line(invoke(*args, "--device", "cpu"))
        assert "cannot read" in line or "Permission denied" in line, line
    assert files_under(tmp_path) == {"clip.mp4", "tok.safetensors", "lam.safetensors"}


def test_evaluate_skips_and_names_corrupt_and_unreadable_videos(tmp_path: Path, deny_read) -> None:
    clips = tmp_path / "clips"
    for i in range(2):
        write_gif(clips / f"ok{i}.gif", frames=8, seed=i)
    corrupt = clips / "corrupt.gif"
    corrupt.write_bytes(b"GIF89a" + os.urandom(64))
    locked = write_gif(clips / "locked.gif", seed=5)
    deny_read([locked])
    result = invoke("evaluate", clips, "--preset", "tiny", "--clips", "2", "--horizon", "2",
                    "--device", "cpu", "--json")
    assert result.exit_code == EXIT_SKIPPED, (result.output, result.exception)
    assert f"skipped {corrupt}" in result.stderr and str(locked) in result.stderr
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(record["per_clip"]) == 2
    assert {Path(c["source"]).name for c in record["per_clip"]} <= {"ok0.gif", "ok1.gif"}


def test_unreadable_input_under_real_permissions(tmp_path: Path, tok_ckpt: Path) -> None:
    """The same through the kernel's own permission check (a subprocess without root's powers)."""
    clips = tmp_path / "clips"
    write_gif(clips / "good.gif")
    bad = write_gif(clips / "bad.gif", seed=1)
    write_gif(clips / "locked" / "c.gif", seed=2)
    bad.chmod(0)
    (clips / "locked").chmod(0)
    out = tmp_path / "tokens"
    try:
        proc = unprivileged_cli("tokenize", clips, "-o", out, "-c", tok_ckpt, "--device", "cpu",
                                "--threads", "1")
    finally:
        (clips / "locked").chmod(0o755)
    assert proc.returncode == EXIT_SKIPPED, proc.stderr
    assert f"skipped {bad}" in proc.stderr and "Traceback" not in proc.stderr
    assert f"skipped {clips / 'locked'}: cannot read folder" in proc.stderr
    assert "tokenized 1 file(s), skipped 2" in proc.stderr
    assert files_under(out) == {"good.npz"}
    # A read-only output folder is refused before any work.
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    proc = unprivileged_cli("tokenize", clips / "good.gif", "-o", ro / "x.npz", "-c", tok_ckpt,
                            "--device", "cpu", "--threads", "1")
    assert proc.returncode == EXIT_USAGE, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "not writable" in lines[0]
    assert not any(ro.iterdir())


# ---- 4: dangling symlinks and symlink loops in a data folder -----------------------------------

def test_data_folder_skips_and_names_broken_links(tmp_path: Path, tok_ckpt: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from genie_core.training.data import FrameCache

    data = tmp_path / "data"
    write_gif(data / "a.gif")
    write_gif(data / "b.gif", seed=1)
    write_gif(data / "locked" / "c.gif", seed=2)
    (data / "gone.mp4").symlink_to(tmp_path / "missing.mp4")
    (data / "loop1.mp4").symlink_to(data / "loop2.mp4")
    (data / "loop2.mp4").symlink_to(data / "loop1.mp4")
    real_scandir = os.scandir

    def scandir(path="."):  # a folder that cannot be listed, even by root
        if os.path.realpath(path) == os.path.realpath(data / "locked"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    warnings: list[str] = []
    with monkeypatch.context() as m:
        m.setattr(os, "scandir", scandir)
        cache = FrameCache.open(data, (16, 16), warn=warnings.append)
    assert sorted(v.path for v in cache.videos) == ["a.gif", "b.gif"]
    named = " ".join(warnings)
    for name in ("gone.mp4", "loop1.mp4", "loop2.mp4", "locked"):
        assert name in named
    assert "dangling" in named and "loop" in named and "cannot read folder" in named
    (data / "locked" / "c.gif").unlink()
    # genie train names the links and trains on the rest.
    result = invoke("train", "--preset", "tiny", "--data", data, "--out", tmp_path / "run", "--steps", "1",
                    "--threads", "1", "--device", "cpu")
    assert result.exit_code == 0, (result.output, result.exception)
    assert all(name in result.stderr for name in ("gone.mp4", "loop1.mp4", "loop2.mp4"))
    assert (tmp_path / "run" / "tokenizer" / "last.safetensors").is_file()
    # tokenize names the same links (exit 3) and tokenizes the rest.
    result = invoke("tokenize", data, "-o", tmp_path / "tokens", "-c", tok_ckpt, "--device", "cpu")
    assert result.exit_code == EXIT_SKIPPED
    assert all(name in result.stderr for name in ("gone.mp4", "loop1.mp4", "loop2.mp4"))


# ---- 5: output-side OS errors ------------------------------------------------------------------

def test_output_through_a_file_or_onto_a_folder(make_clip: Callable[..., Path], tmp_path: Path,
                                                tok_ckpt: Path, lam_ckpt: Path) -> None:
    clip = make_clip("clip.mp4", frames=4)
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    cases = [
        ["tokenize", clip, "-o", blocker / "x.npz", "-c", tok_ckpt],
        ["reconstruct", clip, "-o", blocker / "x.mp4", "-c", tok_ckpt],
        ["infer-actions", clip, "-o", blocker / "sub" / "x.json", "-c", lam_ckpt],
        ["play", "--preset", "tiny", "--prompt", clip, "--actions", "0", "-o", blocker / "p.gif"],
        ["train", "--preset", "tiny", "--data", tmp_path, "--out", blocker],
        ["tokenize", tmp_path, "-o", blocker, "-c", tok_ckpt],
    ]
    for args in cases:
        line = one_error_line(invoke(*args, *(["--device", "cpu"] if args[0] != "train" else [])))
        assert str(blocker) in line, line
    assert blocker.read_text() == "I am a file"
    assert files_under(tmp_path) == {"clip.mp4", "file"}


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_is_one_line_and_leaves_nothing(make_clip: Callable[..., Path], tmp_path: Path,
                                                  tok_ckpt: Path, lam_ckpt: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    clip = make_clip("clip.mp4", frames=4)
    out = tmp_path / "out"
    out.mkdir()
    with monkeypatch.context() as m:
        m.setattr(np, "savez", _enospc)  # tokenize writes its .npz with np.savez
        line = one_error_line(invoke("tokenize", clip, "-o", out / "t.npz", "-c", tok_ckpt, "--device", "cpu"))
        assert "No space left" in line and "t.npz" in line
        # In folder mode too the first failed write stops the run (every file would fail).
        clips = tmp_path / "clips"
        write_gif(clips / "a.gif")
        write_gif(clips / "b.gif", seed=1)
        one_error_line(invoke("tokenize", clips, "-o", out / "tokens", "-c", tok_ckpt, "--device", "cpu"))
    with monkeypatch.context() as m:
        m.setattr(Path, "write_text", _enospc)
        one_error_line(invoke("infer-actions", clip, "-o", out / "a.json", "-c", lam_ckpt, "--device", "cpu"))
    from safetensors import SafetensorError

    def safetensors_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    from genie_core.io import checkpoint_format
    with monkeypatch.context() as m:
        m.setattr(checkpoint_format, "save_file", safetensors_full)  # where the file is written
        with pytest.raises(OutputError, match="No space left"):
            checkpoint_format.save_checkpoint(out / "c.safetensors", {"w": torch.zeros(2)}, kind="lam", config={})
    assert files_under(out) == set()  # no partial file, no temporary file


def test_atomic_write_turns_write_errors_into_output_errors(tmp_path: Path) -> None:
    from genie_core.io.atomic import atomic_path

    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(OutputError, match="keep.txt: No space left"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old" and files_under(tmp_path) == {"keep.txt"}
    # An error about another file (one the writer reads) is not relabelled.
    with pytest.raises(FileNotFoundError):
        with atomic_path(target) as tmp:
            open(tmp_path / "nope.bin", "rb")
    with pytest.raises(OutputError, match="not a folder"):
        with atomic_path(target / "x.txt"):
            pass


# ---- 12: Click's own usage errors are one line ------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["tokenize", "x.mp4", "-o", "x.npz", "--window", "0"], "--window"),
    (["tokenize", "x.mp4", "-o", "x.npz", "--threads", "-1"], "--threads"),
    (["reconstruct", "x.mp4", "-o", "x.mp4", "--batch", "0"], "--batch"),
    (["train", "--data", ".", "--steps", "-5"], "--steps"),
    (["train", "--data", ".", "--batch-size", "0"], "--batch-size"),
    (["train", "--data", ".", "--threads", "-1"], "--threads"),
    (["play", "--prompt", "x.png", "--temperature", "nan"], "--temperature"),
    (["play", "--prompt", "x.png", "--fps", "inf"], "--fps"),
    (["evaluate", "clips", "--temperature", "nan"], "--temperature"),
    (["evaluate", "clips", "--clips", "0"], "--clips"),
    (["evaluate", "clips", "--top-p", "0"], "--top-p"),
    (["play", "--prompt", "x.png", "--top-p", "1.5"], "--top-p"),
    (["infer-actions", "x.mp4", "--window", "1"], "--window"),
    (["infer-actions", "x.mp4", "--threads", "-1"], "--threads"),
    (["tokenize", "x.mp4"], "--output"),  # missing -o
    (["tokenize", "x.mp4", "-o", "x.npz", "--no-such-flag"], "--no-such-flag"),
    (["no-such-command"], "no-such-command"),
])
def test_usage_errors_are_one_line(args: list[str], fragment: str) -> None:
    """Caught by Click before the command runs: one line naming the option, nothing else."""
    line = one_error_line(invoke(*args))
    assert fragment in line and len(line) < 200, line


def test_threads_rule_is_the_same_everywhere() -> None:
    import typer.main

    command = typer.main.get_command(app)
    for name, sub in command.commands.items():
        for param in sub.params:
            if "--threads" in getattr(param, "opts", []):
                result = invoke(name, *(["x"] if name not in ("train", "play") else []),
                                "--threads", "-1", *(["--prompt", "x.png"] if name == "play" else []))
                assert result.exit_code == EXIT_USAGE and "--threads" in one_error_line(result), name


# ---- 14: a malformed sidecar under --against-truth ---------------------------------------------

def test_against_truth_names_a_malformed_sidecar(tmp_path: Path, lam_ckpt: Path) -> None:
    clips = tmp_path / "clips"
    write_gif(clips / "good.gif", truth=truth_json())
    write_gif(clips / "broken.gif", seed=1, truth="{not json")
    write_gif(clips / "words.gif", seed=2, truth=json.dumps({"actions": ["left", "right"]}))
    write_gif(clips / "none.gif", seed=3)  # no sidecar at all: counted as missing, not malformed
    result = invoke("infer-actions", clips, "-c", lam_ckpt, "--against-truth", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "broken.json" in result.stderr and "not valid JSON" in result.stderr
    assert "words.json" in result.stderr and "integers" in result.stderr
    assert "1 video(s) have no ground-truth sidecar" in result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])["against_truth"]
    assert report["files"] == 1
    # Only malformed sidecars: the error names one and says what is wrong.
    (clips / "good.json").write_text("[1, 2")
    line = one_error_line(invoke("infer-actions", clips / "good.gif", "-c", lam_ckpt, "--against-truth",
                                 "--device", "cpu"))
    assert "good.json" in line and "not valid JSON" in line
