"""The one place that knows which model class each checkpoint kind holds (``model_class``) and
the one loader every caller goes through (``load_model``): any checkpoint, or one part of a
world bundle. The file format itself is ``genie_core.io.checkpoint_format``, which knows no model.

The models import the format module, never this one, so imports point one way: this module ->
the models -> the format. Loading never unpickles anything.
"""

from __future__ import annotations

import os
from typing import Any

from genie_core.io.checkpoint_format import (
    CheckpointError,
    check_header,
    checkpoint_config,
    checkpoint_step,
    load_checked,
    read_metadata,
)

PARTS = ("tokenizer", "lam", "dynamics")


def model_class(kind: str) -> type:
    """The model class for a checkpoint kind (imported when first asked for: importing this
    module does not build the models' modules)."""
    if kind == "tokenizer":
        from genie_core.models.tokenizer import VideoTokenizer
        return VideoTokenizer
    if kind == "lam":
        from genie_core.models.lam import LatentActionModel
        return LatentActionModel
    if kind == "dynamics":
        from genie_core.models.dynamics import DynamicsModel
        return DynamicsModel
    if kind == "world":
        from genie_core.models.world import World
        return World
    raise CheckpointError(f"unknown checkpoint kind {kind!r}")


def _build_part(path: Any, kind: str, config: Any, prefix: str, inference: bool) -> Any:
    """``build(tensors, meta)`` for ``load_checked``: a ``kind`` model from ``config`` (a dict),
    its state read from the tensors under ``prefix`` (prefix stripped)."""
    from genie_core.config import from_dict

    cls = model_class(kind)

    def build(tensors: dict, meta: dict[str, str]) -> Any:
        if prefix and not tensors:
            raise CheckpointError(f"{path}: world bundle holds no {prefix}* tensors")
        cfg = from_dict(cls.config_class(), config, source=f"{path} {kind} config")
        state = {k[len(prefix):]: v for k, v in tensors.items()}
        if kind == "tokenizer" and inference:
            from genie_core.models.tokenizer import TRAINING_ONLY
            from genie_core.models.world import inference_tokenizer_config
            cfg = inference_tokenizer_config(cfg)
            state = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY)}
        model = cls.from_config(cfg)
        model.load_state_dict(state, strict=True)
        return model

    return build


def load_model(path: str | os.PathLike, kind: str | None = None, *, device: str = "cpu",
               inference: bool = False) -> Any:
    """The model a checkpoint holds, in eval mode, rebuilt from the file alone (no preset).

    ``kind`` None takes whatever the file holds (tokenizer, lam, dynamics or world); ``"world"``
    wants a world bundle; a part (``"tokenizer"``, ``"lam"``, ``"dynamics"``) takes a checkpoint
    of that kind or that part of a world bundle (only its tensors are read). With ``inference`` a
    tokenizer comes without its training-only parts (discriminator, perceptual loss), so
    inference never needs their weights. Any bad file is a one-line CheckpointError naming it.
    """
    meta = read_metadata(path)
    held = meta["kind"]
    if kind is not None and held != kind and not (kind in PARTS and held == "world"):
        wanted = "world" if kind == "world" else f"a {kind} (or a world bundle)"
        raise CheckpointError(f"{path}: holds a {held} checkpoint, expected {wanted}")
    if kind in PARTS and held == "world":
        config = checkpoint_config(meta)
        if not isinstance(config, dict) or not isinstance(config.get(kind), dict):
            raise CheckpointError(f"{path}: world bundle without a {kind} config")
        build = _build_part(path, kind, config[kind], f"{kind}.", inference)
        model = load_checked(path, build, expect_kind="world", prefix=f"{kind}.")
    elif held == "tokenizer" and inference:
        model = load_checked(path, _build_part(path, held, checkpoint_config(meta), "", True), expect_kind=held)
    else:
        model = load_checked(path, model_class(held).from_checkpoint_state, expect_kind=held)
    model.checkpoint_step = checkpoint_step(meta, path)
    return model.to(device).eval()


def load_checkpoint(path: str | os.PathLike, *, expect_kind: str | tuple[str, ...] | None = None,
                    device: str = "cpu") -> Any:
    """``load_model`` of a file whose kind is exactly ``expect_kind`` when given (a world bundle
    is refused where a part is expected; ``load_model(path, part)`` reads the part)."""
    if expect_kind is not None:
        check_header(path, read_metadata(path), expect_kind)
    return load_model(path, device=device)
