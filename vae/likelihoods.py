"""Observation models ``p(x | z)`` of the VAEs: the decoder outputs parameters, a likelihood scores data."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from .constants import MIN_GAUSSIAN_SCALE

Tensor = torch.Tensor


class Likelihood(nn.Module):
    """Base class: ``distribution(params)`` is ``p(x|z)`` with one event dimension (the data features)."""

    def distribution(self, params: Tensor) -> Distribution:  # pragma: no cover - overridden
        """``p(x | z)`` from the decoder's output ``params`` (logits, or means for the Gaussian)."""
        raise NotImplementedError

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """``log p(x | z)`` summed over the features; ``params`` may carry extra leading sample dimensions."""
        return self.distribution(params).log_prob(x)


class BernoulliLikelihood(Likelihood):
    r"""``p(x|z) = Π_i Bern(x_i; σ(ℓ_i))`` with decoder logits ``ℓ`` (binarised images, BDP in {0,1}).

    Example:
        >>> lik = BernoulliLikelihood()
        >>> float(lik.log_prob(torch.tensor([1.0, 0.0]), torch.zeros(2)))  # 2·log(1/2)
        -1.3862943649291992
    """

    def distribution(self, params: Tensor) -> Distribution:
        return Independent(Bernoulli(logits=params), 1)


class GaussianLikelihood(Likelihood):
    r"""``p(x|z) = Π_i N(x_i; m_i, s_i²)`` with decoder means ``m`` and a per-feature std ``s``.

    Args:
        dim: number of features.
        scale: initial (or, with ``learnable=False``, fixed) standard deviation ``s > 0``.
        learnable: train ``log s``; the std is then ``s = exp(log_s) + MIN_GAUSSIAN_SCALE`` (a floor that keeps
            the likelihood bounded, :data:`~vae.constants.MIN_GAUSSIAN_SCALE`).

    Example:
        >>> lik = GaussianLikelihood(2, scale=1.0, learnable=False)
        >>> round(float(lik.log_prob(torch.zeros(2), torch.zeros(2))), 4)  # -log(2π)
        -1.8379
    """

    def __init__(self, dim: int, scale: float = 1.0, learnable: bool = True) -> None:
        super().__init__()
        if dim < 1 or scale <= 0:
            raise ValueError(f"GaussianLikelihood needs dim >= 1 and scale > 0; got dim={dim}, scale={scale}")
        self.learnable = learnable
        init = math.log(max(scale - MIN_GAUSSIAN_SCALE, MIN_GAUSSIAN_SCALE)) if learnable else math.log(scale)
        self.log_scale = nn.Parameter(torch.full((dim,), init), requires_grad=learnable)

    @property
    def scale(self) -> Tensor:
        """The standard deviation per feature, ``exp(log_scale) + MIN_GAUSSIAN_SCALE`` (learnable) or ``exp(log_scale)``."""
        s = self.log_scale.exp()
        return s + MIN_GAUSSIAN_SCALE if self.learnable else s

    def distribution(self, params: Tensor) -> Distribution:
        scale = self.scale.to(params.dtype).expand_as(params)
        return Independent(Normal(params, scale), 1)


def make_likelihood(name: str, dim: int) -> Likelihood:
    """``"bernoulli"`` or ``"gaussian"`` (learnable per-feature std)."""
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name == "gaussian":
        return GaussianLikelihood(dim)
    raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian'; got {name!r}")
