r"""``log_o ∘ L_t^{±1} ∘ exp_o`` on :math:`H^l_k` as one fused operation with an analytic backward pass.

The map ``u ↦ log_o(L_t^{±1}(exp_o(u)))`` (tangent coordinates at the origin in, tangent coordinates at the origin
out, through the Lorentz boost ``L_t`` that takes ``o`` to ``t``) is what both the wrapped hyperboloid coupling
(``flows.coupling``, MATH.md §4) and a wrapped normal's sample in tangent coordinates
(:meth:`manifolds.WrappedNormal.rsample_logmap0_and_log_prob`, MATH.md §3) compute. Composed from
:func:`~manifolds.lorentz_math.expmap0_spatial`, :func:`~manifolds.lorentz_math.translate` and
:func:`~manifolds.lorentz_math.logmap0_spatial` it records about 250 small autograd operations; fused, the
forward pass needs about 30 and the vector-Jacobian product about 40, all in float64.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch.autograd.function import once_differentiable

from . import lorentz_math as lm
from .constants import LOG_SINHC_SERIES_THRESHOLD, SINHC_PRIME_SERIES_THRESHOLD, tiny

Tensor = torch.Tensor

__all__ = ["BoostState", "boosted_logmap0", "boosted_logmap0_autograd"]

#: how an overflow of this map is named in its ValueError
_WHAT = "log_o ∘ L_t ∘ exp_o (the wrapped hyperboloid coupling, or a wrapped normal's sample)"


def boosted_logmap0_autograd(u: Tensor, t_hat: Tensor, k: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
    r"""``y = log_o(L_t^{±1}(exp_o(u)))`` on :math:`H^l_k` in one pass, with ``t = (sqrt(||t̂||² + k), t̂)``;
    also returns ``(||u||, ||y||)/sqrt(k)`` stacked in the last dimension (the arguments of ``ℓ``).

    The formulas of :func:`~manifolds.lorentz_math.expmap0_spatial`, :func:`~manifolds.lorentz_math.translate`
    and :func:`~manifolds.lorentz_math.logmap0_spatial`, fused so that only a few operations act on whole
    ``l``-vectors (the rest act on one number per point). With ``z = ||u||/sqrt(k)``,
    ``p = exp_o(u) = (sqrt(k)·cosh z, sinhc(z)·u)`` and ``μ̂ = ±t̂``, the boost's spatial part is
    ``L(p)^ = (cosh z + (μ̂·p̂)/(k + sqrt(k)·t₀))·μ̂ + p̂ = c·t̂ + sinhc(z)·u`` with
    ``c = sinhc(z)·(t̂·u)/(k + sqrt(k)·t₀) ± cosh z`` (time coordinates are not needed: ``log_o`` reads the
    spatial part only). Then with ``ρ = ||L(p)^||`` and ``ζ = ρ/sqrt(k)``, ``y = (sqrt(k)·asinh(ζ)/ρ)·L(p)^``
    (``asinhc(ζ)·L(p)^`` for ``ζ ≤ 1``, as in ``logmap0_spatial``) and ``||y||/sqrt(k) = asinh(ζ)``.

    Inputs are float64: the boost cancels large coordinates when ``L(p)`` lands near the origin. A result
    that overflows float64 raises ``ValueError`` with validation on (:mod:`manifolds.validation`). This is the reference form, differentiated by autograd
    (used when ``k`` is learnable); :class:`_BoostedLogmap0` evaluates the same formulas with an analytic
    backward pass.
    """
    sk = k.sqrt()
    z = torch.linalg.vector_norm(u, dim=-1, keepdim=True) / sk  # squares of float32-range inputs fit in float64
    sh = lm.sinhc(z)
    t0 = torch.hypot(torch.linalg.vector_norm(t_hat, dim=-1, keepdim=True), sk)
    c = sh * torch.linalg.vecdot(t_hat, u).unsqueeze(-1) / (k + sk * t0)
    c = c - torch.cosh(z) if inverse else c + torch.cosh(z)
    q = torch.addcmul(sh * u, c, t_hat)  # L(p)^
    # ρ = m·||q/m|| with m = max|q| (detached), as lm.scaled_norm: squares of q overflow float64 far out; and
    # y = (q/m)·G keeps every factor of the chain rule O(1) (a form g·q would multiply a huge Σ grad·q by an
    # underflowing ∂g/∂ρ and lose the radial part of the Jacobian, cf. logmap0_spatial).
    m = q.detach().abs().amax(dim=-1, keepdim=True).clamp_min(tiny(q.dtype))
    qn = q / m
    rn = torch.linalg.vector_norm(qn, dim=-1, keepdim=True)
    zeta = m * rn / sk
    far = zeta > 1
    a = lm.asinh(zeta)
    G = torch.where(far, sk * a / torch.where(far, rn, torch.ones_like(rn)),
                    lm.asinhc(torch.where(far, torch.zeros_like(zeta), zeta)) * m)
    y = qn * G
    lm.check_finite_result(y, u, t_hat, what=_WHAT, k=k)
    return y, torch.cat([z, a], dim=-1)


def _sinhc_prime_over_z(z: Tensor) -> Tensor:
    r"""``sinhc'(z)/z = (cosh z - sinhc z)/z²`` for ``z ≥ 0``, with its series ``1/3 + z²/30 + z⁴/840 + z⁶/45360``
    below :data:`~manifolds.constants.SINHC_PRIME_SERIES_THRESHOLD` (the closed form cancels there). Backward-pass
    helper (not differentiated): each branch is evaluated on the raw argument and the other one masked out."""
    out = (torch.cosh(z) - torch.sinh(z) / z) / (z * z)  # z ≥ 0.1 where used: sinhc(z) = sinh(z)/z
    small = z < SINHC_PRIME_SERIES_THRESHOLD
    z2 = z**2
    out = torch.where(small, 1 / 3 + z2 * (1 / 30 + z2 * (1 / 840 + z2 / 45360)), out)
    return out


def _sinhc_nograd(z: Tensor) -> Tensor:
    """:func:`manifolds.lorentz_math.sinhc` for ``z ≥ 0`` (the same values to rounding), outside autograd: ``sinh``
    is accurate in relative terms near 0, so ``sinh(z)/z`` needs no series; ``z = 0`` reads as the smallest normal
    number, where ``sinh(z)/z = 1`` exactly (three operations, no branch)."""
    zc = z.clamp_min(tiny(z.dtype))
    return torch.sinh(zc) / zc


def _asinh_nograd(z: Tensor) -> Tensor:
    """:func:`manifolds.lorentz_math.asinh` for ``z ≥ 0`` (same values), outside autograd: ``torch.asinh`` is exact
    for huge ``z`` too (the large-argument branch of ``lm.asinh`` exists for its gradient only)."""
    return torch.asinh(z)


def _asinhc_from(z: Tensor, a: Tensor) -> Tensor:
    """:func:`manifolds.lorentz_math.asinhc` for ``z ≥ 0`` (the same values to rounding), outside autograd, given
    ``a = asinh(z)``: ``a/z``, with ``z = 0`` read as the smallest normal number (where ``asinh(z)/z = 1``)."""
    zc = z.clamp_min(tiny(z.dtype))
    return torch.where(z > 0, a, zc) / zc


def log_sinhc_nograd(z: Tensor) -> Tensor:
    """:func:`manifolds.lorentz_math.log_sinhc` for ``z ≥ 0`` (same values), outside autograd."""
    out = z + torch.log1p(-torch.exp(-2 * z)) - math.log(2.0) - torch.log(z)
    small = z < LOG_SINHC_SERIES_THRESHOLD
    z2 = z**2
    out = torch.where(small, z2 / 6 - z2 * z2 / 180 + z2 * z2 * z2 / 2835, out)
    return out


def log_sinhc_prime(z: Tensor) -> Tensor:
    r"""``ℓ'(z) = coth z - 1/z``, the derivative of :func:`manifolds.lorentz_math.log_sinhc` (``z ≥ 0``), branch by
    branch as that function is written: ``2z·(1/6 - z²/90 + z⁴/945)`` below its series threshold,
    ``1 + 2e^{-2z}/(1 - e^{-2z}) - 1/z`` above."""
    E = torch.exp(-2 * z)
    out = 1 + 2 * E / (1 - E) - 1 / z
    small = z < LOG_SINHC_SERIES_THRESHOLD
    z2 = z**2
    out = torch.where(small, 2 * z * (1 / 6 - z2 / 90 + z2 * z2 / 945), out)
    return out


class BoostState(NamedTuple):
    """What :func:`bc_backward` needs from :func:`bc_forward` (float64, per point unless a vector): the input ``u``,
    ``t̂``, ``r = ||u||``, ``z = r/sqrt(k)``, ``sh = sinhc(z)``, ``t0 = sqrt(||t̂||² + k)``, ``D = k + sqrt(k)·t0``,
    ``d = t̂·u``, ``c`` (the coefficient of ``t̂`` in ``L(p)^``), ``e = L(p)^/ρ`` (a unit vector), ``g = G/m =
    asinhc(ζ)`` and ``zeta = ρ/sqrt(k)``."""

    u: Tensor
    t_hat: Tensor
    r: Tensor
    z: Tensor
    sh: Tensor
    t0: Tensor
    D: Tensor
    d: Tensor
    c: Tensor
    e: Tensor
    g: Tensor
    zeta: Tensor


def bc_forward(u: Tensor, t_hat: Tensor, k: Tensor, inverse: bool) -> tuple[Tensor, Tensor, Tensor, BoostState]:
    """Forward formulas of :func:`boosted_logmap0_autograd` outside autograd: ``y``, ``z``, ``a`` and what
    :func:`bc_backward` needs."""
    sk = k.sqrt()
    r = torch.linalg.vector_norm(u, dim=-1, keepdim=True)
    z = r / sk
    sh = _sinhc_nograd(z)
    t0 = torch.hypot(torch.linalg.vector_norm(t_hat, dim=-1, keepdim=True), sk)
    D = k + sk * t0
    d = torch.linalg.vecdot(t_hat, u).unsqueeze(-1)
    c = sh * d / D
    c = c - torch.cosh(z) if inverse else c + torch.cosh(z)
    q = torch.addcmul(sh * u, c, t_hat)
    m = q.abs().amax(dim=-1, keepdim=True).clamp_min(tiny(q.dtype))
    # y = (q/m)·G is finite exactly when the row maxima m are (|q/m| ≤ 1, ||q/m|| ≥ 1 unless q = 0, and G is
    # then finite): checking the (..., 1) maxima for overflow is as good as checking y, at 1/l of the cost
    lm.check_finite_result(m, u, t_hat, what=_WHAT, k=k)  # with validation on (manifolds.validation)
    qn = q / m
    rn = torch.linalg.vector_norm(qn, dim=-1, keepdim=True)
    zeta = m * rn / sk
    far = zeta > 1
    a = _asinh_nograd(zeta)
    G = torch.where(far, sk * a / rn, _asinhc_from(zeta, a) * m)
    y = qn * G
    e = qn / rn.clamp_min(tiny(q.dtype))
    return y, z, a, BoostState(u, t_hat, r, z, sh, t0, D, d, c, e, G / m, zeta)


def bc_backward(saved: BoostState, k: Tensor, inverse: bool, gy: Tensor, gz: Tensor, ga: Tensor, need_u: bool,
                need_t: bool) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """The vector-Jacobian product of :func:`bc_forward` (formulas in :class:`_BoostedLogmap0`)."""
    u, t_hat, r, z, sh, t0, D, d, c, e, g, zeta = saved
    sk = k.sqrt()
    h = 1 / torch.hypot(zeta, torch.ones_like(zeta))  # 1/sqrt(1 + ζ²) without overflow
    radial = torch.linalg.vecdot(gy, e).unsqueeze(-1) * (h - g) + ga * h / sk
    gq = torch.addcmul(g * gy, radial, e)
    T = torch.linalg.vecdot(gq, t_hat).unsqueeze(-1)
    Tsh_D = T * sh / D
    gu = gt = None
    if need_u:
        A = torch.linalg.vecdot(gq, u).unsqueeze(-1)
        cu = (A + T * d / D) * _sinhc_prime_over_z(z)
        cu = (cu - T * sh if inverse else cu + T * sh) / k + gz / (r.clamp_min(tiny(r.dtype)) * sk)
        gu = torch.addcmul(torch.addcmul(sh * gq, cu, u), Tsh_D, t_hat)
    if need_t:
        gt = torch.addcmul(torch.addcmul(c * gq, Tsh_D, u), -Tsh_D * d * sk / (D * t0), t_hat)
    return gu, gt


class _BoostedLogmap0(torch.autograd.Function):
    r""":func:`boosted_logmap0_autograd` with a hand-written backward pass (same forward formulas).

    Autograd would record about 250 small operations per layer for this map (most on one number per point);
    the vector-Jacobian product below needs about 40. With ``e = L(p)^/ρ``, ``g = asinhc(ζ)``,
    ``h = 1/sqrt(1 + ζ²)`` and the incoming gradients ``ḡ_y, ḡ_z, ḡ_a``:

    ``ḡ_q = g·ḡ_y + ((ḡ_y·e)(h - g) + ḡ_a·h/sqrt(k))·e``;  with ``A = ḡ_q·u``, ``T = ḡ_q·t̂``,
    ``s₁ = sinhc'(z)/z``:
    ``ḡ_u = sinhc(z)·ḡ_q + ((A + T·d/D)·s₁ ± T·sinhc(z))·u/k + (T·sinhc(z)/D)·t̂ + ḡ_z·u/(||u||·sqrt(k))``,
    ``ḡ_t̂ = c·ḡ_q + (T·sinhc(z)/D)·u - (T·sinhc(z)·d·sqrt(k)/(D²·t₀))·t̂``
    (``d = t̂·u``, ``D = k + sqrt(k)·t₀``). Every factor stays O(1)-scaled far from the origin (no ``ρ²``).
    Once differentiable; ``k`` gets no gradient (a learnable ``k`` takes the autograd path).
    """

    @staticmethod
    def forward(ctx, u: Tensor, t_hat: Tensor, k: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        y, z, a, saved = bc_forward(u, t_hat, k, inverse)
        ctx.save_for_backward(k, *saved)
        ctx.inverse = inverse
        return y, torch.cat([z, a], dim=-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor, gza: Tensor):
        k, *saved = ctx.saved_tensors
        gu, gt = bc_backward(BoostState(*saved), k, ctx.inverse, gy, gza[..., :1], gza[..., 1:],
                              ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return gu, gt, None, None


def boosted_logmap0(u: Tensor, t_hat: Tensor, k: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
    r"""``y = log_o(L_t^{±1}(exp_o(u)))`` for tangent coordinates ``u ∈ ℝˡ`` at the origin of :math:`H^l_k`, where
    ``L_t`` is the Lorentz boost taking ``o`` to ``t = (sqrt(||t̂||² + k), t̂)`` (``inverse``: ``L_t⁻¹``).

    Equal to ``logmap0_spatial(translate(t, expmap0_spatial(u)))`` (and so, for ``t = exp_o(μ̃)``, to the tangent
    coordinates at ``o`` of ``exp_t(PT_{o→t}(u))``); formulas in :func:`boosted_logmap0_autograd`. Also returns
    ``(||u||, ||y||)/sqrt(k)`` stacked in the last dimension (the arguments of ``ℓ`` in log-dets). Inputs must be
    float64 (the boost cancels large coordinates); with a fixed ``k`` the backward pass is analytic
    (:class:`_BoostedLogmap0`), with a ``k`` that requires grad it is autograd's. Overflow raises ``ValueError``
    with validation on (:mod:`manifolds.validation`); no step reads a value on the host otherwise.

    Example:
        >>> f64 = torch.float64
        >>> u, t_hat = torch.tensor([[0.3, -0.2]], dtype=f64), torch.tensor([[1.0, 2.0]], dtype=f64)
        >>> k = torch.tensor(1.0, dtype=f64)
        >>> y, _ = boosted_logmap0(u, t_hat, k)
        >>> t = torch.cat([torch.hypot(t_hat.norm(dim=-1, keepdim=True), k.sqrt()), t_hat], -1)
        >>> torch.allclose(y, lm.logmap0_spatial(lm.translate(t, lm.expmap0_spatial(u, k), k), k))
        True
    """
    if k.requires_grad and torch.is_grad_enabled():
        return boosted_logmap0_autograd(u, t_hat, k, inverse)
    return _BoostedLogmap0.apply(u, t_hat, k.detach(), inverse)
