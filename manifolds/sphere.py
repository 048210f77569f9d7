r"""The sphere :math:`S^n_r = \{x ∈ ℝ^{n+1} : |x| = r\}` as pure functions and a thin ``geoopt.Manifold`` over them.

Formulas (``shared/docs/MATH.md`` §8), each evaluated in a form that keeps its digits where the textbook form
cancels:

* ``exp_x(v) = cos(|v|/r)·x + r·sin(|v|/r)·v/|v|`` (``sin t / t`` through ``torch.sinc``: exact at ``v = 0``);
* ``log_x(y) = r·θ·u/|u|`` with ``u`` the part of ``y`` orthogonal to ``x`` and ``θ = atan2(|u|/r, <x,y>/r²)``;
  ``u`` is formed from ``y - x`` when ``y`` is in the hemisphere of ``x`` and from ``y + x`` otherwise, so neither a
  tiny step nor a near-antipode loses its digits to cancellation;
* ``d(x, y) = 2r·atan2(|x - y|, |x + y|)`` (exact at 0 and at π·r, where ``arccos`` loses half the digits);
* ``PT_{x→y}(v) = v - <y - x, v>/(|x + y|²/2)·(x + y)`` along the minimising geodesic.

The origin is ``o = (r, 0, …, 0)`` (the first coordinate, like the hyperboloid's), so tangent coordinates at the
origin are the last ``n`` ambient coordinates of tangent vectors at ``o``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import geoopt
import torch

from .base import ManifoldOps
from .constants import SPHERE_CHECK_RTOL
from .euclidean import Euclidean
from .uniform import UniformOnManifold

Tensor = torch.Tensor

__all__ = ["Sphere", "sphere_expmap", "sphere_logmap", "sphere_dist", "sphere_transp", "sphere_translate",
           "sphere_expmap0_spatial", "sphere_logmap0_spatial", "log_sinc", "sphere_log_volume"]


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1, keepdim=True)


def _norm(a: Tensor) -> Tensor:
    return torch.linalg.vector_norm(a, dim=-1, keepdim=True)


def _sinc(t: Tensor) -> Tensor:
    """``sin t / t`` (1 at 0)."""
    return torch.sinc(t / math.pi)


def log_sinc(t: Tensor) -> Tensor:
    r"""``log|sin t / t|``: ``(n-1)·log_sinc(|w|/r)`` is the log-Jacobian of ``exp`` on Sⁿ_r at ``|w|``.

    Example:
        >>> log_sinc(torch.tensor([0.0, math.pi / 2]))
        tensor([ 0.0000, -0.4516])
    """
    return _sinc(t).abs().log()


def sphere_log_volume(n: int, r: float = 1.0) -> float:
    """``log vol(Sⁿ_r) = log(2 π^{(n+1)/2} rⁿ / Γ((n+1)/2))`` (``log 4π r²`` on S²)."""
    return math.log(2.0) + 0.5 * (n + 1) * math.log(math.pi) + n * math.log(r) - math.lgamma(0.5 * (n + 1))


def sphere_projx(x: Tensor, r: float) -> Tensor:
    """``r·x/|x|``."""
    return r * x / _norm(x)


def sphere_proju(x: Tensor, u: Tensor, r: float) -> Tensor:
    """``u - <x,u>/|x|²·x``: the part of ``u`` tangent at ``x``."""
    return u - _dot(x, u) / _dot(x, x) * x


def sphere_expmap(x: Tensor, u: Tensor, r: float) -> Tensor:
    r"""``exp_x(u) = cos(|u|/r)·x + r sin(|u|/r)·u/|u|`` (``u`` projected on ``T_x`` first), projected on the sphere.

    Example:
        >>> x, u = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, math.pi / 2, 0.0])
        >>> torch.allclose(sphere_expmap(x, u, 1.0), torch.tensor([0.0, 1.0, 0.0]), atol=1e-7)
        True
    """
    u = sphere_proju(x, u, r)
    t = _norm(u) / r
    return sphere_projx(torch.cos(t) * x + _sinc(t) * u, r)


def sphere_logmap(x: Tensor, y: Tensor, r: float) -> Tensor:
    r"""``log_x(y) = r·θ·u/|u|``, ``u = y - <x,y>/r²·x``, ``θ = atan2(|u|/r, <x,y>/r²)`` (the stable form: see the
    module). At the exact antipode (``u = 0``, ``<x,y> < 0``) every direction is a minimising geodesic and the
    result is the zero vector (the injectivity radius is ``π·r``).

    Example:
        >>> x, y = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
        >>> torch.allclose(sphere_logmap(x, y, 1.0), torch.tensor([0.0, math.pi / 2, 0.0]))
        True
    """
    r2 = r * r
    c = _dot(x, y) / r2
    d, s = y - x, y + x
    u = torch.where(c >= 0, d - _dot(x, d) / r2 * x, s - _dot(x, s) / r2 * x)
    a = _norm(u) / r
    pos = a > 0
    a_safe = torch.where(pos, a, torch.ones_like(a))
    factor = torch.where(pos, torch.atan2(a, c) / a_safe, 1.0 / c)
    return factor * u


def sphere_dist(x: Tensor, y: Tensor, r: float, *, keepdim: bool = False) -> Tensor:
    """``d(x, y) = 2r·atan2(|x - y|, |x + y|)``."""
    out = 2 * r * torch.atan2(_norm(x - y), _norm(x + y))
    return out if keepdim else out.squeeze(-1)


def sphere_transp(x: Tensor, y: Tensor, v: Tensor, r: float) -> Tensor:
    r"""``PT_{x→y}(v) = v - <y - x, v>/(|x + y|²/2)·(x + y)`` (``v`` projected on ``T_x`` first); undefined at the
    antipode (``x + y = 0``). An isometry ``T_x → T_y``, inverted by ``sphere_transp(y, x, ·)``."""
    v = sphere_proju(x, v, r)
    s = x + y
    return v - _dot(y - x, v) / (0.5 * _dot(s, s)) * s


def sphere_expmap0_spatial(v: Tensor, r: float) -> Tensor:
    """``exp_o((0, v)) = (r cos(|v|/r), sin(|v|/r)/(|v|/r)·v)`` for tangent coordinates ``v ∈ ℝⁿ`` at ``o = (r, 0…)``."""
    t = _norm(v) / r
    return torch.cat([r * torch.cos(t), _sinc(t) * v], dim=-1)


def sphere_logmap0_spatial(x: Tensor, r: float) -> Tensor:
    """Tangent coordinates of ``log_o(x)``: ``r·atan2(|x̂|, x₀)·x̂/|x̂|`` (``x̂`` = the last ``n`` coordinates); the zero
    vector at the antipode ``-o``."""
    x0, xs = x[..., :1], x[..., 1:]
    a = _norm(xs)
    pos = a > 0
    a_safe = torch.where(pos, a, torch.ones_like(a))
    factor = torch.where(pos, r * torch.atan2(a, x0) / a_safe, r / x0)
    return factor * xs


def sphere_translate(mu: Tensor, p: Tensor, r: float, *, inverse: bool = False) -> Tensor:
    r"""The rotation in the plane of ``o`` and ``μ`` taking ``o`` to ``μ`` (the transvection along the geodesic
    ``o → μ``: ``translate(μ, exp_o(v)) = exp_μ(PT_{o→μ} v)``), applied to ``p``; ``inverse`` takes ``μ`` to ``o``.
    With ``e = o/r``, ``m = μ/|μ|``:

    ``R p = p - <e+m, p>/(1 + m₀)·(e + m) + 2<e, p>·m``,  ``R⁻¹ p = p - <e+m, p>/(1 + m₀)·(e + m) + 2<m, p>·e``.

    Undefined at ``μ = -o`` (every rotation of the plane is a candidate there).
    """
    m = mu / _norm(mu)
    m0 = m[..., :1]
    e = torch.zeros_like(m)
    e[..., 0] = 1.0
    em = e + m
    base = p - _dot(em, p) / (1 + m0) * em
    return base + 2 * _dot(m, p) * e if inverse else base + 2 * p[..., :1] * m


class Sphere(ManifoldOps, geoopt.Manifold):
    r"""The sphere :math:`S^n_r ⊂ ℝ^{n+1}` of radius ``r`` (curvature ``1/r²``), points as ``n+1`` ambient coordinates.

    Mirrors ``geoopt.Sphere`` (same method names and meanings) with these differences: any radius (geoopt's is 1);
    ``retr`` is the exponential map (geoopt's is ``projx(x + u)``); ``random`` draws the uniform distribution (as
    geoopt's ``random_uniform``); ``logmap`` uses ``atan2`` (exact at 0 and near π·r, where geoopt's ``arccos`` loses
    digits) and returns the zero vector at the exact antipode; ``expmap`` projects ``u`` on ``T_x`` first; ``transp`` is
    parallel transport along the minimising geodesic (geoopt's is the projection ``proju(y, v)``, a vector transport
    that does not keep norms). Origin
    forms (``expmap0``, ``logmap0``, ``dist0``, ``transp0``, ``transp0back``) use the origin ``o = (r, 0, …, 0)``.

    Args:
        n: the intrinsic dimension (points have ``n + 1`` coordinates); ``None`` leaves it free (sizes unchecked).
        radius: ``r > 0``.
        validate: check every input (finite, right size, on the sphere / tangent) with one-line errors.

    Example:
        >>> S = Sphere(2)
        >>> x = S.expmap0_spatial(torch.tensor([0.0, math.pi / 2]))
        >>> torch.allclose(x, torch.tensor([0.0, 0.0, 1.0]), atol=1e-7), bool(S.check_point_on_manifold(x))
        (True, True)
        >>> torch.allclose(S.dist0(x), torch.tensor(math.pi / 2))
        True
    """

    name = "Sphere"
    curvature_sign = 1
    is_compact = True
    ndim = 1
    reversible = False
    __scaling__ = geoopt.Manifold.__scaling__.copy()

    def __init__(self, n: int | None = None, radius: float = 1.0, *, validate: bool = False) -> None:
        super().__init__()
        if n is not None and (int(n) != n or n < 1):
            raise ValueError(f"Sphere(n): n (the intrinsic dimension) must be a positive integer; got {n!r}")
        if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
            raise ValueError(f"Sphere radius must be a finite positive number (curvature 1/r²); got {radius!r}")
        self.dim = None if n is None else int(n)
        self.radius = float(radius)
        self.validate = validate

    def extra_repr(self) -> str:
        return f"n={self.dim}, radius={self.radius:g}"

    # -- the interface's declarations ----------------------------------------------------------------------
    @property
    def injectivity_radius(self) -> float:
        """``π·r``: ``exp_x`` is a diffeomorphism on the open tangent ball of that radius."""
        return math.pi * self.radius

    def curvature(self) -> Tensor:
        """``1/r²``."""
        return torch.tensor(1.0 / self.radius**2)

    def same_as(self, other: object) -> bool:
        return self is other or (type(self) is type(other) and self.radius == other.radius)

    def embedding_terms(self, x: Tensor, probe: Optional[Tensor] = None):
        r"""The unit normal ``x/r``: the pair ``(x/r², x)``, so ``div_g V = tr J - x̂ᵀJx̂`` (MATH.md §8; ``n + 2``
        vector-Jacobian products); the probe ``ε = proju(x, probe)`` (``E[εεᵀ] = P_x``) is its own dual
        (:meth:`ManifoldOps.embedding_terms`)."""
        normals = [(x / self.radius**2, x)]
        if probe is None:
            return normals, None, None
        eps = sphere_proju(x, probe, self.radius)
        return normals, eps, eps

    def ambient_dim(self, n: int) -> int:
        return n + 1

    def intrinsic_dim(self, x: Tensor) -> int:
        return x.size(-1) - 1

    def log_volume(self, n: int | None = None) -> float:
        """``log vol(Sⁿ_r)``."""
        return sphere_log_volume(self._n(n), self.radius)

    def _n(self, n: int | None) -> int:
        if n is None and self.dim is None:
            raise ValueError("this Sphere has no fixed dimension: build it as Sphere(n) or pass n")
        return self.dim if n is None else n

    def uniform(self, *, dtype: torch.dtype | None = None, device: torch.device | None = None) -> UniformOnManifold:
        """The uniform law, ``log p = -log(2π^{(n+1)/2} rⁿ / Γ((n+1)/2))``."""
        return UniformOnManifold(self, self.log_volume(), dtype=dtype, device=device)

    # -- checks --------------------------------------------------------------------------------------------
    def _check_point_on_manifold(self, x: Tensor, *, atol: float = 0.0, rtol: float = SPHERE_CHECK_RTOL,
                                 dim: int = -1) -> Tuple[bool, Optional[str]]:
        x = x.movedim(dim, -1)
        if not bool(torch.isfinite(x).all()):
            return False, "contains NaN or inf coordinates"
        err = (torch.linalg.vector_norm(x.double(), dim=-1) - self.radius).abs()
        if err.numel() and bool((err > atol + rtol * self.radius).any()):
            return False, (
                f"not on the sphere of radius {self.radius:g}: max ||x| - r| / r = {float(err.max()) / self.radius:.3g}"
                f" > rtol {rtol:g}; project it with Sphere.projx"
            )
        return True, None

    def _check_vector_on_tangent(self, x: Tensor, u: Tensor, *, atol: float = 0.0, rtol: float = SPHERE_CHECK_RTOL,
                                 dim: int = -1) -> Tuple[bool, Optional[str]]:
        x, u = x.movedim(dim, -1).double(), u.movedim(dim, -1).double()
        if not bool(torch.isfinite(u).all()):
            return False, "contains NaN or inf coordinates"
        err = _dot(x, u).abs().squeeze(-1)
        scale = (_norm(x) * _norm(u)).squeeze(-1)
        if err.numel() and bool((err > atol + rtol * scale + 1e-300).any()):
            rel = float((err / scale.clamp_min(1e-300)).max())
            return False, (f"not tangent to the sphere at x: max |<x,u>| / (|x||u|) = {rel:.3g} > rtol {rtol:g}; "
                           f"project it with Sphere.proju(x, u)")
        return True, None

    def _in(self, x: Tensor, what: str, dim: int) -> Tensor:
        x = x.movedim(dim, -1)
        self.validate_point(x, what)
        return x

    def _out(self, x: Tensor, dim: int) -> Tensor:
        return x.movedim(-1, dim)

    # -- geoopt operations ---------------------------------------------------------------------------------
    #: the Euclidean inner product and norm of the ambient tangent vectors (``x`` unused)
    inner = Euclidean.inner
    norm = Euclidean.norm

    def projx(self, x: Tensor, *, dim: int = -1) -> Tensor:
        self._check_size(x.movedim(dim, -1), "x")
        return self._out(sphere_projx(x.movedim(dim, -1), self.radius), dim)

    def proju(self, x: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        return self._out(sphere_proju(x.movedim(dim, -1), u.movedim(dim, -1), self.radius), dim)

    egrad2rgrad = proju

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        self._check_same_size(x, y, dim)
        out = sphere_dist(self._in(x, "x", dim), self._in(y, "y", dim), self.radius, keepdim=keepdim)
        return out.movedim(-1, dim) if keepdim else out

    def expmap(self, x: Tensor, u: Tensor, *, project: bool = True, dim: int = -1) -> Tensor:
        x = self._in(x, "x", dim)
        u = u.movedim(dim, -1)
        self.validate_tangent(x, u, "u")
        return self._out(sphere_expmap(x, u, self.radius), dim)

    retr = expmap

    def logmap(self, x: Tensor, y: Tensor, *, dim: int = -1) -> Tensor:
        self._check_same_size(x, y, dim)
        return self._out(sphere_logmap(self._in(x, "x", dim), self._in(y, "y", dim), self.radius), dim)

    def transp(self, x: Tensor, y: Tensor, v: Tensor, *, dim: int = -1) -> Tensor:
        self._check_same_size(x, y, dim)
        x, y, v = self._in(x, "x", dim), self._in(y, "y", dim), v.movedim(dim, -1)
        self.validate_tangent(x, v, "v")
        return self._out(sphere_transp(x, y, v, self.radius), dim)

    def _o(self, like: Tensor) -> Tensor:
        return self.origin(like.shape, dtype=like.dtype, device=like.device).as_subclass(Tensor)

    def expmap0(self, u: Tensor, *, project: bool = True, dim: int = -1) -> Tensor:
        """``exp_o(u)`` for an ambient tangent vector ``u`` at ``o`` (its first coordinate is projected out)."""
        u = u.movedim(dim, -1)
        self._check_size(u, "u")
        return self._out(sphere_expmap(self._o(u), u, self.radius), dim)

    def logmap0(self, x: Tensor, *, dim: int = -1) -> Tensor:
        x = self._in(x, "x", dim)
        return self._out(sphere_logmap(self._o(x), x, self.radius), dim)

    def dist0(self, x: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        x = self._in(x, "x", dim)
        out = sphere_dist(self._o(x), x, self.radius, keepdim=keepdim)
        return out.movedim(-1, dim) if keepdim else out

    def transp0(self, y: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        y = self._in(y, "y", dim)
        return self._out(sphere_transp(self._o(y), y, u.movedim(dim, -1), self.radius), dim)

    def transp0back(self, x: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        x = self._in(x, "x", dim)
        return self._out(sphere_transp(x, self._o(x), u.movedim(dim, -1), self.radius), dim)

    def origin(self, *size, dtype=None, device=None, seed: int = 42) -> geoopt.ManifoldTensor:
        """``o = (r, 0, …, 0)`` broadcast to ``size`` (last entry ``n + 1``)."""
        o = torch.zeros(*geoopt.utils.size2shape(*size), dtype=dtype, device=device)
        o[..., 0] = self.radius
        return geoopt.ManifoldTensor(o, manifold=self)

    def random_uniform(self, *size, dtype=None, device=None) -> geoopt.ManifoldTensor:
        """Uniform points: ``r·g/|g|`` with ``g`` standard normal in ℝⁿ⁺¹ (last entry of ``size`` = ``n + 1``)."""
        g = torch.randn(*geoopt.utils.size2shape(*size), dtype=dtype, device=device)
        return geoopt.ManifoldTensor(sphere_projx(g, self.radius), manifold=self)

    random = random_uniform

    # -- tangent coordinates at the origin -----------------------------------------------------------------
    def expmap0_spatial(self, v: Tensor) -> Tensor:
        """``exp_o((0, v))`` for coordinates ``v ∈ ℝⁿ`` in the frame ``e₁…eₙ`` of ``T_o``."""
        self.validate_coords(v, "v")
        return sphere_expmap0_spatial(v, self.radius)

    def logmap0_spatial(self, x: Tensor) -> Tensor:
        """Coordinates of ``log_o(x)`` (norm ``<= π·r``; zero at the antipode ``-o``)."""
        self.validate_point(x, "x")
        return sphere_logmap0_spatial(x, self.radius)

    def expmap_logdet(self, r: Tensor, n: int) -> Tensor:
        """``(n-1)·log|r_s sin(|w|/r_s) / |w||`` at ``|w| = r`` (``r_s`` the radius); ``-inf`` at the conjugate
        points ``|w| = π r_s m``, ``m >= 1``."""
        return (n - 1) * log_sinc(r / self.radius)

    def translate(self, mu: Tensor, p: Tensor, *, inverse: bool = False) -> Tensor:
        """The rotation taking ``o`` to ``mu`` (``inverse``: ``mu`` to ``o``), applied to ``p``
        (:func:`sphere_translate`)."""
        return sphere_translate(mu, p, self.radius, inverse=inverse)

    @property
    def wrapped_normal_class(self) -> type:
        """:class:`~manifolds.SphereWrappedNormal` (sums the preimages of ``exp``)."""
        from .sphere_distributions import SphereWrappedNormal  # here: that module imports this one


        return SphereWrappedNormal

    @property
    def posterior_family(self) -> type:
        """:class:`~manifolds.VonMisesFisher`: the hyperspherical VAE's posterior (Davidson et al. 2018)."""
        from .sphere_distributions import VonMisesFisher  # here: that module imports this one

        return VonMisesFisher
