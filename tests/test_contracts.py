"""Contract tests: files written once by an earlier genie (``tests/fixtures/``, see its
``make_fixtures.py``) still load with the current code, strictly, and still compute what they
computed then. Every other round-trip test saves and loads with the same code, so a renamed
submodule, tensor or metadata field would pass them and orphan every saved checkpoint; here it
fails. A deliberate format change rewrites the fixtures (and bumps the format version)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from genie_core.config import GenieConfig, from_dict, load_preset, to_dict
from genie_core.errors import CheckpointError
from genie_core.io.checkpoint_format import read_header, read_metadata
from genie_core.models.load import load_checkpoint
from genie_core.version import ACTION_FORMAT_VERSION, CHECKPOINT_FORMAT_VERSION, TOKEN_FORMAT_VERSION

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
KINDS = ("tokenizer", "lam", "dynamics", "world")
TOL = dict(rtol=1e-4, atol=1e-4)

# The metadata a checkpoint carries (save_checkpoint), and what each writer adds.
CHECKPOINT_META = {"format_version", "kind", "config", "step", "genie_version"}
EXTRA_META = {"tokenizer": {"data"}, "lam": set(), "dynamics": set(), "world": set()}
TOKEN_META = {"format_version", "source", "fps", "num_frames", "frame_size", "source_size",
              "tokenizer", "tokenizer_digest", "time_downsample", "space_downsample", "vocab_size",
              "window", "window_warmup", "precision", "token_shape", "genie_version"}
ACTION_META = {"source", "fps", "num_frames", "frame_size", "num_actions", "checkpoint",
               "checkpoint_digest", "window", "overlap", "format_version", "genie_version"}
TRAIN_STATE = {"stage", "step", "elapsed", "wall", "world_size", "seed", "data"}


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "expected.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _video(expected: dict[str, np.ndarray]) -> torch.Tensor:
    from genie_core.io.frames import to_model
    return to_model(expected["frames"][None])  # (1, 3, T, H, W)


def _fresh_model(kind: str, config: dict) -> torch.nn.Module:
    """A model of ``kind`` built by today's classes from a stored config (no weights read)."""
    from genie_core.models.load import model_class
    from genie_core.models.world import WorldConfig

    cls = model_class(kind)
    if kind == "world":
        return cls.from_config(from_dict(WorldConfig, config, source="fixture"))
    return cls.from_config(from_dict(cls.config_class(), config, source="fixture"))


# ---- checkpoints -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_metadata_fields(kind: str) -> None:
    meta = read_metadata(FIXTURES / f"{kind}.safetensors")
    assert set(meta) == CHECKPOINT_META | EXTRA_META[kind]
    assert meta["format_version"] == CHECKPOINT_FORMAT_VERSION == "1"
    assert meta["kind"] == kind and meta["step"] == "0"
    assert isinstance(json.loads(meta["config"]), dict)
    if kind == "world":
        assert set(json.loads(meta["config"])) == {"resolution", "tokenizer", "lam", "dynamics"}
    if kind == "tokenizer":  # what training records about its data (api reads the frame size)
        assert json.loads(meta["data"])["resolution"] == MANIFEST["resolution"]


@pytest.mark.parametrize("kind", KINDS)
def test_tensor_names_and_shapes_match_todays_model(kind: str) -> None:
    meta, specs = read_header(FIXTURES / f"{kind}.safetensors")
    model = _fresh_model(kind, json.loads(meta["config"]))
    state = model.bundle_state() if kind == "world" else model.state_dict()
    want = {k: tuple(v.shape) for k, v in state.items()}
    got = {k: shape for k, (_, shape) in specs.items()}
    missing, unexpected = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
    assert not missing and not unexpected, f"{kind}: missing {missing[:5]}, unexpected {unexpected[:5]}"
    assert got == want
    assert {dtype for dtype, _ in specs.values()} <= {"F32", "I64", "BOOL"}


def test_unknown_format_version_is_refused_in_one_line(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    meta = read_metadata(FIXTURES / "lam.safetensors")
    path = tmp_path / "future.safetensors"
    save_file(load_file(FIXTURES / "lam.safetensors"), str(path), metadata={**meta, "format_version": "99"})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "'99'" in str(err.value) and "\n" not in str(err.value)


def test_tokenizer_checkpoint_decodes_and_encodes_as_before(expected: dict) -> None:
    tok = load_checkpoint(FIXTURES / "tokenizer.safetensors", expect_kind="tokenizer")
    with torch.no_grad():
        decoded = tok.decode_ids(torch.as_tensor(expected["tok_ids"]))
        latents = tok.encode(_video(expected))
    np.testing.assert_allclose(decoded.numpy(), expected["tok_decoded"], **TOL)
    np.testing.assert_allclose(latents.numpy(), expected["tok_latents"], **TOL)
    assert tok.vocab_size == 16 and tok.space_downsample == 2 and tok.time_downsample == 1


def test_lam_checkpoint_encodes_and_decodes_as_before(expected: dict) -> None:
    lam = load_checkpoint(FIXTURES / "lam.safetensors", expect_kind="lam")
    video = _video(expected)
    with torch.no_grad():
        latents = lam.encode(video)
        decoded = lam.decode_ids(video[:, :, :-1], torch.as_tensor(expected["lam_ids"]))
    np.testing.assert_allclose(latents.numpy(), expected["lam_latents"], **TOL)
    np.testing.assert_allclose(decoded.numpy(), expected["lam_decoded"], **TOL)
    assert tuple(lam.config.resolution) == tuple(MANIFEST["resolution"])


def test_dynamics_checkpoint_logits_as_before(expected: dict) -> None:
    dyn = load_checkpoint(FIXTURES / "dynamics.safetensors", expect_kind="dynamics")
    with torch.no_grad():
        logits = dyn(torch.as_tensor(expected["dyn_ids"]), torch.as_tensor(expected["dyn_actions"]))
    groups = sorted(k for k in expected if k.startswith("dyn_logits_"))
    assert len(logits) == len(groups) >= 1
    for got, name in zip(logits, groups):
        np.testing.assert_allclose(got.numpy(), expected[name], **TOL)


def test_world_bundle_loads_whole_and_by_part(expected: dict) -> None:
    from genie_core.models.load import load_model
    from genie_core.models.world import World

    world = load_checkpoint(FIXTURES / "world.safetensors", expect_kind="world")
    assert isinstance(world, World) and world.resolution == tuple(MANIFEST["resolution"])
    assert world.num_actions == 4
    video = _video(expected)
    ids, acts = torch.as_tensor(expected["dyn_ids"]), torch.as_tensor(expected["dyn_actions"])
    for source in (world, None):  # the whole bundle, then each part on its own
        part = (lambda name: getattr(world, name)) if source else (
            lambda name: load_model(FIXTURES / "world.safetensors", name))
        with torch.no_grad():
            np.testing.assert_allclose(part("tokenizer").decode_ids(torch.as_tensor(expected["tok_ids"])).numpy(),
                                       expected["world_decoded"], **TOL)
            np.testing.assert_allclose(part("lam").encode(video).numpy(), expected["world_lam_latents"], **TOL)
            np.testing.assert_allclose(part("dynamics")(ids, acts)[0].numpy(), expected["world_logits_0"], **TOL)


def test_world_bundle_rollout_as_before(expected: dict) -> None:
    world = load_checkpoint(FIXTURES / "world.safetensors")
    world.precision = "fp32"
    frames = world.rollout(expected["frames"][:1], expected["world_actions"], seed=0)
    want = expected["world_rollout"]
    assert frames.shape == want.shape == (1, 4, 16, 16, 3) and frames.dtype == np.uint8
    diff = np.abs(frames.astype(int) - want.astype(int))
    assert (diff <= 2).mean() >= 0.99, f"{(diff > 2).mean():.3%} of pixels moved by more than 2"


def test_loaders_the_commands_use_accept_the_fixtures(expected: dict) -> None:
    from genie_core.io.tokens import file_digest
    from genie_core.tasks.infer_actions import load_lam
    from genie_core.tasks.tokenize import load_tokenizer

    for path in ("tokenizer.safetensors", "world.safetensors"):
        tok = load_tokenizer(FIXTURES / path, device="cpu")
        assert tok.resolution == tuple(MANIFEST["resolution"]) and tok.digest == file_digest(FIXTURES / path)
    lam = load_lam(FIXTURES / "lam.safetensors", device="cpu")
    world_lam = load_lam(world=FIXTURES / "world.safetensors", device="cpu")
    with torch.no_grad():
        np.testing.assert_allclose(lam.model.encode(_video(expected)).numpy(), expected["lam_latents"], **TOL)
        np.testing.assert_allclose(world_lam.model.encode(_video(expected)).numpy(),
                                   expected["world_lam_latents"], **TOL)


# ---- token and action files --------------------------------------------------------------------

def test_token_file_fields_and_ids() -> None:
    from genie_core.io.tokens import file_digest, load_tokens

    with np.load(FIXTURES / "tokens.npz", allow_pickle=False) as raw:
        assert sorted(raw.files) == ["meta", "tokens"]
        assert raw["tokens"].dtype == np.int32 and raw["meta"].dtype.kind == "U"
    ids, meta = load_tokens(FIXTURES / "tokens.npz")
    assert set(meta) == TOKEN_META
    assert meta["format_version"] == TOKEN_FORMAT_VERSION == "1"
    assert ids.shape == (6, 8, 8) == tuple(meta["token_shape"]) and ids.dtype == np.int64
    assert meta["frame_size"] == MANIFEST["resolution"] and meta["num_frames"] == 6
    assert meta["vocab_size"] == 16 and meta["tokenizer"] == "tokenizer.safetensors"
    assert meta["tokenizer_digest"] == file_digest(FIXTURES / "tokenizer.safetensors")


def test_token_file_ids_are_todays_tokens_of_the_clip(expected: dict) -> None:
    from genie_core.io.tokens import load_tokens
    from genie_core.tasks.tokenize import load_tokenizer, tokenize_video

    stored, stored_meta = load_tokens(FIXTURES / "tokens.npz")
    tok = load_tokenizer(FIXTURES / "tokenizer.safetensors", device="cpu")
    with torch.no_grad():
        _, ids = tok.model.tokenize(_video(expected))
    np.testing.assert_array_equal(ids[0].numpy(), stored)
    now, meta = tokenize_video(tok, FIXTURES / "clip.gif", precision="fp32")  # what tokenize writes today
    np.testing.assert_array_equal(now, stored)
    assert set(meta) | {"token_shape"} == set(stored_meta)  # save_tokens adds token_shape


@pytest.mark.parametrize("name", ["actions.json", "actions.npz"])
def test_action_files_fields_and_actions(name: str, expected: dict) -> None:
    from genie_core.tasks.infer_actions import infer_video_actions, load_actions, load_lam

    actions, meta = load_actions(FIXTURES / name)
    assert set(meta) == ACTION_META and meta["format_version"] == ACTION_FORMAT_VERSION == "1"
    assert meta["num_frames"] == 6 and actions.shape == (5,) and meta["num_actions"] == 4
    if name.endswith(".json"):
        assert set(json.loads((FIXTURES / name).read_text())) == ACTION_META | {"actions"}
    else:
        with np.load(FIXTURES / name, allow_pickle=False) as raw:
            assert sorted(raw.files) == ["actions", "meta"] and raw["actions"].dtype == np.int32
    lam = load_lam(FIXTURES / "lam.safetensors", device="cpu")
    with torch.no_grad():
        np.testing.assert_array_equal(lam.model.infer_actions(_video(expected))[0].numpy(), actions)
    now, now_meta = infer_video_actions(lam, FIXTURES / "clip.gif")
    np.testing.assert_array_equal(now, actions)
    assert set(now_meta) | {"format_version"} == ACTION_META  # save_actions adds format_version
    assert len(set(actions.tolist())) > 1  # the fixture's LAM tells the transitions apart


# ---- a training run folder (what --resume reads) -----------------------------------------------

def test_run_folder_resumes_with_todays_config() -> None:
    from genie_core.training.resume import STATE_FILE, check_resumable, train_state_info

    stage_dir = FIXTURES / "run" / "lam"
    cfg = load_preset(MANIFEST["preset"], MANIFEST["overrides"])
    assert check_resumable(cfg, stage_dir, "lam") is True
    saved = from_dict(GenieConfig, yaml.safe_load((FIXTURES / "run" / "config.yaml").read_text()),
                      source="config.yaml")
    assert saved.name == cfg.name and to_dict(saved.lam) == to_dict(cfg.lam)
    meta = read_metadata(stage_dir / STATE_FILE)
    assert set(meta) == CHECKPOINT_META | {"train_state"} and meta["kind"] == "train_state"
    info = train_state_info(stage_dir / STATE_FILE, meta)
    assert set(info) == TRAIN_STATE and info["stage"] == "lam" and info["step"] == 2
    with pytest.raises(Exception, match="lam.model_dim"):  # another model is not this run
        check_resumable(load_preset(MANIFEST["preset"], [*MANIFEST["overrides"], "lam.model_dim=32"]),
                        stage_dir, "lam")
    # A setting newer than the run (absent from its config) matches at its default only.
    assert "spatial_positions" not in yaml.safe_load((FIXTURES / "run" / "config.yaml").read_text())["lam"]
    with pytest.raises(Exception, match="lam.spatial_positions"):
        check_resumable(load_preset(MANIFEST["preset"], [*MANIFEST["overrides"],
                                                         "lam.spatial_positions=rotary"]), stage_dir, "lam")


def test_dynamics_settings_of_an_older_run_match_todays_derived_ones() -> None:
    """The fixture run's config states dynamics.code_bits/token_size/num_actions (as presets did);
    today's preset derives them: a dynamics stage of such a run still resumes, and a setting
    that is one (model_dim) is still compared."""
    from genie_core.training.resume import exactness_settings, saved_exactness_settings

    saved = yaml.safe_load((FIXTURES / "run" / "config.yaml").read_text())
    assert saved["dynamics"].get("code_bits") is not None  # the old form, stated
    now = to_dict(load_preset(MANIFEST["preset"], MANIFEST["overrides"]))
    assert saved_exactness_settings(saved, "dynamics") == exactness_settings(now, "dynamics")
    other = to_dict(load_preset(MANIFEST["preset"], [*MANIFEST["overrides"], "dynamics.model_dim=32"]))
    assert exactness_settings(saved, "dynamics") != exactness_settings(other, "dynamics")


def test_run_folder_state_loads_into_todays_model_and_optimiser() -> None:
    from genie_core.io.checkpoint_format import read_checkpoint
    from genie_core.training.optim import adamw, load_optimizer
    from genie_core.training.resume import STATE_FILE

    stage_dir = FIXTURES / "run" / "lam"
    tensors, meta = read_checkpoint(stage_dir / STATE_FILE, expect_kind="train_state")
    cfg = from_dict(GenieConfig, json.loads(meta["config"]), source="state config")
    lam = load_checkpoint(stage_dir / "last.safetensors", expect_kind="lam")
    assert set(read_metadata(stage_dir / "last.safetensors")) == CHECKPOINT_META | {"ema", "stage"}
    model = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    lam.load_state_dict(model, strict=True)
    named = list(lam.named_parameters())
    opt, names = adamw(named, 1e-3, cfg.train.lam, fused=False)
    slots = {k.rsplit("/", 1)[1] for k in tensors if k.startswith("opt/")}
    assert slots == {"exp_avg", "exp_avg_sq", "step"}
    assert {k[len("opt/"):].rsplit("/", 1)[0] for k in tensors if k.startswith("opt/")} <= set(names)
    assert {k.split("/", 1)[0] for k in tensors} <= {"model", "ema", "opt", "aux_opt"}
    load_optimizer(opt, names, "opt", tensors)
    assert opt.state_dict()["state"]  # moments restored
    records = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    assert records and all({"stage", "step", "time", "wall"} <= set(r) for r in records)
