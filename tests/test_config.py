"""Config loader and tokenizer config: YAML -> config -> YAML round trips for every preset, errors
that name the key and the file, block specs (unknown blocks/keys, channel flow), presets never
mutated by building a model."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from genie_core.config import GenieConfig, from_dict, list_presets, load_preset, preset_path, to_dict
from genie_core.config.tokenizer import BLOCKS, AdaptiveGroupNormSpec, ResidualSpec, TokenizerConfig
from genie_core.errors import ConfigError


@pytest.mark.parametrize("name", ["tiny", "small", "magvit2"])
def test_yaml_config_yaml_round_trip(name):
    cfg = load_preset(name)
    raw = to_dict(cfg)
    text = yaml.safe_dump(raw, sort_keys=False)
    again = from_dict(GenieConfig, yaml.safe_load(text), source=f"{name} round trip")
    assert again == cfg
    assert to_dict(again) == raw


def test_every_preset_loads():
    names = list_presets()
    assert {"tiny", "small", "magvit2"} <= set(names)
    for name in names:
        assert isinstance(load_preset(name), GenieConfig)


def _write(tmp_path, text: str):
    path = tmp_path / "custom.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_key_and_file(tmp_path):
    path = _write(tmp_path, "inherit: tiny\ntokenizer:\n  d_codebok: 4\n")
    with pytest.raises(ConfigError) as err:
        load_preset(str(path))
    assert "tokenizer.d_codebok" in str(err.value) and str(path) in str(err.value)


def test_wrong_type_names_key_and_file(tmp_path):
    path = _write(tmp_path, "inherit: tiny\ntokenizer:\n  d_codebook: ten\n")
    with pytest.raises(ConfigError) as err:
        load_preset(str(path))
    assert "tokenizer.d_codebook" in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("block, needle", [
    ("[resdual, {}]", "unknown block 'resdual'"),
    ("[residual, {out_chanels: 8}]", "unknown key 'out_chanels'"),
    ("[residual, {num_groups: many}]", "num_groups"),
    ("[residual, {downsample: [1, 2, 3]}]", "downsample"),
    ("residual_please", "unknown block"),
    ("[proj_out, {out_channels: 8, num_groups: 0}]", "num_groups must be >= 1"),
])
def test_bad_blocks_name_the_block_and_file(tmp_path, block, needle):
    path = _write(tmp_path, f"inherit: tiny\ntokenizer:\n  enc_desc:\n    - [causal, {{out_channels: 8}}]\n"
                            f"    - {block}\n    - [proj_out, {{out_channels: 8}}]\n")
    with pytest.raises(ConfigError) as err:
        load_preset(str(path))
    assert needle in str(err.value) and "enc_desc[1]" in str(err.value) and str(path) in str(err.value)


def test_channel_flow_fills_in_and_checks_in_channels():
    cfg = TokenizerConfig(enc_desc=(["causal", {"out_channels": 16}],
                                    ["residual", {"out_channels": 32, "n_rep": 2}],
                                    ["proj_out", {"out_channels": 8}]), d_codebook=8)
    enc, dec = cfg.architecture()
    assert [(b.in_channels, b.out_channels_for(b.in_channels)) for b in enc] == \
        [(3, 16), (16, 32), (32, 32), (32, 8)]
    assert dec[0].in_channels == 8 and dec[-1].out_channels == 3
    with pytest.raises(ValueError, match=r"enc_desc\[1\] \(residual\): in_channels is 64 but enc_desc\[0\] gives 16"):
        TokenizerConfig(enc_desc=(["causal", {"out_channels": 16}],
                                  ["residual", {"in_channels": 64}],
                                  ["proj_out", {"out_channels": 8}]))


def test_config_errors_from_yaml_name_the_section(tmp_path):
    path = _write(tmp_path, "inherit: tiny\ntokenizer:\n  enc_desc:\n    - [causal, {out_channels: 8}]\n"
                            "    - [residual, {in_channels: 12}]\n    - [proj_out, {out_channels: 8}]\n")
    with pytest.raises(ConfigError, match=r"in_channels is 12 but enc_desc\[0\] gives 8"):
        load_preset(str(path))


def test_decoder_must_undo_encoder_and_end_in_rgb():
    enc = (["causal", {"out_channels": 8}], ["residual", {"downsample": 2}], ["proj_out", {"out_channels": 4}])
    with pytest.raises(ValueError, match="encoder/decoder mismatch"):
        TokenizerConfig(enc_desc=enc, d_codebook=4, dec_desc=(["causal", {"out_channels": 8}],
                                                              ["proj_out", {"out_channels": 3}]))
    with pytest.raises(ValueError, match="expected 3"):
        TokenizerConfig(enc_desc=enc, d_codebook=4, dec_desc=(
            ["spacetime_upsample", {"out_channels": 8}], ["proj_out", {"out_channels": 5}]))
    with pytest.raises(ValueError, match="adaptive_group_norm"):
        TokenizerConfig(enc_desc=(["adaptive_group_norm", {}], *enc), d_codebook=4)
    with pytest.raises(ValueError, match="divisible by num_groups"):
        TokenizerConfig(enc_desc=(["causal", {"out_channels": 6}], ["residual", {"num_groups": 4}],
                                  ["proj_out", {"out_channels": 4}]), d_codebook=4)


def test_block_round_trip_and_seed_forms():
    spec = BLOCKS["residual"].from_raw(("residual", {"downsample": (1, 2), "n_rep": 2}), "b", "test")
    assert isinstance(spec, ResidualSpec) and spec.factors == (1, 2)
    assert spec.to_raw() == ["residual", {"n_rep": 2, "downsample": [1, 2]}]
    agn = BLOCKS["adaptive_group_norm"].from_raw(["adaptive_group_norm", {"num_channels": 8, "has_ext": True}], "b", "t")
    assert isinstance(agn, AdaptiveGroupNormSpec) and agn.declared_in == 8
    assert BLOCKS["causal"].from_raw("causal", "b", "t").name == "causal"


def test_set_override_and_disc_section():
    cfg = load_preset("tiny", ["tokenizer.d_codebook=6", "tokenizer.enc_desc=[[causal, {out_channels: 8}], [proj_out, {out_channels: 6}]]"])
    assert cfg.tokenizer.d_codebook == 6 and cfg.tokenizer.latent_channels == 6
    with pytest.raises(ConfigError, match="tokenizer.disc.dim_mults"):
        load_preset("tiny", ["tokenizer.disc.dim_mults=[1, 2, 4]"])
    with pytest.raises(ConfigError, match="gan_discriminate"):
        load_preset("tiny", ["tokenizer.gan_discriminate=clips"])


def test_presets_not_mutated_by_building_models():
    import torch

    from genie_core.models.tokenizer import VideoTokenizer

    text = preset_path("tiny").read_text()
    first = load_preset("tiny")
    tok = VideoTokenizer.from_config(first.tokenizer)
    loss, _ = tok(torch.rand(1, 3, 4, 16, 16) * 2 - 1)
    loss.backward()
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.tokenizer.d_codebook = 3  # type: ignore[misc]
    assert load_preset("tiny") == first
    assert preset_path("tiny").read_text() == text


def test_overrides_are_validated_together_not_in_order():
    # lam's window_overlap must be < context_frames: setting both works in either order.
    a = load_preset("small", ["lam.context_frames=8", "lam.window_overlap=4"])
    b = load_preset("small", ["lam.window_overlap=4", "lam.context_frames=8"])
    assert a == b and a.lam.context_frames == 8 and a.lam.window_overlap == 4


def test_set_on_one_stage_leaves_stages_sharing_a_yaml_anchor(tmp_path):
    """A preset whose stages share one YAML anchor (tiny's ``*tiny_optim``): ``--set`` on one
    stage changes that stage only."""
    path = tmp_path / "anchored.yaml"
    path.write_text("inherit: tiny\ntrain:\n  tokenizer: &opt {steps: 5, lr: 1.0e-3}\n"
                    "  lam: *opt\n  dynamics: *opt\n")
    for preset in ("tiny", str(path)):
        base = load_preset(preset)
        cfg = load_preset(preset, ["train.lam.steps=7", "train.dynamics.compile=true"])
        assert cfg.train.lam.steps == 7 and cfg.train.tokenizer.steps == base.train.tokenizer.steps
        assert cfg.train.dynamics.steps == base.train.dynamics.steps
        assert cfg.train.dynamics.compile and not cfg.train.lam.compile and not cfg.train.tokenizer.compile
