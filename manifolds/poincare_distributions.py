"""Distributions on the Poincaré ball, carried from the hyperboloid through the isometry."""

from __future__ import annotations

import torch
from torch.distributions import Distribution, constraints

from .poincare import PoincareBall
from .wrapped_normal import WrappedNormal

Tensor = torch.Tensor


class PoincareWrappedNormal(Distribution):
    r"""The wrapped normal ``G(μ, diag σ²)`` on the ball: :class:`~manifolds.WrappedNormal` on ``Lorentz(k)`` at
    ``φ(μ)``, pushed through ``ψ = φ⁻¹`` (module :mod:`manifolds.poincare`).

    An isometry keeps densities with respect to the Riemannian volume, so ``log p_ball(p) = log p_H(φ(p))``
    (with respect to Lebesgue measure on the ball, add ``n·log λ_p``). Tangent coordinates at the origin are the
    same on both models, so :meth:`rsample_logmap0_and_log_prob` and :meth:`log_prob_logmap0` are the hyperboloid's
    and stay exact at every distance (ball coordinates saturate at ≈ 17·sqrt(k) in float32).

    Args:
        loc: the mean, a point of the ball (``n`` coordinates).
        scale: ``σ > 0`` in tangent coordinates at the origin, shape ``(..., n)``.
        manifold: the :class:`~manifolds.PoincareBall`.
        validate_args: as for :class:`~manifolds.WrappedNormal`.

    Example:
        >>> from manifolds import PoincareBall, WrappedNormal
        >>> B = PoincareBall(k=1.0)
        >>> d = WrappedNormal(B.expmap0_spatial(torch.tensor([1.0, 0.5])), torch.ones(2), B)
        >>> p, log_p = d.rsample_and_log_prob((4,))
        >>> torch.allclose(d.log_prob(p), log_p, atol=1e-4)
        True
    """

    arg_constraints = {"scale": constraints.positive}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, manifold: PoincareBall, validate_args: bool | None = None) -> None:
        self.manifold = manifold
        self.loc = loc
        self.base = WrappedNormal(manifold.to_lorentz(loc), scale, manifold.lorentz, validate_args=validate_args)
        self.scale = self.base.scale
        super().__init__(self.base.batch_shape, torch.Size([loc.size(-1)]), validate_args=False)

    def rsample_and_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        x, log_p = self.base.rsample_and_log_prob(sample_shape)
        return self.manifold.from_lorentz(x), log_p

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def log_prob(self, value: Tensor) -> Tensor:
        return self.base.log_prob(self.manifold.to_lorentz(value))

    def rsample_logmap0_and_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        """Samples as tangent coordinates at the origin and their log-density (exact at every distance)."""
        return self.base.rsample_logmap0_and_log_prob(sample_shape)

    def log_prob_logmap0(self, w: Tensor) -> Tensor:
        """``log_prob(exp_0(w))`` from tangent coordinates ``w`` at the origin."""
        return self.base.log_prob_logmap0(w)

    @property
    def mean(self) -> Tensor:
        """The Fréchet mean ``μ``."""
        return self.loc

    @property
    def mode(self) -> Tensor:
        """The point of highest density, ``μ`` (what a model reports as a posterior's embedding)."""
        return self.loc
