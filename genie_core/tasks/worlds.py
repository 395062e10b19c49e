"""The worlds shipped with the package (``genie_worlds``, the repository's ``worlds/`` folder): a
name resolves to its weights, prompt frame and evaluation report. Listing is torch-free.

A world is its files ``NAME.safetensors``, ``NAME.png`` (a prompt frame from a clip it never
trained on) and ``NAME.eval.json`` (``genie evaluate --json``), plus an entry in
``manifest.json`` (description and the commands that trained and evaluated it); the manifest's
``default`` names the world ``genie play`` plays without ``--world``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from genie_core.errors import ArgumentError

__all__ = ["ShippedWorld", "UnknownWorld", "list_worlds", "default_world", "find_world",
           "resolve_world", "set_action_names", "set_world_sampling", "cast_world"]

MANIFEST = "manifest.json"


class UnknownWorld(ArgumentError):
    """A ``--world`` that is neither a file nor a shipped world's name."""


@dataclass(frozen=True)
class ShippedWorld:
    name: str
    description: str
    weights: Path
    prompt: Path
    report: Path
    trained_with: tuple[str, ...]
    evaluated_with: tuple[str, ...]
    is_default: bool

    @property
    def size_bytes(self) -> int:
        return self.weights.stat().st_size

    def evaluation(self) -> dict[str, Any]:
        """The ``genie evaluate --json`` report (its summary and per-clip scores)."""
        return json.loads(self.report.read_text())

    def headline(self) -> str:
        """ΔtPSNR and the world's PSNR beside the still-prompt (copy) baseline: at the paper's t = 4
        (when the report has it, with its standard error) and at the last step."""
        r = self.evaluation()
        t = r["horizon"]
        last = f"{r['psnr_inferred_by_t'][-1]:.2f} dB vs copy {r['psnr_copy_by_t'][-1]:.2f} dB"

        def pm(value: float, sem: float | None) -> str:
            return f"{value:+.2f}" + (f" ± {sem:.2f}" if sem is not None else "")

        if t <= 4:
            return f"Δ{t}PSNR {pm(r['delta_psnr'], r['delta_psnr_sem'])} dB; PSNR at t={t} {last}"
        sems = r.get("delta_psnr_sem_by_t") or [None] * t
        return (f"Δ4PSNR {pm(r['delta_psnr_by_t'][3], sems[3])} dB; PSNR at t=4 "
                f"{r['psnr_inferred_by_t'][3]:.2f} dB vs copy {r['psnr_copy_by_t'][3]:.2f} dB, at t={t} {last}")

    def to_dict(self) -> dict[str, Any]:
        r = self.evaluation()
        t = r["horizon"]
        return {"name": self.name, "description": self.description, "default": self.is_default,
                "size_bytes": self.size_bytes, "weights": str(self.weights), "prompt": str(self.prompt),
                "action_source": r.get("action_source"), "delta_psnr": r["delta_psnr"],
                "delta_psnr_sem": r["delta_psnr_sem"], f"psnr_inferred_t{t}": r[f"psnr_inferred_t{t}"],
                f"psnr_copy_t{t}": r[f"psnr_copy_t{t}"], "trained_with": list(self.trained_with),
                "evaluated_with": list(self.evaluated_with)}


def worlds_dir() -> Path:
    """The shipped worlds' folder: the ``genie_worlds`` package data, else the source tree's."""
    try:
        path = Path(str(resources.files("genie_worlds")))
        if (path / MANIFEST).is_file():
            return path
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "worlds"


def list_worlds(folder: Path | None = None) -> list[ShippedWorld]:
    """The shipped worlds in manifest order; an entry whose files are missing is left out."""
    folder = folder or worlds_dir()
    path = folder / MANIFEST
    if not path.is_file():
        return []
    manifest = json.loads(path.read_text())
    default = manifest.get("default")
    found = []
    for name, entry in manifest.get("worlds", {}).items():
        files = {kind: folder / f"{name}{suffix}" for kind, suffix in
                 (("weights", ".safetensors"), ("prompt", ".png"), ("report", ".eval.json"))}
        if all(p.is_file() for p in files.values()):
            found.append(ShippedWorld(name, entry.get("description", ""), **files,
                                      trained_with=tuple(entry.get("trained_with", ())),
                                      evaluated_with=tuple(entry.get("evaluated_with", ())),
                                      is_default=name == default))
    return found


def default_world(folder: Path | None = None) -> ShippedWorld:
    """The world played without ``--world`` (the manifest's ``default``, else the first)."""
    worlds = list_worlds(folder)
    if not worlds:
        raise ArgumentError("no shipped worlds in this installation: give --world FILE")
    return next((w for w in worlds if w.is_default), worlds[0])


def find_world(name: str, folder: Path | None = None) -> ShippedWorld:
    """The shipped world called ``name``; an unknown name is an error listing the shipped ones."""
    worlds = list_worlds(folder)
    for world in worlds:
        if world.name == name:
            return world
    names = ", ".join(w.name for w in worlds) or "none"
    raise UnknownWorld(f"unknown world '{name}': not a file, and not a shipped world (shipped: {names})")


def resolve_world(name_or_path: str | Path,
                  folder: Path | None = None) -> tuple[Path, ShippedWorld | None]:
    """A ``--world`` value as (weights file, the shipped world or None): an existing file is
    itself; otherwise a shipped world's name."""
    path = Path(name_or_path)
    if path.is_file():
        return path, None
    text = str(name_or_path)
    if path.suffix or "/" in text or "\\" in text:  # meant as a file
        raise ArgumentError(f"world not found: {text}" if not path.exists() else f"world is not a file: {text}")
    world = find_world(text, folder)
    return world.weights, world


def set_action_names(src: str | Path, dst: str | Path, names: Sequence[str]) -> None:
    """Copy world ``src`` to ``dst`` with ``dynamics.action_names`` set to ``names`` (one per
    true action), weights unchanged: for worlds trained on true actions before the dynamics
    stage stored the names. Only a world driven by true actions takes names."""
    tensors, meta = _read_world(src)
    config = json.loads(meta["config"])
    dyn = config["dynamics"]
    if dyn.get("action_source") != "truth":
        raise ArgumentError(f"{src} takes latent actions; only a world trained on true actions has names")
    if len(names) != dyn["num_actions"] or not all(isinstance(n, str) and n for n in names):
        raise ArgumentError(f"{src} takes {dyn['num_actions']} actions; give as many non-empty names, "
                            f"got {list(names)}")
    dyn["action_names"] = list(names)
    meta["config"] = json.dumps(config, sort_keys=True)
    _write_world(dst, tensors, meta)


def set_world_sampling(src: str | Path, dst: str | Path, **changes: Any) -> None:
    """Copy world ``src`` to ``dst`` with its default sampling (``dynamics.sampling``: steps,
    temperature, schedule, unmask, choice_temperature, render) changed where given, weights
    unchanged: what ``genie play`` and ``genie evaluate`` use without --steps / --temperature /
    --render. The new values are checked as a ``SamplingConfig`` before anything is written."""
    import dataclasses

    from genie_core.config.base import from_dict
    from genie_core.config.dynamics import SamplingConfig

    tensors, meta = _read_world(src)
    config = json.loads(meta["config"])
    names = {f.name for f in dataclasses.fields(SamplingConfig)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ArgumentError(f"unknown sampling setting(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    merged = {**config["dynamics"].get("sampling", {}), **changes}
    # checked as loading checks it (choices, types, __post_init__): a ConfigError, so the file
    # written loads
    checked = from_dict(SamplingConfig, {k: v for k, v in merged.items() if k in names},
                        source="sampling", prefix="dynamics.sampling")
    config["dynamics"]["sampling"] = dataclasses.asdict(checked)
    meta["config"] = json.dumps(config, sort_keys=True)
    _write_world(dst, tensors, meta)


def cast_world(src: str | Path, dst: str | Path, dtype: str = "bf16") -> None:
    """Copy world ``src`` to ``dst`` with its floating-point tensors stored as ``dtype`` (bf16
    halves a world for shipping), metadata unchanged. Loading casts them back to the model's
    dtype, so a cast world plays like the original up to bf16 rounding of its weights: evaluate
    the cast file itself."""
    import torch

    target = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(dtype)
    if target is None:
        raise ArgumentError(f"dtype must be bf16 or fp32, got {dtype!r}")
    tensors, meta = _read_world(src)
    tensors = {k: (v.to(target) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    _write_world(dst, tensors, meta)


def _read_world(src: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """A world file's tensors and metadata; anything but a world is refused."""
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if meta.get("kind") != "world":
        raise ArgumentError(f"{src} is not a world (kind {meta.get('kind')!r})")
    return tensors, meta


def _write_world(dst: str | Path, tensors: dict[str, Any], meta: dict[str, str]) -> None:
    """Write a world file atomically (a temporary file, then a rename)."""
    from safetensors.torch import save_file

    from genie_core.io.atomic import atomic_path

    with atomic_path(dst) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
