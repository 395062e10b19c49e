"""Video I/O: every container reads back, colour modes become RGB, resize/crop,
streaming windows, frame-rate round trips, bad input -> VideoError, atomic writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from genie_core.errors import VideoError
from genie_core.io import video
from genie_core.io.frames import fit_frames, from_model, to_model
from genie_core.io.pictures import make_grid, write_grid
from genie_core.io.video_write import write_video


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def _ffmpeg_write(path: Path, frames: np.ndarray, codec: str, pix_in: str, pix_out: str) -> Path:
    """A file written by imageio's ffmpeg writer, not by ours."""
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), pix_fmt_in=pix_in,
                                         pix_fmt_out=pix_out, codec=codec, quality=None,
                                         macro_block_size=1, ffmpeg_log_level="error")
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


# ---- reading ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mp4", "gif", "webm", "avi", "mkv", "mov"])
def test_reads_each_format(tmp_path, make_clip, clip_frames, kind):
    path = make_clip(tmp_path / f"clip.{kind}", frames=8, size=(64, 48), fps=10)
    frames, fps = video.read_video(path)
    assert frames.dtype == np.uint8 and frames.shape == (8, 64, 48, 3)
    assert fps == pytest.approx(10.0)
    assert _psnr(frames, clip_frames(8, (64, 48))) > 30  # the content, not just the shape
    info = video.probe_video(path)
    assert (info.height, info.width, info.num_frames) == (64, 48, 8)
    assert info.fps == pytest.approx(10.0)
    assert video.probe_video(path, exact=True).num_frames == 8


def test_grayscale_video_becomes_rgb(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (3, 16, 1))  # (T, H, W)
    path = _ffmpeg_write(tmp_path / "gray.mkv", ramp, "ffv1", "gray", "gray")  # lossless
    frames, _ = video.read_video(path)
    assert frames.shape == (3, 16, 32, 3)
    np.testing.assert_array_equal(frames, np.repeat(ramp[..., None], 3, axis=-1))


def test_alpha_video_becomes_rgb_over_black(tmp_path):
    rgba = np.zeros((3, 16, 16, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :, 8:, 3] = 255  # right half opaque, left half fully transparent
    path = _ffmpeg_write(tmp_path / "alpha.mov", rgba, "png", "rgba", "rgba")  # lossless
    frames, _ = video.read_video(path)
    assert frames.shape == (3, 16, 16, 3)
    assert (frames[:, :, :8] == 0).all() and (frames[:, :, 8:] == (200, 100, 50)).all()


def test_gif_palette_gray_and_transparency(tmp_path):
    gray = [Image.fromarray(np.full((8, 8), v, np.uint8), mode="L") for v in (10, 120, 240)]
    gray[0].save(tmp_path / "g.gif", save_all=True, append_images=gray[1:], duration=50)
    frames, fps = video.read_video(tmp_path / "g.gif")
    assert frames.shape == (3, 8, 8, 3) and fps == pytest.approx(20.0)
    assert [int(f[0, 0, 0]) for f in frames] == [10, 120, 240] and (frames == frames[..., :1]).all()

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[4:, :, 3] = 255  # top half transparent
    Image.fromarray(rgba).save(tmp_path / "t.gif")
    frame, _ = video.read_video(tmp_path / "t.gif")
    assert (frame[0, :4] == 0).all() and (frame[0, 4:] == (255, 0, 0)).all()


def test_read_image_modes_and_size(tmp_path):
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[..., 1] = 180
    rgba[:, 10:, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "a.png")
    image = video.read_image(tmp_path / "a.png")
    assert image.shape == (10, 20, 3) and (image[:, :10] == 0).all() and (image[:, 10:, 1] == 180).all()
    Image.fromarray(np.full((30, 40), 77, np.uint8)).save(tmp_path / "g.jpg")
    image = video.read_image(tmp_path / "g.jpg", size=(16, 16))
    assert image.shape == (16, 16, 3) and abs(int(image.mean()) - 77) <= 2


def test_fit_frames_crops_centre_then_resizes(clip_frames):
    frames = clip_frames(2, (64, 96))
    crop = fit_frames(frames, (64, 64))  # same height: a pure centre crop, exact
    np.testing.assert_array_equal(crop, frames[:, :, 16:80])
    tall = fit_frames(frames, (40, 20))
    assert tall.shape == (2, 40, 20, 3) and tall.dtype == np.uint8
    blocks = np.kron(np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1) * 15,
                     np.ones((1, 2, 2, 3), np.uint8))  # (1, 8, 8, 3): 2x2 blocks
    np.testing.assert_array_equal(fit_frames(blocks, (4, 4))[0, ..., 0],
                                  np.arange(16).reshape(4, 4) * 15)  # area downscale is exact
    assert fit_frames(np.zeros((3, 9, 7), np.uint8), (4, 4)).shape == (3, 4, 4, 3)


def test_read_with_size_and_selection(tmp_path, make_clip):
    path = make_clip(tmp_path / "c.mp4", frames=12, size=(48, 64))
    full, fps = video.read_video(path)
    small, _ = video.read_video(path, size=(32, 32))
    np.testing.assert_array_equal(small, fit_frames(full, (32, 32)))
    part, part_fps = video.read_video(path, start=2, stride=3, max_frames=3)
    np.testing.assert_array_equal(part, full[2::3][:3])
    assert part_fps == pytest.approx(fps / 3)  # the rate of the frames returned
    with pytest.raises(VideoError, match="c.mp4"):
        video.read_video(path, start=50)


@pytest.mark.parametrize("kind", ["mp4", "gif"])
def test_windows_concatenate_to_whole_read(tmp_path, make_clip, kind):
    path = make_clip(tmp_path / f"c.{kind}", frames=11, size=(32, 32))
    whole, _ = video.read_video(path, size=(16, 24), stride=2)
    windows = list(video.iter_video(path, size=(16, 24), window=4, stride=2))
    assert [len(w) for w in windows] == [4, 2]
    np.testing.assert_array_equal(np.concatenate(windows), whole)
    stream = video.iter_video(path, window=3)
    assert next(stream).shape == (3, 32, 32, 3)
    stream.close()  # leaving early stops the decoder cleanly


# ---- writing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,fps", [("mp4", 12.5), ("mp4", 30), ("webm", 24), ("avi", 15),
                                      ("gif", 25), ("gif", 30)])
def test_fps_survives_write_and_read(tmp_path, clip_frames, kind, fps):
    frames = clip_frames(6, (32, 32))
    path = write_video(tmp_path / f"out.{kind}", frames, fps)
    back, read_fps = video.read_video(path)
    assert back.shape == frames.shape
    # GIF delays are whole centiseconds: 30 fps is stored as 30/40 ms delays, exact on average.
    assert read_fps == pytest.approx(fps, rel=0.02 if kind == "gif" else 1e-3)


@pytest.mark.parametrize("size", [(64, 64), (16, 16), (15, 17)])
def test_mp4_round_trip_quality_and_odd_sizes(tmp_path, clip_frames, size):
    frames = clip_frames(8, size)
    back, _ = video.read_video(write_video(tmp_path / "o.mp4", frames, 10))
    assert back.shape == frames.shape  # odd sizes are kept (4:4:4), never padded or rescaled
    assert _psnr(back, frames) > (35 if size == (64, 64) else 28)


def test_write_accepts_streamed_windows(tmp_path, clip_frames):
    frames = clip_frames(7, (16, 16))
    write_video(tmp_path / "s.gif", (frames[i:i + 3] for i in range(0, 7, 3)), 10)
    back, _ = video.read_video(tmp_path / "s.gif")
    assert back.shape == frames.shape and _psnr(back, frames) > 30


def test_atomic_write_leaves_nothing_on_failure(tmp_path, clip_frames):
    frames = clip_frames(4, (16, 16))

    def broken():
        yield frames[0]
        yield frames[1]
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        write_video(tmp_path / "x.mp4", broken(), 10)
    with pytest.raises(ValueError, match="shape"):
        write_video(tmp_path / "y.mp4", [frames[0], frames[1, :8]], 10)
    assert list(tmp_path.iterdir()) == []  # no target, no temporary file
    # An existing file is replaced only by a complete one.
    good = write_video(tmp_path / "z.mp4", frames, 10)
    before = good.read_bytes()
    with pytest.raises(RuntimeError):
        write_video(good, broken(), 10)
    assert good.read_bytes() == before and list(tmp_path.iterdir()) == [good]


def test_write_rejects_unknown_suffix(tmp_path, clip_frames):
    with pytest.raises(VideoError, match="x.xyz"):
        write_video(tmp_path / "x.xyz", clip_frames(2, (16, 16)), 10)


def test_grid_layout_labels_and_png(tmp_path, clip_frames):
    top, bottom = clip_frames(3, (16, 16)), clip_frames(3, (16, 16), seed=1)
    grid = make_grid([top, bottom], pad=2)
    assert grid.shape == (2 * 16 + 3 * 2, 3 * 16 + 4 * 2, 3)
    np.testing.assert_array_equal(grid[2:18, 2:18], top[0])
    np.testing.assert_array_equal(grid[20:36, 38:54], bottom[2])
    labelled = make_grid([top, bottom[0]], labels=["original", "rec"])
    assert labelled.shape[1] > grid.shape[1] and labelled.shape[0] == grid.shape[0]
    path = write_grid(tmp_path / "g.png", [top, bottom])
    np.testing.assert_array_equal(video.read_image(path), grid)


# ---- bad input --------------------------------------------------------------------------------

BAD_INPUTS = ["missing", "text", "empty", "truncated_mp4", "truncated_webm", "truncated_gif",
              "truncated_faststart", "no_frames"]


def _bad_file(name: str, tmp_path: Path, make_clip) -> Path:
    """Write one kind of broken input and return its path."""
    path = tmp_path / f"{name}.{name.split('_')[-1] if name.startswith('truncated') else 'mp4'}"
    if name == "text":
        path.write_text("this is not a video\n" * 20)
    elif name == "empty":
        path.write_bytes(b"")
    elif name == "truncated_faststart":  # moov first: the header survives, the frames do not
        full = make_clip(tmp_path / "full.mp4", frames=8)
        fast = tmp_path / "fast.mp4"
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(full), "-c", "copy",
                        "-movflags", "+faststart", str(fast)], check=True)
        path = tmp_path / "truncated_faststart.mp4"
        path.write_bytes(fast.read_bytes()[:int(fast.stat().st_size * 0.8)])
    elif name.startswith("truncated"):
        data = make_clip(tmp_path / f"full.{path.suffix[1:]}", frames=8).read_bytes()
        path.write_bytes(data[:int(len(data) * 0.7)])
    elif name == "no_frames":  # an mp4 container holding no frame
        writer = imageio_ffmpeg.write_frames(str(path), (16, 16), macro_block_size=1,
                                             ffmpeg_log_level="quiet")
        writer.send(None)
        writer.close()
    return path


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_raises_one_line_video_error(tmp_path, make_clip, name):
    path = _bad_file(name, tmp_path, make_clip)
    with pytest.raises(VideoError) as info:
        video.read_video(path)
    message = str(info.value)
    assert path.name in message and "\n" not in message
    with pytest.raises(VideoError, match=path.name):
        list(video.iter_video(path))


def test_bad_image_and_probe(tmp_path):
    with pytest.raises(VideoError, match="missing.png"):
        video.read_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(VideoError, match="text.png"):
        video.read_image(tmp_path / "text.png")
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(VideoError, match="text.mp4"):
        video.probe_video(tmp_path / "text.mp4")


def test_truncation_surfaces_while_streaming(tmp_path, make_clip):
    data = make_clip(tmp_path / "full.webm", frames=12).read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[:int(len(data) * 0.8)])  # the first (key) frame is most of the file
    windows = []
    with pytest.raises(VideoError, match="cut.webm"):
        for window in video.iter_video(cut, window=2):
            windows.append(window)
    partial, _ = video.read_video(cut, strict=False)  # opt-in: keep what decodes
    assert 0 < len(partial) < 12
    np.testing.assert_array_equal(np.concatenate(windows), partial[:sum(map(len, windows))])


def test_find_videos_recursive_sorted(clip_dir):
    (clip_dir / "._a.mp4").write_bytes(b"resource fork")  # hidden: skipped
    (clip_dir / "upper.MP4").write_bytes((clip_dir / "a.mp4").read_bytes())
    found = video.find_videos(clip_dir)
    names = [p.relative_to(clip_dir).as_posix() for p in found]
    assert names == ["a.mp4", "b.gif", "sub/c.mp4", "sub/deeper/d.webm", "upper.MP4"]
    with pytest.raises(VideoError):
        video.find_videos(clip_dir / "nope")


# ---- model tensors ----------------------------------------------------------------------------

def test_to_model_from_model_round_trip(clip_frames):
    import torch

    frames = clip_frames(5, (16, 16))
    x = to_model(frames)
    assert x.shape == (1, 3, 5, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(from_model(x)[0], frames)
    batch = to_model(torch.from_numpy(np.stack([frames, frames[::-1]])))
    assert batch.shape == (2, 3, 5, 16, 16)
    assert from_model(batch * 3).min() == 0  # out-of-range values are clamped


def test_video_modules_import_without_torch():
    code = ("import sys, genie_core.io.video, genie_core.io.video_write, genie_core.io.pictures, "
            "genie_core.io.frames, genie_core.io.ffmpeg; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_make_clip_fixture_paths(tmp_path, make_clip):
    assert make_clip("rel") == tmp_path / "rel.mp4"
    assert make_clip("x/y.gif", frames=3).is_file()
    with pytest.raises(ValueError):
        make_clip("z.gif", kind="mp4")
