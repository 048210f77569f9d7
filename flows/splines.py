r"""Monotone rational-quadratic splines (Durkan, Bekasov, Murray, Papamakarios, NeurIPS 2019, "Neural Spline
Flows", arXiv 1906.04032) and the coupling flow built from them.

A spline maps ``[-B, B]`` onto itself through ``K`` bins with knots ``(x_k, y_k)``, ``k = 0 … K``, and positive
derivatives ``δ_k`` at the knots; outside ``[-B, B]`` it is the identity. In bin ``k``, with
``w_k = x_{k+1} - x_k``, ``h_k = y_{k+1} - y_k``, ``s_k = h_k / w_k`` and ``ξ = (x - x_k)/w_k ∈ [0, 1]``:

``y = y_k + h_k·(s_k ξ² + δ_k ξ(1-ξ)) / (s_k + (δ_{k+1} + δ_k - 2 s_k) ξ(1-ξ))``,

``dy/dx = s_k²·(δ_{k+1} ξ² + 2 s_k ξ(1-ξ) + δ_k (1-ξ)²) / (s_k + (δ_{k+1} + δ_k - 2 s_k) ξ(1-ξ))²``.

The inverse is the root in ``[0, 1]`` of a quadratic (Durkan et al., appendix): with ``Δ = y - y_k`` and
``c₂ = δ_{k+1} + δ_k - 2 s_k``, ``a = h_k(s_k - δ_k) + Δ c₂``, ``b = h_k δ_k - Δ c₂``, ``c = -s_k Δ``,
``ξ = 2c / (-b - sqrt(b² - 4ac))`` (the form without cancellation). In the upper half of a bin the same formula
is applied to the mirrored bin (``η = 1 - ξ``, ``Δ = y_{k+1} - y``, ``δ_k ↔ δ_{k+1}``; the map is symmetric
under this reflection), so the discriminant never cancels near a knot with a small slope. ``y`` interpolates
the knots with slope ``δ_k`` there, so the map is C¹; the boundary derivatives are ``δ_0 = δ_K = 1``, matching
the identity tails.

Example:
    >>> from manifolds import Euclidean
    >>> from flows import build
    >>> f = build("rqs-coupling", Euclidean(), 4, layers=2)
    >>> y, ladj = f(torch.randn(8, 4))
    >>> y.shape, ladj.shape
    (torch.Size([8, 4]), torch.Size([8]))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .constants import (DEFAULT_HIDDEN, SPLINE_BINS, SPLINE_BOUND, SPLINE_ENDS, SPLINE_MIN_BIN_SIZE,
                        SPLINE_MIN_DERIVATIVE)
from .coupling import Coupling, CouplingHalf
from .registry import on_rn, register
from .transform import Compose, Transform

Tensor = torch.Tensor

#: ``softplus(0 + _DERIVATIVE_SHIFT) + SPLINE_MIN_DERIVATIVE = 1``: a zero raw parameter gives slope 1, so a
#: spline whose raw parameters are all 0 is the identity (conditioners start near zero output).
_DERIVATIVE_SHIFT = math.log(math.expm1(1.0 - SPLINE_MIN_DERIVATIVE))


def spline_n_params(bins: int, ends: str = "identity") -> int:
    """Raw parameters per coordinate of a ``bins``-bin spline with the given ``ends`` (:data:`SPLINE_ENDS`)."""
    if ends not in SPLINE_ENDS:
        raise ValueError(f"ends must be one of {', '.join(SPLINE_ENDS)}; got {ends!r}")
    return 3 * bins + SPLINE_ENDS[ends]


def spline_knots(raw: Tensor, bound: float = SPLINE_BOUND, ends: str = "identity"
                 ) -> tuple[Tensor, Tensor, Tensor]:
    r"""Knots ``x_k``, ``y_k`` (``K + 1`` each, from ``-B`` to ``B``) and knot derivatives ``δ_k`` from the
    unconstrained parameters ``(ŵ, ĥ, δ̂)`` in the last dimension of ``raw`` (:func:`spline_n_params` of them).

    Widths ``w = 2B·(m + (1 - mK)·softmax(ŵ))`` (heights likewise, ``m`` =
    :data:`~flows.constants.SPLINE_MIN_BIN_SIZE`), derivatives ``δ = m' + softplus(δ̂ + c)`` with ``c``
    such that ``δ̂ = 0`` gives 1 (``m'`` = :data:`~flows.constants.SPLINE_MIN_DERIVATIVE`): the ``K - 1`` interior
    ones always, the end ones as ``ends`` says (:data:`SPLINE_ENDS`). All-zero parameters give the identity.
    """
    if ends not in SPLINE_ENDS:
        raise ValueError(f"ends must be one of {', '.join(SPLINE_ENDS)}; got {ends!r}")
    extra = SPLINE_ENDS[ends]
    K = (raw.size(-1) - extra) // 3
    if 3 * K + extra != raw.size(-1) or K < 1:
        count = "3K" if extra == 0 else f"3K {'+' if extra > 0 else '-'} {abs(extra)}"
        raise ValueError(f"a rational-quadratic spline with {ends!r} ends takes {count} parameters per coordinate "
                         f"(K >= 1 bins); got {raw.size(-1)}")
    if SPLINE_MIN_BIN_SIZE * K >= 1:
        raise ValueError(f"{K} bins of minimum size {SPLINE_MIN_BIN_SIZE} do not fit in the interval")
    raw_w, raw_h, raw_d = raw[..., :K], raw[..., K:2 * K], raw[..., 2 * K:]

    def knots(unnormalized: Tensor) -> Tensor:
        sizes = SPLINE_MIN_BIN_SIZE + (1 - SPLINE_MIN_BIN_SIZE * K) * torch.softmax(unnormalized, dim=-1)
        cum = F.pad(torch.cumsum(sizes, dim=-1), (1, 0))
        cum = (2 * bound) * cum - bound
        # the end knots exactly at ±B (the cumulative sum is 1 only up to rounding)
        return torch.cat([torch.full_like(cum[..., :1], -bound), cum[..., 1:-1], torch.full_like(cum[..., :1], bound)],
                         dim=-1)

    derivs = SPLINE_MIN_DERIVATIVE + F.softplus(raw_d + _DERIVATIVE_SHIFT)
    if ends == "identity":
        derivs = F.pad(derivs, (1, 1), value=1.0)
    elif ends == "periodic":  # δ_0 = δ_K: the last parameter is the derivative at both ends
        derivs = torch.cat([derivs[..., -1:], derivs], dim=-1)
    return knots(raw_w), knots(raw_h), derivs


def rational_quadratic_spline(x: Tensor, raw: Tensor, inverse: bool = False, bound: float = SPLINE_BOUND,
                              ends: str = "identity") -> tuple[Tensor, Tensor]:
    r"""The monotone rational-quadratic spline of Durkan et al. 2019 (module docstring), elementwise.

    Args:
        x: inputs, any shape ``S`` (outputs ``y`` when ``inverse=True``).
        raw: unconstrained parameters of shape ``S + (P,)``: bin widths, bin heights, knot derivatives
            (:func:`spline_knots`; ``P = 3K - 1`` with identity ends).
        inverse: evaluate ``g⁻¹`` (closed-form root of the quadratic) instead of ``g``.
        bound: ``B``.
        ends: ``"identity"``: the map is the identity outside ``[-B, B]`` (slope 1, so C¹ at ``±B``);
            ``"periodic"`` (the circular spline of Rezende et al. 2020) or ``"free"``: a bijection of ``[-B, B]``
            fixing ``±B``, whose domain is ``[-B, B]`` (:data:`SPLINE_ENDS`).

    Returns:
        ``(g(x), log g'(x))`` or, with ``inverse=True``, ``(g⁻¹(y), log (g⁻¹)'(y))``, both of shape ``S``.

    Example:
        >>> x = torch.linspace(-6, 6, 7, dtype=torch.float64)
        >>> raw = torch.randn(7, 3 * 4 - 1, dtype=torch.float64)
        >>> y, logd = rational_quadratic_spline(x, raw)
        >>> y[0].item(), y[-1].item(), logd[0].item()  # identity outside [-5, 5]
        (-6.0, 6.0, 0.0)
        >>> x2, logd_inv = rational_quadratic_spline(y, raw, inverse=True)
        >>> torch.allclose(x2, x), torch.allclose(logd_inv, -logd)
        (True, True)
    """
    xk, yk, dk = spline_knots(raw, bound, ends)
    if ends != "identity":
        return _spline_in_bins(x, xk, yk, dk, inverse)
    inside = (x >= -bound) & (x <= bound)
    out, logd = _spline_in_bins(x.clamp(-bound, bound), xk, yk, dk, inverse)
    return torch.where(inside, out, x), torch.where(inside, logd, torch.zeros_like(logd))


def _spline_in_bins(v: Tensor, xk: Tensor, yk: Tensor, dk: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
    """The spline through the knots ``(xk, yk)`` with slopes ``dk`` at ``v`` in ``[x_0, x_K]`` (``[y_0, y_K]`` for
    the inverse): value and log-derivative."""
    # bin index: the number of interior knots at or left of v (in x for g, in y for g⁻¹)
    edges = (yk if inverse else xk)[..., 1:-1]
    idx = (v.unsqueeze(-1) >= edges).sum(-1, keepdim=True)
    idx1 = idx + 1
    x0, x1 = xk.gather(-1, idx).squeeze(-1), xk.gather(-1, idx1).squeeze(-1)
    y0, y1 = yk.gather(-1, idx).squeeze(-1), yk.gather(-1, idx1).squeeze(-1)
    d0, d1 = dk.gather(-1, idx).squeeze(-1), dk.gather(-1, idx1).squeeze(-1)
    w, h = x1 - x0, y1 - y0
    s = h / w
    c2 = d0 + d1 - 2 * s
    if inverse:
        # solve from the nearer end of the bin: from the left for ξ, or, mirrored (δ_k ↔ δ_{k+1}), from the right
        # for η = 1 - ξ; at the solved-for end the discriminant is (h·δ)², exact, instead of a cancellation
        dl, dr = v - y0, y1 - v
        right = dr < dl
        delta = torch.where(right, dr, dl)
        d_near = torch.where(right, d1, d0)
        a = h * (s - d_near) + delta * c2
        b = h * d_near - delta * c2
        c = -s * delta
        disc = (b * b - 4 * a * c).clamp_min(0)
        z = (2 * c / (-b - disc.sqrt())).clamp(0, 1)
        out = torch.where(right, x1 - z * w, x0 + z * w)
        xi, omx = torch.where(right, 1 - z, z), torch.where(right, z, 1 - z)
    else:
        xi, omx = ((v - x0) / w).clamp(0, 1), ((x1 - v) / w).clamp(0, 1)
    xo = xi * omx
    den = s + c2 * xo
    logd = 2 * torch.log(s) + torch.log(d1 * xi * xi + 2 * s * xo + d0 * omx * omx) - 2 * torch.log(den)
    if inverse:
        logd = -logd
    else:
        out = y0 + h * (s * xi * xi + d0 * xo) / den
    return out, logd


class SplineHalf(CouplingHalf):
    r"""Rational-quadratic spline of each transformed coordinate (Durkan et al. 2019): ``y₂ᵢ = g(w₂ᵢ; θᵢ)``,
    ``log|det| = Σᵢ log g'(w₂ᵢ; θᵢ)``, identity outside ``[-B, B]``; ``3K - 1`` parameters per coordinate, laid
    out parameter-major (``params[..., p·l + i]`` is parameter ``p`` of coordinate ``i``, as in
    :class:`~flows.coupling.AffineHalf`'s ``(ŝ, t)`` chunks).

    Args:
        bins: ``K``.
        bound: ``B``.
        ends: :data:`~flows.constants.SPLINE_ENDS`: ``"identity"`` (identity tails, ``3K - 1`` parameters),
            ``"free"`` (a bijection of ``[-B, B]`` fixing its ends: the sphere's height), ``"periodic"``.

    A round trip is exact to the rounding of ``y₂`` times ``1/g'``: in float32 that reaches ~1e-3 where ``g'`` nears
    its floor ``SPLINE_MIN_DERIVATIVE`` (1e-3); in float64 ~1e-11 (2 000 random draws of the example below).

    Example:
        >>> half = SplineHalf(bins=4)
        >>> g = torch.Generator().manual_seed(0)
        >>> w2 = torch.randn(5, 2, generator=g, dtype=torch.float64)
        >>> params = torch.randn(5, 2 * half.n_params, generator=g, dtype=torch.float64)
        >>> y2, ladj = half(w2, params)
        >>> torch.allclose(half.inverse(y2, params)[0], w2, atol=1e-9)
        True
    """

    def __init__(self, bins: int = SPLINE_BINS, bound: float = SPLINE_BOUND, ends: str = "identity") -> None:
        super().__init__()
        if int(bins) != bins or bins < 1:
            raise ValueError(f"bins must be a positive integer; got {bins}")
        self.bins, self.bound, self.ends = int(bins), float(bound), ends
        self.n_params = spline_n_params(self.bins, ends)

    def forward(self, w2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        y, logd = rational_quadratic_spline(w2, self.per_coordinate(w2, params), bound=self.bound, ends=self.ends)
        return y, logd.sum(-1)

    def inverse(self, y2: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        x, logd = rational_quadratic_spline(y2, self.per_coordinate(y2, params), inverse=True, bound=self.bound,
                                            ends=self.ends)
        return x, logd.sum(-1)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, bound={self.bound}" + ("" if self.ends == "identity" else f", ends={self.ends!r}")


class SplineCoupling(Coupling):
    r"""Rational-quadratic spline coupling on ℝⁿ (Durkan et al. 2019, RQ-NSF (C)): ``y₁ = w₁``,
    ``y₂ᵢ = g(w₂ᵢ; θᵢ(w₁))`` with ``g`` the monotone rational-quadratic spline on ``[-B, B]`` (identity outside),
    ``log|det| = Σᵢ log g'(w₂ᵢ; θᵢ(w₁))``. The coupling skeleton of :class:`~flows.coupling.Coupling` with a
    :class:`SplineHalf`; at initialisation (conditioner outputs ≈ 0) the spline is ≈ the identity.

    Args:
        dim, parity, conditioner, hidden, context_features: as in :class:`~flows.coupling.Coupling`.
        bins: number of bins ``K``.
        bound: ``B``.

    Example:
        >>> f = SplineCoupling(3, bins=4)
        >>> x = torch.randn(5, 3)
        >>> y, ladj = f(x)
        >>> torch.allclose(f.inverse(y)[0], x, atol=1e-5)
        True
    """

    def __init__(self, dim: int, parity: int = 0, conditioner: str = "mlp", hidden: int = DEFAULT_HIDDEN,
                 context_features: int = 0, bins: int = SPLINE_BINS, bound: float = SPLINE_BOUND) -> None:
        super().__init__(dim, SplineHalf(bins, bound), parity, conditioner, hidden, context_features)


@register("rqs-coupling", on_rn, "rational-quadratic spline coupling on ℝⁿ (Neural Spline Flows)",
          lift=True)
def _rqs_coupling(manifold, dim, layers, hidden, conditioner, **kw) -> Transform:
    return Compose([SplineCoupling(dim, parity=i % 2, conditioner=conditioner, hidden=hidden, **kw)
                    for i in range(layers)])
