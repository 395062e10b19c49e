"""Token files written by ``genie tokenize`` (docs/design.md, "Files").

An ``.npz`` holding ``tokens`` (int32, (T', h, w)) and ``meta`` (a 0-d unicode array of JSON), so
it loads with ``np.load(allow_pickle=False)`` and never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from genie_core.errors import GenieError
from genie_core.io.atomic import atomic_path
from genie_core.version import TOKEN_FORMAT_VERSION

# Keys every token file's metadata carries (more may be present).
REQUIRED_META = ("format_version", "source", "fps", "num_frames", "frame_size", "tokenizer_digest")


class TokenFileError(GenieError):
    """A token file that is missing, not an .npz, or not one genie wrote."""


def file_digest(path: str | os.PathLike, length: int = 16) -> str:
    """First ``length`` hex digits of the file's sha256 (names the tokenizer a token file came from)."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:length]


def save_tokens(path: str | os.PathLike, ids: Any, meta: dict[str, Any]) -> None:
    """Write ids (T', h, w) as int32 with ``meta`` (JSON-serialisable) atomically to ``path``."""

    ids = np.asarray(ids)
    if ids.ndim != 3:
        raise ValueError(f"token ids must be (T', h, w), got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"token ids must be integers, got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(np.int32).max):
        raise ValueError("token ids out of the int32 range")
    full = {"format_version": TOKEN_FORMAT_VERSION, **meta}
    full["format_version"] = TOKEN_FORMAT_VERSION
    full["token_shape"] = list(ids.shape)
    text = json.dumps(full, sort_keys=True)
    with atomic_path(path) as tmp:
        # Through a file handle: np.savez would otherwise append ".npz" to the temporary name.
        with open(tmp, "wb") as fh:
            np.savez(fh, tokens=ids.astype(np.int32), meta=np.array(text))


def load_tokens(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """(ids int64 (T', h, w), meta) of a token file; never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise TokenFileError(f"token file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "tokens" not in data.files or "meta" not in data.files:
                raise TokenFileError(f"{path}: not a genie token file (needs 'tokens' and 'meta')")
            ids = data["tokens"]
            meta_arr = data["meta"]
    except TokenFileError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError):
        # allow_pickle=False turns an object array into a ValueError too: refuse, never unpickle.
        raise TokenFileError(f"{path}: not a readable .npz token file") from None
    if meta_arr.ndim != 0 or meta_arr.dtype.kind != "U":
        raise TokenFileError(f"{path}: 'meta' must be a JSON string")
    try:
        meta = json.loads(str(meta_arr))
    except json.JSONDecodeError:
        raise TokenFileError(f"{path}: 'meta' is not valid JSON") from None
    if not isinstance(meta, dict):
        raise TokenFileError(f"{path}: 'meta' must be a JSON object")
    version = meta.get("format_version")
    if version != TOKEN_FORMAT_VERSION:
        raise TokenFileError(f"{path}: token format {version!r} is not supported "
                             f"(this genie reads format {TOKEN_FORMAT_VERSION})")
    if ids.ndim != 3 or not np.issubdtype(ids.dtype, np.integer):
        raise TokenFileError(f"{path}: 'tokens' must be integer (T', h, w), got {ids.dtype} {ids.shape}")
    vocab = meta.get("vocab_size")
    if ids.size and (ids.min() < 0 or (isinstance(vocab, int) and ids.max() >= vocab)):
        raise TokenFileError(f"{path}: token ids outside [0, {vocab})")
    return ids.astype(np.int64), meta
