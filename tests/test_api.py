"""Token files and the library functions behind `genie tokenize` / `genie reconstruct`
(windowed, batched tokenization of long videos; Genie §2.1)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from genie_core import api
from genie_core.checkpoint import save_checkpoint
from genie_core.errors import CheckpointError, ConfigError, GenieError
from genie_core.tokens import TokenFileError, file_digest, load_tokens, save_tokens
from genie_core.version import TOKEN_FORMAT_VERSION


# ---- token files ---------------------------------------------------------------------------

def test_tokens_round_trip_int32_on_disk(tmp_path: Path) -> None:
    ids = np.random.default_rng(0).integers(0, 256, size=(5, 4, 6))
    meta = {"source": "a.mp4", "fps": 12.5, "num_frames": 5, "frame_size": [16, 24],
            "tokenizer_digest": "0123456789abcdef", "vocab_size": 256}
    path = tmp_path / "t.npz"
    save_tokens(path, ids, meta)
    with np.load(path, allow_pickle=False) as raw:  # readable without pickle by anyone
        assert raw["tokens"].dtype == np.int32 and raw["tokens"].shape == (5, 4, 6)
        assert raw["meta"].ndim == 0
    back, meta_back = load_tokens(path)
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, ids)
    assert meta_back["format_version"] == TOKEN_FORMAT_VERSION
    assert meta_back["token_shape"] == [5, 4, 6]
    for key, value in meta.items():
        assert meta_back[key] == value
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]  # no temporary left behind


def test_save_tokens_rejects_bad_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_tokens(tmp_path / "a.npz", np.zeros((2, 3)), {})
    with pytest.raises(ValueError):
        save_tokens(tmp_path / "b.npz", np.zeros((1, 2, 3), dtype=np.float32), {})
    assert not list(tmp_path.iterdir())


def test_load_tokens_refuses_bad_files(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="not found"):
        load_tokens(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(TokenFileError, match="not a readable"):
        load_tokens(tmp_path / "text.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(TokenFileError, match="not a genie token file"):
        load_tokens(tmp_path / "other.npz")
    # An object array would need unpickling: refused, never executed.
    np.savez(tmp_path / "pickled.npz", tokens=np.zeros((1, 1, 1), dtype=np.int32),
             meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(TokenFileError):
        load_tokens(tmp_path / "pickled.npz")
    bad_version = json.dumps({"format_version": "999"})
    np.savez(tmp_path / "future.npz", tokens=np.zeros((1, 1, 1), dtype=np.int32),
             meta=np.array(bad_version))
    with pytest.raises(TokenFileError, match="format '999'"):
        load_tokens(tmp_path / "future.npz")
    ok_meta = json.dumps({"format_version": TOKEN_FORMAT_VERSION, "vocab_size": 4})
    np.savez(tmp_path / "range.npz", tokens=np.full((1, 1, 1), 4, dtype=np.int32),
             meta=np.array(ok_meta))
    with pytest.raises(TokenFileError, match="outside"):
        load_tokens(tmp_path / "range.npz")


def test_file_digest_is_sha256_prefix(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"genie" * 1000)
    assert file_digest(path) == hashlib.sha256(b"genie" * 1000).hexdigest()[:16]


# ---- tokenizer loading -----------------------------------------------------------------------

def test_load_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(GenieError, match="tokenizer is needed"):
        api.load_tokenizer(None)
    with pytest.raises(CheckpointError, match="not found"):
        api.load_tokenizer(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a safetensors"):
        api.load_tokenizer(tmp_path / "junk.safetensors")
    save_checkpoint(tmp_path / "lam.safetensors", {"w": torch.zeros(2)}, kind="lam", config={})
    with pytest.raises(CheckpointError, match="holds a lam checkpoint"):
        api.load_tokenizer(tmp_path / "lam.safetensors")
    with pytest.raises(ConfigError, match="unknown preset"):
        api.load_tokenizer(None, preset="no-such-preset")
