"""Flat space ℝⁿ with the same interface as :class:`~manifolds.Lorentz`."""

from __future__ import annotations

from typing import Optional, Tuple

import geoopt
import torch

from .base import ManifoldOps

Tensor = torch.Tensor


class Euclidean(ManifoldOps, geoopt.Manifold):
    r"""ℝⁿ with points as ``n``-vectors (manifold dimension last): ``exp_x(u) = x + u``, ``d(x,y) = ||x-y||``,
    transport is the identity and tangent coordinates at the origin are the points themselves.

    Args:
        validate: check inputs (finite, right size) and raise a ``ValueError`` that says what is wrong.
        dim: the dimension ``n``, if you want sizes checked.

    Example:
        >>> M = Euclidean()
        >>> M.dist(torch.tensor([0.0, 0.0]), torch.tensor([3.0, 4.0]))
        tensor(5.)
    """

    name = "Euclidean"
    curvature_sign = 0
    coords_are_points = True
    ndim = 1
    reversible = True
    __scaling__ = geoopt.Manifold.__scaling__.copy()

    def __init__(self, *, validate: bool = False, dim: int | None = None) -> None:
        super().__init__()
        if dim is not None and (int(dim) != dim or dim < 1):
            raise ValueError(f"dim must be a positive integer; got {dim!r}")
        self.validate = validate
        self.dim = dim

    def curvature(self) -> Tensor:
        """``0``: ℝⁿ is flat."""
        return torch.zeros(())

    def embedding_terms(self, x: Tensor, probe: Optional[Tensor] = None):
        """No normals (``div = tr ∂v/∂x``) and the probe itself (Hutchinson's ``εᵀJε``, ``ε = probe``):
        :meth:`ManifoldOps.embedding_terms`. The torus inherits it (a flat chart)."""
        return [], probe, probe

    def ambient_dim(self, n: int) -> int:
        return n

    def intrinsic_dim(self, x: Tensor) -> int:
        return x.size(-1)

    def _check_point_on_manifold(self, x: Tensor, *, atol=1e-5, rtol=1e-5, dim=-1) -> Tuple[bool, Optional[str]]:
        if not bool(torch.isfinite(x).all()):
            return False, "contains NaN or inf coordinates"
        return True, None

    def _check_vector_on_tangent(self, x: Tensor, u: Tensor, *, atol=1e-5, rtol=1e-5,
                                 dim=-1) -> Tuple[bool, Optional[str]]:
        return self._check_point_on_manifold(u)

    def inner(self, x: Tensor, u: Tensor, v: Optional[Tensor] = None, *, keepdim: bool = False,
              dim: int = -1) -> Tensor:
        return (u * (u if v is None else v)).sum(dim=dim, keepdim=keepdim)

    def norm(self, u: Tensor, x: Optional[Tensor] = None, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        return torch.linalg.vector_norm(u, dim=dim, keepdim=keepdim)

    def projx(self, x: Tensor, *, dim: int = -1) -> Tensor:
        return x

    def proju(self, x: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        return u

    def egrad2rgrad(self, x: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        return u

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        self.validate_point(x, "x")
        self.validate_point(y, "y")
        return torch.linalg.vector_norm(x - y, dim=dim, keepdim=keepdim)

    def dist0(self, x: Tensor, *, keepdim: bool = False, dim: int = -1) -> Tensor:
        self.validate_point(x, "x")
        return torch.linalg.vector_norm(x, dim=dim, keepdim=keepdim)

    def expmap(self, x: Tensor, u: Tensor, *, project: bool = True, dim: int = -1) -> Tensor:
        self.validate_point(x, "x")
        self.validate_point(u, "u")
        return x + u

    retr = expmap

    def logmap(self, x: Tensor, y: Tensor, *, dim: int = -1) -> Tensor:
        self.validate_point(x, "x")
        self.validate_point(y, "y")
        return y - x

    def expmap0(self, u: Tensor, *, project: bool = True, dim: int = -1) -> Tensor:
        self.validate_point(u, "u")
        return u

    def logmap0(self, x: Tensor, *, dim: int = -1) -> Tensor:
        self.validate_point(x, "x")
        return x

    def transp(self, x: Tensor, y: Tensor, v: Tensor, *, dim: int = -1) -> Tensor:
        self.validate_point(v, "v")
        return v

    def transp0(self, y: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        self.validate_point(u, "u")
        return u

    def transp0back(self, x: Tensor, u: Tensor, *, dim: int = -1) -> Tensor:
        self.validate_point(u, "u")
        return u

    def origin(self, *size, dtype=None, device=None, seed: int = 42) -> geoopt.ManifoldTensor:
        return geoopt.ManifoldTensor(torch.zeros(*geoopt.utils.size2shape(*size), dtype=dtype, device=device),
                                     manifold=self)

    def random(self, *size, std: float = 1.0, dtype=None, device=None) -> geoopt.ManifoldTensor:
        """Samples of ``N(0, std² I)``."""
        return geoopt.ManifoldTensor(
            torch.randn(*geoopt.utils.size2shape(*size), dtype=dtype, device=device) * std, manifold=self
        )

    random_normal = random

    # tangent coordinates at the origin: the identity
    def expmap0_spatial(self, v: Tensor) -> Tensor:
        self.validate_coords(v, "v")
        return v

    def logmap0_spatial(self, x: Tensor) -> Tensor:
        self.validate_point(x, "x")
        return x

    def expmap_logdet(self, r: Tensor, n: int) -> Tensor:
        return torch.zeros_like(r)

    def translate(self, mu: Tensor, p: Tensor, *, inverse: bool = False) -> Tensor:
        return p - mu if inverse else p + mu

    def to_poincare(self, x: Tensor) -> Tensor:
        return x

    def from_poincare(self, p: Tensor) -> Tensor:
        return p
