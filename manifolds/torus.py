r"""The flat torus :math:`T^n = (S^1)^n` in angle coordinates ``θ ∈ [-π, π)ⁿ`` (``shared/docs/MATH.md`` §8).

``exp_θ(v) = wrap(θ + v)``, ``log_θ(φ) = wrap(φ - θ)``, ``d(θ, φ) = |wrap(φ - θ)|``, transport is the identity and the
volume is ``(2π)ⁿ``, with ``wrap(a) = ((a + π) mod 2π) - π ∈ [-π, π)``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import geoopt
import torch

from .euclidean import Euclidean
from .uniform import UniformOnManifold

Tensor = torch.Tensor

__all__ = ["Torus", "wrap"]


def wrap(a: Tensor) -> Tensor:
    r"""``a`` shifted by a multiple of ``2π`` into ``[-π, π)``: ``((a + π) mod 2π) - π`` (a rounding that lands on
    ``+π`` is sent to ``-π``, the same angle).

    Example:
        >>> wrap(torch.tensor([math.pi, -math.pi, 3 * math.pi / 2]))
        tensor([-3.1416, -3.1416, -1.5708])
    """
    w = torch.remainder(a + math.pi, 2 * math.pi) - math.pi
    return torch.where(w >= math.pi, w - 2 * math.pi, w)


class Torus(Euclidean):
    r"""The flat torus :math:`T^n = (S^1)^n`, points as ``n`` angles in ``[-π, π)`` (intrinsic = ambient coordinates).

    geoopt has no torus; the methods have geoopt's names and meanings (``projx`` wraps into the chart, ``proju`` and
    ``transp`` are identities, ``retr = expmap``). It shares ℝⁿ's metric, so it subclasses
    :class:`~manifolds.Euclidean` for the operations that do not wrap (inner product, transport, origin). The origin is ``0``; tangent coordinates at the origin are
    tangent vectors themselves, and ``expmap0_spatial`` wraps them (so ``coords_are_points`` is false: a flow on
    ℝⁿ is not a flow on Tⁿ). ``translate(μ, p) = wrap(p + μ)``. Continuous flows see the angles through
    :meth:`features` (``cos θ, sin θ``) and take ℝⁿ's divergence (``tr J``: the chart is flat).

    Args:
        n: the number of angles; ``None`` leaves it free (sizes unchecked).
        validate: check inputs with one-line errors (non-finite values, size, an angle outside ``[-π, π)``).

    Example:
        >>> T = Torus(2)
        >>> x = T.expmap(torch.tensor([3.0, 0.0]), torch.tensor([0.5, -0.5]))
        >>> x
        tensor([-2.7832, -0.5000])
        >>> T.dist(torch.tensor([3.0, 0.0]), x)
        tensor(0.7071)
    """

    name = "Torus"
    is_compact = True
    coords_are_points = False
    __scaling__ = geoopt.Manifold.__scaling__.copy()

    def __init__(self, n: int | None = None, *, validate: bool = False) -> None:
        if n is not None and (int(n) != n or n < 1):
            raise ValueError(f"Torus(n): n (the number of angles) must be a positive integer; got {n!r}")
        super().__init__(validate=validate, dim=None if n is None else int(n))

    def extra_repr(self) -> str:
        return f"n={self.dim}"

    @property
    def injectivity_radius(self) -> float:
        """``π``: each angle's ``exp`` is injective on ``(-π, π)``."""
        return math.pi

    def same_as(self, other: object) -> bool:
        return self is other or type(self) is type(other)

    def features(self, x: Tensor) -> Tensor:
        """``(cos θ, sin θ)`` of every angle (``2n`` numbers): continuous across the chart's edge ``±π``, where the
        angles jump, and injective on the torus (:meth:`ManifoldOps.features`)."""
        return torch.cat([torch.cos(x), torch.sin(x)], dim=-1)

    def feature_dim(self, n: int) -> int:
        """``2n``."""
        return 2 * n

    def log_volume(self, n: int | None = None) -> float:
        """``n·log 2π``."""
        if n is None and self.dim is None:
            raise ValueError("this Torus has no fixed dimension: build it as Torus(n) or pass n")
        return (self.dim if n is None else n) * math.log(2 * math.pi)

    def uniform(self, *, dtype: torch.dtype | None = None, device: torch.device | None = None) -> UniformOnManifold:
        """The uniform law, ``log p = -n·log 2π``."""
        return UniformOnManifold(self, self.log_volume(), dtype=dtype, device=device)

    # -- checks --------------------------------------------------------------------------------------------
    def _check_point_on_manifold(self, x: Tensor, *, atol: float = 0.0, rtol: float = 0.0,
                                 dim: int = -1) -> Tuple[bool, Optional[str]]:
        x = x.movedim(dim, -1)
        if not bool(torch.isfinite(x).all()):
            return False, "contains NaN or inf coordinates"
        bad = (x < -math.pi - atol) | (x >= math.pi + atol)
        if bool(bad.any()):
            idx = tuple(int(i) for i in bad.nonzero()[0])
            return False, (f"angle {float(x[idx]):.6g} at index {idx} is outside the chart [-π, π) of the torus; "
                           f"wrap it with Torus.projx (or manifolds.torus.wrap)")
        return True, None

    def _check_vector_on_tangent(self, x: Tensor, u: Tensor, *, atol: float = 0.0, rtol: float = 0.0,
                                 dim: int = -1) -> Tuple[bool, Optional[str]]:
        return self._finite_tangent(u)

    # -- geoopt operations ---------------------------------------------------------------------------------
    def projx(self, x: Tensor, *, dim: int = -1) -> Tensor:
        """Wrap every angle into ``[-π, π)``."""
        self._check_size(x.movedim(dim, -1), "x")
        return wrap(x)

    def _in(self, x: Tensor, what: str, dim: int) -> Tensor:
        self.validate_point(x.movedim(dim, -1), what)
        return x

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        self._check_same_size(x, y, dim)
        a = self._in(y, "y", dim) - self._in(x, "x", dim)
        # a - 2π·round(a/2π): odd in a (round is), so d(x, y) = d(y, x) exactly; |.| <= π
        return torch.linalg.vector_norm(a - 2 * math.pi * torch.round(a / (2 * math.pi)), dim=dim, keepdim=keepdim)

    def dist0(self, x: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        return torch.linalg.vector_norm(self._in(x, "x", dim), dim=dim, keepdim=keepdim)

    def expmap(self, x: Tensor, u: Tensor, *, project: bool = True, dim: int = -1) -> Tensor:
        return wrap(self._in(x, "x", dim) + u)

    retr = expmap

    def logmap(self, x: Tensor, y: Tensor, *, dim: int = -1) -> Tensor:
        self._check_same_size(x, y, dim)
        return wrap(self._in(y, "y", dim) - self._in(x, "x", dim))

    def expmap0(self, u: Tensor, *, project: bool = True, dim: int = -1) -> Tensor:
        return wrap(u)

    def logmap0(self, x: Tensor, *, dim: int = -1) -> Tensor:
        return self._in(x, "x", dim)

    def random_uniform(self, *size, dtype=None, device=None) -> geoopt.ManifoldTensor:
        """Uniform angles in ``[-π, π)``."""
        u = torch.rand(*geoopt.utils.size2shape(*size), dtype=dtype, device=device)
        return geoopt.ManifoldTensor(wrap(2 * math.pi * u - math.pi), manifold=self)

    random = random_uniform

    def random_normal(self, *size, std: float = 1.0, dtype=None, device=None) -> geoopt.ManifoldTensor:
        """``wrap(v)``, ``v ~ N(0, std²)``: the wrapped normal at the origin."""
        v = torch.randn(*geoopt.utils.size2shape(*size), dtype=dtype, device=device) * std
        return geoopt.ManifoldTensor(wrap(v), manifold=self)

    # transport is the identity (ℝⁿ's, without its check of v as a point: angles of a tangent vector are not wrapped)
    def transp(self, x: Tensor, y: Tensor, v: Tensor, *, dim: int = -1) -> Tensor:
        return v

    def transp0(self, y: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        return u

    transp0back = transp0

    # -- tangent coordinates at the origin -----------------------------------------------------------------
    def expmap0_spatial(self, v: Tensor) -> Tensor:
        """``wrap(v)``."""
        self.validate_coords(v, "v")
        return wrap(v)

    def translate(self, mu: Tensor, p: Tensor, *, inverse: bool = False) -> Tensor:
        """``wrap(p + μ)`` (``inverse``: ``wrap(p - μ)``)."""
        return wrap(p - mu if inverse else p + mu)

    @property
    def wrapped_normal_class(self) -> type:
        """:class:`~manifolds.TorusWrappedNormal` (sums the windings)."""
        from .torus_distributions import TorusWrappedNormal  # here: that module imports this one

        return TorusWrappedNormal
