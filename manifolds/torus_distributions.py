r"""The wrapped normal on the flat torus Tⁿ: per angle ``p(θ) = Σ_{m∈ℤ} N(θ + 2πm; μ, σ²)``, truncated exactly below
float64's resolution (``shared/docs/MATH.md`` §8)."""

from __future__ import annotations

import math

import torch

from .constants import TORUS_FOURIER_SIGMA, TORUS_FOURIER_TERMS, TORUS_WINDINGS
from .preimage_wrapped_normal import PreimageWrappedNormal
from .torus import wrap

Tensor = torch.Tensor

__all__ = ["TorusWrappedNormal", "wrapped_normal_log_density"]


def wrapped_normal_log_density(delta: Tensor, sigma: Tensor) -> Tensor:
    r"""``log Σ_m N(δ + 2πm; 0, σ²)`` for ``δ ∈ [-π, π)``, elementwise.

    For ``σ <= TORUS_FOURIER_SIGMA`` (= 2) the sum over windings ``|m| <= TORUS_WINDINGS`` (= 3); above it the dual
    theta series ``(1/2π)(1 + 2 Σ_{m=1}^{4} e^{-m²σ²/2} cos mδ)``. Both dropped tails are below ``1e-21`` relative
    (:data:`~manifolds.constants.TORUS_WINDINGS`), i.e. below float64's resolution at every ``σ``.

    Example:
        >>> d = torch.linspace(-math.pi, math.pi, 2001, dtype=torch.float64)[:-1]
        >>> round(float(wrapped_normal_log_density(d, torch.tensor(0.7)).exp().mean() * 2 * math.pi), 12)
        1.0
    """
    sigma = sigma.to(delta.dtype)
    small = sigma <= TORUS_FOURIER_SIGMA
    s_w = torch.where(small, sigma, torch.full_like(sigma, TORUS_FOURIER_SIGMA))
    s_f = torch.where(small, torch.full_like(sigma, TORUS_FOURIER_SIGMA), sigma)
    m = torch.arange(-TORUS_WINDINGS, TORUS_WINDINGS + 1, dtype=delta.dtype, device=delta.device)
    t = (delta.unsqueeze(-1) + 2 * math.pi * m) / s_w.unsqueeze(-1)
    windings = torch.logsumexp(-0.5 * t * t, dim=-1) - s_w.log() - 0.5 * math.log(2 * math.pi)
    j = torch.arange(1, TORUS_FOURIER_TERMS + 1, dtype=delta.dtype, device=delta.device)
    series = (torch.exp(-0.5 * (j * s_f.unsqueeze(-1)) ** 2) * torch.cos(j * delta.unsqueeze(-1))).sum(-1)
    fourier = torch.log1p(2 * series) - math.log(2 * math.pi)
    return torch.where(small, windings, fourier)


class TorusWrappedNormal(PreimageWrappedNormal):
    r"""Wrapped normal on Tⁿ with independent angles: ``θ = wrap(μ + σ ε)``, ``ε ~ N(0, I)``, and
    ``log p(θ) = Σ_i log Σ_m N(θ_i + 2πm; μ_i, σ_i²)`` (:func:`wrapped_normal_log_density`: exact to float64's
    resolution, normalised on ``[-π, π)ⁿ`` for every ``σ``). What ``manifolds.WrappedNormal(loc, scale, Torus(n))``
    builds.

    Args:
        loc: the angles ``μ ∈ [-π, π)ⁿ``.
        scale: ``σ > 0``, shape ``(..., n)``.
        manifold: the :class:`~manifolds.Torus`.

    Example:
        >>> from manifolds import Torus, WrappedNormal
        >>> d = WrappedNormal(torch.tensor([3.0, -1.0]), torch.tensor([0.5, 4.0]), Torus(2))
        >>> x, lp = d.rsample_and_log_prob((3,))
        >>> bool(((x >= -math.pi) & (x < math.pi)).all()), torch.allclose(d.log_prob(x), lp)
        (True, True)
    """

    def log_prob(self, value: Tensor) -> Tensor:
        return wrapped_normal_log_density(wrap(value - self.loc), self.scale).sum(-1)

