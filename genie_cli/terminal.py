"""Terminal drawing for `genie play` (Genie §2.2, playing a world): frames in 24-bit colour with
half-block characters, raw single-key input, in-place redraws. Stdlib (termios/tty) + numpy only."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import sys
import termios
import tty
from typing import Any, TextIO

import numpy as np

HALF_BLOCK = "\u2580"  # upper half block: foreground = upper pixel, background = lower pixel
RESET = "\x1b[0m"
HOME = "\x1b[H"  # cursor to the top-left corner: redraw in place, no clearing, no flicker
CLEAR_BELOW = "\x1b[J"
CLEAR_LINE_END = "\x1b[K"
_ENTER = "\x1b[?1049h\x1b[?25l\x1b[2J"  # alternate screen, hide cursor, clear
_LEAVE = RESET + "\x1b[?25h\x1b[?1049l"  # show cursor, back to the user's screen
# Escape sequences a key press may send (arrows, function keys): CSI/SS3 and lone ESC.
_ESCAPES = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|O.|.)?", re.DOTALL)


def fit_cells(height: int, width: int, cols: int, rows: int) -> tuple[int, int]:
    """Pixel size (h, w) of a ``height x width`` frame drawn in at most ``cols x rows`` cells.

    A cell is one pixel wide and two tall (half blocks), so pixels come out roughly square. The
    aspect ratio is kept; whole-number upscaling when the frame is smaller than the terminal
    keeps pixel edges sharp.
    """
    max_h, max_w = max(2, 2 * rows), max(1, cols)
    scale = min(max_h / height, max_w / width)
    if scale >= 1:
        scale = float(int(scale))
    return max(1, int(height * scale)), max(1, int(width * scale))


def resize_nearest(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of uint8 (H, W, 3) to (height, width, 3): pixel centres sampled."""
    H, W = frame.shape[:2]
    ys = ((np.arange(height) + 0.5) * H / height).astype(np.int64).clip(0, H - 1)
    xs = ((np.arange(width) + 0.5) * W / width).astype(np.int64).clip(0, W - 1)
    return frame[ys[:, None], xs[None, :]]


def half_block_lines(frame: np.ndarray, cols: int, rows: int) -> list[str]:
    """uint8 (H, W, 3) frame -> lines of half-block cells that fit ``cols x rows``, each line
    ending with a colour reset. Colour codes are emitted only where the colour changes."""
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) frame, got {frame.dtype} {frame.shape}")
    h, w = fit_cells(frame.shape[0], frame.shape[1], cols, rows)
    pixels = resize_nearest(frame, h, w)
    if h % 2:
        pixels = np.concatenate([pixels, np.zeros((1, w, 3), np.uint8)])  # black last half row
    upper, lower = pixels[0::2].tolist(), pixels[1::2].tolist()  # (rows, w, 3) each, as lists
    lines = []
    for top_row, bottom_row in zip(upper, lower):
        parts, fg, bg = [], None, None
        for top, bottom in zip(top_row, bottom_row):
            if top != fg:
                parts.append("\x1b[38;2;%d;%d;%dm" % tuple(top))
                fg = top
            if bottom != bg:
                parts.append("\x1b[48;2;%d;%d;%dm" % tuple(bottom))
                bg = bottom
            parts.append(HALF_BLOCK)
        parts.append(RESET)
        lines.append("".join(parts))
    return lines


def parse_keys(data: str) -> list[str]:
    """Single-character keys in typed order; escape sequences (arrows etc.) are dropped."""
    return list(_ESCAPES.sub("", data))


def terminal_size(out: TextIO) -> tuple[int, int]:
    """(columns, rows) of the terminal ``out`` writes to (80x24 when unknown)."""
    try:
        size = os.get_terminal_size(out.fileno())
        if size.columns > 0 and size.lines > 0:
            return size.columns, size.lines
    except (OSError, ValueError, AttributeError):
        pass
    size = shutil.get_terminal_size((80, 24))
    return size.columns, size.lines


class Screen:
    """The terminal in play mode: keys read one at a time without echo, the alternate screen
    drawn in place. Everything is restored on exit, after an exception or Ctrl-C too.

    ``with Screen() as screen: screen.draw(lines); keys = screen.read_keys(timeout)``
    """

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.fd = self.stdin.fileno()
        self._saved: list[Any] | None = None
        self._old_handlers: dict[int, Any] = {}
        self._last_size: tuple[int, int] | None = None

    def __enter__(self) -> "Screen":
        self._saved = termios.tcgetattr(self.fd)
        # cbreak, not raw: keys arrive one by one without echo, and Ctrl-C still raises
        # KeyboardInterrupt, so the caller's cleanup runs.
        tty.setcbreak(self.fd, termios.TCSANOW)
        for sig in (signal.SIGTERM, signal.SIGHUP):  # a closed terminal or kill: clean up too
            self._old_handlers[sig] = signal.signal(sig, _raise_exit)
        self.stdout.write(_ENTER)
        self.stdout.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.stdout.write(_LEAVE)
            self.stdout.flush()
        except OSError:
            pass  # the terminal is gone; still restore the settings below
        finally:
            if self._saved is not None:
                try:
                    termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
                except termios.error:
                    pass
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)

    @property
    def size(self) -> tuple[int, int]:
        return terminal_size(self.stdout)

    def resized(self) -> bool:
        """True once after the terminal's size changed (the caller redraws)."""
        size = self.size
        changed = self._last_size is not None and size != self._last_size
        self._last_size = size
        return changed

    def draw(self, lines: list[str], clear: bool = False) -> None:
        """Overwrite the screen from the top with ``lines`` (one write, so no flicker)."""
        cols, rows = self.size
        body = (CLEAR_LINE_END + "\r\n").join(lines[:rows])
        self.stdout.write(("\x1b[2J" if clear else "") + HOME + body + CLEAR_LINE_END + CLEAR_BELOW)
        self.stdout.flush()

    def read_keys(self, timeout: float | None = None) -> list[str] | None:
        """Keys typed so far, waiting up to ``timeout`` seconds (None: until one arrives);
        [] on timeout, None when the input is closed (end of file)."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        data = os.read(self.fd, 1024)
        if not data:
            return None
        return parse_keys(data.decode("utf-8", "replace"))


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)
