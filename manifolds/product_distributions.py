"""Independent distributions on the factors of a :class:`~manifolds.Product`: log-densities add."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.distributions import Distribution, constraints

from .preimage_wrapped_normal import LogmapCoordinates
from .product import Product
from .wrapped_normal import WrappedNormal

Tensor = torch.Tensor


class ProductDistribution(LogmapCoordinates, Distribution):
    r"""``p(x₁, …, xₘ) = Π_i p_i(x_i)`` on ``M₁ × … × Mₘ``: samples are concatenated, log-densities add (each factor's
    with respect to its Riemannian volume, so the sum is with respect to the product's volume).

    Args:
        manifold: the :class:`~manifolds.Product`.
        factors: one distribution per factor, with a common batch shape; each needs ``log_prob`` and ``sample``
            and ``rsample_and_log_prob`` (every distribution of :mod:`manifolds` has them).

    Example:
        >>> import math
        >>> from manifolds import Product, Sphere, Torus
        >>> M = Product(Sphere(2), Torus(1))
        >>> u = M.uniform()
        >>> x = u.sample((5,))
        >>> x.shape, torch.allclose(u.log_prob(x), torch.full((5,), -math.log(4 * math.pi) - math.log(2 * math.pi)))
        (torch.Size([5, 4]), True)
    """

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, manifold: Product, factors: Sequence[Distribution], validate_args: bool | None = None) -> None:
        if len(factors) != len(manifold.factors):
            raise ValueError(f"{manifold!r} has {len(manifold.factors)} factors but {len(factors)} distributions "
                             f"were given: pass one per factor")
        self.manifold = manifold
        self.factors = list(factors)
        batch = torch.broadcast_shapes(*[d.batch_shape for d in self.factors])
        super().__init__(batch, torch.Size([sum(manifold.sizes)]), validate_args=False)

    @property
    def has_rsample(self) -> bool:
        return all(d.has_rsample for d in self.factors)

    def rsample_and_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        """Samples and their log-density, from each factor's ``rsample_and_log_prob``."""
        xs, lps = [], []
        for d in self.factors:
            x, lp = d.rsample_and_log_prob(sample_shape)
            xs.append(x)
            lps.append(lp)
        return self.manifold._cat(xs), sum(lps)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        return self.manifold._cat([d.rsample(sample_shape) for d in self.factors])

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.manifold._cat([d.sample(sample_shape) for d in self.factors])

    def log_prob(self, value: Tensor) -> Tensor:
        return sum(d.log_prob(x) for d, x in zip(self.factors, self.manifold.split(value)))

    def entropy(self) -> Tensor:
        return sum(d.entropy() for d in self.factors)

    @property
    def mode(self) -> Tensor:
        """The factors' modes, concatenated (the point of highest density of the product)."""
        return self.manifold._cat([d.mode for d in self.factors])


class ProductWrappedNormal(ProductDistribution):
    r"""The wrapped normal on a product: one ``WrappedNormal(loc_i, scale_i, M_i)`` per factor (what
    ``manifolds.WrappedNormal(loc, scale, product)`` builds). ``loc`` has the product's ambient coordinates,
    ``scale`` its ``n = Σ n_i`` tangent coordinates; the covariance is block-diagonal by factor.

    Example:
        >>> from manifolds import Lorentz, Product, Sphere, WrappedNormal
        >>> M = Product(Lorentz(dim=2), Sphere(2))
        >>> d = WrappedNormal(M.origin(6), torch.full((4,), 0.5), M)
        >>> x, lp = d.rsample_and_log_prob((3,))
        >>> torch.allclose(d.log_prob(x), lp, atol=1e-5)
        True
    """

    def __init__(self, loc: Tensor, scale: Tensor, manifold: Product, validate_args: bool | None = None) -> None:
        factors = [WrappedNormal(m_loc, m_scale, m, validate_args) for m, m_loc, m_scale in
                   zip(manifold.factors, manifold.split(loc), manifold.split_coords(scale))]
        self.loc, self.scale = loc, scale
        super().__init__(manifold, factors)

    @property
    def mean(self) -> Tensor:
        return self.loc
