"""Tests for the tokenizer losses: GAN discriminator (seed disc_kwargs), GAN objectives and the
VGG16 perceptual loss loaded from a random torchvision-named state dict written by the test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from genie_core.errors import GenieError
from genie_core.models.discriminator import Discriminator, FeedForward, SpatialAttention
from genie_core.models.losses import (
    VGG16_FILE,
    PerceptualLoss,
    adaptive_gan_weight,
    hinge_d_loss,
    hinge_g_loss,
    non_saturating_d_loss,
    non_saturating_g_loss,
    sample_frames,
)

SEED_DISC = dict(inp_size=(64, 64), model_dim=64, dim_mults=(1, 2, 4), down_step=(None, 2, 2),
                 inp_channels=3, kernel_size=3, num_groups=8, act_fn="leaky", use_blur=True,
                 use_attn=True, num_heads=4, dim_head=32)
TINY_DISC = dict(inp_size=(32, 32), model_dim=8, dim_mults=(1, 2), down_step=(None, 2), num_groups=4,
                 num_heads=2, dim_head=8)
VGG_CONVS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


# --------------------------------------------------------------------------------------------- discriminator

def test_seed_disc_kwargs_frames_shapes():
    torch.manual_seed(0)
    disc = Discriminator(**SEED_DISC)
    assert disc(torch.randn(2, 3, 64, 64)).shape == (2,)
    clip_logits = disc(torch.randn(1, 3, 2, 64, 64))  # a clip: one logit per frame
    assert clip_logits.shape == (1, 2) and torch.isfinite(clip_logits).all()


def test_seed_disc_kwargs_video_shapes():
    torch.manual_seed(0)
    disc = Discriminator(**SEED_DISC, discriminate="video")
    logits = disc(torch.randn(1, 3, 2, 64, 64))
    assert logits.shape == (1,) and torch.isfinite(logits).all()


@pytest.mark.parametrize("use_attn", [True, False])
@pytest.mark.parametrize("use_blur", [True, False])
def test_tiny_disc_frames_and_video(use_attn, use_blur):
    torch.manual_seed(0)
    for mode, x, shape in [("frames", torch.randn(3, 3, 32, 32), (3,)),
                           ("frames", torch.randn(2, 3, 4, 32, 32), (2, 4)),
                           ("video", torch.randn(2, 3, 4, 32, 32), (2,)),
                           ("video", torch.randn(2, 3, 1, 32, 32), (2,))]:
        disc = Discriminator(**TINY_DISC, use_attn=use_attn, use_blur=use_blur, discriminate=mode)
        has_attn = any(isinstance(m, SpatialAttention) for m in disc.modules())
        assert has_attn == use_attn
        x = x.requires_grad_()
        logits = disc(x)
        assert logits.shape == shape
        logits.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_frames_mode_clip_equals_per_frame():
    torch.manual_seed(0)
    disc = Discriminator(**TINY_DISC)
    clip = torch.randn(2, 3, 3, 32, 32)
    per_frame = torch.stack([disc(clip[:, :, t]) for t in range(3)], dim=1)  # (B, T)
    torch.testing.assert_close(disc(clip), per_frame, rtol=1e-5, atol=1e-5)


def test_video_mode_sees_time():
    """3D convs: the logit depends on frame order (a frames discriminator could not tell)."""
    torch.manual_seed(0)
    disc = Discriminator(**TINY_DISC, discriminate="video")
    clip = torch.randn(1, 3, 4, 32, 32)
    assert not torch.allclose(disc(clip), disc(clip.flip(2)))


def test_attention_window_and_last_stage():
    # 64x64 seed config: attention at 16x16 only by default; always at least the last stage
    stages = Discriminator(**SEED_DISC).stages
    assert [any(isinstance(m, SpatialAttention) for m in s) for s in stages] == [False, False, True]
    stages = Discriminator(**SEED_DISC, attn_max_tokens=1024).stages
    assert [any(isinstance(m, SpatialAttention) for m in s) for s in stages] == [False, True, True]
    stages = Discriminator(**SEED_DISC, attn_max_tokens=1).stages
    assert any(isinstance(m, FeedForward) for m in stages[-1])


def test_spatial_attention_is_global():
    torch.manual_seed(0)
    attn = SpatialAttention(dim=8, num_heads=2, dim_head=4, num_groups=4)
    x = torch.randn(1, 8, 8, 8)
    y = x.clone()
    y[..., 0, 0] += 1.0
    assert not torch.allclose(attn(x)[..., 7, 7], attn(y)[..., 7, 7])  # far corner sees the change


@pytest.mark.parametrize("bad, msg", [
    (dict(dim_mults=(1, 2), down_step=(None, 2, 2)), "same"),
    (dict(act_fn="swishy"), "act_fn"),
    (dict(discriminate="clips"), "discriminate"),
    (dict(num_groups=3), "num_groups"),
    (dict(model_dim=6, dim_mults=(4, 8)), "num_groups"),
    (dict(kernel_size=4), "odd"),
    (dict(down_step=(None, (2, 2))), "down_step"),
])
def test_disc_bad_args(bad, msg):
    with pytest.raises(ValueError, match=msg):
        Discriminator(**{**TINY_DISC, **bad})


def test_disc_bad_input_shape():
    disc = Discriminator(**TINY_DISC)
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        disc(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="T, H, W"):
        Discriminator(**TINY_DISC, discriminate="video")(torch.randn(1, 3, 32, 32))


# --------------------------------------------------------------------------------------------- GAN losses

def test_hinge_losses():
    good_real, good_fake = torch.tensor([1.5, 2.0]), torch.tensor([-1.0, -3.0])
    assert hinge_d_loss(good_real, good_fake) == 0  # both beyond the margins
    assert torch.isclose(hinge_d_loss(torch.zeros(2), torch.zeros(2)), torch.tensor(2.0))
    assert torch.isclose(hinge_g_loss(torch.tensor([1.0, 3.0])), torch.tensor(-2.0))
    fake = torch.zeros(4, requires_grad=True)
    hinge_g_loss(fake).backward()
    assert (fake.grad < 0).all()  # generator pushes D(fake) up


def test_non_saturating_losses():
    z = torch.zeros(3)
    assert torch.isclose(non_saturating_d_loss(z, z), 2 * torch.log(torch.tensor(2.0)))
    assert non_saturating_g_loss(torch.full((3,), 10.0)) < non_saturating_g_loss(torch.full((3,), -10.0))
    # non-saturating: a confident discriminator still gives the generator a gradient
    fake = torch.full((3,), -10.0, requires_grad=True)
    non_saturating_g_loss(fake).backward()
    assert (fake.grad.abs() > 0.1).all()


def test_adaptive_gan_weight():
    w = torch.randn(4, 4, requires_grad=True)
    out = torch.randn(8, 4) @ w
    rec, gan = out.pow(2).mean(), -out.mean() * 1e-3
    weight = adaptive_gan_weight(rec, gan, w)
    assert weight.ndim == 0 and not weight.requires_grad and 0 < weight.item() <= 1e4
    with torch.no_grad():
        out = torch.randn(8, 4) @ w
        assert adaptive_gan_weight(out.pow(2).mean(), -out.mean(), w).item() == 1.0


def test_sample_frames_shared_indices():
    a = torch.arange(2 * 5, dtype=torch.float).view(2, 1, 5, 1, 1).expand(2, 3, 5, 4, 4)
    fa, fb = sample_frames([a, a * 10], num_frames=2, generator=torch.Generator().manual_seed(0))
    assert fa.shape == (4, 3, 4, 4)
    torch.testing.assert_close(fb, fa * 10)  # same frames picked in both videos
    assert all(0 <= v < 5 for v in fa[:2, 0, 0, 0]) and all(5 <= v < 10 for v in fa[2:, 0, 0, 0])
    assert sample_frames([a], None)[0].shape == (10, 3, 4, 4)


# --------------------------------------------------------------------------------------------- perceptual

def _random_vgg16_state() -> dict[str, torch.Tensor]:
    """torchvision's vgg16 key names, He-scaled random weights, plus one classifier tensor to ignore."""
    g = torch.Generator().manual_seed(0)
    state, idx, in_ch = {}, 0, 3
    for v in VGG_CONVS:
        if v == "M":
            idx += 1
            continue
        state[f"features.{idx}.weight"] = torch.randn(v, in_ch, 3, 3, generator=g) * (2 / (9 * in_ch)) ** 0.5
        state[f"features.{idx}.bias"] = torch.zeros(v)
        idx, in_ch = idx + 2, v
    state["classifier.6.bias"] = torch.zeros(1000)
    return state


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / VGG16_FILE
    torch.save(_random_vgg16_state(), path)
    return path


@pytest.fixture(scope="module")
def perc(vgg_file) -> PerceptualLoss:
    return PerceptualLoss(weights_path=str(vgg_file))


def test_perceptual_loads_features_with_torchvision_names(perc, vgg_file):
    state = torch.load(vgg_file, weights_only=True)
    for name, buf in perc.named_buffers():
        if name.startswith("features."):
            torch.testing.assert_close(buf, state[name])
    # only as deep as features.25: the last two convs are never built
    assert "features.26.weight" not in dict(perc.named_buffers())


def test_perceptual_gradient_to_input_not_weights(perc):
    torch.manual_seed(0)
    target = torch.rand(2, 3, 32, 32) * 2 - 1
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    loss = perc(x, target)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    assert list(perc.parameters()) == []  # frozen: nothing for an optimizer to pick up
    assert all(not b.requires_grad and b.grad is None for b in perc.buffers())
    assert perc.state_dict() == {}  # public VGG weights stay out of tokenizer checkpoints
    assert not perc.train().training  # stays a fixed feature extractor


@pytest.mark.parametrize("normalize", [True, False])
def test_perceptual_identical_zero_different_positive(vgg_file, normalize):
    perc = PerceptualLoss(vgg_file, feat_layers=("features.6", "features.13"), normalize=normalize)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert perc(x, x.clone()).item() < 1e-6
    assert perc(x, torch.rand(2, 3, 32, 32) * 2 - 1).item() > 1e-3
    assert perc(x, (x + 0.1 * torch.randn_like(x)).clamp(-1, 1)) < perc(x, -x)  # closer is smaller


def test_perceptual_video_input(perc):
    torch.manual_seed(0)
    video = torch.rand(1, 3, 3, 32, 32) * 2 - 1
    other = torch.rand(1, 3, 3, 32, 32) * 2 - 1
    folded = perc(video.transpose(1, 2).flatten(0, 1), other.transpose(1, 2).flatten(0, 1))
    torch.testing.assert_close(perc(video, other), folded)  # all frames: same as folding by hand
    perc.num_frames = 1
    try:
        a = perc(video, other, generator=torch.Generator().manual_seed(3))
        b = perc(video, other, generator=torch.Generator().manual_seed(3))
        assert a.item() == b.item() > 0
    finally:
        perc.num_frames = None


def test_perceptual_missing_file_names_path(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "vgg.pth"
    with pytest.raises(GenieError, match=str(missing)):
        PerceptualLoss(weights_path=missing)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    expected = tmp_path / "th" / "hub" / "checkpoints" / VGG16_FILE
    with pytest.raises(GenieError) as err:
        PerceptualLoss()
    assert str(expected) in str(err.value) and "\n" not in str(err.value)
    lazy = PerceptualLoss(lazy=True)  # building for inference needs no file ...
    with pytest.raises(GenieError, match=str(expected)):  # ... using it does
        lazy(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))


def test_perceptual_torch_home_default(tmp_path, monkeypatch, vgg_file):
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    os.symlink(vgg_file, hub / VGG16_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    perc = PerceptualLoss(feat_layers=("features.3",))
    assert perc.loaded and len(perc.features) == 4


class _Payload:
    """Unpickling this would create a directory: a stand-in for code in a malicious pickle."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_perceptual_weights_only_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "x": _Payload(str(marker))}, path)
    with pytest.raises(GenieError, match="weights_only"):
        PerceptualLoss(weights_path=path, feat_layers=("features.1",))
    assert not marker.exists()


def test_perceptual_incomplete_or_bad_files(tmp_path):
    path = tmp_path / "partial.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(GenieError, match="features.0.bias"):
        PerceptualLoss(weights_path=path, feat_layers=("features.1",))
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)}, path)
    with pytest.raises(GenieError, match="shape"):
        PerceptualLoss(weights_path=path, feat_layers=("features.1",))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(GenieError, match="cannot load"):
        PerceptualLoss(weights_path=path, feat_layers=("features.1",))


def test_perceptual_bad_layers_and_inputs(perc):
    with pytest.raises(ValueError, match="features.99"):
        PerceptualLoss(feat_layers=("features.99",), lazy=True)
    with pytest.raises(ValueError, match="classifier"):
        PerceptualLoss(feat_layers=("classifier.1",), lazy=True)
    with pytest.raises(ValueError, match="at least 16x16"):
        perc(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="matching"):
        perc(torch.zeros(1, 3, 32, 32), torch.zeros(2, 3, 32, 32))


def test_bf16_autocast_finite(perc):
    """bf16 autocast is the first CPU/GPU speed lever: both modules must run under it."""
    torch.manual_seed(0)
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = perc(x, torch.rand(2, 3, 32, 32) * 2 - 1)
        logits = Discriminator(**TINY_DISC)(x)
    (loss + logits.float().mean()).backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(x.grad).all()
