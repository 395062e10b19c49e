"""Package version and on-disk format versions (no heavy imports)."""

__version__ = "0.1.0"

# Bumped whenever a checkpoint / token file layout changes incompatibly.
CHECKPOINT_FORMAT_VERSION = "1"
TOKEN_FORMAT_VERSION = "1"
ACTION_FORMAT_VERSION = "1"
