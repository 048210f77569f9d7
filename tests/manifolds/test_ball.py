"""The Poincaré ball: agreement with geoopt near the origin, the isometry with the hyperboloid, far points."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch

from manifolds import Lorentz, PoincareBall, WrappedNormal, lorentz_to_poincare, poincare_to_lorentz
from manifolds.poincare import ball_to_lorentz_tangent, lorentz_to_ball_tangent

KS = (0.25, 1.0, 4.0)
EPS = {torch.float32: 2.0**-24, torch.float64: 2.0**-53}


def _points(B, count, max_dist, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(count, 3, generator=gen, dtype=torch.float64)
    s = max_dist * torch.rand(count, 1, generator=gen, dtype=torch.float64)
    return B.expmap0_spatial(d / d.norm(dim=-1, keepdim=True) * s).to(dtype)


@pytest.mark.parametrize("k", KS)
def test_agrees_with_geoopt_near_the_origin(k):
    B, G = PoincareBall(k), geoopt.PoincareBall(c=1 / k)
    sk = math.sqrt(k)
    # within distance 2·sqrt(k), and steps that stay within ≈ 6·sqrt(k): geoopt clips points to 1e-5 of the boundary
    x, y = _points(B, 64, 2 * sk, 0), _points(B, 64, 2 * sk, 1)
    gen = torch.Generator().manual_seed(2)
    u, v = (0.05 * sk * torch.randn(64, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)  # noqa: E731
    close(B.dist(x, y), G.dist(x, y))
    close(B.dist0(x), G.dist0(x))
    close(B.inner(x, u, v), G.inner(x, u, v, keepdim=True).squeeze(-1))  # geoopt broadcasts λ wrongly without keepdim
    close(B.norm(x, u), G.norm(x, u))
    close(B.egrad2rgrad(x, u), G.egrad2rgrad(x, u))
    close(B.expmap(x, u), G.expmap(x, u))
    close(B.logmap(x, y), G.logmap(x, y))
    close(B.transp(x, y, v), G.transp(x, y, v))
    close(B.expmap0(u), G.expmap0(u))
    close(B.logmap0(y), G.logmap0(y))
    close(B.mobius_add(x, y), G.mobius_add(x, y))
    close(B.lambda_x(x), G.lambda_x(x))


@pytest.mark.parametrize("k", KS)
def test_isometry_and_its_differentials(k):
    B, H = PoincareBall(k), Lorentz(k)
    sk = math.sqrt(k)
    p, q = _points(B, 32, 8 * sk, 3), _points(B, 32, 8 * sk, 4)
    x, y = poincare_to_lorentz(p, k), poincare_to_lorentz(q, k)
    assert H.check_point_on_manifold(x)
    torch.testing.assert_close(lorentz_to_poincare(x, k), p, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(B.dist(p, q), H.dist(x, y), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(B.dist0(p), H.dist0(x), rtol=1e-9, atol=1e-10)
    # the differentials are the Jacobians of the maps (autograd), and inverse to each other
    u = torch.randn(32, 3, dtype=torch.float64)
    jvp = torch.func.jvp(lambda t: poincare_to_lorentz(t, k), (p,), (u,))[1]
    torch.testing.assert_close(ball_to_lorentz_tangent(p, u, k), jvp, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lorentz_to_ball_tangent(x, jvp, k), u, rtol=1e-9, atol=1e-10)
    # the metric: |u|_ball = |dφ u|_L
    torch.testing.assert_close(B.norm(p, u), H.norm(jvp), rtol=1e-9, atol=1e-10)
    model, to_h, from_h = B.isometric_model()
    assert model.same_as(H) and torch.allclose(to_h(p), x) and torch.allclose(from_h(x), p)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("k", KS)
def test_identities_up_to_the_dtype_edge(k, dtype):
    """exp∘log, log∘exp, dist, transport for points within the hyperboloid's envelope (distance 5·sqrt(k) in
    float32, 10·sqrt(k) in float64: the ball computes through it, so tangent vectors carry its relative error
    ``EPS·cosh²(d/sqrt(k))``; see tests/manifolds/conftest.py)."""
    B = PoincareBall(k)
    sk = math.sqrt(k)
    edge = {torch.float32: 5.0, torch.float64: 10.0}[dtype] * sk
    x, y = _points(B, 64, edge, 5, dtype), _points(B, 64, edge, 6, dtype)
    cond = 64 * EPS[dtype] * math.cosh(2 * edge / sk) ** 2  # d(x, y) <= 2·edge
    w = B.logmap(x, y)
    back = B.expmap(x, w)
    assert float((B.dist(back, y) / (1 + B.dist0(y))).max()) <= cond
    d = B.dist(x, y)
    assert bool(((B.norm(x, w) - d).abs() <= cond * (1 + d)).all())
    torch.testing.assert_close(B.dist(x, y), B.dist(y, x), rtol=cond, atol=cond)
    v = B.transp(x, y, w)
    torch.testing.assert_close(B.norm(y, v), B.norm(x, w), rtol=cond, atol=cond)
    torch.testing.assert_close(B.transp(y, x, v), w, rtol=cond, atol=cond * float(w.abs().max()))
    p = B.projx(y * 1.5)
    assert float((B.projx(p) - p).abs().max()) <= 4 * EPS[dtype] * sk and bool(B.check_point_on_manifold(p))


def test_points_at_distance_40_in_float32_through_the_isometry():
    """Far points stay on the hyperboloid or in tangent coordinates: exact; the ball maps never return NaN."""
    B = PoincareBall(1.0)
    d = torch.randn(16, 2)
    w = d / d.norm(dim=-1, keepdim=True) * 40.0  # distance 40 from the origin, float32
    x = B.lorentz.expmap0_spatial(w)
    assert bool(torch.isfinite(x).all())
    p = B.from_lorentz(x)  # rounds onto the boundary in float32: still in the closed ball, no NaN
    assert bool(torch.isfinite(p).all()) and float(p.norm(dim=-1).max()) <= 1.0
    # distributions on the ball score and sample in tangent coordinates through the hyperboloid: exact at 40
    mu = B.expmap0_spatial(torch.tensor([0.5, -0.5]))
    q = WrappedNormal(mu, torch.tensor([2.0, 3.0]), B)
    ref = WrappedNormal(B.lorentz.expmap0_spatial(torch.tensor([0.5, -0.5])), torch.tensor([2.0, 3.0]), B.lorentz)
    lp = q.log_prob_logmap0(w)
    assert bool(torch.isfinite(lp).all())
    torch.testing.assert_close(lp, ref.log_prob_logmap0(w))
    torch.testing.assert_close(lp.double(), ref.log_prob_logmap0(w.double()), rtol=1e-5, atol=1e-4)
    # the isometric model carries hyperboloid points at distance 40 (what flows on the ball use)
    model, _, _ = B.isometric_model()
    torch.testing.assert_close(model.dist0(x), torch.full((16,), 40.0))
    # the ball point on the float32 boundary maps to inf on the hyperboloid; with projx it comes back finite
    assert bool(torch.isfinite(B.to_lorentz(B.projx(p))).all())


def test_validation_and_learnable_curvature():
    B = PoincareBall(2.0, validate=True, dim=2)
    with pytest.raises(ValueError, match=r"\|p\| = 1\.5 >= sqrt\(k\) = 1\.41421.*PoincareBall\.projx") as e:
        B.dist0(torch.tensor([1.5, 0.0]))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="dimension 2"):
        B.dist0(torch.zeros(3))
    L = PoincareBall(1.0, learnable=True)
    assert L.learnable_curvature and L.curvature_parameter.requires_grad
    L.dist0(torch.tensor([0.3, 0.1])).backward()
    assert L.curvature_parameter.grad is not None
    assert PoincareBall(2.0).same_as(PoincareBall(2.0)) and not PoincareBall(2.0).same_as(PoincareBall(1.0))
    torch.testing.assert_close(PoincareBall(4.0).curvature(), torch.tensor(-0.25))
