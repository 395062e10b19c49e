"""The one place that knows which model class each checkpoint kind holds (``model_class``), so
``load_checkpoint`` rebuilds any of them from the file alone. The file format itself is
``genie_core.io.checkpoint_format``, which knows no model.

The models import the format module, never this one, so imports point one way: this module ->
the models -> the format. Loading never unpickles anything.
"""

from __future__ import annotations

import os
from typing import Any

from genie_core.io.checkpoint_format import CheckpointError, check_header, checkpoint_step, load_checked, read_metadata


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


def load_checkpoint(path: str | os.PathLike, *, expect_kind: str | tuple[str, ...] | None = None,
                    device: str = "cpu") -> Any:
    """Rebuild whatever model a checkpoint holds (tokenizer, lam, dynamics or world), in eval mode.

    The model class is chosen by the file's ``kind``; its config comes from the file, so no
    preset is needed.
    """
    meta = read_metadata(path)
    check_header(path, meta, expect_kind)
    model = load_checked(path, model_class(meta["kind"]).from_checkpoint_state, expect_kind=expect_kind)
    model.checkpoint_step = checkpoint_step(meta, path)
    return model.to(device).eval()
