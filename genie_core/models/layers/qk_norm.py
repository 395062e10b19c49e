"""QK-norm (RMS norm of each head's queries and keys with a learned gain; Dehghani et al. 2023)
and the rotary positions after it, in one fp32 pass over the queries and keys with a hand-written
backward (``norm_rotate``).

Written as separate autograd expressions, the norm and the rotation were the largest cost of a
dynamics training step on CPU (about 45% of the `coinrun` step's kernel time: upcasts, squares,
products and their backward, each a pass over a (B, T, S, 2, H, Dh) fp32 tensor), more than all
its matmuls. Here the gain is folded into the rotation table and the norm's scalar applied last,
so the forward is a handful of passes and the backward about twice that.

For one vector x over a head (Dh values), gain s, rotation tables cos / signed sin and the
half-swap P (its own inverse):

    r = (mean(x^2) + eps)^(-1/2),   u = x * (s cos) + P(x) * (P(s) sin),   y = r u.

With G = dL/dy and V = G cos + P(G sin): dL/du = r G, A^T G = s V, so

    dL/dx = r (s V - (r^2 / Dh) sum(s V x) x),   dL/ds = sum over vectors of r x V.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["norm_rotate"]


def _swap(x: Tensor, groups: int) -> Tensor:
    """Each half-split group of the last dim with its halves exchanged (the rotary layout's P)."""
    return x.unflatten(-1, (groups, 2, x.shape[-1] // (2 * groups))).flip(-2).flatten(-3)


def _eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps  # F.rms_norm's default for its input's dtype


def _whole(scale: Tensor, x: Tensor) -> Tensor:
    """The gain made whole over one more of x's trailing dims than it spans (the positions, as
    the tables are): a small broadcast operand (one gain for every head) took 3x as long per
    product on CPU."""
    return scale.expand(x.shape[max(0, x.ndim - scale.ndim - 1):]).contiguous()


def _forward(x: Tensor, scale: Tensor, table: tuple[Tensor, Tensor, int] | None) -> tuple[Tensor, Tensor]:
    """(y in x's dtype, r (..., 1) in the wide dtype) for x (..., Dh), scale broadcastable to x's
    trailing dims, table (cos, signed sin, groups) as ``_rotate`` takes it, or None (norm only)."""
    wide = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(wide)
    r = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).square_().div_(x.shape[-1])
    r = r.add_(_eps(wide)).rsqrt_()
    s = _whole(scale.to(wide), x)
    if table is None:
        u = xf * s
    else:
        cos, sin, groups = table
        u = xf * (cos * s)
        u.addcmul_(_swap(xf, groups), sin * _swap(s, groups))
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return torch.mul(u, r, out=out), r


class _NormRotate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, cos: Tensor | None, sin: Tensor | None, groups: int) -> Tensor:
        table = None if cos is None else (cos, sin, groups)
        y, r = _forward(x, scale, table)
        ctx.save_for_backward(x, scale, r, cos, sin)
        ctx.groups = groups
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, scale, r, cos, sin = ctx.saved_tensors
        wide = r.dtype
        g = grad.to(wide)
        if cos is None:
            v = g
        else:
            v = _swap(g * sin, ctx.groups).addcmul_(g, cos)
        xf = x.to(wide)
        s = _whole(scale.to(wide), x)
        xv = xf * v  # (..., Dh)
        grad_scale = None
        if ctx.needs_input_grad[1]:
            lead = xv.ndim - scale.ndim
            grad_scale = (xv * r).sum(dim=tuple(range(lead)))
            # scale may broadcast over some of x's trailing dims (a gain shared by the heads)
            dims = tuple(i for i, n in enumerate(scale.shape) if n == 1 and grad_scale.shape[i] != 1)
            if dims:
                grad_scale = grad_scale.sum(dim=dims, keepdim=True)
            grad_scale = grad_scale.to(scale.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            dot = (xv * s).sum(-1, keepdim=True)  # sum(s V x): the gradient's part through r
            w = (v * s).mul_(r)
            grad_x = w.addcmul_(xf, dot * r.pow(3) / x.shape[-1], value=-1.0).to(x.dtype)
        return grad_x, grad_scale, None, None, None


def norm_rotate(x: Tensor, scale: Tensor, table: tuple[Tensor, Tensor, int] | None = None) -> Tensor:
    """``rms_norm(x) * scale`` over the last dim, then (with a ``table`` of ``_rotate``'s form)
    rotated: in fp32 (or wider) from x's dtype, one rounding back to it at the end. x (..., Dh);
    ``scale`` (Dh,) or broadcastable to x's trailing dims (e.g. (2, 1, Dh): query and key
    gains over every head); tables (P, ..., Dh) over x's last dims."""
    if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
        cos, sin, groups = table if table is not None else (None, None, 0)
        return _NormRotate.apply(x, scale, cos, sin, groups)
    # Outside autograd (play, evaluation) the fewest kernels: each is a small pass over one
    # frame's tokens there, and the per-kernel overhead is most of their time.
    wide = torch.promote_types(x.dtype, torch.float32)
    normed = F.rms_norm(x.to(wide), (x.shape[-1],))
    s = scale.to(wide)
    if table is None:
        return (normed * s).to(x.dtype)
    cos, sin, groups = table
    out = normed * (cos * s)
    return out.addcmul_(_swap(normed, groups), sin * _swap(s, groups)).to(x.dtype)
