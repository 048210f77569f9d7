"""The uniform distribution of the Riemannian volume on a compact manifold (what ``M.uniform()`` returns)."""

from __future__ import annotations

import torch
from torch.distributions import Distribution, constraints

Tensor = torch.Tensor


class UniformOnManifold(Distribution):
    r"""``p(x) = 1 / vol(M)`` with respect to the Riemannian volume of a compact manifold ``M``.

    Sampling draws ``M.random_uniform`` (exactly uniform: normalised Gaussians on Sⁿ, uniform angles on Tⁿ); there
    is no reparameterisation (nothing to differentiate). Built by :meth:`Sphere.uniform` / :meth:`Torus.uniform`.

    Args:
        manifold: a compact manifold with a fixed dimension (``dim``).
        log_volume: ``log vol(M)`` (``log(2π^{(n+1)/2} rⁿ / Γ((n+1)/2))`` on Sⁿ_r, ``n·log 2π`` on Tⁿ).

    Example:
        >>> import math
        >>> from manifolds import Sphere
        >>> u = Sphere(2).uniform()
        >>> x = u.sample((3,))
        >>> x.shape, torch.allclose(u.log_prob(x), torch.full((3,), -math.log(4 * math.pi)))
        (torch.Size([3, 3]), True)
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, manifold, log_volume: float, *, dtype: torch.dtype | None = None,
                 device: torch.device | None = None) -> None:
        self.manifold = manifold
        self.log_volume = float(log_volume)
        self._dtype = dtype or torch.get_default_dtype()
        self._device = device
        super().__init__(torch.Size(), torch.Size([manifold.ambient_dim(manifold.dim)]), validate_args=False)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        shape = torch.Size(sample_shape) + self.event_shape
        return self.manifold.random_uniform(*shape, dtype=self._dtype, device=self._device).as_subclass(Tensor)

    def rsample_and_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        """Samples (not reparameterised: nothing to differentiate) and their log-density."""
        x = self.sample(sample_shape)
        return x, self.log_prob(x)

    def log_prob(self, value: Tensor) -> Tensor:
        return torch.full(value.shape[:-1], -self.log_volume, dtype=value.dtype, device=value.device)

    def entropy(self) -> Tensor:
        return torch.tensor(self.log_volume, dtype=self._dtype, device=self._device)
