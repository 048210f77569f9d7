r"""The Poincaré ball :math:`𝔹^n_k = \{p ∈ ℝ^n : |p|² < k\}` (curvature ``-1/k``), computed through the hyperboloid.

The isometry with :class:`~manifolds.Lorentz` of the same ``k`` (``shared/docs/MATH.md`` §8;
:func:`~manifolds.lorentz_math.poincare_to_lorentz` / :func:`~manifolds.lorentz_math.lorentz_to_poincare`):

``φ(p) = sqrt(k)·(k + |p|², 2 sqrt(k) p)/(k - |p|²)``,  ``ψ(x) = sqrt(k)·x̂/(sqrt(k) + x₀)``,

with differentials ``dφ_p(u) = (4k^{3/2} s/D², (2k/D)(u + 2s p/D))`` (``D = k - |p|²``, ``s = <p, u>``) and
``dψ_x(w) = sqrt(k)·ŵ/(sqrt(k) + x₀) - sqrt(k)·x̂ w₀/(sqrt(k) + x₀)²``. Every operation away from the origin maps its
inputs to the hyperboloid in float64, runs the hyperboloid's operation there and maps back, so the ball inherits the
hyperboloid's accuracy. The ball's own weak spot remains: float32 ball coordinates cannot tell points beyond
≈ 17·sqrt(k) from the boundary (``1 - |p|/sqrt(k) ≈ 2e^{-d/sqrt(k)}``; float64: ≈ 37·sqrt(k)). Farther points live
on the hyperboloid (:meth:`PoincareBall.isometric_model`, which flows and distributions use) or in tangent
coordinates at the origin (exact at every distance).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import geoopt
import torch

from . import lorentz_math as lm
from .base import ManifoldOps
from .constants import BALL_EPS, INTERNAL_DTYPE, K_RANGE
from .lorentz import Lorentz
from .lorentz_math import lorentz_to_poincare, poincare_to_lorentz

Tensor = torch.Tensor

__all__ = ["PoincareBall", "poincare_to_lorentz", "lorentz_to_poincare", "ball_to_lorentz_tangent",
           "lorentz_to_ball_tangent"]


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1, keepdim=True)


def ball_to_lorentz_tangent(p: Tensor, u: Tensor, k: Tensor | float) -> Tensor:
    r"""``dφ_p(u)``: a tangent vector ``u`` of the ball at ``p`` as a tangent vector of the hyperboloid at ``φ(p)``."""
    kk = lm._kdim(k, p)
    d = kk - _dot(p, p)
    s = _dot(p, u)
    return torch.cat([4 * kk * kk.sqrt() * s / d**2, 2 * kk / d * (u + 2 * s * p / d)], dim=-1)


def lorentz_to_ball_tangent(x: Tensor, w: Tensor, k: Tensor | float) -> Tensor:
    r"""``dψ_x(w)``: a tangent vector ``w`` of the hyperboloid at ``x`` as a tangent vector of the ball at ``ψ(x)``."""
    sk = lm._kdim(k, x).sqrt()
    a = sk + x[..., :1]
    return sk * w[..., 1:] / a - sk * x[..., 1:] * w[..., :1] / a**2


class PoincareBall(ManifoldOps, geoopt.Manifold):
    r"""The Poincaré ball of radius ``sqrt(k)``, curvature ``-1/k`` (the ``k`` of :class:`~manifolds.Lorentz`), metric
    ``λ_p² δ`` with ``λ_p = 2k/(k - |p|²)``.

    Mirrors ``geoopt.PoincareBall`` (same method names and meanings: ``inner``/``norm`` with the conformal factor,
    ``egrad2rgrad = g/λ²``, ``expmap0(u)`` for an ambient tangent vector at 0, ``mobius_add``) with these
    differences: the curvature is given by ``k`` (geoopt's ``c = 1/k``), and learnt through the same bounded
    parametrisation as :class:`~manifolds.Lorentz` (:attr:`lorentz` holds it); operations away from the origin run
    on the hyperboloid in float64 (module docstring); ``random`` is the wrapped normal at the origin (as
    :meth:`Lorentz.random`). Tangent coordinates at the origin (``expmap0_spatial``) are in an orthonormal frame,
    ``v = λ_0·u = 2u`` for an ambient vector ``u``.

    Args:
        k: curvature parameter (curvature ``-1/k``, ball radius ``sqrt(k)``).
        learnable: train ``k`` (``curvature_parameter``).
        dim: the intrinsic dimension ``n`` (points have ``n`` coordinates), if you want sizes checked.
        validate: check inputs (finite, right size, strictly inside the ball) with one-line errors.
        k_range: as for :class:`~manifolds.Lorentz`.

    Example:
        >>> B = PoincareBall(k=1.0)
        >>> p = B.expmap0_spatial(torch.tensor([1.0, 0.0]))
        >>> torch.allclose(p, torch.tensor([math.tanh(0.5), 0.0])), torch.allclose(B.dist0(p), torch.tensor(1.0))
        (True, True)
        >>> x = poincare_to_lorentz(p, 1.0)
        >>> torch.allclose(x, Lorentz(1.0).expmap0_spatial(torch.tensor([1.0, 0.0])))
        True
    """

    name = "PoincareBall"
    curvature_sign = -1
    ndim = 1
    reversible = False
    __scaling__ = geoopt.Manifold.__scaling__.copy()

    def __init__(self, k: float | Tensor = 1.0, learnable: bool = False, *, validate: bool = False,
                 dim: int | None = None, k_range: tuple[float, float] = K_RANGE) -> None:
        super().__init__()
        #: the hyperboloid of the same ``k``: holds the (possibly learnable) curvature, and is the isometric model
        self.lorentz = Lorentz(k, learnable, dim=dim, k_range=k_range)
        self.validate = validate
        self.dim = dim

    def extra_repr(self) -> str:
        return f"k={float(self.k):.4g}, learnable={self.learnable_curvature}"

    # -- curvature -----------------------------------------------------------------------------------------
    @property
    def k(self) -> Tensor:
        """The curvature parameter ``k`` (curvature ``-1/k``, radius ``sqrt(k)``)."""
        return self.lorentz.k

    @property
    def c(self) -> Tensor:
        """geoopt's ``c = 1/k``."""
        return 1.0 / self.k

    @property
    def curvature_parameter(self) -> torch.nn.Parameter:
        return self.lorentz.curvature_parameter

    @property
    def learnable_curvature(self) -> bool:
        return self.lorentz.learnable_curvature

    def set_k(self, value: float) -> None:
        self.lorentz.set_k(value)

    def curvature(self) -> Tensor:
        """``-1/k``."""
        return -1.0 / self.k

    def same_as(self, other: object) -> bool:
        return self is other or (type(self) is type(other) and self.lorentz.same_as(other.lorentz))

    def isometric_model(self):
        """``(Lorentz(k), ball → hyperboloid, hyperboloid → ball)``: flows of the hyperboloid act on the ball through
        it, with unchanged log-densities (an isometry keeps the Riemannian volume)."""
        return self.lorentz, self.to_lorentz, self.from_lorentz

    def to_lorentz(self, p: Tensor) -> Tensor:
        """``φ(p)``, the point of the hyperboloid (computed in float64, returned in ``p``'s dtype)."""
        return poincare_to_lorentz(p.to(INTERNAL_DTYPE), self.k.to(INTERNAL_DTYPE)).to(p.dtype)

    def from_lorentz(self, x: Tensor) -> Tensor:
        """``ψ(x)``, the point of the ball (overflow-free for every finite ``x``)."""
        return lorentz_to_poincare(x, self.k.to(x.dtype))

    # the plotting interface of Lorentz / Euclidean: ball coordinates are their own
    def to_poincare(self, p: Tensor) -> Tensor:
        return p

    def from_poincare(self, p: Tensor) -> Tensor:
        return p

    # -- sizes and checks ----------------------------------------------------------------------------------
    def ambient_dim(self, n: int) -> int:
        return n

    def intrinsic_dim(self, x: Tensor) -> int:
        return x.size(-1)

    def _check_point_on_manifold(self, x: Tensor, *, atol: float = 0.0, rtol: float = 0.0,
                                 dim: int = -1) -> Tuple[bool, Optional[str]]:
        x = x.movedim(dim, -1)
        if not bool(torch.isfinite(x).all()):
            return False, "contains NaN or inf coordinates"
        sk = float(self.k.detach().sqrt())
        r = torch.linalg.vector_norm(x.double(), dim=-1)
        if r.numel() and bool((r >= sk).any()):
            return False, (f"|p| = {float(r.max()):.6g} >= sqrt(k) = {sk:.6g}: not inside the Poincaré ball; project "
                           f"it with PoincareBall.projx, or keep far points on the hyperboloid (isometric_model)")
        return True, None

    def _check_vector_on_tangent(self, x: Tensor, u: Tensor, *, atol: float = 0.0, rtol: float = 0.0,
                                 dim: int = -1) -> Tuple[bool, Optional[str]]:
        return self._finite_tangent(u)

    # -- geoopt operations ---------------------------------------------------------------------------------
    def lambda_x(self, x: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        """The conformal factor ``λ_x = 2k/(k - |x|²)``."""
        k = self.k.to(x.dtype)
        return 2 * k / (k - (x * x).sum(dim=dim, keepdim=keepdim))

    def inner(self, x: Tensor, u: Tensor, v: Optional[Tensor] = None, *, keepdim: bool = False,
              dim: int = -1) -> Tensor:
        """``λ_x² <u, v>``."""
        return self.lambda_x(x, keepdim=keepdim, dim=dim) ** 2 * (u * (u if v is None else v)).sum(
            dim=dim, keepdim=keepdim)

    def norm(self, x: Tensor, u: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        """``λ_x |u|`` (geoopt's argument order)."""
        return self.lambda_x(x, keepdim=keepdim, dim=dim) * torch.linalg.vector_norm(u, dim=dim, keepdim=keepdim)

    def projx(self, x: Tensor, *, dim: int = -1) -> Tensor:
        """Scale points with ``|x| > (1 - eps)·sqrt(k)`` back to that radius (``eps`` =
        :data:`~manifolds.constants.BALL_EPS` of the dtype); other points are unchanged."""
        self._check_size(x.movedim(dim, -1), "x")
        r = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
        rmax = self.k.to(x.dtype).sqrt() * (1 - BALL_EPS[x.dtype])
        return torch.where(r > rmax, x / r * rmax, x)

    def proju(self, x: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        return u

    def egrad2rgrad(self, x: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        """``g / λ_x²``."""
        return u / self.lambda_x(x, keepdim=True, dim=dim) ** 2

    def _h(self, p: Tensor, what: str, dim: int) -> Tensor:
        p = p.movedim(dim, -1)
        self.validate_point(p, what)
        return poincare_to_lorentz(p.to(INTERNAL_DTYPE), self._k64())

    def _k64(self) -> Tensor:
        return self.k.to(INTERNAL_DTYPE)

    def _back(self, x: Tensor, dtype: torch.dtype, dim: int) -> Tensor:
        return lorentz_to_poincare(x, self._k64()).to(dtype).movedim(-1, dim)

    def _tangent_back(self, x: Tensor, w: Tensor, dtype: torch.dtype, dim: int) -> Tensor:
        return lorentz_to_ball_tangent(x, w, self._k64()).to(dtype).movedim(-1, dim)

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        self._check_same_size(x, y, dim)
        out = lm.dist(self._h(x, "x", dim), self._h(y, "y", dim), self._k64(), keepdim=keepdim)
        out = out.to(torch.promote_types(x.dtype, y.dtype))
        return out.movedim(-1, dim) if keepdim else out

    def dist0(self, x: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        """``2 sqrt(k)·artanh(|x|/sqrt(k))``."""
        x = x.movedim(dim, -1)
        self.validate_point(x, "x")
        sk = self.k.to(x.dtype).sqrt()
        out = 2 * sk * torch.atanh(torch.linalg.vector_norm(x, dim=-1, keepdim=True) / sk)
        return out.movedim(-1, dim) if keepdim else out.squeeze(-1)

    def expmap(self, x: Tensor, u: Tensor, *, project: bool = True, dim: int = -1) -> Tensor:
        dtype = torch.promote_types(x.dtype, u.dtype)
        h = self._h(x, "x", dim)
        w = ball_to_lorentz_tangent(x.movedim(dim, -1).to(INTERNAL_DTYPE), u.movedim(dim, -1).to(INTERNAL_DTYPE),
                                    self._k64())
        out = self._back(lm.expmap(h, w, self._k64()), dtype, dim)
        return self.projx(out, dim=dim) if project else out

    retr = expmap

    def logmap(self, x: Tensor, y: Tensor, *, dim: int = -1) -> Tensor:
        self._check_same_size(x, y, dim)
        hx, hy = self._h(x, "x", dim), self._h(y, "y", dim)
        return self._tangent_back(hx, lm.logmap(hx, hy, self._k64()), torch.promote_types(x.dtype, y.dtype), dim)

    def transp(self, x: Tensor, y: Tensor, v: Tensor, *, dim: int = -1) -> Tensor:
        self._check_same_size(x, y, dim)
        hx, hy = self._h(x, "x", dim), self._h(y, "y", dim)
        w = ball_to_lorentz_tangent(x.movedim(dim, -1).to(INTERNAL_DTYPE), v.movedim(dim, -1).to(INTERNAL_DTYPE),
                                    self._k64())
        return self._tangent_back(hy, lm.transp(hx, hy, w, self._k64()), v.dtype, dim)

    def expmap0(self, u: Tensor, *, project: bool = True, dim: int = -1) -> Tensor:
        """``exp_0(u) = sqrt(k)·tanh(|u|/sqrt(k))·u/|u|`` for an ambient tangent vector ``u`` at 0 (geoopt's)."""
        u = u.movedim(dim, -1)
        self.validate_coords(u, "u")
        out = self.expmap0_spatial(2 * u)
        return (self.projx(out) if project else out).movedim(-1, dim)

    def logmap0(self, x: Tensor, *, dim: int = -1) -> Tensor:
        """``log_0(x) = sqrt(k)·artanh(|x|/sqrt(k))·x/|x|`` (an ambient tangent vector at 0)."""
        return (0.5 * self.logmap0_spatial(x.movedim(dim, -1))).movedim(-1, dim)

    def transp0(self, y: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        return self.transp(torch.zeros_like(y), y, u, dim=dim)

    def transp0back(self, x: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        return self.transp(x, torch.zeros_like(x), u, dim=dim)

    def mobius_add(self, x: Tensor, y: Tensor, *, dim: int = -1) -> Tensor:
        r"""Möbius addition ``x ⊕ y`` (geoopt's, with ``c = 1/k``): the isometry taking 0 to ``x``, applied to ``y``
        (equal to :meth:`translate`)."""
        return self.translate(x.movedim(dim, -1), y.movedim(dim, -1)).movedim(-1, dim)

    def origin(self, *size, dtype=None, device=None, seed: int = 42) -> geoopt.ManifoldTensor:
        return geoopt.ManifoldTensor(torch.zeros(*geoopt.utils.size2shape(*size), dtype=dtype, device=device),
                                     manifold=self)

    def random(self, *size, mean: float | Tensor = 0.0, std: float | Tensor = 1.0, dtype=None,
               device=None) -> geoopt.ManifoldTensor:
        """``exp_0(v)`` with tangent coordinates ``v ~ N(mean, std²)`` (as :meth:`Lorentz.random`)."""
        v = torch.randn(*geoopt.utils.size2shape(*size), dtype=dtype, device=device) * std + mean
        return geoopt.ManifoldTensor(self.expmap0_spatial(v), manifold=self)

    random_normal = random

    # -- tangent coordinates at the origin -----------------------------------------------------------------
    def expmap0_spatial(self, v: Tensor) -> Tensor:
        """``sqrt(k)·tanh(|v|/(2 sqrt(k)))·v/|v|``: the point at distance ``|v|`` in direction ``v``."""
        self.validate_coords(v, "v")
        sk = self.k.to(v.dtype).sqrt()
        r = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
        t = r / (2 * sk)
        pos = t > 0
        ts = torch.where(pos, t, torch.ones_like(t))
        ratio = torch.where(pos, torch.tanh(ts) / ts, torch.ones_like(t))  # tanh(t)/t, 1 at 0
        return ratio * v / 2

    def logmap0_spatial(self, x: Tensor) -> Tensor:
        """``2 sqrt(k)·artanh(|x|/sqrt(k))·x/|x|`` (``inf`` on the rounded boundary: such points are farther than
        the dtype resolves; keep them on the hyperboloid)."""
        self.validate_point(x, "x")
        sk = self.k.to(x.dtype).sqrt()
        t = torch.linalg.vector_norm(x, dim=-1, keepdim=True) / sk
        pos = t > 0
        ts = torch.where(pos, t, torch.ones_like(t))
        return torch.where(pos, 2 * torch.atanh(ts) / ts, torch.full_like(t, 2.0)) * x

    def expmap_logdet(self, r: Tensor, n: int) -> Tensor:
        """``(n-1)·log(sqrt(k) sinh(r/sqrt(k))/r)``, as on the hyperboloid (the isometry keeps volumes)."""
        return lm.expmap_logdet(r, self.k.to(r.dtype), n)

    def translate(self, mu: Tensor, p: Tensor, *, inverse: bool = False) -> Tensor:
        """The isometry taking 0 to ``mu`` (the hyperboloid's boost ``L_μ``, i.e. Möbius addition ``mu ⊕ p``);
        ``inverse``: ``mu`` to 0."""
        dtype = torch.promote_types(mu.dtype, p.dtype)
        k = self._k64()
        y = lm.translate(poincare_to_lorentz(mu.to(INTERNAL_DTYPE), k), poincare_to_lorentz(p.to(INTERNAL_DTYPE), k),
                         k, inverse=inverse)
        return lorentz_to_poincare(y, k).to(dtype)

    @property
    def wrapped_normal_class(self) -> type:
        """:class:`~manifolds.PoincareWrappedNormal`: the hyperboloid's wrapped normal pushed through the isometry."""
        from .poincare_distributions import PoincareWrappedNormal  # here: that module imports this one

        return PoincareWrappedNormal
