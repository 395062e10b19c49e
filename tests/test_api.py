"""Token files and the library functions behind `genie tokenize` / `genie reconstruct`
(windowed, batched tokenization of long videos; Genie §2.1)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from genie_core.errors import CheckpointError, ConfigError, GenieError
from genie_core.io.checkpoint_format import save_checkpoint
from genie_core.io.tokens import TokenFileError, file_digest, load_tokens, save_tokens
from genie_core.tasks import tokenize as api
from genie_core.version import TOKEN_FORMAT_VERSION

# ---- token files ---------------------------------------------------------------------------

def test_tokens_round_trip_int32_on_disk(tmp_path: Path) -> None:
    ids = np.random.default_rng(0).integers(0, 256, size=(5, 4, 6))
    meta = {"source": "a.mp4", "fps": 12.5, "num_frames": 5, "frame_size": [16, 24],
            "tokenizer_digest": "0123456789abcdef", "vocab_size": 256}
    path = tmp_path / "t.npz"
    save_tokens(path, ids, meta)
    with np.load(path, allow_pickle=False) as raw:  # readable without pickle by anyone
        assert raw["tokens"].dtype == np.int32 and raw["tokens"].shape == (5, 4, 6)
        assert raw["meta"].ndim == 0
    back, meta_back = load_tokens(path)
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, ids)
    assert meta_back["format_version"] == TOKEN_FORMAT_VERSION
    assert meta_back["token_shape"] == [5, 4, 6]
    for key, value in meta.items():
        assert meta_back[key] == value
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]  # no temporary left behind


def test_save_tokens_rejects_bad_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_tokens(tmp_path / "a.npz", np.zeros((2, 3)), {})
    with pytest.raises(ValueError):
        save_tokens(tmp_path / "b.npz", np.zeros((1, 2, 3), dtype=np.float32), {})
    assert not list(tmp_path.iterdir())


def test_load_tokens_refuses_bad_files(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="not found"):
        load_tokens(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(TokenFileError, match="not a readable"):
        load_tokens(tmp_path / "text.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(TokenFileError, match="not a genie token file"):
        load_tokens(tmp_path / "other.npz")
    # An object array would need unpickling: refused, never executed.
    np.savez(tmp_path / "pickled.npz", tokens=np.zeros((1, 1, 1), dtype=np.int32),
             meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(TokenFileError):
        load_tokens(tmp_path / "pickled.npz")
    bad_version = json.dumps({"format_version": "999"})
    np.savez(tmp_path / "future.npz", tokens=np.zeros((1, 1, 1), dtype=np.int32),
             meta=np.array(bad_version))
    with pytest.raises(TokenFileError, match="format '999'"):
        load_tokens(tmp_path / "future.npz")
    ok_meta = json.dumps({"format_version": TOKEN_FORMAT_VERSION, "vocab_size": 4})
    np.savez(tmp_path / "range.npz", tokens=np.full((1, 1, 1), 4, dtype=np.int32),
             meta=np.array(ok_meta))
    with pytest.raises(TokenFileError, match="outside"):
        load_tokens(tmp_path / "range.npz")


def test_file_digest_is_sha256_prefix(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"genie" * 1000)
    assert file_digest(path) == hashlib.sha256(b"genie" * 1000).hexdigest()[:16]


# ---- tokenizer loading -----------------------------------------------------------------------

def test_load_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(GenieError, match="tokenizer is needed"):
        api.load_tokenizer(None)
    with pytest.raises(CheckpointError, match="not found"):
        api.load_tokenizer(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a safetensors"):
        api.load_tokenizer(tmp_path / "junk.safetensors")
    save_checkpoint(tmp_path / "lam.safetensors", {"w": torch.zeros(2)}, kind="lam", config={})
    with pytest.raises(CheckpointError, match="holds a lam checkpoint"):
        api.load_tokenizer(tmp_path / "lam.safetensors")
    with pytest.raises(ConfigError, match="unknown preset"):
        api.load_tokenizer(None, preset="no-such-preset")


# ---- windowing, padding and batching (a fake causal tokenizer with time /2) ------------------

class CausalPoolTokenizer(torch.nn.Module):
    """A stand-in with the VideoTokenizer interface whose ids are easy to predict: latent frame t
    is the mean brightness of frames 2t and 2t+1 (causal: frames <= 2t+1) over 4x4 patches,
    quantised to 16 levels; decoding paints each latent frame back over its two frames."""

    time_downsample, space_downsample, vocab_size = 2, 4, 16

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, ...]] = []

    def tokenize(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(tuple(video.shape))
        x = video.float().mean(dim=1)  # (B, T, H, W) in [-1, 1]
        x = torch.nn.functional.avg_pool3d(x[:, None], (2, 4, 4))[:, 0]  # (B, T/2, H/4, W/4)
        ids = ((x + 1) / 2 * 15).round().clamp(0, 15).long()
        return ids[:, None].float(), ids

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        x = ids.float() / 15 * 2 - 1  # (B, T', h, w)
        x = x.repeat_interleave(2, dim=1).repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
        return x[:, None].expand(-1, 3, -1, -1, -1)  # (B, 3, T, H, W)


def fake_tokenizer(window: int) -> api.LoadedTokenizer:
    return api.LoadedTokenizer(CausalPoolTokenizer(), torch.device("cpu"), "fake", None, (16, 16),
                               window)


def reference_ids(frames: np.ndarray, window: int) -> np.ndarray:
    """Each window tokenized alone, its last frame repeated to an even length, then trimmed."""
    model, out = CausalPoolTokenizer(), []
    for start in range(0, len(frames), window):
        chunk = frames[start:start + window]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], len(chunk) % 2, axis=0)])
        x = torch.from_numpy(padded).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
        out.append(model.tokenize(x)[1][0].numpy())
    return np.concatenate(out)


@pytest.mark.parametrize("frames, window, batch", [(11, 4, 2), (11, 4, 3), (6, 8, 4), (9, 2, 1)])
def test_tokenize_video_windows(make_clip, clip_frames, tmp_path: Path, frames: int, window: int,
                                batch: int) -> None:
    clip = make_clip(tmp_path / "c.gif", frames=frames, size=(16, 16), fps=10)  # gif: lossless
    tok = fake_tokenizer(window)
    ids, meta = api.tokenize_video(tok, clip, batch_windows=batch, precision="fp32")
    latent = sum(-(-min(window, frames - s) // 2) for s in range(0, frames, window))  # ceil per window
    assert ids.dtype == np.int32 and ids.shape == (latent, 4, 4)
    np.testing.assert_array_equal(ids, reference_ids(clip_frames(frames, (16, 16)), window))
    assert meta["num_frames"] == frames and meta["frame_size"] == [16, 16]
    assert meta["time_downsample"] == 2 and meta["window"] == window
    assert max(shape[0] for shape in tok.model.calls) <= batch  # windows are batched, not more


def test_window_rounds_up_to_time_downsample() -> None:
    assert api._round_window(5, 2) == 6 and api._round_window(4, 1) == 4


@pytest.mark.parametrize("frames", [7, 8])
def test_reconstruct_keeps_frame_count(make_clip, clip_frames, tmp_path: Path, frames: int) -> None:
    clip = make_clip(tmp_path / "c.gif", frames=frames, size=(16, 16), fps=10)
    tok = fake_tokenizer(4)
    rec = api.reconstruct_video(tok, clip, batch_windows=2, precision="fp32")
    assert rec.frames.shape == rec.originals.shape == (frames, 16, 16, 3)
    np.testing.assert_array_equal(rec.originals, clip_frames(frames, (16, 16)))
    assert rec.psnr_per_frame.shape == rec.ssim_per_frame.shape == (frames,)
    assert rec.fps == pytest.approx(10.0, rel=0.05)
    # The reconstruction is what the token file decodes to.
    ids, _ = api.tokenize_video(tok, clip, batch_windows=1, precision="fp32")
    decoded = tok.model.decode_ids(torch.from_numpy(ids).long()[None])  # (1, 3, T'*2, 16, 16)
    from genie_core.io.frames import from_model
    np.testing.assert_array_equal(rec.frames, from_model(decoded)[0][:frames])


def test_reconstruct_to_file_streams(make_clip, tmp_path: Path) -> None:
    from genie_core.io.video import probe_video, read_image, read_video

    clip = make_clip(tmp_path / "c.mp4", frames=9, size=(24, 32), fps=15)
    tok = fake_tokenizer(4)
    in_memory = api.reconstruct_video(tok, clip, batch_windows=2, precision="fp32")
    rec = api.reconstruct_to_file(tok, clip, tmp_path / "r.gif", compare=tmp_path / "cmp.png",
                                  compare_frames=3, batch_windows=2, precision="fp32")
    assert rec.num_frames == 9 and rec.frame_size == (16, 16)
    np.testing.assert_allclose(rec.psnr_per_frame, in_memory.psnr_per_frame)
    written, fps = read_video(tmp_path / "r.gif")
    assert written.shape == (9, 16, 16, 3) and fps == pytest.approx(15, rel=0.1)
    picture = read_image(tmp_path / "cmp.png")
    assert picture.shape[1] > 3 * 16 and picture.shape[0] > 2 * 16
    assert probe_video(tmp_path / "r.gif").num_frames == 9


def test_even_sample_is_bounded_and_spread() -> None:
    sample = api._EvenSample(4)
    frames = np.arange(100, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    for start in range(0, 100, 7):
        sample.add(frames[start:start + 7], frames[start:start + 7])
        assert len(sample.kept) < 8
    originals, recs = sample.rows()
    picked = originals[:, 0, 0, 0].tolist()
    assert len(picked) == 4 and picked[0] == 0 and picked[-1] >= 64 and picked == sorted(picked)


# ---- the real tokenizer (tiny preset; and a time-downsampling variant) ----------------------

TIME_DOWN = ["tokenizer.enc_desc=[[causal, {out_channels: 16}], [residual, {out_channels: 32, "
             "downsample: [2, 2], num_groups: 4}], [proj_out, {out_channels: 8, num_groups: 4}]]"]


@pytest.mark.parametrize("overrides", [[], TIME_DOWN], ids=["tiny", "time/2"])
def test_real_tokenizer_windows(make_clip, clip_frames, tmp_path: Path, overrides: list[str]) -> None:
    from genie_core.io.frames import to_model

    clip = make_clip(tmp_path / "c.gif", frames=7, size=(16, 16))
    tok = api.load_tokenizer(None, preset="tiny", overrides=overrides, device="cpu", window=4)
    td = tok.time_downsample
    ids, meta = api.tokenize_video(tok, clip, batch_windows=2, precision="fp32")
    frames = clip_frames(7, (16, 16))
    # One continuous encoding of the clip (its last frame repeated to a multiple of td): the
    # warm-up before each window covers the encoder's receptive field.
    n = -(-7 // td) * td
    padded = np.concatenate([frames, np.repeat(frames[-1:], n - 7, axis=0)])
    with torch.no_grad():
        expected = [tok.model.tokenize(to_model(padded))[1][0].numpy()]
    np.testing.assert_array_equal(ids, np.concatenate(expected))
    assert ids.shape == (4 // td + -(-3 // td), 8, 8) and meta["vocab_size"] == 2 ** 8
    rec = api.reconstruct_video(tok, clip, batch_windows=2, precision="fp32")
    assert rec.frames.shape == (7, 16, 16, 3)


def test_untrained_preset_is_deterministic() -> None:
    a = api.load_tokenizer(None, preset="tiny", device="cpu").model.state_dict()
    torch.rand(3)  # global RNG state must not matter
    b = api.load_tokenizer(None, preset="tiny", device="cpu").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_digest(tmp_path: Path) -> None:
    from genie_core.models.tokenizer import VideoTokenizer

    path = tmp_path / "tok.safetensors"
    VideoTokenizer.from_preset("tiny").save(path)
    tok = api.load_tokenizer(path, device="cpu")
    assert tok.digest == file_digest(path) and len(tok.digest) == 16
    assert tok.source == str(path) and not tok.model.training


def test_world_bundle_tokenizer(make_clip, tmp_path: Path) -> None:
    """A world bundle's tokenizer is accepted; its resolution comes from the bundle."""
    from genie_core.models.world import World

    path = tmp_path / "world.safetensors"
    world = World.from_preset("tiny")
    world.save(path)
    tok = api.load_tokenizer(path, device="cpu")
    assert tok.digest == file_digest(path) and tok.resolution == world.resolution
    clip = make_clip(tmp_path / "c.mp4", frames=3, size=(32, 32))
    ids, meta = api.tokenize_video(tok, clip, precision="fp32")
    h, w = world.resolution
    assert ids.shape == (3, h // tok.space_downsample, w // tok.space_downsample)
    with torch.no_grad():
        for key, value in world.tokenizer.state_dict().items():
            assert torch.equal(tok.model.state_dict()[key], value)


# ---- causal warm-up: window-by-window ids equal one continuous encoding -----------------------

CONV3 = ["tokenizer.enc_desc=[[causal, {out_channels: 8, kernel_size: 3}], [causal, {out_channels: 8, "
         "kernel_size: 3}], [residual, {out_channels: 16, downsample: [1, 2], num_groups: 4}], "
         "[proj_out, {out_channels: 8, num_groups: 4}]]"]


def test_receptive_field_from_layers() -> None:
    from genie_core.models.window_encode import temporal_receptive_field, warmup_frames

    tok = api.load_tokenizer(None, preset="tiny", overrides=CONV3, device="cpu")
    assert temporal_receptive_field(tok.model) == 2 + 2 + 2 * 2 + 2  # four k=3 convs and proj_out
    down = api.load_tokenizer(None, preset="tiny", overrides=TIME_DOWN, device="cpu").model
    # causal k3 (2), blur pool of 2 frames (1), two k3 convs at scale 2 (8), proj_out at scale 2 (4);
    # the warm-up rounds 15 up to whole time groups
    assert temporal_receptive_field(down) == 15 and warmup_frames(down) == 16


def test_receptive_field_is_tight() -> None:
    """Changing the frame R before a latent's frame changes it; the frame before that does not."""
    from genie_core.io.frames import to_model
    from genie_core.models.window_encode import temporal_receptive_field

    model = api.load_tokenizer(None, preset="tiny", overrides=CONV3, device="cpu").model
    r = temporal_receptive_field(model)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (r + 4, 16, 16, 3), dtype=np.uint8)
    with torch.no_grad():
        base = model.encode(to_model(frames))[:, :, -1]
        for back, changes in ((r, True), (r + 1, False)):
            other = frames.copy()
            other[-1 - back] = 255 - other[-1 - back]
            diff = (model.encode(to_model(other))[:, :, -1] - base).abs().max().item()
            assert (diff > 1e-6) == changes, (back, diff)


@pytest.mark.parametrize("overrides", [CONV3, TIME_DOWN], ids=["conv3", "time/2"])
def test_windows_equal_continuous_encoding(overrides: list[str]) -> None:
    from genie_core.io.frames import to_model
    from genie_core.models.window_encode import encode_windows

    model = api.load_tokenizer(None, preset="tiny", overrides=overrides, device="cpu").model
    window = 8
    frames = np.random.default_rng(1).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)  # 2.5 windows
    with torch.no_grad():
        whole = model.tokenize(to_model(frames))[1][0].numpy()  # 20 frames: a multiple of td

    def windowed(**kw) -> np.ndarray:
        chunks = (frames[i:i + window] for i in range(0, 20, window))
        return np.concatenate([ids.numpy() for _, ids in encode_windows(
            model, chunks, device=torch.device("cpu"), precision="fp32", batch_windows=2, **kw)])

    np.testing.assert_array_equal(windowed(), whole)
    # Without the warm-up the windows after the first differ: the test can tell.
    td = model.time_downsample
    cold = windowed(warmup=0)
    np.testing.assert_array_equal(cold[: window // td], whole[: window // td])
    assert (cold[window // td:] != whole[window // td:]).mean() > 0.2
