"""The sphere Sⁿ_r: identities over tangent norms from 1e-7·r to π·r(1 - 1e-6), float32 and float64, radii 0.5-3.

Error model: a point is stored to ``EPS·r`` per coordinate (an absolute floor), so a tangent vector recovered from
two points has absolute error ``~EPS·r``; near the antipode its direction is set by the part of ``y`` orthogonal to
``x``, of size ``r·sin θ``, so the relative error is ``EPS/(π - θ)``. Tolerances are ``C·EPS·(1 + r/|v| + 1/(π - θ))``
with ``C = 64`` (a few roundings in ``n + 1 <= 6`` coordinates, each ``<= sqrt(6)·EPS``).
"""

from __future__ import annotations

import math

import geoopt
import pytest
import torch

from manifolds import Sphere
from manifolds.sphere import sphere_log_volume

EPS = {torch.float32: 2.0**-24, torch.float64: 2.0**-53}
DTYPES = [torch.float32, torch.float64]
C = 64.0
RADII = [0.5, 1.0, 3.0]
DIMS = [1, 2, 5]
#: tangent norms as fractions of π·r: log-spaced from 1e-7 to 1 - 1e-6 (the edge of the injectivity radius)
FRACS = torch.cat([torch.logspace(-7, -0.01, 40, dtype=torch.float64), 1 - torch.logspace(-6, -1, 10,
                                                                                          dtype=torch.float64)])


def _setup(n, r, dtype, seed=0):
    S = Sphere(n, radius=r)
    gen = torch.Generator().manual_seed(seed)
    x = S.projx(torch.randn(len(FRACS), n + 1, generator=gen, dtype=torch.float64))
    d = S.proju(x, torch.randn(x.shape, generator=gen, dtype=torch.float64))
    d = d / d.norm(dim=-1, keepdim=True)
    norms = FRACS * math.pi * r
    v = d * norms.unsqueeze(-1)
    return S, x, v, norms


def _tol(dtype, r, norms):
    theta = norms / r
    return C * EPS[dtype] * (1 + r / norms + 1 / (math.pi - theta).clamp_min(1e-300))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("r", RADII)
@pytest.mark.parametrize("n", DIMS)
def test_log_inverts_exp_and_distance_is_the_norm(n, r, dtype):
    S, x, v, norms = _setup(n, r, dtype)
    y = S.expmap(x.to(dtype), v.to(dtype))
    assert bool(S.check_point_on_manifold(y))
    # exp is well conditioned: compare with the float64 exp
    y64 = S.expmap(x, v)
    assert float((y.double() - y64).norm(dim=-1).max()) <= C * EPS[dtype] * r
    # log recovers v from the rounded points; its error is that of the rounded inputs
    w = S.logmap(x.to(dtype), y)
    err = (w.double() - v).norm(dim=-1) / norms
    assert bool((err <= _tol(dtype, r, norms)).all()), float((err / _tol(dtype, r, norms)).max())
    # d(x, exp_x v) = |v| below the injectivity radius (absolute floor EPS·r)
    d = S.dist(x.to(dtype), y).double()
    assert bool(((d - norms).abs() <= C * EPS[dtype] * r).all()), float((d - norms).abs().max())
    assert torch.equal(S.dist(y, x.to(dtype)), S.dist(x.to(dtype), y))  # symmetric


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("r", RADII)
@pytest.mark.parametrize("n", DIMS)
def test_exp_inverts_log(n, r, dtype):
    S, x, _, _ = _setup(n, r, dtype, seed=1)
    gen = torch.Generator().manual_seed(2)
    y = S.projx(torch.randn(x.shape, generator=gen, dtype=torch.float64)).to(dtype)
    x = x.to(dtype)
    back = S.expmap(x, S.logmap(x, y))
    assert float((back - y).double().norm(dim=-1).max()) <= C * EPS[dtype] * r / (
        1 - (S.dist(x, y).double() / (math.pi * r))).min().clamp_min(1e-3)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", DIMS)
def test_projx_idempotent_and_proju_tangent(n, dtype):
    S = Sphere(n, radius=2.0)
    gen = torch.Generator().manual_seed(3)
    for scale in (1e-3, 1.0, 1e3):
        p = S.projx((scale * torch.randn(64, n + 1, generator=gen, dtype=torch.float64)).to(dtype))
        assert float((S.projx(p) - p).abs().max()) <= 4 * EPS[dtype] * 2.0
        assert bool(S.check_point_on_manifold(p))
        u = S.proju(p, torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype))
        assert bool(S.check_vector_on_tangent(p, u))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", DIMS)
def test_transport_keeps_inner_products_and_is_reversible(n, dtype):
    S, x, v, norms = _setup(n, 1.5, dtype, seed=4)
    keep = norms < 0.999 * math.pi * 1.5  # transport along the minimising geodesic: not at the antipode
    x, v, norms = x[keep], v[keep], norms[keep]
    y = S.expmap(x, v)
    gen = torch.Generator().manual_seed(5)
    a = S.proju(x, torch.randn(x.shape, generator=gen, dtype=torch.float64))
    b = S.proju(x, torch.randn(x.shape, generator=gen, dtype=torch.float64))
    xd, yd, ad, bd = (t.to(dtype) for t in (x, y, a, b))
    ta, tb = S.transp(xd, yd, ad), S.transp(xd, yd, bd)
    assert bool(S.check_vector_on_tangent(yd, ta))
    cond = 1 / (math.pi - norms / 1.5)  # 1/|x + y| grows towards the antipode
    scale = (a.norm(dim=-1) * b.norm(dim=-1))
    assert bool(((S.inner(yd, ta, tb).double() - S.inner(x, a, b)).abs() <= C * EPS[dtype] * scale * cond).all())
    back = S.transp(yd, xd, ta)
    assert bool(((back.double() - a).norm(dim=-1) <= C * EPS[dtype] * a.norm(dim=-1) * cond).all())
    # transporting the velocity gives the velocity at the end (minus sign: log_y x = -PT(v))
    assert torch.allclose(S.transp(x, y, v), -S.logmap(y, x), atol=1e-9 * 1.5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_antipodal_points(dtype):
    S = Sphere(2, radius=2.0)
    x = S.projx(torch.tensor([[1.0, 2.0, -0.5]], dtype=dtype))
    assert torch.allclose(S.dist(x, -x), torch.tensor([2 * math.pi], dtype=dtype))
    assert torch.equal(S.logmap(x, -x), torch.zeros_like(x))  # documented: zero at the exact antipode
    assert torch.equal(S.logmap0_spatial(-S.origin(3, dtype=dtype)), torch.zeros(2, dtype=dtype))
    assert bool(torch.isfinite(S.dist(x, -x)).all())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_logmap_at_distance_pi_minus_1e6(dtype):
    S = Sphere(2)
    x = torch.tensor([0.0, 0.6, 0.8], dtype=torch.float64)
    d = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    v = (math.pi - 1e-6) * d
    y = S.expmap(x, v).to(dtype)
    w = S.logmap(x.to(dtype), y)
    # the length is well conditioned; the direction is set by |y + x| ≈ 1e-6, stored to EPS
    assert abs(float(w.double().norm()) - (math.pi - 1e-6)) <= C * EPS[dtype]
    assert float((w.double() - v).norm()) <= C * EPS[dtype] / 1e-6
    assert float((S.expmap(x.to(dtype), w) - y).double().norm()) <= C * EPS[dtype]
    assert abs(float(S.dist(x.to(dtype), y)) - (math.pi - 1e-6)) <= C * EPS[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_tiny_steps(dtype):
    S = Sphere(3)
    x = S.projx(torch.tensor([0.3, -0.2, 0.9, 0.1], dtype=dtype))
    for step in (1e-3, 1e-6, 1e-9, 1e-20):
        u = S.proju(x, torch.tensor([1.0, 1.0, 0.0, -1.0], dtype=dtype))
        u = step * u / u.norm()
        y = S.expmap(x, u)
        assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(S.logmap(x, y)).all())
        assert float((S.logmap(x, y) - u).norm()) <= C * EPS[dtype]  # absolute floor of a stored point
        assert abs(float(S.dist(x, y)) - step) <= C * EPS[dtype]
    assert torch.equal(S.logmap(x, x), torch.zeros_like(x))
    assert float(S.dist(x, x)) == 0.0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("r", RADII)
def test_origin_coordinates(r, dtype):
    S = Sphere(2, radius=r)
    gen = torch.Generator().manual_seed(6)
    d = torch.randn(len(FRACS), 2, generator=gen, dtype=torch.float64)
    v = d / d.norm(dim=-1, keepdim=True) * (FRACS * math.pi * r).unsqueeze(-1)
    x = S.expmap0_spatial(v.to(dtype))
    assert bool(S.check_point_on_manifold(x))
    o = S.origin(3, dtype=torch.float64)
    assert torch.allclose(x.double(), S.expmap(o.expand_as(x), torch.cat([torch.zeros_like(v[:, :1]), v], -1)),
                          atol=C * EPS[dtype] * r)
    w = S.logmap0_spatial(x)
    norms = v.norm(dim=-1)
    assert bool(((w.double() - v).norm(dim=-1) / norms <= _tol(dtype, r, norms)).all())
    assert torch.allclose(S.dist0(x).double(), norms, atol=C * EPS[dtype] * r)
    assert torch.allclose(S.logmap0(x)[..., 1:].double(), S.logmap0_spatial(x).double(), atol=C * EPS[dtype] * r)


@pytest.mark.parametrize("r", RADII)
@pytest.mark.parametrize("n", [1, 2, 4])
def test_expmap_logdet_is_the_volume_change(n, r):
    """``(n-1)·log(r sin(|w|/r)/|w|)`` equals ``½ log det JᵀJ`` of ``w ↦ exp_o(w)`` (ambient metric), float64."""
    S = Sphere(n, radius=r)
    gen = torch.Generator().manual_seed(7)
    for frac in (1e-4, 0.3, 0.9, 0.999):
        w = torch.randn(n, generator=gen, dtype=torch.float64)
        w = w / w.norm() * frac * math.pi * r
        J = torch.autograd.functional.jacobian(S.expmap0_spatial, w)
        ref = 0.5 * torch.logdet(J.T @ J)
        assert torch.allclose(S.expmap_logdet(w.norm(), n), ref, atol=1e-9), (frac, float(ref))
        assert torch.allclose(S.expmap0_logdet(w), ref, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_translate_is_the_isometry_taking_o_to_mu(dtype):
    S = Sphere(3, radius=2.0)
    gen = torch.Generator().manual_seed(8)
    mu = S.projx(torch.randn(32, 4, generator=gen, dtype=torch.float64))
    mu = torch.where(mu[..., :1] < -1.9, -mu, mu)  # away from -o, where the rotation is undefined
    p = S.projx(torch.randn(32, 4, generator=gen, dtype=torch.float64))
    q = S.projx(torch.randn(32, 4, generator=gen, dtype=torch.float64))
    o = S.origin(32, 4, dtype=torch.float64)
    mu_d, p_d, q_d = mu.to(dtype), p.to(dtype), q.to(dtype)
    tol = C * EPS[dtype] * 2.0 * 10
    assert torch.allclose(S.translate(mu_d, o.to(dtype)).double(), mu, atol=tol)
    assert torch.allclose(S.dist(S.translate(mu_d, p_d), S.translate(mu_d, q_d)).double(), S.dist(p, q), atol=tol)
    assert torch.allclose(S.translate(mu_d, S.translate(mu_d, p_d), inverse=True).double(), p, atol=tol)
    # translate(μ, exp_o(v)) = exp_μ(PT_{o→μ} v)
    v = torch.randn(32, 3, generator=gen, dtype=torch.float64)
    v0 = torch.cat([torch.zeros_like(v[:, :1]), v], -1)
    assert torch.allclose(S.translate(mu, S.expmap0_spatial(v)), S.expmap(mu, S.transp(o, mu, v0)), atol=1e-10)


def test_uniform_and_random():
    S = Sphere(2, radius=2.0)
    u = S.uniform()
    assert math.isclose(-float(u.log_prob(S.origin(3, dtype=torch.float64))), math.log(4 * math.pi * 4), rel_tol=1e-12)
    assert math.isclose(sphere_log_volume(1, 1.0), math.log(2 * math.pi))
    torch.manual_seed(0)
    x = u.sample((20000,))
    assert bool(S.check_point_on_manifold(x))
    assert float(x.mean(0).norm()) < 5 * 2.0 / math.sqrt(20000)  # mean 0, each coordinate has std r/sqrt(3)


def test_validation_errors_are_one_line():
    S = Sphere(2, validate=True)
    with pytest.raises(ValueError, match=r"not on the sphere of radius 1: .* project it with Sphere.projx") as e:
        S.logmap0_spatial(torch.tensor([1.0, 1.0, 0.0]))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="dimension 2 and uses 3 ambient coordinates"):
        S.dist(torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="not tangent to the sphere at x.*Sphere.proju"):
        S.expmap(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="radius must be a finite positive"):
        Sphere(2, radius=-1.0)
    assert Sphere(2).same_as(Sphere(2)) and not Sphere(2).same_as(Sphere(2, radius=2.0))


def test_agrees_with_geoopt_sphere():
    """Unit radius, float64, points and steps away from the antipode (where geoopt's arccos is still accurate)."""
    S, G = Sphere(3), geoopt.Sphere()
    gen = torch.Generator().manual_seed(9)
    x = S.projx(torch.randn(64, 4, generator=gen, dtype=torch.float64))
    y = S.projx(x + 0.8 * torch.randn(64, 4, generator=gen, dtype=torch.float64))
    u = S.proju(x, torch.randn(64, 4, generator=gen, dtype=torch.float64))
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-7)  # noqa: E731
    close(S.dist(x, y), G.dist(x, y))
    close(S.expmap(x, u), G.expmap(x, u))
    close(S.logmap(x, y), G.logmap(x, y))
    close(S.projx(2 * x), G.projx(2 * x))
    close(S.proju(x, 3 * u + x), G.proju(x, 3 * u + x))
    close(S.egrad2rgrad(x, u + x), G.egrad2rgrad(x, u + x))
    close(S.inner(x, u, u), G.inner(x, u, u))
    # transport: ours is parallel transport (keeps the norm); geoopt's proju(y, v) is its projection
    close(G.transp(x, y, u), S.proju(y, u))
    close(S.norm(S.transp(x, y, u)), S.norm(u))
