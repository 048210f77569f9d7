"""Named numerical constants of the library, in one place.

Every threshold used by the geometry and the flows is defined here, with the reason for its value, so that
no magic number hides in a formula.
"""

from __future__ import annotations

import torch

#: Below this argument ``z`` the functions ``sinh(z)/z``, ``asinh(z)/z`` and ``log(sinh(z)/z)`` are
#: evaluated by their Taylor series (error below ``z**8 / 362880`` ≈ 3e-22 at the threshold), where the
#: closed forms would divide 0 by 0 or cancel catastrophically.
SERIES_THRESHOLD: float = 1e-2

#: Below this argument ``log(sinh(z)/z)`` uses its series up to ``z**6``; above it the overflow-free form
#: ``z + log1p(-exp(-2z)) - log 2 - log z``. At 0.1 the omitted series term is below 4e-12 and the closed
#: form loses at most a few ulps of ``log z``.
LOG_SINHC_SERIES_THRESHOLD: float = 1e-1

#: Below this argument, ``sinhc'(z)/z = (cosh z - sinhc z)/z²`` (in the backward pass of ``manifolds.boost``) uses its series
#: ``1/3 + z²/30 + z⁴/840 + z⁶/45360``: the closed form loses ``~eps/z²`` to cancellation (2e-14 at 0.1 in
#: float64), the omitted series term is below ``z⁸/4e6`` (3e-15 at 0.1).
SINHC_PRIME_SERIES_THRESHOLD: float = 0.1

#: Default tolerance of ``check_point_on_manifold`` / ``check_vector_on_tangent``, relative to the scale
#: of the point (``|<x,x>_L + k| <= tol * (k + |x|^2)``); float32 rounding of a point far from the origin
#: is ``~6e-8 * cosh^2(d)`` relative, so the check is scale-aware rather than absolute.
MANIFOLD_CHECK_RTOL: float = 1e-4

#: Largest argument of ``cosh``/``sinh`` that stays finite, per dtype (``log(finfo.max) + log 2``).
#: Points farther than ``COSH_LIMIT[dtype] * sqrt(k)`` from the origin cannot be represented by ambient
#: coordinates of that dtype; the geometry raises a ``ValueError`` there instead of returning inf/NaN.
COSH_LIMIT: dict[torch.dtype, float] = {
    torch.float16: 11.78,
    torch.bfloat16: 89.4,
    torch.float32: 89.4,
    torch.float64: 710.4,
}

#: Dtype used internally for the ill-conditioned steps (operations at base points away from the origin):
#: float32 ambient coordinates of a point at distance s are only good to ``~6e-8 cosh^2(s)`` relative,
#: and the arithmetic on them must not add a second error of that size.
INTERNAL_DTYPE: torch.dtype = torch.float64


def tiny(dtype: torch.dtype) -> float:
    """Smallest positive normal number of ``dtype``; guards square roots and divisions at exact zeros.

    It only changes values that are already zero to working precision (``sqrt(tiny)`` is 1e-19 in float32),
    so it never acts as a clamp on a bijection's input.
    """
    return torch.finfo(dtype).tiny

#: Default range ``(k_min, k_max)`` of the Lorentz curvature parameter ``k`` (curvature ``-1/k``, radius
#: ``sqrt(k)`` from 0.032 to 31.6). A learnable ``k`` is kept inside it by its parametrisation
#: (``log k = c + h·tanh(θ/h)``, see :class:`~manifolds.Lorentz`), so no optimiser step can send it to 0 or ∞
#: (unbounded, ``log k`` was seen at −84 and +91 before every ``log_prob`` turned NaN). It holds the paper's
#: warm-up (``R = 11``, ``k = 121``); pass ``k_range=`` for a curvature outside it.
K_RANGE: tuple[float, float] = (1e-3, 1e3)

#: Relative tolerance of the sphere's and the ball's point checks (``| |x| - r | <= rtol·r``, ``|<x,u>| <= rtol·|x||u|``):
#: float32 rounding of a unit vector is ``~6e-8`` per coordinate, so 1e-4 passes every rounded point and catches
#: points that were never projected.
SPHERE_CHECK_RTOL: float = 1e-4

#: Fraction of the Poincaré ball's radius ``sqrt(k)`` that :meth:`~manifolds.PoincareBall.projx` keeps points
#: inside, per dtype (geoopt's ``BALL_EPS``): ``1 - |p|/sqrt(k) >= eps``. At that edge a point is about
#: ``sqrt(k)·log(2/eps)`` from the origin (17·sqrt(k) in float32, 38·sqrt(k) in float64): farther points live on the
#: hyperboloid (:meth:`~manifolds.PoincareBall.isometric_model`) or in tangent coordinates.
BALL_EPS: dict[torch.dtype, float] = {torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float32: 4e-7,
                                      torch.float64: 1e-15}

#: Wrapped normal on the torus, per coordinate ``p(θ) = Σ_m N(θ + 2πm; μ, σ²)``: for ``σ <= TORUS_FOURIER_SIGMA``
#: the sum over windings ``|m| <= TORUS_WINDINGS``; above it the dual (Jacobi theta) series
#: ``(1/2π)(1 + 2 Σ_{m=1}^{TORUS_FOURIER_TERMS} e^{-m²σ²/2} cos m(θ-μ))``. Dropped tails, relative to ``p``:
#: windings ``<= 2·Σ_{j>M} exp(-((2j-1)² - 1)π²/(2σ²)) ≈ 2·exp(-48π²/8) ≈ 4e-26`` at ``σ = 2, M = 3`` (the first
#: dropped term is ``>= 7π`` from the point, the kept sum ``>= N(π)``); Fourier ``<= 2e^{-(M+1)²σ²/2}/(1 - 2Σ_m
#: e^{-m²σ²/2}) ≈ 2e^{-50}/0.72 ≈ 5e-22`` at ``σ = 2, M = 4`` (both bounds shrink away from ``σ = 2``). Both are below float64's
#: resolution (1.1e-16) over the whole range of ``σ``.
TORUS_FOURIER_SIGMA: float = 2.0
TORUS_WINDINGS: int = 3
TORUS_FOURIER_TERMS: int = 4

#: Wrapped normal on the sphere: the density sums the preimages ``t_m = θ + 2πm·r`` (``|m| <= SPHERE_WINDINGS``)
#: along the great circle through ``μ`` and the point. The first dropped term is at ``|t| >= (2M+1)π·r``, relative
#: size ``<= ((2M+1)π)^{n-1}·exp(-((2M+1)π)²/(2σ²))``: ``3e-14`` at ``σ = 3r`` and ``n = 5`` (M = 4), below float64's
#: resolution for ``σ <= 2.5r``; for larger ``σ`` the law is near uniform and the bound is the error.
SPHERE_WINDINGS: int = 4


#: Implicit reparameterisation of the vMF's ``t = 1 - μᵀx`` in ``κ`` (:class:`~manifolds.VonMisesFisher`, ``p != 3``):
#: ``dt/dκ`` is an integral of ``(τ - a)·e^{∓κ(τ - t)}·(τ(2-τ)/(t(2-t)))^{(m-2)/2}`` done by Gauss–Jacobi (and, past
#: the cut below, Gauss–Legendre) rules of ``VMF_IMPLICIT_NODES`` nodes. The smooth factor is at worst ``e^{-σ}`` over
#: ``σ ∈ [0, VMF_IMPLICIT_CUT]`` or ``e^{κt(1-u)}`` with ``κt <= κ(1 - A_p(κ)) < m/2``; with 64 nodes ``dt/dκ`` agrees
#: with 40-digit mpmath quadrature to 6e-11 relative for ``m ∈ {1, 3, 4, 9, 49}``, ``κ ∈ [1e-3, 1e5]``.
VMF_IMPLICIT_NODES: int = 64

#: Where the upper form of the vMF's ``dt/dκ`` stops: ``σ = κ(τ - t) <= VMF_IMPLICIT_CUT`` (when ``κ(2 - t)`` is
#: larger). The dropped tail is ``<= e^{-σ}(1 + σ/(κt))^{(m-2)/2}`` past the cut, with ``κt > κ(1 - A_p(κ))``:
#: ``e^{-60}`` for ``m <= 2`` and ``~1e-11`` of the integral at ``m = 49``, ``κ ≈ 30`` (the worst case of that ``m``).
VMF_IMPLICIT_CUT: float = 60.0

#: Nodes of each of the two fixed Gauss rules of the vMF's Bessel functions
#: (:func:`~manifolds.sphere_distributions.log_ive`, :func:`~manifolds.sphere_distributions.bessel_ratio`, orders other
#: than 0, 1/2, 1, 3/2): Gauss–Gegenbauer in ``t`` for ``∫_{-1}^1 e^{κt}(1 - t²)^{ν-½}dt`` at
#: ``κ <= VMF_BESSEL_SWITCH + ν/2``, generalised Gauss–Laguerre in ``u = κ(1 - t)`` (weight ``u^{ν-½}e^{-u}``, smooth
#: factor ``(1 - u/2κ)^{ν-½}``) above. With 64 nodes the Gegenbauer rule is good to 1e-13 up to ``κ ≈ 140`` (70 for
#: ``ν = 1``), the Laguerre rule from ``κ ≈ 16`` (``ν <= 25``), 20 (``ν = 50``), 50 (``ν = 100``), 100
#: (``ν = 150``), measured against 40-digit mpmath.
VMF_BESSEL_NODES: int = 64

#: The switch of the Bessel quadrature above is at ``κ = VMF_BESSEL_SWITCH + ν/2``: inside both rules' 1e-13 ranges
#: for every ``ν <= VMF_BESSEL_MAX_ORDER`` (the Gegenbauer error grows like ``κ·eps`` from its nodes' rounding, so
#: the switch is kept low).
VMF_BESSEL_SWITCH: float = 30.0

#: The largest Bessel order ``ν = p/2 - 1`` of the quadrature (the vMF on ``S^{p-1}``, ``p <= 302``): measured to it;
#: above, scipy's Laguerre weights (``Γ(ν + ½)``-sized) overflow near ``ν = 170`` and the Laguerre rule's range starts
#: past the Gegenbauer rule's end.
VMF_BESSEL_MAX_ORDER: float = 150.0

#: Proposals per draw of the vMF's ``t = 1 - μᵀx`` by Wood's (1994) rejection sampler, all drawn at once (no host loop);
#: the first accepted one is kept. Wood's acceptance probability ``E_z[exp(κw + m log(1 - x₀w) - c)]``, measured by
#: quadrature (``scipy.integrate.quad`` over the Beta(m/2, m/2) proposal, 1e-10 relative) at 57 ``κ`` from 1e-6 to
#: 1e8 for ``m = p - 1`` in {1, 2, 3, 4, 5, 6, 8, 10, 16, 32, 64, 100, 128, 199, 200, 300, 500, 1000} (and up to
#: ``κ = 1e12`` for ``m = 1, 3``), decreases in ``κ`` from 1 to a limit that grows with ``m``: its minimum is
#: ``0.6577`` (``m = 1``, the circle, ``κ → ∞``; ``0.688`` for ``m = 3``, ``0.707`` for ``m = 1000``). All 33
#: proposals are rejected with probability ``<= (1 - 0.6577)^33 = 4.3e-16`` per draw (``2e-17`` for ``m >= 3``); then
#: the last proposal is kept (a draw of the proposal law, not of the vMF's).
VMF_WOOD_PROPOSALS: int = 33
