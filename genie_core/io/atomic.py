"""Atomic file writes (temporary name in the same folder, then rename): a crash or an error while
writing never leaves a half-written file or destroys the previous one. Torch-free."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

from genie_core.errors import OutputError


class AtomicWrite:
    """``with atomic_path(p) as tmp: write(tmp)``: renamed onto ``p`` only when the block succeeds.
    An OSError while creating or writing the file (read-only folder, full disk) becomes an
    ``OutputError`` naming ``p``, and the temporary file is removed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f"{self.path.suffix}.tmp",
                                       dir=self.path.parent)
        except OSError as err:
            if err.errno == errno.EEXIST:  # mkdir met a file where a folder of the path should be
                err = OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            raise _output_error(self.path, err) from None
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            # mkstemp creates 0600, and some writers (safetensors) recreate the file 0600 too; give
            # the final file the permissions a plain open() would, after the writer is done.
            umask = os.umask(0)
            os.umask(umask)
            try:
                os.chmod(self.tmp, 0o666 & ~umask)
                os.replace(self.tmp, self.path)
            except OSError as err:
                _discard(self.tmp)
                raise _output_error(self.path, err) from None
            except BaseException:
                _discard(self.tmp)
                raise
        else:
            _discard(self.tmp)
            if isinstance(exc, OSError) and _about_output(exc, self.tmp):
                raise _output_error(self.path, exc) from None


def _about_output(err: OSError, tmp: Path) -> bool:
    """An OSError raised while writing the temporary file (a full disk, a quota, a read-only
    mount), as opposed to one about some other file the writer was reading."""
    return (err.filename in (None, str(tmp), os.fspath(tmp))
            or err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG))


def _output_error(path: Path, err: OSError) -> OutputError:
    from genie_core.io.outputs import describe_os_error

    return OutputError(f"cannot write {describe_os_error(err, path)}")


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def atomic_path(path: str | os.PathLike) -> AtomicWrite:
    return AtomicWrite(Path(path))
