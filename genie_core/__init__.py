"""genie_core: the library behind ``genie``: tokenizer, latent action model, dynamics, training.

The seed API (``from genie_core import VideoTokenizer, MAGVIT2_ENC_DESC, MAGVIT2_DEC_DESC``) is
kept working; names are imported lazily so that ``import genie_core.config`` stays torch-free.
"""

from __future__ import annotations

from typing import Any

from genie_core.version import __version__

_LAZY = {
    "VideoTokenizer": "genie_core.models.tokenizer",
    "MAGVIT2_ENC_DESC": "genie_core.models.tokenizer",
    "MAGVIT2_DEC_DESC": "genie_core.models.tokenizer",
    "load_checkpoint": "genie_core.models.load",
    "load_model": "genie_core.models.load",
    "LatentActionModel": "genie_core.models.lam",
    "DynamicsModel": "genie_core.models.dynamics",
    "World": "genie_core.models.world",
    "load_world": "genie_core.tasks.env",
    "WorldEnv": "genie_core.tasks.env",
    "list_worlds": "genie_core.tasks.worlds",
    "load_preset": "genie_core.config",
    "GenieConfig": "genie_core.config",
}

# Modules reachable as attributes of the package: ``from genie_core import api`` is what the
# commands call for tokenize/reconstruct (documented in the README), now genie_core.tasks.tokenize.
_MODULES = {"api": "genie_core.tasks.tokenize"}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY or name in _MODULES:
        import importlib
        if name in _MODULES:
            return importlib.import_module(_MODULES[name])
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'genie_core' has no attribute {name!r}")
