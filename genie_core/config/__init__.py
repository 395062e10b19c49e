"""Typed configuration: one frozen dataclass per component, nested in GenieConfig, read from
named YAML presets (``presets/*.yaml``) with strict checking and ``--set a.b=value`` overrides.

No torch import here: the CLI resolves presets before it loads any model.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from genie_core.config.base import convert, from_dict, to_dict
from genie_core.config.dynamics import DynamicsConfig
from genie_core.config.lam import LamConfig
from genie_core.config.tokenizer import TokenizerConfig
from genie_core.config.train import DataConfig, OptimConfig, TrainConfig
from genie_core.errors import ConfigError

__all__ = [
    "GenieConfig", "DataConfig", "OptimConfig", "TrainConfig", "TokenizerConfig", "LamConfig",
    "DynamicsConfig", "load_preset", "list_presets", "preset_path", "parse_overrides",
    "from_dict", "to_dict", "convert", "config_to_json", "config_from_json", "lam_config_for_data",
    "dynamics_config_for_preset",
]


@dataclass(frozen=True)
class GenieConfig:
    """The whole tree a preset describes. A YAML preset maps one to one onto it."""

    name: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    lam: LamConfig = field(default_factory=LamConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def lam_config_for_data(cfg: GenieConfig) -> LamConfig:
    """The LAM config with its frame size taken from ``data.resolution`` (a LAM is trained and
    used at one frame size; the checkpoint records it so inference can resize to it). The one
    place ``lam.resolution``'s default is resolved."""
    lam, resolution = cfg.lam, tuple(cfg.data.resolution)
    if lam.resolution is None:
        return dataclasses.replace(lam, resolution=resolution)
    if tuple(lam.resolution) != resolution:
        raise ConfigError(f"lam.resolution {list(lam.resolution)} differs from data.resolution "
                          f"{list(resolution)}; leave lam.resolution unset to follow the data")
    return lam


def dynamics_config_for_preset(cfg: GenieConfig) -> DynamicsConfig:
    """The dynamics config of a model built from the preset alone: what the preset leaves unset
    of ``code_bits``, ``token_size`` and ``num_actions`` derived from its own tokenizer, data
    and LAM (true actions: as many as ``action_names``, else the LAM's count). A trained
    world pairs them with the real models instead (``models.world.paired_dynamics_config``)."""
    dyn, (h, w), s = cfg.dynamics, cfg.data.resolution, cfg.tokenizer.space_downsample
    derived = {"code_bits": cfg.tokenizer.code_bits, "token_size": (h // s, w // s),
               "num_actions": (dyn.action_source == "truth" and len(dyn.action_names)) or cfg.lam.num_actions}
    return dataclasses.replace(dyn, **{k: v for k, v in derived.items() if getattr(dyn, k) is None})


def _presets_dir() -> Path:
    """Presets ship as the ``genie_presets`` package data; fall back to the source tree."""
    try:
        path = Path(str(resources.files("genie_presets")))
        if path.is_dir() and any(path.glob("*.yaml")):
            return path
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "presets"


def list_presets() -> list[str]:
    return sorted(p.stem for p in _presets_dir().glob("*.yaml"))


def preset_path(name: str) -> Path:
    """A preset name (``tiny``) or a path to a YAML file."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"preset file not found: {name}")
        return path
    path = _presets_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset '{name}' (available: {', '.join(list_presets())})")
    return path


def _read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preset must be a mapping at the top level")
    return _unshared(raw)


def _unshared(value: Any) -> Any:
    """``value`` with every mapping and list its own object: YAML aliases (``*anchor``) load as
    one shared object, so a ``--set`` on one stage would otherwise change every stage sharing it
    (``copy.deepcopy`` keeps such sharing)."""
    if isinstance(value, dict):
        return {k: _unshared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshared(v) for v in value]
    return value


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _raw_preset(name: str, seen: tuple[str, ...] = ()) -> tuple[dict, str]:
    """Raw dict of a preset with ``inherit: other`` resolved (deep merge, child wins)."""
    path = preset_path(name)
    raw = _read_yaml(path)
    parent = raw.pop("inherit", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError(f"{path}: 'inherit' must be a preset name")
        if parent in seen:
            raise ConfigError(f"{path}: preset inheritance loops through '{parent}'")
        base, _ = _raw_preset(parent, seen + (name,))
        raw = _deep_merge(base, raw)
    return raw, str(path)


def parse_overrides(overrides: Iterable[str]) -> list[tuple[list[str], Any]]:
    """``section.key=value`` strings to (key path, YAML-parsed value) pairs."""
    parsed = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects section.key=value, got '{item}'")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        if isinstance(value, str):  # YAML 1.1 reads '1e-3' as a string
            try:
                value = float(value)
            except ValueError:
                pass
        parsed.append(([k.strip() for k in key.strip().split(".")], value))
    return parsed


def _apply_override(raw: dict, keys: list[str], value: Any, item: str) -> None:
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            where = ".".join(keys[: depth + 1])
            raise ConfigError(f"--set {item}: '{where}' is not a section")
        node = child
    node[keys[-1]] = value


def load_preset(name: str, overrides: Iterable[str] = ()) -> GenieConfig:
    """Resolve a preset (name or YAML path) with ``--set`` overrides into a GenieConfig.

    Each call builds fresh frozen objects, so nothing a caller does can mutate a preset.
    """
    raw, source = _raw_preset(name)
    raw.setdefault("name", Path(name).stem)
    parsed = parse_overrides(overrides)
    for keys, value in parsed:
        _apply_override(raw, keys, value, f"{'.'.join(keys)}={value!r}")
    # Validate once, after every override: cross-field checks must not depend on --set order.
    try:
        return from_dict(GenieConfig, raw, source=source)
    except ConfigError as err:
        detail = str(err).split(": ", 1)[-1]
        # Name the override when the error is about one (longest key path first).
        for keys, _ in sorted(parsed, key=lambda kv: -len(kv[0])):
            dotted = ".".join(keys)
            section = ".".join(keys[:-1])
            if f"'{dotted}" in detail or (section and f"'{section}'" in detail):
                raise ConfigError(f"--set {dotted}: {detail}") from None
        raise


def config_to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), sort_keys=True)


def config_from_json(cls: type, text: str, source: str = "<checkpoint>") -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(f"{source}: config is not valid JSON") from None
    return from_dict(cls, data, source=source)


def replace(cfg: Any, **changes: Any) -> Any:
    """dataclasses.replace re-exported for convenience (configs are frozen)."""
    return dataclasses.replace(cfg, **changes)
