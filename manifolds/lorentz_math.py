r"""The Lorentz (hyperboloid) model :math:`H^n_k` as small pure functions.

Conventions (``shared/docs/MATH.md`` §1–2): points are ambient ``(n+1)``-vectors ``x = (x_0, \hat x)`` with the
manifold dimension last, on ``{x : <x,x>_L = -k, x_0 > 0}``; the curvature is ``-1/k`` with ``k > 0``; the
origin is ``o = (sqrt(k), 0, ..., 0)``. ``k`` is a tensor broadcastable against the points (without the last
dimension).

Numerics. Operations at the origin (``expmap0``, ``logmap0``, ``dist0``, the ``*_spatial`` forms) work from the
spatial coordinates alone and are accurate in the input dtype up to the overflow of ``cosh`` (distance
≈ 88.7·sqrt(k) in float32). Operations at other base points (``expmap``, ``logmap``, ``dist``, ``transp``,
``translate``) are ill-conditioned in ambient coordinates (a point at distance ``s`` is only known to
``~eps·cosh²(s)``); they project their inputs and compute in float64 internally, returning the input dtype,
using formulas free of cancellation (``d`` from the positive terms of ``||y - x||_L``, ``log_x`` from
``y - x``). Results that overflow the dtype raise :class:`ValueError` instead of returning inf or NaN.
"""

from __future__ import annotations

import math

import torch

from .constants import INTERNAL_DTYPE, LOG_SINHC_SERIES_THRESHOLD, SERIES_THRESHOLD, tiny
from .validation import validation_enabled

Tensor = torch.Tensor

__all__ = [
    "inner",
    "norm",
    "sinhc",
    "asinh",
    "asinhc",
    "log_sinhc",
    "expmap_logdet",
    "scaled_norm",
    "origin",
    "projx",
    "proju",
    "egrad2rgrad",
    "expmap0",
    "logmap0",
    "expmap0_spatial",
    "logmap0_spatial",
    "dist0",
    "dist",
    "dist_polar",
    "expmap",
    "logmap",
    "transp",
    "transp0",
    "transp0back",
    "inner0",
    "logmap0back",
    "geodesic_unit",
    "translate",
    "lorentz_to_poincare",
    "poincare_to_lorentz",
    "check_finite_result",
]


# ----------------------------------------------------------------------------------------------------------
# scalar helpers
# ----------------------------------------------------------------------------------------------------------


def sinhc(z: Tensor) -> Tensor:
    r"""``sinh(z) / z``, equal to 1 at ``z = 0``, with finite gradients everywhere.

    Series ``1 + z²/6 + z⁴/120 + z⁶/5040`` below :data:`~manifolds.constants.SERIES_THRESHOLD`.
    """
    small = z.abs() < SERIES_THRESHOLD
    zs = torch.where(small, torch.ones_like(z), z)
    z2 = torch.where(small, z, torch.zeros_like(z)) ** 2  # masked: no inf*0 in the unused branch's gradient
    series = 1 + z2 / 6 * (1 + z2 / 20 * (1 + z2 / 42))
    return torch.where(small, series, torch.sinh(zs) / zs)


def asinh(z: Tensor) -> Tensor:
    r"""``asinh(z)`` whose gradient stays right for huge ``|z|``.

    ``torch.asinh``'s backward forms ``1/sqrt(1 + z²)``, which overflows to 0 once ``z² > finfo.max``
    (``|z| > 1.8e19`` in float32, reached at distance ≈ 44 from the origin). Above ``1/sqrt(eps)`` we use
    ``sign(z)·(log 2 + log|z|)``, equal to ``asinh(z)`` to working precision (the difference is ``1/(4z²)``).
    """
    big = z.abs() > 1.0 / math.sqrt(torch.finfo(z.dtype).eps)
    zb = torch.where(big, z, torch.ones_like(z))
    zs = torch.where(big, torch.zeros_like(z), z)
    return torch.where(big, torch.sign(zb) * (math.log(2.0) + torch.log(zb.abs())), torch.asinh(zs))


def asinhc(z: Tensor) -> Tensor:
    r"""``asinh(z) / z``, equal to 1 at ``z = 0``; series ``1 - z²/6 + 3z⁴/40 - 5z⁶/112`` near 0."""
    small = z.abs() < SERIES_THRESHOLD
    zs = torch.where(small, torch.ones_like(z), z)
    z2 = torch.where(small, z, torch.zeros_like(z)) ** 2
    series = 1 - z2 / 6 + 3 * z2 * z2 / 40 - 5 * z2 * z2 * z2 / 112
    return torch.where(small, series, asinh(zs) / zs)


def log_sinhc(z: Tensor) -> Tensor:
    r"""``log(sinh(z) / z)`` for ``z >= 0``, stable for all ``z`` (never ``log(sinh(z))`` directly).

    ``z²/6 - z⁴/180 + z⁶/2835`` for small ``z``; ``z + log1p(-exp(-2z)) - log 2 - log z`` otherwise, which
    neither overflows nor cancels.
    """
    small = z < LOG_SINHC_SERIES_THRESHOLD
    zs = torch.where(small, torch.ones_like(z), z)
    z2 = torch.where(small, z, torch.zeros_like(z)) ** 2
    series = z2 / 6 - z2 * z2 / 180 + z2 * z2 * z2 / 2835
    large = zs + torch.log1p(-torch.exp(-2 * zs)) - math.log(2.0) - torch.log(zs)
    return torch.where(small, series, large)


def expmap_logdet(r: Tensor, k: Tensor | float, n: int) -> Tensor:
    r"""Log volume change of the exponential map of :math:`H^n_k` at a tangent vector of norm ``r``.

    ``log|det d exp_x(u)| = (n-1)·ℓ(r)`` with ``ℓ(r) = log(sqrt(k)·sinh(r/sqrt(k)) / r)``, the same at every
    base point. The log map has the opposite sign.

    Example:
        >>> float(expmap_logdet(torch.tensor(0.0), 1.0, 3))
        0.0
    """
    k = torch.as_tensor(k, dtype=r.dtype, device=r.device)
    return (n - 1) * log_sinhc(r / k.sqrt())


def scaled_norm(x: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
    r"""Euclidean norm ``||x||_2`` that does not overflow when ``||x||²`` would (``m·||x/m||``, ``m = max|x|``).

    Float32 spatial coordinates reach 4e36 at distance 85 from the origin, whose square overflows.
    """
    m = x.detach().abs().amax(dim=dim, keepdim=True).clamp_min(tiny(x.dtype))
    out = m * torch.linalg.vector_norm(x / m, dim=dim, keepdim=True)
    return out if keepdim else out.squeeze(dim)


def _sqrt_k(k: Tensor | float, like: Tensor) -> Tensor:
    return torch.as_tensor(k, dtype=like.dtype, device=like.device).sqrt()


def _kdim(k: Tensor | float, like: Tensor) -> Tensor:
    """``k`` as a tensor of ``like``'s dtype with a trailing singleton dimension for broadcasting."""
    k = torch.as_tensor(k, dtype=like.dtype, device=like.device)
    return k.unsqueeze(-1) if k.dim() > 0 else k


def check_finite_result(out: Tensor, *inputs: Tensor, what: str, k: Tensor | float) -> Tensor:
    """Raise ``ValueError`` if ``out`` has inf/NaN while the inputs were finite (dtype overflow).

    Points farther than ≈ 88.7·sqrt(k) from the origin (float32; 709·sqrt(k) in float64) overflow ``cosh``;
    returning inf would surface as NaN layers later, so the overflow is reported where it happens. The check reads
    values on the host, so it runs only with validation on (:mod:`manifolds.validation`); otherwise ``out`` is
    returned as it is.
    """
    if not validation_enabled() or bool(torch.isfinite(out).all()):
        return out
    if all(bool(torch.isfinite(t).all()) for t in inputs):
        kk = float(torch.as_tensor(k).detach().max())
        limit = math.log(torch.finfo(out.dtype).max) + math.log(2.0)
        raise ValueError(
            f"{what}: the result overflows {out.dtype} (a point farther than about {limit:.1f}·sqrt(k) = "
            f"{limit * math.sqrt(kk):.1f} from the origin, k={kk:g}, cannot be represented in ambient "
            f"coordinates). Use float64, a larger k, or keep tangent norms below that bound "
            f"(e.g. with a smooth bound such as a scaled tanh at the model boundary)."
        )
    return out


def _up(t: Tensor) -> Tensor:
    return t if t.dtype == INTERNAL_DTYPE else t.to(INTERNAL_DTYPE)


# ----------------------------------------------------------------------------------------------------------
# Minkowski geometry
# ----------------------------------------------------------------------------------------------------------


def inner(u: Tensor, v: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
    r"""Minkowski product ``<u,v>_L = -u_0 v_0 + Σ_{i≥1} u_i v_i``.

    Example:
        >>> float(inner(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])))
        -1.0
    """
    uv = u * v
    out = uv.narrow(dim, 1, uv.size(dim) - 1).sum(dim=dim, keepdim=True) - uv.narrow(dim, 0, 1)
    return out if keepdim else out.squeeze(dim)


def norm(u: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
    r"""Riemannian norm of a tangent vector, ``||u||_L = sqrt(<u,u>_L)`` (rounding below 0 read as 0)."""
    sq = inner(u, u, keepdim=keepdim, dim=dim)
    return sq.clamp_min(tiny(u.dtype)).sqrt()


def origin(n: int, k: Tensor | float = 1.0, *, dtype=None, device=None) -> Tensor:
    r"""The origin ``o = (sqrt(k), 0, …, 0)`` of :math:`H^n_k` (an ``n+1`` vector)."""
    if dtype is None:
        dtype = k.dtype if isinstance(k, torch.Tensor) else torch.get_default_dtype()
    k = torch.as_tensor(k, dtype=dtype, device=device)
    o = torch.zeros(*k.shape, n + 1, dtype=k.dtype, device=k.device)
    o[..., 0] = k.sqrt()
    return o


def projx(x: Tensor, k: Tensor | float, *, dim: int = -1) -> Tensor:
    r"""Project onto the hyperboloid by recomputing the time coordinate: ``x_0 = sqrt(||x̂||² + k)``.

    Computed as ``hypot(||x̂||, sqrt(k))`` so that it does not overflow for far points.
    """
    xs = x.narrow(dim, 1, x.size(dim) - 1)
    x0 = torch.hypot(scaled_norm(xs, keepdim=True, dim=dim), _sqrt_k(_kdim(k, x), x))
    return torch.cat([x0, xs], dim=dim)


def proju(x: Tensor, u: Tensor, k: Tensor | float, *, dim: int = -1) -> Tensor:
    r"""Project ``u`` onto the tangent space at ``x``: ``u + (<x,u>_L / k)·x``."""
    return u + inner(x, u, keepdim=True, dim=dim) / _kdim(k, x) * x


def egrad2rgrad(x: Tensor, g: Tensor, k: Tensor | float, *, dim: int = -1) -> Tensor:
    r"""Riemannian gradient from a Euclidean one: flip the sign of the time component (``G⁻¹g``), then
    :func:`proju`."""
    g = torch.cat([-g.narrow(dim, 0, 1), g.narrow(dim, 1, g.size(dim) - 1)], dim=dim)
    return proju(x, g, k, dim=dim)


# ----------------------------------------------------------------------------------------------------------
# maps at the origin (well conditioned: spatial coordinates only)
# ----------------------------------------------------------------------------------------------------------


def expmap0_spatial(v: Tensor, k: Tensor | float) -> Tensor:
    r"""``exp_o`` of the tangent vector ``(0, v)``, ``v ∈ ℝⁿ``: returns the ambient point in :math:`H^n_k`.

    ``exp_o(v) = (sqrt(k)·cosh(r/sqrt(k)), sinh(r/sqrt(k))/(r/sqrt(k)) · v)``, ``r = ||v||₂``.

    Example:
        >>> expmap0_spatial(torch.tensor([0.0, 0.0]), 1.0)
        tensor([1., 0., 0.])
    """
    kk = _kdim(k, v)
    sk = kk.sqrt()
    z = torch.linalg.vector_norm(v, dim=-1, keepdim=True) / sk
    out = torch.cat([sk * torch.cosh(z), sinhc(z) * v], dim=-1)
    return check_finite_result(out, v, what="expmap0", k=k)


def logmap0_spatial(x: Tensor, k: Tensor | float) -> Tensor:
    r"""Spatial coordinates ``v ∈ ℝⁿ`` of ``log_o(x)`` (its time component is 0).

    ``v = asinh(ρ/sqrt(k))/(ρ/sqrt(k)) · x̂`` with ``ρ = ||x̂||₂``: computed from the spatial part only (no
    ``arccosh`` of ``x₀``), so it is exact to working precision at every distance and ignores a
    time coordinate that is off the manifold (equivalent to :func:`projx` first).

    Example:
        >>> logmap0_spatial(expmap0_spatial(torch.tensor([3.0, 4.0]), 1.0), 1.0)
        tensor([3., 4.])
    """
    xs = x[..., 1:]
    sk = _sqrt_k(_kdim(k, x), x)
    rho = scaled_norm(xs, keepdim=True)
    z = rho / sk
    # far from o: (x̂/ρ)·sqrt(k)·asinh(z); the product form asinhc(z)·x̂ would form 1/z² in its gradient,
    # which underflows (z > 1e19 in float32) and silently zeroes part of the Jacobian.
    far = z > 1
    unit = xs / torch.where(far, rho, torch.ones_like(rho))
    near = asinhc(torch.where(far, torch.zeros_like(z), z)) * xs
    return torch.where(far, unit * (sk * asinh(z)), near)


def expmap0(u: Tensor, k: Tensor | float, *, dim: int = -1) -> Tensor:
    r"""``exp_o(u)`` for an ambient tangent vector at the origin (its time component is ignored)."""
    if dim != -1:
        return expmap0(u.movedim(dim, -1), k).movedim(-1, dim)
    return expmap0_spatial(u[..., 1:], k)


def logmap0(x: Tensor, k: Tensor | float, *, dim: int = -1) -> Tensor:
    r"""``log_o(x)`` as an ambient tangent vector ``(0, v)`` (see :func:`logmap0_spatial`)."""
    if dim != -1:
        return logmap0(x.movedim(dim, -1), k).movedim(-1, dim)
    v = logmap0_spatial(x, k)
    return torch.cat([torch.zeros_like(v[..., :1]), v], dim=-1)


def _two_product(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """``a·b = p + e`` exactly (Dekker's product by Veltkamp splitting; no fused multiply-add needed), for
    float64 ``|a|, |b| ≤ 1``."""
    split = 134217729.0  # 2^27 + 1

    def halves(v: Tensor) -> tuple[Tensor, Tensor]:
        t = split * v
        hi = t - (t - v)
        return hi, v - hi

    p = a * b
    ah, al = halves(a)
    bh, bl = halves(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def dist_polar(x: Tensor, y: Tensor, k: Tensor | float) -> Tensor:
    r"""Geodesic distance from the radii and the angle of the spatial parts, at any distance the coordinates
    represent, to 1e-12 relative or a few ulps of the points' distance from the origin, whichever is larger
    (``r_x - r_y`` is a difference of radii). Float64 out; broadcasting; no gradient intended.

    With ``r = asinh(|x̂|/√k)`` (``x = exp_o`` of a vector of length ``√k·r``) and ``θ`` the angle between ``x̂`` and
    ``ŷ``, the hyperbolic law of cosines gives ``sinh²(d/(2√k)) = sinh²((r_x - r_y)/2) + |x̂||ŷ|(1 - cos θ)/(2k)``:
    two non-negative terms. ``1 - cos θ = sin²θ/(1 + cos θ)`` for ``cos θ ≥ 0``, and ``sin θ = |x̂ × ŷ|/(|x̂||ŷ|)``
    from the components ``x̂_i ŷ_j - x̂_j ŷ_i`` evaluated with exact products (:func:`_two_product`, after an exact
    power-of-two scaling). :func:`dist` forms ``Δ⊥`` by subtracting coordinates of size ``√k·sinh(r)``, which
    loses ``ε·e^r`` absolutely (relative 1e-7 for nearby points at distance 17, nothing left beyond 37); this form
    does not, which is what an assignment on the costs of far points needs (:func:`flows.rfm.ot_pairing`).

    Example:
        >>> x = expmap0_spatial(torch.tensor([50.0, 0.0], dtype=torch.float64), 1.0)
        >>> y = expmap0_spatial(torch.tensor([50.0, 1e-3], dtype=torch.float64), 1.0)
        >>> round(float(dist_polar(x, y, 1.0)), 6)  # two points 50 from the origin, 1e-3 rad apart seen from it
        76.974149
    """
    a, b = _up(x)[..., 1:], _up(y)[..., 1:]
    a, b = torch.broadcast_tensors(a, b)
    k64 = torch.as_tensor(k, dtype=INTERNAL_DTYPE, device=a.device)
    sk = k64.sqrt()
    na, nb = scaled_norm(a), scaled_norm(b)
    # exact power-of-two scaling into [-1, 1]: the cross components keep every bit of the products
    ea = torch.frexp(a.abs().amax(-1, keepdim=True).clamp_min(tiny(a.dtype)))[1]
    eb = torch.frexp(b.abs().amax(-1, keepdim=True).clamp_min(tiny(b.dtype)))[1]
    sa, sb = torch.ldexp(a, -ea), torch.ldexp(b, -eb)
    i, j = torch.triu_indices(a.size(-1), a.size(-1), 1, device=a.device)
    p1, e1 = _two_product(sa[..., i], sb[..., j])
    p2, e2 = _two_product(sa[..., j], sb[..., i])
    cross = scaled_norm((p1 - p2) + (e1 - e2)) if i.numel() else torch.zeros_like(na)
    nsa, nsb = scaled_norm(sa), scaled_norm(sb)
    den = (nsa * nsb).clamp_min(tiny(a.dtype))
    cos, sin = (sa * sb).sum(-1) / den, cross / den
    one_minus_cos = torch.where(cos >= 0, sin * sin / (1 + cos), 1 - cos)
    radial = torch.sinh((torch.asinh(na / sk) - torch.asinh(nb / sk)) / 2)
    angular = na.sqrt() * nb.sqrt() * (one_minus_cos / (2 * k64)).sqrt()
    return 2 * sk * torch.asinh(torch.hypot(radial, angular))


def dist0(x: Tensor, k: Tensor | float, *, keepdim: bool = False, dim: int = -1) -> Tensor:
    r"""Distance to the origin, ``sqrt(k)·asinh(||x̂||/sqrt(k))`` (not ``arccosh(x₀/sqrt(k))``)."""
    if dim != -1:
        x = x.movedim(dim, -1)
    sk = _sqrt_k(_kdim(k, x), x)
    out = sk * asinh(scaled_norm(x[..., 1:], keepdim=True) / sk)
    return out if keepdim else out.squeeze(-1)


# ----------------------------------------------------------------------------------------------------------
# maps at arbitrary base points (float64 inside, cancellation-free formulas)
# ----------------------------------------------------------------------------------------------------------


def _minkowski_diff_norm(x: Tensor, y: Tensor, k: Tensor) -> Tensor:
    r"""``||y - x||_L = sqrt(-2k - 2<x,y>_L)`` for on-manifold ``x, y`` (with keepdim), without cancellation.

    With ``a = x̂, b = ŷ, S = a + b, T = x₀ + y₀`` and ``Δ = b - a = α Ŝ + Δ⊥``:
    ``||y-x||²_L = |Δ⊥|² + α²(T - |S|)(T + |S|)/T²``, where
    ``T - |S| = k/(x₀+|a|) + k/(y₀+|b|) + |a||b|·|â - b̂|²/(|a|+|b|+|S|)`` is a sum of non-negative terms.
    """
    a, b = x[..., 1:], y[..., 1:]
    x0, y0 = x[..., :1], y[..., :1]
    delta = b - a
    s = a + b
    s_norm = scaled_norm(s, keepdim=True)  # scaled norms: squares of far coordinates overflow
    t = x0 + y0
    eps = tiny(x.dtype)
    s_hat = s / s_norm.clamp_min(eps)
    alpha = (delta * s_hat).sum(-1, keepdim=True)
    na = scaled_norm(a, keepdim=True)
    nb = scaled_norm(b, keepdim=True)
    nd = scaled_norm(delta, keepdim=True)
    # Δ⊥ = 2a⊥ = -2b⊥ (as (a + b)⊥ = 0): take the residual of the shortest of Δ, a, b, whose rounding error is
    # ε·min(|Δ|, |a|, |b|). ``Δ - αŜ`` alone errs by ε|Δ|, which swamps ||y - x||_L for a far point and a point
    # near the origin (|Δ⊥|² ≈ ε²e^{2d} against ||y - x||²_L ≈ e^d: wrong beyond d ≈ 55 in float64).
    use_a = (na <= nb) & (na <= nd)
    use_b = ~use_a & (nb <= nd)
    base = torch.where(use_a, 2 * a, torch.where(use_b, 2 * b, delta))
    d_perp = base - (base * s_hat).sum(-1, keepdim=True) * s_hat
    angle = torch.linalg.vector_norm(a / na.clamp_min(eps) - b / nb.clamp_min(eps), dim=-1, keepdim=True)
    t_minus_s = k / (x0 + na) + k / (y0 + nb) + na * (nb / (na + nb + s_norm).clamp_min(eps)) * angle * angle
    # as a norm, scaled: the squares overflow float64 for points ≈ 350·sqrt(k) from the origin, the norm only
    # where d(x, y) itself passes ≈ 709·sqrt(k)
    n_perp = scaled_norm(d_perp, keepdim=True)
    n_par = alpha.abs() / t * t_minus_s.sqrt() * (t + s_norm).sqrt()
    m = torch.maximum(n_perp, n_par).detach().clamp_min(eps)
    q = (n_perp / m) ** 2 + (n_par / m) ** 2
    return m * q.clamp_min(eps).sqrt()


def _minkowski_diff_sq(x: Tensor, y: Tensor, k: Tensor) -> Tensor:
    r"""``||y - x||²_L`` for on-manifold ``x, y`` (with keepdim); see :func:`_minkowski_diff_norm`."""
    return _minkowski_diff_norm(x, y, k) ** 2


def _diff64(x: Tensor, y: Tensor) -> Tensor:
    r"""``y - x`` for projected points, with the time component ``y₀ - x₀ = (ŷ - x̂)·(ŷ + x̂) / (x₀ + y₀)``.

    The direct difference ``y₀ - x₀`` carries an absolute error ``ε·x₀`` that does not match the spatial
    part (it points off the tangent spaces); ``proju`` amplifies such an error by ``cosh(d(o, x))``, so the
    log map and the transport would lose ``ε·cosh²(d(o, x))`` absolutely, i.e. ``ε·cosh²/||u||`` relative for
    short vectors. This form keeps the time component as accurate as the spatial difference.
    """
    ds = y[..., 1:] - x[..., 1:]
    d0 = (ds * ((y[..., 1:] + x[..., 1:]) / (x[..., :1] + y[..., :1]))).sum(-1, keepdim=True)
    return torch.cat([d0, ds], dim=-1)


def _dist64(x: Tensor, y: Tensor, k: Tensor) -> Tensor:
    """Distance with keepdim on projected float64 points (``2 sqrt(k) asinh(||y-x||_L / (2 sqrt(k))``)."""
    sk = k.sqrt()
    return 2 * sk * asinh(_minkowski_diff_norm(x, y, k) / (2 * sk))


def dist(x: Tensor, y: Tensor, k: Tensor | float, *, keepdim: bool = False, dim: int = -1) -> Tensor:
    r"""Geodesic distance ``d(x,y) = sqrt(k)·arccosh(-<x,y>_L / k)``.

    Evaluated as ``2·sqrt(k)·asinh(||y - x||_L / (2 sqrt(k)))`` in float64 with a cancellation-free
    ``||y - x||_L`` (see ``_minkowski_diff_norm``), so close points far from the origin keep their digits.

    Example:
        >>> o = origin(2)
        >>> round(float(dist(o, expmap0_spatial(torch.tensor([0.0, 2.0]), 1.0), 1.0)), 6)
        2.0
    """
    if dim != -1:
        x, y = x.movedim(dim, -1), y.movedim(dim, -1)
    dtype = torch.promote_types(x.dtype, y.dtype)
    k64 = _kdim(k, _up(x))
    out = _dist64(projx(_up(x), k), projx(_up(y), k), k64).to(dtype)
    return out if keepdim else out.squeeze(-1)


def expmap(x: Tensor, u: Tensor, k: Tensor | float, *, dim: int = -1) -> Tensor:
    r"""Exponential map ``exp_x(u) = cosh(||u||_L/sqrt(k))·x + sqrt(k)·sinh(||u||_L/sqrt(k))·u/||u||_L``.

    ``x`` is projected onto the manifold and ``u`` onto ``T_x``; the arithmetic is done in float64.

    Example:
        >>> o = origin(2)
        >>> expmap(o, torch.tensor([0.0, 1.0, 0.0]), 1.0)
        tensor([1.5431, 1.1752, 0.0000])
    """
    if dim != -1:
        return expmap(x.movedim(dim, -1), u.movedim(dim, -1), k).movedim(-1, dim)
    dtype = torch.promote_types(x.dtype, u.dtype)
    x64 = _up(x)
    k64 = _kdim(k, x64)
    x64 = projx(x64, k)
    u64 = proju(x64, _up(u), k)
    # exp_x(u) = L_x(exp_o(PT_{x→o}(u))). The direct ``cosh(z)·x + sinhc(z)·u`` turns the residual
    # non-tangency of a rounded ``u`` (|<x,u>_L| ≈ ε·|x|·|u|, unavoidable in ambient coordinates) into a point
    # error ≈ ε·cosh²(d(o,x))·sinh(||u||); the transported coordinates use only the spatial part of ``u``.
    sk = k64.sqrt()
    x0, xs, us = x64[..., :1], x64[..., 1:], u64[..., 1:]
    v = us - (xs * us).sum(-1, keepdim=True) / (x0 * (sk + x0)) * xs
    k_in = torch.as_tensor(k, dtype=x64.dtype, device=x64.device)
    y = translate(x64, expmap0_spatial(v, k_in), k_in)
    return check_finite_result(y.to(dtype), x, u, what="expmap", k=k)


def logmap(x: Tensor, y: Tensor, k: Tensor | float, *, dim: int = -1) -> Tensor:
    r"""Logarithmic map ``log_x(y) = d(x,y)·(y + (<x,y>_L/k)·x) / ||y + (<x,y>_L/k)·x||_L``.

    Evaluated as ``(Δ - 2 sinh²(d/(2 sqrt(k)))·x) / sinhc(d/sqrt(k))`` with ``Δ = y - x`` (using
    ``-<x,y>_L/k = cosh(d/sqrt(k))`` and ``||y + (<x,y>_L/k) x||_L = sqrt(k) sinh(d/sqrt(k))``), in float64.

    Example:
        >>> o = origin(2)
        >>> logmap(o, expmap(o, torch.tensor([0.0, 1.0, 0.0]), 1.0), 1.0)
        tensor([0., 1., 0.])
    """
    if dim != -1:
        return logmap(x.movedim(dim, -1), y.movedim(dim, -1), k).movedim(-1, dim)
    dtype = torch.promote_types(x.dtype, y.dtype)
    x64, y64 = _up(x), _up(y)
    k64 = _kdim(k, x64)
    x64, y64 = projx(x64, k), projx(y64, k)
    sk = k64.sqrt()
    d = _dist64(x64, y64, k64)
    w = _diff64(x64, y64) - 2 * torch.sinh(d / (2 * sk)) ** 2 * x64
    u = proju(x64, w / sinhc(d / sk), k)
    return u.to(dtype)


def inner0(v: Tensor, k: Tensor | float, *, keepdim: bool = False, dim: int = -1) -> Tensor:
    r"""``<o, v>_L = -sqrt(k)·v₀``: the Minkowski product of the origin with ``v`` (geoopt's ``inner0``).

    Example:
        >>> inner0(torch.tensor([2.0, 1.0, 3.0]), 4.0)
        tensor(-4.)
    """
    if dim != -1:
        out = inner0(v.movedim(dim, -1), k, keepdim=True)
        return out.movedim(-1, dim) if keepdim else out.squeeze(-1)
    out = -v[..., :1] * _sqrt_k(_kdim(k, v), v)
    return out if keepdim else out.squeeze(-1)


def logmap0back(x: Tensor, k: Tensor | float, *, dim: int = -1) -> Tensor:
    r"""``log_x(o)``: the tangent vector at ``x`` that points to the origin, of length ``d(x, o)`` (geoopt's
    ``logmap0back``), computed by :func:`logmap` (float64, cancellation-free).

    Example:
        >>> x = expmap0(torch.tensor([0.0, 1.0, 0.0]), 1.0)
        >>> logmap0back(x, 1.0)
        tensor([-1.1752, -1.5431,  0.0000])
    """
    if dim != -1:
        return logmap0back(x.movedim(dim, -1), k).movedim(-1, dim)
    o = torch.cat([_sqrt_k(_kdim(k, x), x).expand_as(x[..., :1]), torch.zeros_like(x[..., 1:])], dim=-1)
    return logmap(x, o, k)


def geodesic_unit(t: Tensor, x: Tensor, u: Tensor, k: Tensor | float) -> Tensor:
    r"""The unit-speed geodesic ``γ(t) = cosh(t/sqrt(k))·x + sqrt(k)·sinh(t/sqrt(k))·u`` from ``x`` with velocity ``u``
    (``||u||_L = 1``, ``u`` tangent at ``x``); ``d(x, γ(t)) = |t|`` (geoopt's ``geodesic_unit``).

    Example:
        >>> o, u = origin(2), torch.tensor([0.0, 1.0, 0.0])
        >>> geodesic_unit(torch.tensor(2.0), o, u, 1.0)
        tensor([3.7622, 3.6269, 0.0000])
    """
    sk = _sqrt_k(_kdim(k, x), x)
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return torch.cosh(t / sk) * x + sk * torch.sinh(t / sk) * u


def transp(x: Tensor, y: Tensor, v: Tensor, k: Tensor | float, *, dim: int = -1) -> Tensor:
    r"""Parallel transport along the geodesic from ``x`` to ``y``:
    ``PT_{x→y}(v) = v + <y,v>_L / (k - <x,y>_L) · (x + y)``.

    Evaluated with ``<y,v>_L = <y - x, v>_L`` and ``k - <x,y>_L = 2k·cosh²(d/(2 sqrt(k)))`` in float64;
    an isometry, inverted by ``transp(y, x, ·)``.

    Example:
        >>> o, v = origin(2), torch.tensor([0.0, 0.0, 1.0])
        >>> y = expmap(o, torch.tensor([0.0, 1.0, 0.0]), 1.0)
        >>> transp(o, y, v, 1.0)
        tensor([0., 0., 1.])
    """
    if dim != -1:
        return transp(x.movedim(dim, -1), y.movedim(dim, -1), v.movedim(dim, -1), k).movedim(-1, dim)
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), v.dtype)
    x64, y64 = _up(x), _up(y)
    k64 = _kdim(k, x64)
    x64, y64 = projx(x64, k), projx(y64, k)
    v64 = proju(x64, _up(v), k)
    d = _dist64(x64, y64, k64)
    denom = 2 * k64 * torch.cosh(d / (2 * k64.sqrt())) ** 2
    # Spatial parts only: time components follow from tangency (v₀ = x̂·v̂/x₀, w₀ = ŷ·ŵ/y₀). Using the rounded
    # ambient v₀ instead would carry its residual non-tangency (|<x,v>_L| ≈ ε·|x|·|v|) into the result, an
    # error that grows with d(x, y).
    delta = _diff64(x64, y64)
    x0, xs, y0, ys, vs = x64[..., :1], x64[..., 1:], y64[..., :1], y64[..., 1:], v64[..., 1:]
    v0 = (xs * vs).sum(-1, keepdim=True) / x0
    yv = (delta[..., 1:] * vs).sum(-1, keepdim=True) - delta[..., :1] * v0  # <y - x, v>_L = <y, v>_L
    ws = vs + yv / denom * (xs + ys)
    out = torch.cat([(ys * ws).sum(-1, keepdim=True) / y0, ws], dim=-1)
    return check_finite_result(out.to(dtype), x, y, v, what="transp", k=k)


def transp0(y: Tensor, v: Tensor, k: Tensor | float, *, dim: int = -1) -> Tensor:
    r"""``PT_{o→y}(v)`` for ``v ∈ T_oH`` (ambient, time component ignored)."""
    o = origin(y.size(dim) - 1, k, dtype=y.dtype, device=y.device)
    if dim != -1:
        y, v = y.movedim(dim, -1), v.movedim(dim, -1)
        return transp(o, y, v, k).movedim(-1, dim)
    return transp(o, y, v, k)


def transp0back(x: Tensor, u: Tensor, k: Tensor | float, *, dim: int = -1) -> Tensor:
    r"""``PT_{x→o}(u)`` for ``u ∈ T_xH``; the result has time component 0."""
    o = origin(x.size(dim) - 1, k, dtype=x.dtype, device=x.device)
    if dim != -1:
        x, u = x.movedim(dim, -1), u.movedim(dim, -1)
        return transp(x, o, u, k).movedim(-1, dim)
    return transp(x, o, u, k)


def translate(mu: Tensor, p: Tensor, k: Tensor | float, *, inverse: bool = False) -> Tensor:
    r"""The Lorentz boost ``L_μ`` (the isometry along the geodesic ``o → μ`` taking ``o`` to ``μ``), applied to
    the point ``p``: ``L_μ(p) = (p₀/sqrt(k))·μ + PT_{o→μ}(p̂)``, i.e.

    ``L_μ(p)₀ = (p₀ μ₀ + μ̂·p̂)/sqrt(k)``,  ``L_μ(p)^ = (p₀/sqrt(k))·μ̂ + p̂ + (μ̂·p̂)/(k + sqrt(k) μ₀)·μ̂``.

    It satisfies ``L_μ(exp_o(v)) = exp_μ(PT_{o→μ}(v))``, which is how the wrapped normal and the WHC flow
    use it; ``inverse=True`` applies ``L_μ⁻¹ = L_{(μ₀, -μ̂)}``. Computed in float64 from the spatial parts of
    projected inputs (the cancellation when ``L_μ(p)`` lands near the origin is then harmless).

    Example:
        >>> mu = expmap0_spatial(torch.tensor([1.0, 0.0]), 1.0)
        >>> torch.allclose(translate(mu, origin(2), 1.0), mu)
        True
    """
    dtype = torch.promote_types(mu.dtype, p.dtype)
    mu64, p64 = _up(mu), _up(p)
    k64 = _kdim(k, mu64)
    mu64, p64 = projx(mu64, k), projx(p64, k)
    sk = k64.sqrt()
    mu0, mus = mu64[..., :1], mu64[..., 1:]
    if inverse:
        mus = -mus
    p0, ps = p64[..., :1], p64[..., 1:]
    dot = (mus * ps).sum(-1, keepdim=True)
    ys = p0 / sk * mus + ps + dot / (k64 + sk * mu0) * mus
    y = projx(torch.cat([torch.zeros_like(ys[..., :1]), ys], dim=-1), k)
    return check_finite_result(y.to(dtype), mu, p, what="translate", k=k)


# ----------------------------------------------------------------------------------------------------------
# Poincaré ball conversions (for plots)
# ----------------------------------------------------------------------------------------------------------


def lorentz_to_poincare(x: Tensor, k: Tensor | float, *, dim: int = -1) -> Tensor:
    r"""Hyperboloid → Poincaré ball of radius ``sqrt(k)``: ``p = sqrt(k)·x̂ / (x₀ + sqrt(k))``."""
    if dim != -1:
        return lorentz_to_poincare(x.movedim(dim, -1), k).movedim(-1, dim)
    sk = _sqrt_k(_kdim(k, x), x)
    x = projx(x, k)
    return sk * x[..., 1:] / (x[..., :1] + sk)


def poincare_to_lorentz(p: Tensor, k: Tensor | float, *, dim: int = -1) -> Tensor:
    r"""Poincaré ball of radius ``sqrt(k)`` → hyperboloid:
    ``x = sqrt(k)·(k + ||p||², 2 sqrt(k) p) / (k - ||p||²)``."""
    if dim != -1:
        return poincare_to_lorentz(p.movedim(dim, -1), k).movedim(-1, dim)
    kk = _kdim(k, p)
    sk = kk.sqrt()
    sq = (p * p).sum(-1, keepdim=True)
    out = torch.cat([sk * (kk + sq), 2 * kk * p], dim=-1) / (kk - sq)
    return out
