"""Contract tests for every shipped preset: it loads strictly, the resolved config survives the
forms a run stores it in (``RUN/config.yaml``, the JSON in checkpoint metadata) unchanged, and
each model it builds survives save -> load through the checkpoint code with the same tensors.
Models too big to build quickly are built on the meta device instead: the config read back from
the JSON must still describe the same tensor names and shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from genie_core.config import (
    GenieConfig,
    config_from_json,
    config_to_json,
    dynamics_config_for_preset,
    from_dict,
    lam_config_for_data,
    list_presets,
    load_preset,
    to_dict,
)
from genie_core.errors import ConfigError

PRESETS = list_presets()
BUILD_LIMIT = 10_000_000  # parameters: models above this are checked on the meta device only


def _model_configs(cfg: GenieConfig) -> dict[str, Any]:
    """Each model's resolved config, as its training stage builds it from the preset."""
    return {"tokenizer": cfg.tokenizer, "lam": lam_config_for_data(cfg),
            "dynamics": dynamics_config_for_preset(cfg)}


def _build(kind: str, config: Any, device: str = "cpu") -> torch.nn.Module:
    from genie_core.models.load import model_class

    with torch.device(device):
        return model_class(kind).from_config(config)


def read_back_json(model: torch.nn.Module) -> str:
    """The config JSON a checkpoint of ``model`` stores (what ``save`` writes into its metadata)."""
    return json.dumps(model.config_dict(), sort_keys=True)  # type: ignore[operator]


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_every_shipped_preset_is_listed() -> None:
    assert {"tiny", "small", "play", "quickstart", "magvit2", "coinrun", "coinrun-paper"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_strictly_and_keeps_what_it_says(name: str, tmp_path: Path) -> None:
    from genie_core.config import _raw_preset

    cfg = load_preset(name)
    raw, _ = _raw_preset(name)
    resolved = to_dict(cfg)
    for section, body in raw.items():  # nothing the preset states is dropped on the way in
        assert section in resolved, (name, section)
        if isinstance(body, dict) and isinstance(resolved[section], dict):
            assert set(body) <= set(resolved[section]), (name, section, set(body) - set(resolved[section]))
    bad = tmp_path / "bad.yaml"  # the same preset with one key no config has: refused
    bad.write_text(yaml.safe_dump({**raw, "tokenizer": {**raw.get("tokenizer", {}), "no_such_key": 1}}))
    with pytest.raises(ConfigError, match="no_such_key"):
        load_preset(str(bad))


@pytest.mark.parametrize("name", PRESETS)
def test_resolved_config_round_trips_through_yaml_and_json(name: str) -> None:
    cfg = load_preset(name)
    # RUN/config.yaml, written as genie train writes it, read back as --resume reads it
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    assert from_dict(GenieConfig, yaml.safe_load(text), source="config.yaml") == cfg
    # the whole config in a training-state checkpoint, and each model's in its checkpoint
    assert config_from_json(GenieConfig, config_to_json(cfg)) == cfg
    for kind, part in _model_configs(cfg).items():
        again = config_from_json(type(part), json.dumps(to_dict(part), sort_keys=True), source=kind)
        assert again == part, (name, kind)


@pytest.mark.parametrize("name", PRESETS)
def test_each_model_state_survives_save_and_load(name: str, tmp_path: Path) -> None:
    from genie_core.io.checkpoint_format import read_metadata
    from genie_core.models.load import load_model

    torch.manual_seed(0)
    for kind, config in _model_configs(load_preset(name)).items():
        skeleton = _build(kind, config, device="meta")
        size = sum(v.numel() for v in skeleton.state_dict().values())
        stored = config_from_json(type(config), read_back_json(skeleton), source=kind)
        assert stored == config
        if size > BUILD_LIMIT:  # too big to build here: the stored config rebuilds the same tensors
            assert _shapes(_build(kind, stored, device="meta")) == _shapes(skeleton), (name, kind)
            continue
        model = _build(kind, config)
        path = tmp_path / f"{kind}.safetensors"
        model.save(path, step=3)
        meta = read_metadata(path)
        assert meta["kind"] == kind and meta["step"] == "3"
        loaded = load_model(path, kind)
        assert type(loaded) is type(model) and loaded.config == model.config, (name, kind)
        want, got = model.state_dict(), loaded.state_dict()
        assert list(got) == list(want), (name, kind)
        for key, tensor in want.items():
            assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), (name, kind, key)


@pytest.mark.parametrize("name", ["tiny", "quickstart"])
def test_world_bundle_of_a_preset_survives_save_and_load(name: str, tmp_path: Path) -> None:
    from genie_core.models.load import PARTS, load_model
    from genie_core.models.world import World

    torch.manual_seed(0)
    world = World.from_preset(name)
    path = tmp_path / "world.safetensors"
    world.save(path)
    loaded = load_model(path, "world")
    assert loaded.config == world.config
    want = world.bundle_state()
    got = loaded.bundle_state()
    assert list(got) == list(want) and all(torch.equal(got[k], v) for k, v in want.items())
    for part in PARTS:  # each part read alone from the bundle is that part
        alone = load_model(path, part).state_dict()
        mine = getattr(world, part).state_dict()
        assert {k for k in mine if f"{part}.{k}" in want} == set(alone)
        assert all(torch.equal(alone[k], mine[k]) for k in alone)
