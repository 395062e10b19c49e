"""Checkpoints: safetensors files whose metadata holds the format version, the model kind, the
model config as JSON, the training step and the package version (DESIGN.md, "Files a user sees").

Loading never unpickles anything; writing is atomic (temporary name, then rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genie_core.atomic import AtomicWrite, atomic_path  # noqa: F401  (re-exported)
from genie_core.errors import CheckpointError
from genie_core.version import CHECKPOINT_FORMAT_VERSION, __version__

KINDS = ("tokenizer", "lam", "dynamics", "world")


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], *, kind: str,
                    config: dict, step: int = 0, extra: dict[str, str] | None = None) -> None:
    """Write ``tensors`` with the standard metadata; ``config`` is the model config as a dict."""
    if kind not in KINDS and not kind.startswith("train_state"):
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    meta = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "kind": kind,
        "config": json.dumps(config, sort_keys=True),
        "step": str(int(step)),
        "genie_version": __version__,
    }
    meta.update(extra or {})
    # safetensors refuses shared or non-contiguous storage; clone to plain contiguous CPU tensors.
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=meta)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata header of a checkpoint, without reading the tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("too short")
            size = int.from_bytes(head, "little")
            if size <= 0 or size > 100_000_000 or size > path.stat().st_size - 8:
                raise ValueError("bad header size")
            header = json.loads(fh.read(size))
        meta = header.get("__metadata__") or {}
    except (ValueError, UnicodeDecodeError, OSError):
        raise CheckpointError(f"{path}: not a safetensors checkpoint") from None
    if "kind" not in meta or "config" not in meta:
        raise CheckpointError(f"{path}: safetensors file without genie metadata (kind, config)")
    return dict(meta)


def read_checkpoint(path: str | os.PathLike, *, expect_kind: str | tuple[str, ...] | None = None,
                    device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a checkpoint, checking its kind when ``expect_kind`` is given."""
    meta = read_metadata(path)
    if expect_kind is not None:
        kinds = (expect_kind,) if isinstance(expect_kind, str) else tuple(expect_kind)
        if meta["kind"] not in kinds:
            raise CheckpointError(
                f"{path}: holds a {meta['kind']} checkpoint, expected {' or '.join(kinds)}")
    if meta.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')!r} is not "
                              f"supported (this genie reads format {CHECKPOINT_FORMAT_VERSION})")
    try:
        tensors = load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable safetensors data ({err})") from None
    return tensors, meta


def checkpoint_config(meta: dict[str, str]) -> dict:
    return json.loads(meta["config"])


def sub_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Tensors under ``prefix.`` with the prefix stripped (world bundles)."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}


def load_checkpoint(path: str | os.PathLike, *, expect_kind: str | tuple[str, ...] | None = None,
                    device: str = "cpu") -> Any:
    """Rebuild whatever model a checkpoint holds (tokenizer, lam, dynamics or world), in eval mode.

    The model class is chosen by the file's ``kind``; its config comes from the file, so no
    preset is needed.
    """
    tensors, meta = read_checkpoint(path, expect_kind=expect_kind)
    cls = model_class(meta["kind"])
    try:
        model = cls.from_checkpoint_state(tensors, meta)
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path}: does not match its config ({str(err).splitlines()[0]})") from None
    model.checkpoint_step = int(meta.get("step", 0))
    return model.to(device).eval()


def model_class(kind: str) -> type:
    """The model class for a checkpoint kind (imported lazily to avoid cycles)."""
    if kind == "tokenizer":
        from genie_core.tokenizer import VideoTokenizer
        return VideoTokenizer
    if kind == "lam":
        from genie_core.lam import LatentActionModel
        return LatentActionModel
    if kind == "dynamics":
        from genie_core.dynamics import DynamicsModel
        return DynamicsModel
    if kind == "world":
        from genie_core.world import World
        return World
    raise CheckpointError(f"unknown checkpoint kind {kind!r}")


@dataclass
class LoadedModel:
    """A model in eval mode, loaded for inference, with the provenance that the files written
    from it (token files, action files) record. ``load_tokenizer`` and ``load_lam`` return
    subclasses of it."""

    model: Any
    device: torch.device
    source: str  # checkpoint path, or "preset:<name>" for an untrained model
    digest: str | None  # sha256 of the checkpoint file (16 hex); None when untrained
    resolution: tuple[int, int] | None  # (H, W) it was trained at, when known


class Checkpointable:
    """Mixin for the three models: ``save``, ``from_preset``, ``from_config``, rebuild from a file.

    A subclass sets ``kind`` and ``config_section`` (the GenieConfig attribute holding its
    config, e.g. ``"tokenizer"``) and takes its typed config as the only constructor argument of
    ``from_config``.
    """

    kind: str = ""
    config_section: str = ""
    checkpoint_step: int = 0

    @classmethod
    def config_class(cls) -> type:
        from genie_core.config import GenieConfig
        import typing
        return typing.get_type_hints(GenieConfig)[cls.config_section]

    @classmethod
    def from_config(cls, cfg: Any) -> Any:
        return cls(cfg)

    @classmethod
    def from_preset(cls, name: str, overrides: tuple[str, ...] | list[str] = ()) -> Any:
        from genie_core.config import load_preset
        return cls.from_config(getattr(load_preset(name, overrides), cls.config_section))

    def config_dict(self) -> dict:
        from genie_core.config import to_dict
        return to_dict(self.config)  # type: ignore[attr-defined]

    def save(self, path: str | os.PathLike, step: int = 0, extra: dict[str, str] | None = None) -> None:
        save_checkpoint(path, self.state_dict(), kind=self.kind, config=self.config_dict(),  # type: ignore[attr-defined]
                        step=step, extra=extra)

    @classmethod
    def from_checkpoint_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Any:
        from genie_core.config import from_dict
        cfg = from_dict(cls.config_class(), checkpoint_config(meta), source="checkpoint config")
        model = cls.from_config(cfg)
        model.load_state_dict(tensors, strict=True)  # type: ignore[attr-defined]
        return model


def iter_state_prefixes(tensors: dict[str, torch.Tensor]) -> Iterator[str]:
    yield from sorted({k.split(".", 1)[0] for k in tensors})
