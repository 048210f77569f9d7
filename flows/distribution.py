"""A flow as a ``torch.distributions.Distribution``: base distribution pushed through a transform."""

from __future__ import annotations

from typing import Optional

import torch
from torch.distributions import Distribution

from manifolds import WrappedNormal

from .transform import Transform

Tensor = torch.Tensor


def _sample_and_log_prob(base: Distribution, sample_shape: torch.Size) -> tuple[Tensor, Tensor]:
    if hasattr(base, "rsample_and_log_prob"):
        return base.rsample_and_log_prob(sample_shape)
    x = base.rsample(sample_shape)
    return x, base.log_prob(x)


class Flow(Distribution):
    r"""The distribution of ``y = f(x)``, ``x ~ base``: ``log p(y) = log p_base(f⁻¹(y)) + log|det ∂f⁻¹/∂y|``.

    Works on ℝⁿ (base e.g. ``Independent(Normal(0, 1), 1)`` or a :class:`~manifolds.WrappedNormal` on
    ``Euclidean``) and on the hyperboloid (base a :class:`~manifolds.WrappedNormal` on ``Lorentz``).

    Args:
        base: the base distribution (event shape = the manifold's ambient coordinates).
        transform: a :class:`~flows.Transform` (base → data).
        context: optional context passed to the transform (a vector for conditional flows, ``edge_index`` for
            graph conditioners).

    Example:
        >>> from manifolds import Lorentz, WrappedNormal
        >>> from flows import build
        >>> M = Lorentz(k=1.0)
        >>> q = Flow(WrappedNormal.at_origin(torch.ones(2), M), build("whc", M, 2))
        >>> z, log_q = q.rsample_and_log_prob((4,))
        >>> torch.allclose(q.log_prob(z), log_q, atol=1e-4)
        True
    """

    has_rsample = True

    def __init__(self, base: Distribution, transform: Transform, context: Optional[Tensor] = None) -> None:
        self.base = base
        self.transform = transform
        self.context = context
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    def _in_tangent(self) -> bool:
        """Whether to work in tangent coordinates at the origin: the base draws and scores them
        (:class:`~manifolds.WrappedNormal`: ``rsample_logmap0_and_log_prob`` / ``log_prob_logmap0``) and the
        transform computes its tangent maps without points (:attr:`~flows.Transform.acts_in_tangent`). Then the
        ``exp_o`` / ``log_o`` pair between base and transform is never evaluated (``log_o ∘ exp_o`` is the
        identity): one ``exp_o`` at the end of sampling, one ``log_o`` at the start of scoring."""
        return isinstance(self.base, WrappedNormal) and self.transform.acts_in_tangent

    def rsample_and_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        """Samples and their log-density in one pass (no inverse is computed)."""
        if self._in_tangent():
            w, log_p = self.base.rsample_logmap0_and_log_prob(torch.Size(sample_shape))
            v, ladj = self.transform.forward_tangent(w, self.context)
            return self.base.manifold.expmap0_spatial(v), log_p - ladj
        x, log_p = _sample_and_log_prob(self.base, torch.Size(sample_shape))
        y, ladj = self.transform(x, self.context)
        return y, log_p - ladj

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        if self._in_tangent():
            return self.rsample_and_log_prob(sample_shape)[0]
        return self.transform(self.base.rsample(torch.Size(sample_shape)), self.context)[0]

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._in_tangent():
            M = self.base.manifold
            w, ladj = self.transform.inverse_tangent(M.logmap0_spatial(value), self.context)
            return self.base.log_prob_logmap0(w) + ladj
        x, ladj = self.transform.inverse(value, self.context)
        return self.base.log_prob(x) + ladj
