r"""The transformed half of the wrapped hyperboloid coupling (WHC, ``MATH.md`` §4), in one module: the map
``v = w₂ ⊙ e^s``, ``y₂ = log_o(L_t(exp_o(v)))`` and its log-det, as one autograd node with a hand-written backward
pass whose saved state is named (:class:`HalfState`, holding the boost's :class:`~manifolds.boost.BoostState`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from manifolds import lorentz_math as lm
from manifolds.base import ManifoldOps
from manifolds.lorentz import Lorentz
from manifolds.boost import (BoostState, bc_backward, bc_forward, boosted_logmap0, log_sinhc_nograd,
                            log_sinhc_prime)
from manifolds.constants import INTERNAL_DTYPE

from .conditioners import tanh as _tanh
from .constants import LOG_SCALE_BOUND
from .halves import CouplingHalf, _AffineHalfMap, bounded_log_scale

Tensor = torch.Tensor


class HalfState(NamedTuple):
    """What :class:`_HyperboloidHalfMap` keeps for its backward pass (float64): the curvature ``k``, ``th =
    tanh(ŝ/B)``, ``es = e^{±s}``, ``keep`` (``u = w·e^s`` when sampling, ``y`` when scoring), ``a = ||y||/sqrt(k)``
    (argument of the second ``ℓ``) and the boost's own state."""

    k: Tensor
    th: Tensor
    es: Tensor
    keep: Tensor
    a: Tensor
    boost: BoostState

    def tensors(self) -> tuple[Tensor, ...]:
        """Flat, for ``ctx.save_for_backward``."""
        return (*self[:5], *self.boost)

    @classmethod
    def from_tensors(cls, saved: tuple[Tensor, ...]) -> "HalfState":
        return cls(*saved[:5], BoostState(*saved[5:]))


class HyperboloidHalf(CouplingHalf):
    r"""Wrapped hyperboloid coupling of the transformed half, on the ``l``-dimensional sub-hyperboloid
    :math:`H^l_k` (``MATH.md`` §4):

    ``v = w₂ ⊙ exp(s)``,  ``y₂ = log_o(exp_t(PT_{o→t}(v)))`` with ``t = (sqrt(||t̂||² + k), t̂)`` and
    ``t̂ ∈ ℝˡ`` a network output; ``log|det| = Σ s + (l-1)·ℓ(||v||) - (l-1)·ℓ(||y₂||)`` (exponent ``l-1``: the
    paper's ``l`` is an erratum). ``exp_t ∘ PT_{o→t} = L_t ∘ exp_o`` with the Lorentz boost ``L_t``
    (:func:`manifolds.lorentz_math.translate`); transport contributes 0.

    The map is evaluated in float64 and returned in the input dtype: the boost cancels large coordinates
    when ``y₂`` lands near the origin, and ``||v||`` may exceed float32's ``cosh`` range (88) inside the map
    even when ``y₂`` does not.

    For ``l = 1`` (every half of a 2-D latent) :math:`H^1_k` is one geodesic, on which ``exp_o`` and ``log_o`` are
    arclength coordinates and the boost ``L_t`` is a translation by the signed distance ``τ = sqrt(k)·asinh(t̂/
    sqrt(k))`` of ``t`` from ``o``: ``y₂ = w₂·e^s + τ``, ``log|det| = s`` (the ``ℓ`` terms have exponent ``l-1 = 0``).
    That closed form is used (exact, well conditioned in the input dtype, no overflow inside the map).

    Example:
        >>> from manifolds import Lorentz
        >>> half, w, p = HyperboloidHalf(Lorentz(k=2.0)), torch.tensor([[0.5]]), torch.tensor([[0.1, 3.0]])
        >>> y, ladj = half(w, p)
        >>> s, tau = bounded_log_scale(p[:, :1]), 2.0 ** 0.5 * torch.asinh(p[:, 1:] / 2.0 ** 0.5)
        >>> torch.allclose(y, w * s.exp() + tau) and torch.allclose(ladj, s[:, 0])
        True
    """

    def __init__(self, manifold: ManifoldOps) -> None:
        super().__init__()
        if not isinstance(manifold, Lorentz):
            raise ValueError("the wrapped hyperboloid coupling needs a Lorentz manifold (it uses its curvature k)")
        self.manifold = manifold

    def _map(self, w: Tensor, params: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        k = self.manifold.k
        if w.size(-1) == 1:
            return self._map_line(w, params, k, sign)
        if not (k.requires_grad and torch.is_grad_enabled()):
            return _HyperboloidHalfMap.apply(w, params, k.detach().to(INTERNAL_DTYPE), sign < 0)
        return self._map_autograd(w, params, sign)

    @staticmethod
    def _map_line(w: Tensor, params: Tensor, k: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        """``l = 1``: ``log_o ∘ L_t^{±1} ∘ exp_o`` on the geodesic :math:`H^1_k` is ``v ↦ v ± τ``,
        ``τ = sqrt(k)·asinh(t̂/sqrt(k))``; so the half is the affine one with translation ``τ``."""
        raw, t_hat = params.chunk(2, dim=-1)
        sk = k.to(params.dtype).sqrt()
        tau = sk * lm.asinh(t_hat / sk)
        return _AffineHalfMap.apply(w, torch.cat([raw, tau], dim=-1), sign < 0)

    def _map_autograd(self, w: Tensor, params: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        """The reference form of :meth:`_map`, differentiated by autograd (used when ``k`` is learnable)."""
        dtype = w.dtype
        raw, t_hat = params.to(INTERNAL_DTYPE).chunk(2, dim=-1)
        s = bounded_log_scale(raw)
        k = self.manifold.k.to(INTERNAL_DTYPE)
        w = w.to(INTERNAL_DTYPE)
        if sign > 0:  # v = w ⊙ e^s, y = log_o(L_t(exp_o(v)))
            y, z = boosted_logmap0(w * torch.exp(s), t_hat, k, inverse=False)
            ell = lm.log_sinhc(z)  # ℓ(||v||), ℓ(||y||) in one call
            ladj = s.sum(-1) + (w.size(-1) - 1) * (ell[..., 0] - ell[..., 1])
        else:  # v = log_o(L_t⁻¹(exp_o(w))), y = v ⊙ e^{-s}
            v, z = boosted_logmap0(w, t_hat, k, inverse=True)
            y = v * torch.exp(-s)
            ell = lm.log_sinhc(z)  # ℓ(||w||), ℓ(||v||)
            ladj = (w.size(-1) - 1) * (ell[..., 0] - ell[..., 1]) - s.sum(-1)
        return y.to(dtype), ladj.to(dtype)

    def forward(self, w2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._map(w2, params, +1.0)

    def inverse(self, y2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._map(y2, params, -1.0)


class _HyperboloidHalfMap(torch.autograd.Function):
    r"""The whole transformed half of :class:`HyperboloidHalf` (fixed ``k``) as one autograd node: the bounded
    log-scale, ``v = w ⊙ e^{±s}``, :func:`bc_forward`, the ``ℓ`` terms of the log-det and the float64 casts.

    ``forward(w, params, k, inverse)`` returns ``(y, ladj)`` in ``w``'s dtype, computed in float64 with the
    formulas of :meth:`HyperboloidHalf._map_autograd`. Backward (``s = B·tanh(ŝ/B)``, ``ds/dŝ = 1 - tanh²``,
    ``ℓ' = coth z - 1/z``): the ladj's gradient ``ḡ_l`` enters :func:`bc_backward` as
    ``ḡ_z = (l-1)·ḡ_l·ℓ'(z)``, ``ḡ_a = -(l-1)·ḡ_l·ℓ'(a)``; density direction (``inverse``, ``y = v·e^{-s}``):
    ``ḡ_v = ḡ_y·e^{-s}``, ``ḡ_s = -ḡ_y·y - ḡ_l``; sampling direction (``u = w·e^s``): ``ḡ_w = ḡ_u·e^s``,
    ``ḡ_s = ḡ_u·u + ḡ_l``.
    """

    @staticmethod
    def forward(ctx, w: Tensor, params: Tensor, k: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        F = INTERNAL_DTYPE
        raw, t_hat = params.chunk(2, dim=-1)
        # the log-scale s = B·tanh(ŝ/B) in the conditioner's dtype (it is a network output; the map and its
        # log-det then use the same s in float64, so round trips and log-dets stay exact), with the fast tanh
        th = _tanh(raw / LOG_SCALE_BOUND).to(F)
        t_hat = t_hat.to(F)
        s = LOG_SCALE_BOUND * th
        w64 = w.to(F)
        l1 = w.size(-1) - 1
        if inverse:  # v = log_o(L_t⁻¹(exp_o(w))), y = v ⊙ e^{-s}
            v, z, a, boost = bc_forward(w64, t_hat, k, True)
            es = torch.exp(-s)
            y = v * es
            ell = log_sinhc_nograd(torch.cat([z, a], dim=-1))
            ladj = l1 * (ell[..., 0] - ell[..., 1]) - s.sum(-1)
            keep = y
        else:  # v = w ⊙ e^s, y = log_o(L_t(exp_o(v)))
            es = torch.exp(s)
            u = w64 * es
            y, z, a, boost = bc_forward(u, t_hat, k, False)
            ell = log_sinhc_nograd(torch.cat([z, a], dim=-1))
            ladj = s.sum(-1) + l1 * (ell[..., 0] - ell[..., 1])
            keep = u
        ctx.save_for_backward(*HalfState(k, th, es, keep, a, boost).tensors())
        ctx.inverse = inverse
        ctx.l1 = l1
        ctx.dtypes = (w.dtype, params.dtype)
        return y.to(w.dtype), ladj.to(w.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor, gl: Tensor):
        st = HalfState.from_tensors(ctx.saved_tensors)
        k, th, es, keep, boost = st.k, st.th, st.es, st.keep, st.boost
        F = INTERNAL_DTYPE
        gy = gy.to(F)
        gl = gl.to(F).unsqueeze(-1)
        dell = (ctx.l1 * gl) * log_sinhc_prime(torch.cat([boost.z, st.a], dim=-1))
        gz, ga = dell[..., :1], -dell[..., 1:]
        need_w, need_p = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if ctx.inverse:
            gw, gt = bc_backward(boost, k, True, gy * es, gz, ga, need_w, need_p)
            gs = -(gy * keep) - gl
        else:
            gu, gt = bc_backward(boost, k, False, gy, gz, ga, need_w or need_p, need_p)
            gw = gu * es if need_w else None
            gs = gu * keep + gl
        gp = torch.cat([gs * (1 - th * th), gt], dim=-1).to(ctx.dtypes[1]) if need_p else None
        return (gw.to(ctx.dtypes[0]) if need_w else None), gp, None, None


