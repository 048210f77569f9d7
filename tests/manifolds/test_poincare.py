"""Poincaré-ball conversions (for plots): round trip, ball radius sqrt(k), distances."""

from __future__ import annotations

import math

import pytest
import torch

from manifolds import Euclidean, Lorentz
from manifolds import lorentz_math as lm

KS = (0.25, 1.0, 4.0)


def _points(k, s_max, count=128, n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(count, n, generator=gen, dtype=torch.float64)
    s = s_max * math.sqrt(k) * torch.rand(count, 1, generator=gen, dtype=torch.float64)
    return lm.expmap0_spatial(s * d / d.norm(dim=-1, keepdim=True), k)


def _poincare_dist(p, q, k):
    """Distance in the Poincaré ball of radius sqrt(k) (curvature -1/k)."""
    pp, qq = (p * p).sum(-1), (q * q).sum(-1)
    return math.sqrt(k) * torch.acosh(1 + 2 * k * ((p - q) ** 2).sum(-1) / ((k - pp) * (k - qq)))


@pytest.mark.parametrize("k", KS)
def test_round_trip_radius_and_distance(k):
    M, sk = Lorentz(k), math.sqrt(k)
    x, y = _points(k, 5, seed=1), _points(k, 5, seed=2)
    p, q = M.to_poincare(x), M.to_poincare(y)
    assert p.shape[-1] == x.shape[-1] - 1
    # inside the ball of radius sqrt(k) ...
    assert bool((p.norm(dim=-1) < sk).all())
    # ... and reaching its boundary as the distance grows: |p| = sqrt(k) tanh(d / (2 sqrt(k)))
    assert torch.allclose(p.norm(dim=-1), sk * torch.tanh(M.dist0(x) / (2 * sk)), rtol=1e-12, atol=1e-15)
    far = M.to_poincare(_points(k, 1, seed=3) * 0 + M.expmap0(torch.tensor([0.0, 30 * sk, 0, 0], dtype=torch.float64)))
    assert float(far.norm(dim=-1).max()) > sk * (1 - 1e-9)
    # round trips
    assert torch.allclose(M.from_poincare(p), x, rtol=1e-10, atol=1e-12)
    ball = sk * 0.99 * torch.rand(64, 1, dtype=torch.float64) * torch.nn.functional.normalize(
        torch.randn(64, 3, dtype=torch.float64), dim=-1)
    assert torch.allclose(M.to_poincare(M.from_poincare(ball)), ball, rtol=1e-10, atol=1e-12)
    assert M.check_point_on_manifold(M.from_poincare(ball))
    # distances agree with the Poincaré-ball formula
    assert torch.allclose(_poincare_dist(p, q, k), M.dist(x, y), rtol=1e-9, atol=1e-12)


def test_euclidean_poincare_is_identity():
    E, x = Euclidean(), torch.randn(5, 3)
    assert torch.equal(E.to_poincare(x), x) and torch.equal(E.from_poincare(x), x)
