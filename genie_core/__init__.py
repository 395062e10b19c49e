"""genie_core: the library behind ``genie``: tokenizer, latent action model, dynamics, training.

The seed API (``from genie_core import VideoTokenizer, MAGVIT2_ENC_DESC, MAGVIT2_DEC_DESC``) is
kept working; names are imported lazily so that ``import genie_core.config`` stays torch-free.
"""

from __future__ import annotations

from typing import Any

from genie_core.version import __version__

_LAZY = {
    "VideoTokenizer": "genie_core.tokenizer",
    "MAGVIT2_ENC_DESC": "genie_core.tokenizer",
    "MAGVIT2_DEC_DESC": "genie_core.tokenizer",
    "load_checkpoint": "genie_core.checkpoint",
    "LatentActionModel": "genie_core.lam",
    "DynamicsModel": "genie_core.dynamics",
    "World": "genie_core.world",
    "load_world": "genie_core.env",
    "WorldEnv": "genie_core.env",
    "list_worlds": "genie_core.worlds",
    "load_preset": "genie_core.config",
    "GenieConfig": "genie_core.config",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'genie_core' has no attribute {name!r}")
