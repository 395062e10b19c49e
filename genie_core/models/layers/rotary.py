"""Rotary positions (RoFormer, Su et al. 2021): 1-D over frames and 2-D over a token grid, as the
public ``apply_rotary`` / ``apply_grid_rotary`` and as the memoised whole tables the ST transformer
rotates with in one pass (``_rotate``)."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["rotary_angles", "apply_rotary", "grid_angles", "apply_grid_rotary"]


def rotary_angles(positions: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (T, head_dim // 2) for integer ``positions`` (T,), in fp32.

    Positions are absolute frame indices: a cached key keeps the rotation of the frame it came
    from, and q.k then depends only on the distance between frames (RoFormer, Su et al. 2021),
    so nothing shifts when the window slides.
    """
    # In float64 on the CPU (MPS has no float64): an fp32 angle of frame 10,000 is off by up to
    # 5e-4 rad, so a long play session would drift from a full forward.
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.detach().cpu().to(torch.float64)[:, None] * inv_freq[None, :]  # (T, Dh/2)
    return (angles.cos().to(positions.device, torch.float32), angles.sin().to(positions.device, torch.float32))


def _full_width(cos_parts: tuple[Tensor, ...], sin_parts: tuple[Tensor, ...], heads: int,
                dtype: torch.dtype, pairs: int = 0) -> tuple[Tensor, Tensor, int]:
    """Rotation tables over every head for ``_rotate``: cos (P, heads, Dh) and the signed sin of
    each half-split group (one group for time, two for the grid's rows and columns); with
    ``pairs`` n > 0, (P, n, heads, Dh), for queries and keys rotated together. Made whole, not
    broadcast: a broadcast fp32 table over a bf16 x took 3-6x as long on CPU."""
    cos = torch.cat([torch.cat((c, c), dim=-1) for c in cos_parts], dim=-1)
    sin = torch.cat([torch.cat((-s, s), dim=-1) for s in sin_parts], dim=-1)
    if pairs:
        whole = lambda t: t[:, None, None].expand(-1, pairs, heads, -1).to(dtype).contiguous()  # noqa: E731
    else:
        whole = lambda t: t[:, None].expand(-1, heads, -1).to(dtype).contiguous()  # noqa: E731
    return whole(cos), whole(sin), len(cos_parts)


@functools.lru_cache(maxsize=256)
def _frame_table(start: int, count: int, head_dim: int, heads: int, dtype: torch.dtype,
                 device: torch.device, pairs: int = 0) -> tuple[Tensor, Tensor, int]:
    """The rotation of frames start..start+count-1, memoised: every layer and every MaskGIT
    step of a frame asks for the same one. Made outside inference mode, so a table first built
    during play can still be used by training (inference tensors cannot join autograd)."""
    with torch.inference_mode(False), torch.no_grad():
        cos, sin = rotary_angles(torch.arange(start, start + count, device=device), head_dim)
        return _full_width((cos,), (sin,), heads, dtype, pairs)


@functools.lru_cache(maxsize=64)
def _grid_table(height: int, width: int, head_dim: int, heads: int, dtype: torch.dtype,
                device: torch.device, prefix: int = 0, pairs: int = 0) -> tuple[Tensor, Tensor, int]:
    """The grid's rotation, after ``prefix`` unrotated rows (tokens with no position, such as
    a pooling token before the grid: cos 1, sin 0)."""
    with torch.inference_mode(False), torch.no_grad():
        cos_r, sin_r, cos_c, sin_c = grid_angles(height, width, head_dim, device)
        lead = lambda a, fill: torch.cat((a.new_full((prefix, a.shape[1]), fill), a))  # noqa: E731
        cos_r, cos_c, sin_r, sin_c = lead(cos_r, 1.0), lead(cos_c, 1.0), lead(sin_r, 0.0), lead(sin_c, 0.0)
        return _full_width((cos_r, cos_c), (sin_r, sin_c), heads, dtype, pairs)


def _rotate(x: Tensor, table: tuple[Tensor, Tensor, int]) -> Tensor:
    """``apply_rotary`` (one group) or ``apply_grid_rotary`` (two) in a few passes over x
    (..., P, H, Dh) with (P, H, Dh) tables (or x (..., P, n, H, Dh) with ``pairs=n`` tables):
    with fp32 tables the same products and sums as
    ``apply_rotary``, so the same bits (an fp32 table promotes a bf16 x exactly; the sign lives
    in the table), without splitting, upcasting and concatenating. The ST transformer uses fp32
    tables in training too, so the model trains on the rotations it plays with (bf16 tables made
    training's rotary pass 1.7x faster, a few bf16 roundings off)."""
    cos, sin, groups = table
    split = (groups, 2, x.shape[-1] // (2 * groups))
    if torch.is_grad_enabled() and (x.requires_grad or cos.requires_grad):
        swapped = x.unflatten(-1, split).flip(-2).flatten(-3)
        return (x * cos + swapped * sin).to(x.dtype)
    # Outside autograd: x upcast first, then in place, the same products and sum (bit for bit,
    # tested) without mixed-dtype kernels, which took 1.3x (a frame's table broadcast over the
    # tokens) to 6x (a whole grid table) as long on CPU. (In training the in-place form made the
    # backward slower, so training keeps the expression.)
    wide = x.to(torch.promote_types(x.dtype, cos.dtype), copy=True)  # never x itself: changed in place
    swapped = wide.unflatten(-1, split).flip(-2).flatten(-3)
    swapped.mul_(sin)
    return wide.mul_(cos).add_(swapped).to(x.dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (..., T, Dh) pairwise (half-split layout) by angles cos/sin (T, Dh/2)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.to(x.dtype)


def grid_angles(height: int, width: int, head_dim: int, device: torch.device | str = "cpu") -> tuple[Tensor, ...]:
    """2-D rotary angles for an (height x width) grid in row-major order: (cos_row, sin_row,
    cos_col, sin_col), each (height * width, head_dim // 4). The first half of a head rotates by
    the row, the second by the column, so q.k depends only on the offset between two tokens:
    "the sprite moves one token left" is then one rule at every position."""
    if head_dim % 4:
        raise ValueError(f"2-D rotary positions need a head size divisible by 4, got {head_dim}")
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    return (*rotary_angles(rows, head_dim // 2), *rotary_angles(cols, head_dim // 2))


def apply_grid_rotary(x: Tensor, angles: tuple[Tensor, ...]) -> Tensor:
    """Rotate x (..., S, Dh) by grid_angles (row angles on the first half of Dh, column on the second)."""
    cos_r, sin_r, cos_c, sin_c = angles
    xr, xc = x.chunk(2, dim=-1)
    return torch.cat((apply_rotary(xr, cos_r, sin_r), apply_rotary(xc, cos_c, sin_c)), dim=-1)
