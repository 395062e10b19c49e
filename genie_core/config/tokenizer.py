"""Tokenizer config (MagViT-2 after the seed API). PLACEHOLDER: the tokenizer work replaces this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TokenizerConfig:
    enc_desc: tuple[Any, ...] = ()
    dec_desc: tuple[Any, ...] | None = None
    d_codebook: int = 10
    n_codebook: int = 1
