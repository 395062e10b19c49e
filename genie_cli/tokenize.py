"""`genie tokenize` (placeholder: being written)."""

from __future__ import annotations


def tokenize() -> None:
    """Not implemented yet."""
    raise SystemExit("not implemented")
