"""What the wrapped normals of the compact manifolds share: sampling ``exp_μ(PT_{o→μ} v)``, ``v ~ N(0, diag σ²)``.

Where ``exp`` is not injective (Sⁿ, Tⁿ) the density of such samples sums every preimage of a point; each subclass
implements that sum in :meth:`PreimageWrappedNormal.log_prob`.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, constraints

from .base import ManifoldOps
from .validation import validation_enabled

Tensor = torch.Tensor


class LogmapCoordinates:
    """Mixin for a distribution with ``manifold``, ``rsample_and_log_prob`` and ``log_prob``: sampling and scoring in
    tangent coordinates at the origin, the interface of :class:`~manifolds.WrappedNormal` that flows and VAEs use."""

    def rsample_logmap0_and_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        """Samples as tangent coordinates at the origin (``log_o z``) and their log-density."""
        z, log_p = self.rsample_and_log_prob(sample_shape)
        return self.manifold.logmap0_spatial(z), log_p

    def log_prob_logmap0(self, w: Tensor) -> Tensor:
        """``log_prob(exp_o(w))``."""
        return self.log_prob(self.manifold.expmap0_spatial(w))


class PreimageWrappedNormal(LogmapCoordinates, Distribution):
    """Base class: parameters, sampling and the tangent-coordinate helpers; subclasses give ``log_prob``."""

    arg_constraints = {"scale": constraints.positive}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, manifold: ManifoldOps, validate_args: bool | None = None) -> None:
        self.manifold = manifold
        n = manifold.intrinsic_dim(loc) if loc.dim() > 0 else 0
        if loc.dim() == 0 or n < 1:
            raise ValueError(f"loc must be a point of {manifold.name} with coordinates in its last dimension; got "
                             f"shape {tuple(loc.shape)}")
        if scale.dim() == 0 or scale.size(-1) != n:
            raise ValueError(f"scale must have the manifold's intrinsic dimension n={n} in its last dimension; got "
                             f"shape {tuple(scale.shape)} for loc of shape {tuple(loc.shape)}")
        if validate_args is None:  # the library's switch (manifolds.validation)
            validate_args = validation_enabled()
        if validate_args:
            ok, reason = manifold._check_point_on_manifold(loc.detach())
            if not ok:
                raise ValueError(f"loc: {reason}")
            if not bool((scale > 0).all()):
                raise ValueError(f"scale must be positive; got min {float(scale.min()):.3g}")
        self.n = n
        batch = torch.broadcast_shapes(loc.shape[:-1], scale.shape[:-1])
        self.loc = loc.expand(*batch, loc.size(-1))
        self.scale = scale.expand(*batch, n)
        super().__init__(batch, torch.Size([loc.size(-1)]), validate_args=False)

    def rsample_and_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        """Reparameterised samples ``translate(μ, exp_o(v))`` and their (preimage-summed) log-density."""
        shape = self._extended_shape(torch.Size(sample_shape))[:-1] + (self.n,)
        v = torch.randn(shape, dtype=self.scale.dtype, device=self.scale.device) * self.scale
        z = self.manifold.translate(self.loc, self.manifold.expmap0_spatial(v))
        return z, self.log_prob(z)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def coords(self, z: Tensor) -> Tensor:
        """Tangent coordinates at ``o`` of ``translate(μ, ·)⁻¹(z)``: the shortest preimage."""
        return self.manifold.logmap0_spatial(self.manifold.translate(self.loc, z, inverse=True))

    @property
    def mean(self) -> Tensor:
        """The centre ``μ`` (a Fréchet mean when ``σ`` is small enough for one to be unique)."""
        return self.loc

    @property
    def mode(self) -> Tensor:
        """The point of highest density, ``μ`` (what a model reports as a posterior's embedding)."""
        return self.loc
