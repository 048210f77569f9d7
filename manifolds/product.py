r"""Products :math:`M = M_1 × … × M_m` of the library's manifolds (mixed-curvature spaces), and a spec parser.

Coordinates are concatenated (ambient for points, intrinsic for tangent coordinates at the origin); ``exp``,
``log``, transport and projections act factor-wise; ``dist² = Σ dist_i²``; inner products, log-dets and
log-densities add (``shared/docs/MATH.md`` §8).
"""

from __future__ import annotations

import math
import re
from typing import Callable, Optional, Sequence, Tuple

import geoopt
import torch

from .base import ManifoldOps
from .euclidean import Euclidean
from .lorentz import Lorentz
from .poincare import PoincareBall
from .sphere import Sphere
from .torus import Torus

Tensor = torch.Tensor

__all__ = ["Product", "parse_product"]

#: spec names -> constructor of a factor of dimension n
_FACTORS: dict[str, Callable[[int], ManifoldOps]] = {
    "e": lambda n: Euclidean(dim=n), "r": lambda n: Euclidean(dim=n), "euclidean": lambda n: Euclidean(dim=n),
    "h": lambda n: Lorentz(dim=n), "lorentz": lambda n: Lorentz(dim=n), "hyperboloid": lambda n: Lorentz(dim=n),
    "p": lambda n: PoincareBall(dim=n), "poincare": lambda n: PoincareBall(dim=n), "ball": lambda n: PoincareBall(dim=n),
    "s": Sphere, "sphere": Sphere,
    "t": Torus, "torus": Torus,
}
_TOKEN = re.compile(r"^([a-z]+):?([1-9][0-9]*)$")


def parse_product(spec: str) -> "Product":
    """A :class:`Product` from a spec such as ``"h2,s2,e2"`` or ``"lorentz:2,sphere:2"``: comma-separated factors,
    each a name (``e``/``euclidean``, ``h``/``lorentz``, ``p``/``poincare``/``ball``, ``s``/``sphere``,
    ``t``/``torus``) and an intrinsic dimension, optionally separated by ``:``. Curvatures are the defaults
    (``k = 1``, radius 1); build :class:`Product` directly for others.

    Example:
        >>> parse_product("h2,s2,e2")
        Product(Lorentz(2), Sphere(2), Euclidean(2))
        >>> parse_product("h2;s2")
        Traceback (most recent call last):
        ...
        ValueError: cannot parse the product spec 'h2;s2' at 'h2;s2': write comma-separated factors such as 'h2,s2,e2' or 'lorentz:2,sphere:2' (names: ball, e, euclidean, h, hyperboloid, lorentz, p, poincare, r, s, sphere, t, torus)
    """
    factors = []
    for token in str(spec).lower().replace(" ", "").split(","):
        m = _TOKEN.match(token)
        if m is None or m.group(1) not in _FACTORS:
            raise ValueError(
                f"cannot parse the product spec {spec!r} at {token!r}: write comma-separated factors such as "
                f"'h2,s2,e2' or 'lorentz:2,sphere:2' (names: {', '.join(sorted(_FACTORS))})"
            )
        factors.append(_FACTORS[m.group(1)](int(m.group(2))))
    return Product(*factors)


class Product(ManifoldOps, geoopt.Manifold):
    r"""The product ``M₁ × … × Mₘ`` of manifolds of this library, each with a fixed dimension (``dim``).

    Mirrors ``geoopt.ProductManifold`` (points are flat concatenations of the factors' points; ``component_inner``
    gives each factor's inner product on its own coordinates, which is what ``geoopt.optim.RiemannianAdam``
    needs), with these differences: factors are given as manifolds whose ``dim`` fixes their sizes (not as
    ``(manifold, shape)`` pairs), and the interface of :class:`~manifolds.ManifoldOps` is answered factor-wise.

    Declared properties: ``curvature_sign`` is the common sign of the factors (``None`` when they differ),
    ``is_compact`` / ``coords_are_points`` when every factor is, ``learnable_curvature`` when any factor is,
    ``injectivity_radius`` is the smallest factor's. :meth:`curvature` returns the factors' curvatures as a vector.
    :meth:`expmap_logdet` needs the coordinates of each factor, so products answer :meth:`expmap0_logdet`.

    Args:
        *manifolds: the factors (:class:`Euclidean`, :class:`Lorentz`, :class:`PoincareBall`, :class:`Sphere`,
            :class:`Torus`, or products), each built with its dimension.
        validate: check inputs of every factor.

    Example:
        >>> M = Product(Lorentz(dim=2), Sphere(2), Euclidean(dim=1))
        >>> x = M.expmap0_spatial(torch.tensor([0.5, 0.0, 0.0, 1.0, 3.0]))
        >>> x.shape, torch.allclose(M.dist0(x), torch.tensor(math.sqrt(0.25 + 1.0 + 9.0)))
        (torch.Size([7]), True)
    """

    name = "Product"
    ndim = 1
    reversible = False
    __scaling__ = geoopt.Manifold.__scaling__.copy()

    def __init__(self, *manifolds: ManifoldOps, validate: bool = False) -> None:
        super().__init__()
        if not manifolds:
            raise ValueError("Product() needs at least one factor, e.g. Product(Lorentz(dim=2), Sphere(2))")
        for i, m in enumerate(manifolds):
            if not isinstance(m, ManifoldOps):
                raise ValueError(f"factor {i} of Product is {type(m).__name__}, not a manifold of this library "
                                 f"(Euclidean, Lorentz, PoincareBall, Sphere, Torus, Product)")
            if m.dim is None:
                raise ValueError(f"factor {i} of Product ({m.name}) has no fixed dimension: build it with one, "
                                 f"e.g. Lorentz(dim=2), Euclidean(dim=2), Sphere(2), Torus(2)")
        self.factors = torch.nn.ModuleList(manifolds)
        self.dims = [m.dim for m in manifolds]
        self.sizes = [m.ambient_dim(m.dim) for m in manifolds]
        self.dim = sum(self.dims)
        self.validate = validate
        if validate:
            for m in manifolds:
                m.validate = True

    def __repr__(self) -> str:
        return f"Product({', '.join(f'{m.name}({m.dim})' for m in self.factors)})"

    # -- declared properties -------------------------------------------------------------------------------
    @property
    def curvature_sign(self) -> int | None:
        signs = {m.curvature_sign for m in self.factors}
        return signs.pop() if len(signs) == 1 else None

    @property
    def is_flat(self) -> bool:
        return all(m.is_flat for m in self.factors)

    @property
    def is_compact(self) -> bool:
        return all(m.is_compact for m in self.factors)

    @property
    def coords_are_points(self) -> bool:
        return all(m.coords_are_points for m in self.factors)

    @property
    def learnable_curvature(self) -> bool:
        return any(m.learnable_curvature for m in self.factors)

    @property
    def injectivity_radius(self) -> float:
        return min(m.injectivity_radius for m in self.factors)

    def curvature(self) -> Tensor:
        """The factors' sectional curvatures, as a vector (a product's sectional curvature is not one number)."""
        return torch.stack([torch.as_tensor(m.curvature()).float() for m in self.factors])

    def same_as(self, other: object) -> bool:
        return self is other or (type(self) is type(other) and len(self.factors) == len(other.factors)
                                 and all(a.same_as(b) and a.dim == b.dim for a, b in zip(self.factors, other.factors)))

    @property
    def curvature_parameter(self) -> torch.nn.Parameter | None:
        """The learnable factor's curvature parameter (``None`` when no factor's curvature is learnable); a
        ``ValueError`` when several are (address the factor: ``M.factors[i].curvature_parameter``)."""
        factor = self._learnable_factor()
        return None if factor is None else factor.curvature_parameter

    def set_k(self, value: float) -> None:
        """``set_k`` of the one learnable factor (:class:`vae.CurvatureSchedule`)."""
        factor = self._learnable_factor()
        if factor is None:
            raise ValueError(f"{self!r} has no factor with a learnable curvature: there is no k to set")
        factor.set_k(value)

    def _learnable_factor(self) -> ManifoldOps | None:
        learnable = [i for i, m in enumerate(self.factors) if m.learnable_curvature]
        if len(learnable) > 1:
            raise ValueError(f"{self!r} has {len(learnable)} factors with a learnable curvature ({learnable}): the "
                             f"product has no single k; use M.factors[i].curvature_parameter / set_k")
        return self.factors[learnable[0]] if learnable else None

    def embedding_terms(self, x: Tensor, probe: Optional[Tensor] = None):
        """The factors' :meth:`~ManifoldOps.embedding_terms` on their slices, concatenated: each factor's normal
        pairs padded with zeros outside its slice (so ``tr J`` over all coordinates minus them is the sum of the
        factors' divergences: the off-diagonal blocks of ``J`` never enter), and the probes side by side
        (independent, so the cross terms ``ε_iᵀ J_ij ε_j`` average to 0)."""
        parts = self.split(x)
        zeros = [torch.zeros_like(p) for p in parts]
        probes = [None] * len(parts) if probe is None else self.split(probe)
        normals, eps, duals = [], [], []
        for i, (m, p, z) in enumerate(zip(self.factors, parts, probes)):
            ns, e, d = m.embedding_terms(p, z)
            pad = lambda t: self._cat(zeros[:i] + [t] + zeros[i + 1:])  # noqa: E731
            normals += [(pad(a), pad(b)) for a, b in ns]
            eps.append(e)
            duals.append(d)
        if probe is None:
            return normals, None, None
        return normals, self._cat(eps), self._cat(duals)

    def features(self, x: Tensor) -> Tensor:
        """The factors' :meth:`~ManifoldOps.features`, concatenated (``(cos θ, sin θ)`` on a torus factor)."""
        return self._cat([m.features(p) for m, p in zip(self.factors, self.split(x))])

    def feature_dim(self, n: int) -> int:
        """``Σ_i feature_dim_i(n_i)`` (``n`` is the product's dimension)."""
        if n != self.dim:
            raise ValueError(f"{self!r} has dimension {self.dim} ({' + '.join(map(str, self.dims))}); got n = {n}")
        return sum(m.feature_dim(d) for m, d in zip(self.factors, self.dims))

    def chart_features(self, x: Tensor) -> Tensor:
        """The factors' :meth:`~ManifoldOps.chart_features`, concatenated: ``log_o`` on a factor whose ``exp_o`` is a
        global chart, :meth:`~ManifoldOps.features` on the others."""
        return self._cat([m.chart_features(p) for m, p in zip(self.factors, self.split(x))])

    def chart_feature_dim(self, n: int) -> int:
        """``Σ_i chart_feature_dim_i(n_i)`` (``n`` is the product's dimension)."""
        if n != self.dim:
            raise ValueError(f"{self!r} has dimension {self.dim} ({' + '.join(map(str, self.dims))}); got n = {n}")
        return sum(m.chart_feature_dim(d) for m, d in zip(self.factors, self.dims))

    def ambient_dim(self, n: int) -> int:
        return sum(self.sizes) + n - self.dim

    def intrinsic_dim(self, x: Tensor) -> int:
        return x.size(-1) - sum(self.sizes) + self.dim

    def uniform(self, *, dtype: torch.dtype | None = None, device: torch.device | None = None):
        """The product of the factors' uniform laws (every factor must be compact)."""
        from .product_distributions import ProductDistribution  # here: that module imports this one

        if not self.is_compact:
            raise ValueError(f"{self!r} is not compact (a factor is not): it has no uniform distribution; use a "
                             f"wrapped normal")
        return ProductDistribution(self, [m.uniform(dtype=dtype, device=device) for m in self.factors])

    @property
    def wrapped_normal_class(self) -> type:
        """:class:`~manifolds.ProductWrappedNormal`: one wrapped normal per factor."""
        from .product_distributions import ProductWrappedNormal  # here: that module imports this one

        return ProductWrappedNormal

    @property
    def posterior_family(self) -> type:
        """:class:`~manifolds.ProductDistribution`: one posterior per factor, each of the factor's own family."""
        from .product_distributions import ProductDistribution  # here: that module imports this one

        return ProductDistribution

    def isometric_model(self):
        """Factor-wise: where a factor has an isometric model (the ball), the product of the models and the
        factor-wise maps; ``None`` when no factor has one."""
        models = [m.isometric_model() for m in self.factors]
        if all(mm is None for mm in models):
            return None
        model = Product(*[m if mm is None else mm[0] for m, mm in zip(self.factors, models)])
        ident = lambda t: t  # noqa: E731
        to_maps = [ident if mm is None else mm[1] for mm in models]
        from_maps = [ident if mm is None else mm[2] for mm in models]
        return (model, lambda x: self._cat([f(p) for f, p in zip(to_maps, self.split(x))]),
                lambda y: model._cat([f(p) for f, p in zip(from_maps, model.split(y))]))

    # -- splitting -----------------------------------------------------------------------------------------
    def split(self, x: Tensor, *, dim: int = -1) -> list[Tensor]:
        """The factors' points (or tangent vectors) of ``x`` (ambient coordinates along ``dim``)."""
        if x.size(dim) != sum(self.sizes):
            raise ValueError(f"x has {x.size(dim)} coordinates in dimension {dim}, but {self!r} points have "
                             f"{sum(self.sizes)} ({' + '.join(map(str, self.sizes))}); concatenate one point of "
                             f"each factor, in the factors' order")
        return list(x.split(self.sizes, dim=dim))

    def split_coords(self, v: Tensor) -> list[Tensor]:
        """The factors' tangent coordinates at the origin (``n_i`` each) of ``v`` (last dimension)."""
        if v.size(-1) != self.dim:
            raise ValueError(f"v has {v.size(-1)} tangent coordinates, but {self!r} has dimension {self.dim} "
                             f"({' + '.join(map(str, self.dims))}); concatenate each factor's n_i coordinates")
        return list(v.split(self.dims, dim=-1))

    @staticmethod
    def _cat(parts: Sequence[Tensor], dim: int = -1) -> Tensor:
        return torch.cat([p.as_subclass(Tensor) if isinstance(p, geoopt.ManifoldTensor) else p for p in parts],
                         dim=dim)

    def _map(self, op: str, *tensors: Tensor, dim: int = -1, **kw) -> Tensor:
        parts = zip(*[self.split(t, dim=dim) for t in tensors])
        return self._cat([getattr(m, op)(*p, dim=dim, **kw) for m, p in zip(self.factors, parts)], dim=dim)

    def _sum(self, op: str, *tensors: Tensor, keepdim: bool = False, dim: int = -1) -> Tensor:
        parts = zip(*[self.split(t, dim=dim) for t in tensors])
        return sum(getattr(m, op)(*p, keepdim=keepdim, dim=dim) for m, p in zip(self.factors, parts))

    # -- checks --------------------------------------------------------------------------------------------
    def _check_point_on_manifold(self, x: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5,
                                 dim: int = -1) -> Tuple[bool, Optional[str]]:
        for i, (m, p) in enumerate(zip(self.factors, self.split(x, dim=dim))):
            ok, reason = m._check_point_on_manifold(p, dim=dim)
            if not ok:
                return False, f"factor {i} ({m.name}): {reason}"
        return True, None

    def _check_vector_on_tangent(self, x: Tensor, u: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5,
                                 dim: int = -1) -> Tuple[bool, Optional[str]]:
        for i, (m, p, w) in enumerate(zip(self.factors, self.split(x, dim=dim), self.split(u, dim=dim))):
            ok, reason = m._check_vector_on_tangent(p, w, dim=dim)
            if not ok:
                return False, f"factor {i} ({m.name}): {reason}"
        return True, None

    # -- geoopt operations ---------------------------------------------------------------------------------
    def inner(self, x: Tensor, u: Tensor, v: Optional[Tensor] = None, *, keepdim: bool = False,
              dim: int = -1) -> Tensor:
        return self._sum("inner", x, u, u if v is None else v, keepdim=keepdim, dim=dim)

    def component_inner(self, x: Tensor, u: Tensor, v: Optional[Tensor] = None) -> Tensor:
        """Each factor's inner product, repeated over that factor's coordinates (geoopt's ``ProductManifold``)."""
        v = u if v is None else v
        parts = zip(self.split(x), self.split(u), self.split(v))
        return self._cat([m.inner(p, a, b, keepdim=True).expand_as(a) for m, (p, a, b) in zip(self.factors, parts)])

    def norm(self, u: Tensor, x: Optional[Tensor] = None, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        """``sqrt(Σ_i |u_i|²_{x_i})`` (``x`` is needed when a factor's metric depends on the point: the ball)."""
        if x is None:
            x = self.origin(u.shape, dtype=u.dtype, device=u.device)
        return self.inner(x, u, keepdim=keepdim, dim=dim).clamp_min(0).sqrt()

    def projx(self, x: Tensor, *, dim: int = -1) -> Tensor:
        return self._map("projx", x, dim=dim)

    def proju(self, x: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        return self._map("proju", x, u, dim=dim)

    def egrad2rgrad(self, x: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        return self._map("egrad2rgrad", x, u, dim=dim)

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        """``sqrt(Σ_i d_i(x_i, y_i)²)``."""
        return self.dist2(x, y, keepdim=keepdim, dim=dim).sqrt()

    def dist2(self, x: Tensor, y: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        """``Σ_i d_i(x_i, y_i)²``."""
        parts = zip(self.split(x, dim=dim), self.split(y, dim=dim))
        return sum(m.dist(a, b, keepdim=keepdim, dim=dim) ** 2 for m, (a, b) in zip(self.factors, parts))

    def dist0(self, x: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        return sum(m.dist0(p, keepdim=keepdim, dim=dim) ** 2
                   for m, p in zip(self.factors, self.split(x, dim=dim))).sqrt()

    def expmap(self, x: Tensor, u: Tensor, *, project: bool = True, dim: int = -1) -> Tensor:
        return self._map("expmap", x, u, dim=dim)

    def retr(self, x: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        return self._map("retr", x, u, dim=dim)

    def logmap(self, x: Tensor, y: Tensor, *, dim: int = -1) -> Tensor:
        return self._map("logmap", x, y, dim=dim)

    def transp(self, x: Tensor, y: Tensor, v: Tensor, *, dim: int = -1) -> Tensor:
        return self._map("transp", x, y, v, dim=dim)

    def expmap0(self, u: Tensor, *, project: bool = True, dim: int = -1) -> Tensor:
        return self._map("expmap0", u, dim=dim)

    def logmap0(self, x: Tensor, *, dim: int = -1) -> Tensor:
        return self._map("logmap0", x, dim=dim)

    def transp0(self, y: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        return self._map("transp0", y, u, dim=dim)

    def transp0back(self, x: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        return self._map("transp0back", x, u, dim=dim)

    def origin(self, *size, dtype=None, device=None, seed: int = 42) -> geoopt.ManifoldTensor:
        shape = geoopt.utils.size2shape(*size)
        parts = [m.origin(*shape[:-1], s, dtype=dtype, device=device) for m, s in zip(self.factors, self.sizes)]
        return geoopt.ManifoldTensor(self._cat(parts), manifold=self)

    def random(self, *size, dtype=None, device=None) -> geoopt.ManifoldTensor:
        """Each factor's ``random`` (uniform on compact factors, the wrapped normal at the origin otherwise)."""
        shape = geoopt.utils.size2shape(*size)
        parts = [m.random(*shape[:-1], s, dtype=dtype, device=device) for m, s in zip(self.factors, self.sizes)]
        return geoopt.ManifoldTensor(self._cat(parts), manifold=self)

    def random_uniform(self, *size, dtype=None, device=None) -> geoopt.ManifoldTensor:
        """Uniform points (every factor compact)."""
        shape = geoopt.utils.size2shape(*size)
        parts = [m.random_uniform(*shape[:-1], s, dtype=dtype, device=device)
                 for m, s in zip(self.factors, self.sizes)]
        return geoopt.ManifoldTensor(self._cat(parts), manifold=self)

    # -- tangent coordinates at the origin -----------------------------------------------------------------
    def expmap0_spatial(self, v: Tensor) -> Tensor:
        return self._cat([m.expmap0_spatial(w) for m, w in zip(self.factors, self.split_coords(v))])

    def logmap0_spatial(self, x: Tensor) -> Tensor:
        return self._cat([m.logmap0_spatial(p) for m, p in zip(self.factors, self.split(x))])

    def expmap0_logdet(self, v: Tensor) -> Tensor:
        """``Σ_i log|det d exp_{o_i}(v_i)|``."""
        return sum(m.expmap0_logdet(w) for m, w in zip(self.factors, self.split_coords(v)))

    def expmap_logdet(self, r: Tensor, n: int) -> Tensor:
        """Defined only when every factor's volume change is zero (flat factors); otherwise it depends on more than
        the norm: a ``ValueError`` that points to :meth:`expmap0_logdet`."""
        if self.is_flat:
            return torch.zeros_like(r)
        raise ValueError(f"{self!r}: the log-Jacobian of exp_o depends on each factor's tangent norm, not on |v| "
                         f"alone; call expmap0_logdet(v) with the tangent coordinates")

    def translate(self, mu: Tensor, p: Tensor, *, inverse: bool = False) -> Tensor:
        return self._cat([m.translate(a, b, inverse=inverse)
                          for m, a, b in zip(self.factors, self.split(mu), self.split(p))])

