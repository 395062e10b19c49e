"""VideoTokenizer (MagViT-2 after the seed API): golden shapes, causality, batch of one, every loss
term real in train and eval mode, checkpoint round trip, the seed README's example."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import genie_core
from genie_core import MAGVIT2_DEC_DESC, MAGVIT2_ENC_DESC, VideoTokenizer
from genie_core.config import load_preset
from genie_core.config.base import from_dict
from genie_core.config.tokenizer import TokenizerConfig
from genie_core.errors import ConfigError

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

# The seed README's encoder (its missing parenthesis fixed): time /2, space /4, 18 channels.
SEED_ENC_DESC = (
    ("causal", {"in_channels": 3, "out_channels": 64, "kernel_size": 3}),
    ("residual", {"in_channels": 64, "kernel_size": 3, "downsample": (1, 2), "use_causal": True,
                  "use_blur": True}),
    ("residual", {"in_channels": 64, "out_channels": 128}),
    ("residual", {"n_rep": 2, "in_channels": 128}),
    ("residual", {"in_channels": 128, "out_channels": 256, "kernel_size": 3, "downsample": 2,
                  "use_causal": True}),
    ("proj_out", {"in_channels": 256, "out_channels": 18, "num_groups": 8, "kernel_size": 3}),
)


def seed_kwargs(size: int = 64) -> dict:
    """The README's other constructor arguments (frames of ``size`` x ``size``)."""
    return dict(
        disc_kwargs=dict(inp_size=(size, size), model_dim=64, dim_mults=(1, 2, 4), down_step=(None, 2, 2),
                         inp_channels=3, kernel_size=3, num_groups=8, act_fn="leaky", use_blur=True,
                         use_attn=True, num_heads=4, dim_head=32),
        d_codebook=18, n_codebook=1, lfq_bias=True, lfq_frac_sample=1.0, lfq_commit_weight=0.25,
        lfq_entropy_weight=0.1, lfq_diversity_weight=1.0, perceptual_model="vgg16",
        perc_feat_layers=("features.6", "features.13", "features.18", "features.25"),
        gan_discriminate="frames", gan_frames_per_batch=4, gan_loss_weight=1.0, perc_loss_weight=1.0,
        quant_loss_weight=1.0)


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub cache holds a random VGG16 (torchvision key names)."""
    home = tmp_path_factory.mktemp("torch_home")
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    state, idx, in_ch = {}, 0, 3
    for v in VGG16_CFG:
        if v == "M":
            idx += 1
            continue
        state[f"features.{idx}.weight"] = torch.randn(v, in_ch, 3, 3, generator=g) * (2 / (9 * in_ch)) ** 0.5
        state[f"features.{idx}.bias"] = torch.zeros(v)
        idx, in_ch = idx + 2, v
    torch.save(state, ckpt / "vgg16-397923af.pth")
    return home


@pytest.fixture
def vgg(torch_home, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return torch_home


def tiny(**changes) -> VideoTokenizer:
    torch.manual_seed(0)
    cfg = load_preset("tiny").tokenizer
    return VideoTokenizer(dataclasses.replace(cfg, **changes))


def video(b: int = 2, t: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, t, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------------------------ shapes

def test_golden_shapes_tiny():
    tok = tiny()
    x = video()
    assert (tok.time_downsample, tok.space_downsample, tok.code_bits, tok.vocab_size) == (1, 2, 8, 256)
    assert tok.encode(x).shape == (2, 8, 4, 8, 8)
    codes, ids = tok.tokenize(x)
    assert codes.shape == (2, 8, 4, 8, 8) and ids.shape == (2, 4, 8, 8) and ids.dtype == torch.int64
    assert int(ids.min()) >= 0 and int(ids.max()) < tok.vocab_size
    assert torch.equal(tok.ids_to_codes(ids), codes)
    assert tok.decode(codes).shape == x.shape
    assert torch.equal(tok.decode_ids(ids), tok.decode(codes))
    loss, aux, rec = tok.generator_loss(x)
    assert loss.ndim == 0 and rec.shape == x.shape
    d_loss, d_aux = tok.discriminator_loss(x, rec)
    assert d_loss.ndim == 0 and "disc" in d_aux


def test_batch_of_one_keeps_batch_dim():
    tok = tiny().eval()
    codes, ids = tok.tokenize(video(b=1))
    assert codes.shape == (1, 8, 4, 8, 8) and ids.shape == (1, 4, 8, 8)
    assert tok.decode_ids(ids).shape == (1, 3, 4, 16, 16)


def test_tokenize_leaves_mode_and_is_deterministic():
    tok = tiny().train()
    x = video()
    a, b = tok.tokenize(x)[1], tok.tokenize(x)[1]
    assert tok.training and torch.equal(a, b)


def test_odd_frame_count_reconstructs_same_length():
    torch.manual_seed(0)
    cfg = dataclasses.replace(load_preset("tiny").tokenizer, enc_desc=(
        ("causal", {"in_channels": 3, "out_channels": 8}),
        ("residual", {"out_channels": 16, "downsample": [2, 2], "num_groups": 4}),
        ("proj_out", {"out_channels": 6, "num_groups": 4})), d_codebook=6)
    tok = VideoTokenizer(cfg).eval()
    x = video(t=5)
    assert tok.tokenize(x)[1].shape == (2, 3, 8, 8)
    assert tok.reconstruct(x).shape == x.shape
    assert tok.generator_loss(x)[2].shape == x.shape


# --------------------------------------------------------------------------------- causality

# A MAGVIT2-shaped encoder (same block kinds and factors: time /4, space /8) at 1/16 the width.
NARROW_MAGVIT2 = [
    ("causal", {"out_channels": 8}),
    ("residual", {"n_rep": 2}),
    ("spacetime_downsample", {"time_factor": 1, "space_factor": 2}),
    ("residual", {"out_channels": 16}),
    ("spacetime_downsample", {"time_factor": 2, "space_factor": 2}),
    ("residual", {"n_rep": 2}),
    ("spacetime_downsample", {"time_factor": 2, "space_factor": 2}),
    ("residual", {"out_channels": 32}),
    ("proj_out", {"out_channels": 6, "num_groups": 2}),
]
BLUR_TIME_DOWN = [
    ("causal", {"out_channels": 8}),
    ("residual", {"out_channels": 16, "downsample": [2, 2], "use_blur": True}),
    ("residual", {"downsample": [2, 1], "use_blur": False}),
    ("proj_out", {"out_channels": 6}),
]


def _group_of(t: int, T: int, f: int) -> int:
    """The latent frame whose group holds frame t: groups of f counted back from frame T - 1
    (latent j ends at T - 1 - (n - 1 - j) f); t // f when f divides T."""
    n = -(-T // f)
    return n - 1 - (T - 1 - t) // f


def _check_encoder_causal(tok: VideoTokenizer, x: torch.Tensor, frames=None) -> None:
    """Change frame t: the latent frame of t's group moves, and every latent frame whose group
    ends before t stays bit for bit."""
    f, T = tok.time_downsample, x.shape[2]
    tok.eval()
    with torch.no_grad():
        base = tok.encode(x)
        assert base.shape[2] == -(-T // f)
        for t in frames if frames is not None else range(T):
            y = x.clone()
            y[:, :, t] = torch.rand_like(y[:, :, t]) * 2 - 1
            out = tok.encode(y)
            first_affected = _group_of(t, T, f)
            assert torch.equal(out[:, :, :first_affected], base[:, :, :first_affected]), t
            assert not torch.equal(out[:, :, first_affected], base[:, :, first_affected]), t


@pytest.mark.parametrize("desc", [None, "small", NARROW_MAGVIT2, BLUR_TIME_DOWN],
                         ids=["tiny", "small", "magvit2-narrow", "blur-time"])
def test_encoder_is_causal(desc):
    if desc is None:
        tok, x = tiny(), video(t=6)
    elif desc == "small":
        torch.manual_seed(0)
        tok = VideoTokenizer.from_preset("small")
        _check_encoder_causal(tok, video(b=1, t=6, size=64), frames=[0, 3, 5])
        return
    else:
        torch.manual_seed(0)
        tok = VideoTokenizer(enc_desc=desc, d_codebook=6)
        x = video(b=1, t=8, size=16)
    _check_encoder_causal(tok, x)


@pytest.mark.parametrize("desc", [NARROW_MAGVIT2, BLUR_TIME_DOWN], ids=["magvit2-narrow", "blur-time"])
@pytest.mark.parametrize("T", [16, 17, 18, 5])
def test_last_frame_reaches_the_last_latent_only(desc, T):
    """Time /4 on any frame count: perturbing the last frame moves the last latent frame and
    nothing before it; every other frame moves its own group's latent and none ending before it;
    the decoder's output, trimmed at the front, has the input's length."""
    torch.manual_seed(0)
    tok = VideoTokenizer(enc_desc=desc, d_codebook=6).eval()
    assert tok.time_downsample == 4
    x = video(b=1, t=T, size=16)
    n = -(-T // 4)
    with torch.no_grad():
        base = tok.encode(x)
        y = x.clone()
        y[:, :, -1] = -y[:, :, -1]
        out = tok.encode(y)
    assert base.shape[2] == n
    assert torch.equal(out[:, :, :-1], base[:, :, :-1])
    assert (out[:, :, -1] - base[:, :, -1]).abs().max() > 1e-4
    _check_encoder_causal(tok, x)
    if T % 4 == 1:  # MagViT-2's grouping: the first latent frame is frame 0 alone
        assert [_group_of(t, T, 4) for t in range(6)] == [0, 1, 1, 1, 1, 2]
    assert tok.decode(tok.tokenize(x)[0]).shape[2] == 4 * n
    assert tok.reconstruct(x).shape == x.shape


def test_bad_arguments_are_value_errors():
    """Bad arguments through the library API are ValueErrors (and GenieErrors)."""
    from genie_core.errors import GenieError
    from genie_core.runtime import autocast, resolve_device, valid_seed
    from genie_core.tasks.tokenize import _round_window

    with pytest.raises(ValueError, match=r"time by 2 and space by 4") as err:
        VideoTokenizer(enc_desc=SEED_ENC_DESC, dec_desc=MAGVIT2_DEC_DESC, **seed_kwargs())
    assert isinstance(err.value, ConfigError) and isinstance(err.value, GenieError)
    # a nested config error keeps its one message (not wrapped a second time as a ValueError)
    with pytest.raises(ValueError) as err:
        VideoTokenizer(enc_desc=[("causal", {"out_channels": 8, "bogus": 1}),
                                 ("proj_out", {"out_channels": 6})], d_codebook=6)
    assert str(err.value) == ("VideoTokenizer(...): 'enc_desc[0]' (causal): unknown key 'bogus' "
                              "(known: n_rep, in_channels, out_channels, kernel_size, pad_mode)")
    tok = tiny()
    for bad in (torch.zeros(1, 3, 2, 15, 16), torch.zeros(1, 4, 2, 16, 16)):
        with pytest.raises(ValueError) as err:
            tok.encode(bad)
        assert isinstance(err.value, GenieError)
    for call in (lambda: resolve_device("tpu"), lambda: autocast(torch.device("cpu"), "fp8"),
                 lambda: valid_seed(-1), lambda: _round_window(0, 4)):
        with pytest.raises(ValueError) as err:
            call()
        assert isinstance(err.value, GenieError)


def test_decoder_is_causal():
    """Decoded frame i depends on latent frames <= i // f only (upsampling adds no look-ahead)."""
    torch.manual_seed(0)
    tok = VideoTokenizer(enc_desc=NARROW_MAGVIT2, d_codebook=6).eval()
    codes, _ = tok.tokenize(video(b=1, t=8))
    f = tok.time_downsample
    with torch.no_grad():
        base = tok.decode(codes)
        for j in range(codes.shape[2]):
            c = codes.clone()
            c[:, :, j] = -c[:, :, j]
            out = tok.decode(c)
            assert torch.equal(out[:, :, :j * f], base[:, :, :j * f]), j
            assert not torch.equal(out[:, :, j * f], base[:, :, j * f]), j


@pytest.mark.parametrize("preset", ["small", "quickstart", "magvit2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_last_frame_is_the_full_decodes_last(preset, dtype):
    """decode(last=True) runs only the newest frame through the decoder's frame-by-frame tail and
    gives exactly the last frame of the full decode (play and evaluate draw one frame a step)."""
    from genie_core.models.world import inference_tokenizer_config

    torch.manual_seed(0)
    tok = VideoTokenizer.from_config(inference_tokenizer_config(load_preset(preset).tokenizer)).eval().to(dtype)
    h, w = 4, 4
    codes = torch.where(torch.randn(2, tok.config.d_codebook, 3, h, w) > 0, 1.0, -1.0).to(dtype)
    with torch.no_grad():
        full, last = tok.decode(codes), tok.decode(codes, last=True)
    assert last.shape == (*full.shape[:2], 1, *full.shape[3:])
    assert torch.equal(last, full[:, :, -1:])
    # small: only the first block (a causal conv with a time kernel) sees every frame.
    assert tok._frame_local_from == {"small": 1, "quickstart": 0, "magvit2": len(tok.decoder)}[preset]


def test_decode_last_after_time_upsampling_reads_the_last_latent_frame():
    """A decoder that upsamples time before its frame-local tail: the newest frame comes from the
    newest latent frame through the adaptive norm's conditioning (randomised, so it matters)."""
    enc = [("causal", {"out_channels": 8}),
           ("spacetime_downsample", {"time_factor": 2, "space_factor": 2}),
           ("residual", {"out_channels": 16}),
           ("proj_out", {"out_channels": 6, "num_groups": 2})]
    dec = [("causal", {"in_channels": 6, "out_channels": 16}),
           ("residual", {"num_groups": 2}),
           ("time_upsample", {"factor": 2}),
           ("adaptive_group_norm", {"num_groups": 2}),
           ("residual", {"num_groups": 2, "kernel_size": [1, 3, 3]}),
           ("spacetime_upsample", {"out_channels": 8, "kernel_size": [1, 3, 3], "time_factor": 1, "space_factor": 2}),
           ("proj_out", {"out_channels": 3, "num_groups": 2, "kernel_size": [1, 3, 3]})]
    torch.manual_seed(0)
    tok = VideoTokenizer(enc_desc=enc, dec_desc=dec, d_codebook=6).eval()
    with torch.no_grad():
        for p in tok.decoder[3].parameters():  # adaptive norm: zero-initialised, make it matter
            p.normal_()
    assert tok._frame_local_from == 3  # the blocks after the time upsampling
    codes = torch.where(torch.randn(2, 6, 3, 4, 4) > 0, 1.0, -1.0)
    with torch.no_grad():
        full, last = tok.decode(codes), tok.decode(codes, last=True)
        other = codes.clone()
        other[:, :, -1] = -other[:, :, -1]
        changed = tok.decode(other, last=True)
    assert full.shape[2] == 6 and last.shape[2] == 1
    assert torch.equal(last, full[:, :, -1:])
    assert not torch.equal(changed, last)  # the last latent frame reaches the last frame


def test_decode_last_runs_one_frame_past_the_split():
    """The blocks after the split see one frame: what makes the last-frame decode cheaper."""
    from genie_core.models.world import inference_tokenizer_config

    tok = VideoTokenizer.from_config(inference_tokenizer_config(load_preset("small").tokenizer)).eval()
    seen: list[int] = []
    hooks = [b.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[2])) for b in tok.decoder]
    codes = torch.ones(1, tok.config.d_codebook, 2, 4, 4)
    with torch.no_grad():
        tok.decode(codes, last=True)
    for hk in hooks:
        hk.remove()
    assert seen == [2] + [1] * (len(tok.decoder) - 1)


def test_non_causal_encoder_block_rejected():
    with pytest.raises(ConfigError, match="use_causal"):
        VideoTokenizer(enc_desc=[("causal", {"out_channels": 8}),
                                 ("residual", {"use_causal": False}),
                                 ("proj_out", {"out_channels": 4})], d_codebook=4)


# ------------------------------------------------------------------------------------ losses

@pytest.mark.parametrize("train", [True, False])
def test_every_loss_term_nonzero_train_and_eval(vgg, train):
    tok = tiny(perceptual_model="vgg16").train(train)
    x = video()
    with torch.set_grad_enabled(train):
        loss, aux = tok(x)
    expected = {"rec", "quant", "commit", "entropy", "sample_entropy", "codebook_entropy", "perc",
                "gan", "gan_weight", "loss", "disc"}
    assert expected <= set(aux)
    for name, value in aux.items():
        assert value.ndim == 0 and torch.isfinite(value) and value.item() != 0.0, name
    if train:
        loss.backward()
        assert all(p.grad is not None for p in tok.encoder.parameters())


def test_perceptual_gradient_flows_to_generator(vgg):
    tok = tiny(perceptual_model="vgg16", disc=None)
    _, aux, _ = tok.generator_loss(video())
    aux["perc"].backward()
    grads = [p.grad for p in tok.decoder.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0


def test_perceptual_off_by_weight_or_model(vgg):
    for tok in (tiny(perceptual_model="vgg16", perc_loss_weight=0.0), tiny(perceptual_model=None)):
        assert tok.perceptual is None
        loss, aux = tok(video())
        assert "perc" not in aux and torch.isfinite(loss)


def test_missing_vgg_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    tok = tiny(perceptual_model="vgg16")  # building for inference needs no file
    tok.tokenize(video())
    with pytest.raises(genie_core.errors.GenieError, match="vgg16-397923af.pth"):
        tok(video())


def test_no_gan_without_disc_or_weight():
    for tok in (tiny(disc=None), tiny(gan_loss_weight=0.0)):
        assert tok.discriminator is None
        _, aux = tok(video())
        assert "gan" not in aux
        with pytest.raises(genie_core.errors.GenieError, match="no discriminator"):
            tok.discriminator_loss(video(), video())


def test_generator_parameters_exclude_discriminator():
    tok = tiny()
    gen = {id(p) for p in tok.generator_parameters()}
    disc = {id(p) for p in tok.discriminator.parameters()}
    assert gen and disc and not gen & disc
    assert gen | disc == {id(p) for p in tok.parameters()}


def smooth_video(t: int = 4, size: int = 16) -> torch.Tensor:
    """(1, 3, T, H, W): colour ramps with a bright square moving right: structure a small
    bottleneck can learn (uniform noise cannot be reconstructed from 8 bits per 2x2 patch)."""
    ramp = torch.linspace(-0.8, 0.8, size)
    frame = torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size),
                         -ramp[None, :].expand(size, size)])
    clip = frame[:, None].repeat(1, t, 1, 1).clone()
    for i in range(t):
        clip[:, i, 4:8, 2 + 2 * i:6 + 2 * i] = 0.9
    return clip[None]


def test_overfit_one_batch():
    tok = tiny(disc=None)
    x = smooth_video()
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    first = None
    for _ in range(12):
        loss, aux, _ = tok.generator_loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = aux["rec"].item() if first is None else first
    assert aux["rec"].item() < 0.5 * first


# -------------------------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip(tmp_path):
    tok = tiny().eval()
    with torch.no_grad():  # move the weights off their init, including the adaptive norms
        for p in tok.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / "tok.safetensors"
    tok.save(path, step=7)
    loaded = genie_core.load_checkpoint(path)
    assert isinstance(loaded, VideoTokenizer) and loaded.checkpoint_step == 7
    assert loaded.config == tok.config
    x = video()
    codes, ids = tok.tokenize(x)
    codes2, ids2 = loaded.tokenize(x)
    assert torch.equal(ids, ids2)
    with torch.no_grad():
        assert torch.equal(tok.decode(codes), loaded.decode(codes2))
        assert torch.equal(tok(x)[0], loaded(x)[0])


def test_from_preset_and_presets_not_mutated():
    before = load_preset("tiny")
    tok = VideoTokenizer.from_preset("tiny")
    loss, _ = tok(video())
    loss.backward()
    assert load_preset("tiny") == before
    assert tok.config == before.tokenizer
    assert MAGVIT2_ENC_DESC[1][1]["n_rep"] == 4
    with pytest.raises(TypeError):
        MAGVIT2_ENC_DESC[1][1]["n_rep"] = 1  # read-only: nobody can change the shared constant


# --------------------------------------------------------------------------- seed API (issue §5)

def test_seed_a_pairing_mismatch_fails_at_construction():
    with pytest.raises(ConfigError, match=r"time by 2 and space by 4.*time by 4 and space by 8"):
        VideoTokenizer(enc_desc=SEED_ENC_DESC, dec_desc=MAGVIT2_DEC_DESC, **seed_kwargs())


def test_seed_b_mirrored_decoder_fast(vgg):
    """The README example with dec_desc left out, on 16 x 16 frames (full size: slow test)."""
    torch.manual_seed(0)
    tok = VideoTokenizer(enc_desc=SEED_ENC_DESC, **seed_kwargs(size=16))
    x = torch.randn(2, 3, 4, 16, 16)
    tokens, idxs = tok.tokenize(x)
    assert tokens.shape == (2, 18, 2, 4, 4) and idxs.shape == (2, 2, 4, 4)
    assert tok.decode(tokens).shape == x.shape
    loss, aux_losses = tok(x)
    loss.backward()
    assert all(torch.isfinite(v) for v in aux_losses.values())


@pytest.mark.slow
def test_seed_b_mirrored_decoder_full(vgg):
    torch.manual_seed(0)
    tok = VideoTokenizer(enc_desc=SEED_ENC_DESC, **seed_kwargs())
    x = torch.randn(2, 3, 16, 64, 64)
    tokens, idxs = tok.tokenize(x)
    assert tokens.shape == (2, 18, 8, 16, 16) and idxs.shape == (2, 8, 16, 16)
    assert tok.decode(tokens).shape == (2, 3, 16, 64, 64)
    loss, _ = tok(x)
    loss.backward()


def test_seed_c_magvit2_config_fast():
    """MAGVIT2 enc + dec as a config (building the 370M-parameter model is the slow test)."""
    cfg = from_dict(TokenizerConfig, {"enc_desc": MAGVIT2_ENC_DESC, "dec_desc": MAGVIT2_DEC_DESC,
                                      "d_codebook": 18})
    assert (cfg.time_downsample, cfg.space_downsample, cfg.latent_channels) == (4, 8, 18)
    assert load_preset("magvit2").tokenizer.architecture() == cfg.architecture()


@pytest.mark.slow
def test_seed_c_magvit2_round_trip_full(vgg):
    torch.manual_seed(0)
    kwargs = seed_kwargs()
    tok = VideoTokenizer(enc_desc=MAGVIT2_ENC_DESC, dec_desc=MAGVIT2_DEC_DESC, **kwargs)
    x = torch.randn(1, 3, 16, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tokens, idxs = tok.tokenize(x)
        assert tokens.shape == (1, 18, 4, 8, 8) and idxs.shape == (1, 4, 8, 8)
        assert tok.decode(tokens).shape == (1, 3, 16, 64, 64)
        loss, _ = tok(x)
    loss.backward()
    _check_encoder_causal(tok, torch.randn(1, 3, 8, 16, 16))


def test_mirrored_decoder_structure():
    # causal(3 -> C) first: the mirror ends in proj_out(C -> 3)
    enc, dec = load_preset("tiny").tokenizer.architecture()
    assert [b.name for b in dec] == ["causal", "residual", "spacetime_upsample",
                                     "adaptive_group_norm", "residual", "proj_out"]
    assert dec[0].in_channels == enc[-1].out_channels and dec[-1].out_channels == 3
    # patchifying strided conv first: the mirror ends in a depth-to-space upsample to RGB
    small = load_preset("small").tokenizer  # its encoder, mirrored (the preset names its decoder)
    enc, dec = dataclasses.replace(small, dec_desc=None).architecture()
    names = [b.name for b in dec]
    assert names[0] == "causal" and names[-1] == "spacetime_upsample" and dec[-1].out_channels == 3
    assert names.count("spacetime_upsample") == 2 and names.count("adaptive_group_norm") == 1
    assert [b.in_channels for b in dec if b.name == "residual"] == \
        [b.out_channels for b in reversed(enc) if b.name == "residual"]


def test_time_compressing_stage_validates_clips_of_any_length(clip_dir, tmp_path):
    """A time-/4 tokenizer on 5-frame clips (not a multiple of 4) trains through the stage: the
    validation pass trims the decoder's 8 frames to the clips' 5 and scores them."""
    from genie_core.training.stages.tokenizer import TokenizerStage
    from genie_core.training.train import train

    cfg = load_preset("tiny", ["data.num_frames=5", "train.tokenizer.steps=2",
                               "train.tokenizer.eval_every=2", "train.tokenizer.save_every=2"])
    cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(
        cfg.tokenizer, enc_desc=BLUR_TIME_DOWN, d_codebook=6, disc=None))
    result = train(cfg, clip_dir, tmp_path / "run", device="cpu")["tokenizer"]
    assert 0 < result["psnr"] < 100 and 0 < result["codebook_usage"] <= 1
    torch.manual_seed(0)
    tok = VideoTokenizer(cfg.tokenizer).eval()
    frames = torch.randint(0, 256, (2, 5, 16, 16, 3), dtype=torch.uint8)
    real, rec, ids = TokenizerStage._reconstruct(None, tok, frames)  # self is not used
    assert real.shape == rec.shape == (2, 3, 5, 16, 16) and ids.shape == (2, 2, 8, 8)
    expected = (tok.reconstruct(real * 2 - 1).float().clamp(-1, 1) + 1) / 2
    assert torch.allclose(rec, expected, atol=1e-6)
