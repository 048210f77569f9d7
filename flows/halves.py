r"""The bijections of a coupling layer's transformed half given the conditioner's parameters: affine (RealNVP,
NC/TC) and additive (NICE). The wrapped hyperboloid half (WHC) is :mod:`flows.hyperboloid_half`; the skeleton that
splits the coordinates and calls a half is :class:`flows.coupling.Coupling`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .constants import LOG_SCALE_BOUND

Tensor = torch.Tensor


def bounded_log_scale(raw: Tensor) -> Tensor:
    r"""``s = B·tanh(ŝ/B)``: a smooth bound ``|s| < B`` (``B`` = :data:`~flows.constants.LOG_SCALE_BOUND`),
    the identity near 0; not a clamp (strictly increasing, so the coupling stays a bijection)."""
    return LOG_SCALE_BOUND * torch.tanh(raw / LOG_SCALE_BOUND)


class CouplingHalf(nn.Module):
    """A bijection of the transformed half ``w₂ ∈ ℝˡ`` given per-coordinate parameters (``n_params`` per coordinate)."""

    n_params: int = 2

    def per_coordinate(self, w2: Tensor, params: Tensor) -> Tensor:
        """The conditioner's output ``params`` (``..., n_params·l``, parameter-major: ``params[..., p·l + i]`` is
        parameter ``p`` of coordinate ``i``) as ``(..., l, n_params)``: one row of parameters per coordinate."""
        return params.unflatten(-1, (self.n_params, w2.size(-1))).transpose(-1, -2)

    def forward(self, w2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        """``(y₂, log|det ∂y₂/∂w₂|)``: the transformed half ``w₂`` mapped with the conditioner output ``params``."""
        raise NotImplementedError

    def inverse(self, y2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        """``(w₂, log|det ∂w₂/∂y₂|)``: the inverse of :meth:`forward` for the transformed half ``y₂`` and the same
        conditioner output ``params``."""
        raise NotImplementedError


class AffineHalf(CouplingHalf):
    r"""``y₂ = w₂ ⊙ exp(s) + t``, ``log|det| = Σ s`` (RealNVP)."""

    def forward(self, w2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return _AffineHalfMap.apply(w2, params, False)

    def inverse(self, y2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return _AffineHalfMap.apply(y2, params, True)


class _AffineHalfMap(torch.autograd.Function):
    r""":class:`AffineHalf` as one autograd node (same forward operations, hand-written backward).

    With ``s = B·tanh(ŝ/B)`` (``ds/dŝ = 1 - tanh²``): forward ``y = w·e^s + t``: ``ḡ_w = ḡ_y·e^s``,
    ``ḡ_t = ḡ_y``, ``ḡ_s = ḡ_y·(w·e^s) + ḡ_l``; inverse ``x = (y - t)·e^{-s}``: ``ḡ_y = ḡ_x·e^{-s}``,
    ``ḡ_t = -ḡ_y``, ``ḡ_s = -ḡ_x·x - ḡ_l``.
    """

    @staticmethod
    def forward(ctx, w: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raw, t = params.chunk(2, dim=-1)
        th = torch.tanh(raw / LOG_SCALE_BOUND)
        s = LOG_SCALE_BOUND * th
        if inverse:
            es = torch.exp(-s)
            out = (w - t) * es
            ladj = -s.sum(-1)
            keep = out
        else:
            es = torch.exp(s)
            keep = w * es
            out = keep + t
            ladj = s.sum(-1)
        ctx.save_for_backward(th, es, keep)
        ctx.inverse = inverse
        return out, ladj

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor, gl: Tensor):
        th, es, keep = ctx.saved_tensors
        gw = gy * es
        gl = gl.unsqueeze(-1)
        if ctx.inverse:
            gs = -(gy * keep) - gl
            gt = -gw
        else:
            gs = gy * keep + gl
            gt = gy
        gp = torch.cat([gs * (1 - th * th), gt], dim=-1) if ctx.needs_input_grad[1] else None
        return (gw if ctx.needs_input_grad[0] else None), gp, None


class AdditiveHalf(CouplingHalf):
    r"""``y₂ = w₂ + t``, ``log|det| = 0`` (NICE, Dinh, Krueger, Bengio 2015, arXiv 1410.8516): volume-preserving.

    Example:
        >>> AdditiveHalf()(torch.zeros(2, 3), torch.ones(2, 3))
        (tensor([[1., 1., 1.],
                [1., 1., 1.]]), tensor([0., 0.]))
    """

    n_params = 1

    def forward(self, w2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return w2 + params, w2.new_zeros(w2.shape[:-1])

    def inverse(self, y2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return y2 - params, y2.new_zeros(y2.shape[:-1])


