"""Atomic file writes (temporary name in the same folder, then rename): a crash or an error while
writing never leaves a half-written file or destroys the previous one. Torch-free."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


class AtomicWrite:
    """``with atomic_path(p) as tmp: write(tmp)``: renamed onto ``p`` only when the block succeeds."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f"{self.path.suffix}.tmp",
                                   dir=self.path.parent)
        os.close(fd)
        # mkstemp creates 0600; give the final file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def atomic_path(path: str | os.PathLike) -> AtomicWrite:
    return AtomicWrite(Path(path))
