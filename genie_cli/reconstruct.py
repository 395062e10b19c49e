"""`genie reconstruct` (placeholder: being written)."""

from __future__ import annotations


def reconstruct() -> None:
    """Not implemented yet."""
    raise SystemExit("not implemented")
