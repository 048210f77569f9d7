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
