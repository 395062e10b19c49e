"""The checkpoint file format: safetensors files whose metadata holds the format version, the
model kind, the model config as JSON, the training step and the package version; and the
``Checkpointable`` mixin the models save and rebuild themselves with.

This module knows no model class (the models import it); ``genie_core.models.load`` adds the
table from a kind to its class and ``load_checkpoint``. Loading never unpickles anything;
writing is atomic (temporary name, then rename).
"""

from __future__ import annotations

import errno
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from genie_core.errors import CheckpointError, GenieError
from genie_core.io.atomic import AtomicWrite, atomic_path  # noqa: F401  (re-exported)
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
        try:
            save_file(flat, str(tmp), metadata=meta)
        except SafetensorError as err:  # its I/O errors (a full disk) are not OSErrors
            raise OSError(errno.EIO, str(err).splitlines()[0] if str(err) else "write failed") from None


def read_header(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, tuple[str, tuple[int, ...]]]]:
    """(metadata, {name: (dtype, shape)}) from a checkpoint's header, without reading the tensors."""
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
        meta = header.pop("__metadata__", None) or {}
        specs = {name: (str(info["dtype"]), tuple(int(n) for n in info["shape"]))
                 for name, info in header.items()}
        if not isinstance(meta, dict) or any(n < 0 for _, shape in specs.values() for n in shape):
            raise ValueError("bad header")
    except OSError as err:  # unreadable (permissions), a folder, ...
        raise CheckpointError(f"{path}: cannot read ({err.strerror or type(err).__name__})") from None
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not a safetensors checkpoint") from None
    if "kind" not in meta or "config" not in meta:
        raise CheckpointError(f"{path}: safetensors file without genie metadata (kind, config)")
    return dict(meta), specs


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata header of a checkpoint, without reading the tensors."""
    return read_header(path)[0]


def check_header(path: str | os.PathLike, meta: dict[str, str],
                  expect_kind: str | tuple[str, ...] | None) -> None:
    if expect_kind is not None:
        kinds = (expect_kind,) if isinstance(expect_kind, str) else tuple(expect_kind)
        if meta["kind"] not in kinds:
            raise CheckpointError(
                f"{path}: holds a {meta['kind']} checkpoint, expected {' or '.join(kinds)}")
    if meta.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')!r} is not "
                              f"supported (this genie reads format {CHECKPOINT_FORMAT_VERSION})")


def read_checkpoint(path: str | os.PathLike, *, expect_kind: str | tuple[str, ...] | None = None,
                    device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a checkpoint, checking its kind when ``expect_kind`` is given."""
    meta = read_metadata(path)
    check_header(path, meta, expect_kind)
    try:
        tensors = load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable safetensors data ({err})") from None
    return tensors, meta


def _read_tensors(path: str | os.PathLike, names: list[str]) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {name: fh.get_tensor(name) for name in names}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable safetensors data ({err})") from None


def checkpoint_step(meta: dict[str, str], path: str | os.PathLike = "checkpoint") -> int:
    """The training step a checkpoint's metadata records (0 when absent)."""
    raw = meta.get("step", "0")
    try:
        step = int(raw)
    except (TypeError, ValueError):
        step = -1
    if not 0 <= step < 2 ** 63:
        raise CheckpointError(f"{path}: metadata 'step' must be a non-negative integer, got {raw!r}")
    return step


# safetensors dtype names -> torch dtypes (only those a dry run on the meta device needs).
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
           "U8": torch.uint8, "BOOL": torch.bool}


# A config may ask for tensors the file does not hold (non-persistent buffers); beyond this the
# ask is refused rather than left to the allocator.
MAX_UNSTORED_BYTES = 1 << 30


def _check_unstored(path: str | os.PathLike, skeleton: Any,
                    specs: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    if not isinstance(skeleton, torch.nn.Module):
        return
    tensors = {id(t): t for t in (*skeleton.parameters(), *skeleton.buffers())}.values()
    wanted = sum(t.numel() * t.element_size() for t in tensors)
    stored = sum(math.prod(shape) * _DTYPES.get(dtype, torch.uint8).itemsize for dtype, shape in specs.values())
    if wanted - stored > MAX_UNSTORED_BYTES:
        raise CheckpointError(f"{path}: its config asks for {(wanted - stored) / 2 ** 30:.1f} GiB of "
                              f"tensors the file does not hold (at most {MAX_UNSTORED_BYTES / 2 ** 30:.0f})")


def load_checked(path: str | os.PathLike, build: Callable[[dict[str, torch.Tensor], dict[str, str]], Any],
                 *, expect_kind: str | tuple[str, ...] | None = None, prefix: str = "") -> Any:
    """``build(tensors, meta)`` for a checkpoint, first as a dry run on the meta device with
    placeholder tensors of the shapes the header declares, then for real.

    The dry run allocates nothing, so a config that does not match its tensors (a small file
    whose config asks for a huge model) is refused in milliseconds, before any memory is spent.
    Any mismatch, in either run, is a CheckpointError naming the file. With ``prefix`` only the
    tensors whose names start with it are read and handed to ``build`` (prefix kept).
    """
    meta, specs = read_header(path)
    check_header(path, meta, expect_kind)
    checkpoint_step(meta, path)
    specs = {name: spec for name, spec in specs.items() if name.startswith(prefix)}
    try:
        placeholders = {name: torch.empty(shape, dtype=_DTYPES.get(dtype, torch.uint8), device="meta")
                        for name, (dtype, shape) in specs.items()}
        with torch.device("meta"):
            skeleton = build(placeholders, meta)
        _check_unstored(path, skeleton, specs)
        if prefix:
            tensors = _read_tensors(path, list(specs))
        else:
            tensors, meta = read_checkpoint(path, expect_kind=expect_kind)
        return build(tensors, meta)
    except (KeyError, RuntimeError, ValueError, TypeError, NotImplementedError) as err:
        if isinstance(err, GenieError):
            raise
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()] or [type(err).__name__]
        if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
            lines = lines[1:]  # torch's heading; the first problem it lists is on the next line
        detail = lines[0] if len(lines[0]) <= 300 else lines[0][:297] + "..."
        raise CheckpointError(f"{path}: does not match its config ({detail})") from None


def checkpoint_config(meta: dict[str, str]) -> dict:
    return json.loads(meta["config"])


def sub_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Tensors under ``prefix.`` with the prefix stripped (world bundles)."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}


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
        import typing

        from genie_core.config import GenieConfig
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
