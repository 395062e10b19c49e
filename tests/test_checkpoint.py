"""Checkpoint files (genie_core.models.load) against hostile contents: a config that does not match
its tensors is refused from the header alone, before any tensor is read or any model allocated;
bad metadata is a one-line error; every safetensors file gets the umask's permissions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import genie_core.io.checkpoint_format as ckpt  # where the tensor data is read
from genie_core.errors import CheckpointError
from genie_core.io.checkpoint_format import read_metadata, save_checkpoint
from genie_core.models.dynamics import DynamicsModel
from genie_core.models.lam import LatentActionModel
from genie_core.models.load import load_checkpoint, load_model
from genie_core.models.tokenizer import VideoTokenizer
from genie_core.models.world import World
from genie_core.tasks.infer_actions import load_lam

BUILDERS = {"tokenizer": VideoTokenizer, "lam": LatentActionModel, "dynamics": DynamicsModel, "world": World}


def _save(kind: str, path: Path) -> Path:
    torch.manual_seed(0)
    BUILDERS[kind].from_preset("tiny").save(path)
    return path


def _inflate(value, factor: int = 250):
    """Every width in a config (``*_dim``, ``*channels``) times ``factor``: a model hundreds of
    times larger than the tensors in the file (divisibility by heads and groups is kept)."""
    if isinstance(value, dict):
        return {k: (v * factor if isinstance(v, int) and not isinstance(v, bool) and v >= 8
                    and (k.endswith("dim") or k.endswith("channels")) and k != "in_channels"
                    else _inflate(v, factor)) for k, v in value.items()}
    if isinstance(value, list):
        return [_inflate(v, factor) for v in value]
    return value


def _rewrite(path: Path, **meta_changes) -> None:
    meta = {**read_metadata(path), **meta_changes}
    save_file(load_file(str(path)), str(path), metadata=meta)


def _loaders(kind: str):
    """Every way a file of ``kind`` is loaded."""
    yield "load_checkpoint", lambda p: load_checkpoint(p)
    parts = ("tokenizer", "lam", "dynamics") if kind == "world" else (kind,)
    for part in parts:
        yield f"load_model[{part}]", lambda p, part=part: load_model(p, part)
    if kind in ("lam", "world"):
        yield "load_lam", lambda p: load_lam(p, device="cpu")


def test_load_model_takes_a_part_of_a_bundle_or_a_file_of_that_kind(tmp_path):
    world_path = _save("world", tmp_path / "world.safetensors")
    tok_path = _save("tokenizer", tmp_path / "tok.safetensors")
    world = load_model(world_path, "world")
    for part in ("tokenizer", "lam", "dynamics"):
        got = load_model(world_path, part)
        assert type(got) is type(getattr(world, part)) and not got.training
        want = getattr(world, part).state_dict()
        assert got.state_dict().keys() == want.keys()
        assert all(torch.equal(got.state_dict()[k], want[k]) for k in want)
    full, bare = load_model(tok_path), load_model(tok_path, "tokenizer", inference=True)
    assert full.discriminator is not None and bare.discriminator is None
    assert {k for k in full.state_dict() if not k.startswith(("discriminator.", "perceptual."))} == set(bare.state_dict())
    for path, kind, fragment in ((tok_path, "lam", "expected a lam (or a world bundle)"),
                                 (tok_path, "world", "expected world")):
        with pytest.raises(CheckpointError) as err:
            load_model(path, kind)
        assert str(path) in str(err.value) and fragment in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="expected lam"):  # load_checkpoint: the kind exactly
        load_checkpoint(world_path, expect_kind="lam")


@pytest.fixture()
def no_tensor_reads(monkeypatch):
    """Fail the test if any tensor data is read (the refusal must come from the header)."""
    def refuse(*args, **kwargs):
        raise AssertionError("tensor data was read before the config was checked")
    monkeypatch.setattr(ckpt, "load_file", refuse)
    monkeypatch.setattr(ckpt, "safe_open", refuse)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_config_larger_than_its_tensors_is_refused_from_the_header(kind, tmp_path, monkeypatch):
    path = _save(kind, tmp_path / f"{kind}.safetensors")
    loaders = list(_loaders(kind))
    for _, load in loaders:  # the honest file loads every way
        load(path)
    _rewrite(path, config=json.dumps(_inflate(json.loads(read_metadata(path)["config"]))))

    def refuse(*args, **kwargs):
        raise AssertionError("tensor data was read before the config was checked")
    monkeypatch.setattr(ckpt, "load_file", refuse)
    monkeypatch.setattr(ckpt, "safe_open", refuse)
    for name, load in loaders:
        with pytest.raises(CheckpointError) as err:
            load(path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message, (name, message)


def test_missing_and_extra_tensors_are_refused_from_the_header(tmp_path, no_tensor_reads):
    path = _save("dynamics", tmp_path / "d.safetensors")
    meta = read_metadata(path)
    tensors = load_file(str(path))  # safetensors' own reader; genie's is the one refused
    first = sorted(tensors)[0]
    for name, changed in (("missing", {k: v for k, v in tensors.items() if k != first}),
                          ("extra", {**tensors, "surplus.weight": torch.zeros(3)}),
                          ("reshaped", {**tensors, first: tensors[first].reshape(-1)[:1].clone()})):
        save_file(changed, str(path), metadata=meta)
        with pytest.raises(CheckpointError, match="does not match its config"):
            load_checkpoint(path)


def test_config_asking_for_huge_unstored_buffers_is_refused(tmp_path, no_tensor_reads):
    """Buffers a config sizes but the file does not hold (rotary-only positions: a (h*w, D) zero
    buffer) are counted on the meta device and refused beyond a bound."""
    path = tmp_path / "d.safetensors"
    DynamicsModel.from_preset("tiny", ["dynamics.spatial_positions=rotary"]).save(path)
    config = json.loads(read_metadata(path)["config"])
    config["token_size"] = [20000, 20000]
    _rewrite(path, config=json.dumps(config))
    with pytest.raises(CheckpointError, match="does not hold"):
        load_checkpoint(path)


@pytest.mark.parametrize("step", ["abc", "-1", "1.5", str(2 ** 70), ""])
def test_metadata_step_must_be_a_step(step, tmp_path):
    path = _save("world", tmp_path / "w.safetensors")
    _rewrite(path, step=step)
    for name, load in _loaders("world"):
        with pytest.raises(CheckpointError, match="'step'"):
            load(path)


# ---- permissions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_every_safetensors_file_gets_the_umask_permissions(umask, mode, tmp_path):
    old = os.umask(umask)
    try:
        paths = [_save(kind, tmp_path / f"{kind}.safetensors") for kind in BUILDERS]
        state = tmp_path / "state.safetensors"
        save_checkpoint(state, {"model/w": torch.zeros(2)}, kind="train_state", config={})
        paths.append(state)
        _save("lam", paths[0])  # replacing an existing file too
    finally:
        os.umask(old)
    for path in paths:
        assert path.stat().st_mode & 0o777 == mode, path
