"""The wrapped normal (MATH.md §3): normalised, consistent, right moments, shapes, validation."""

from __future__ import annotations

import math

import pytest
import torch

from manifolds import Euclidean, Lorentz, WrappedNormal
from manifolds import lorentz_math as lm

KS = (0.25, 1.0, 4.0)
SCALE = (0.4, 0.9)


def _loc(M, dist, n=2, dtype=torch.float64):
    """A point at the given distance from the origin (in a fixed oblique direction)."""
    v = torch.tensor([0.6, -0.8] + [0.0] * (n - 2), dtype=dtype) * dist
    return M.expmap0_spatial(v)


def _polar_mass(M, d, sk, r_max, n_r=800, n_t=256):
    """∫ p(z) dA by the midpoint rule in geodesic polar coordinates around loc:
    z = loc ⊕ exp_o(r (cos t, sin t)), dA = sqrt(k) sinh(r/sqrt(k)) dr dt (r dr dt on ℝ²)."""
    dr, dt = r_max / n_r, 2 * math.pi / n_t
    r = (torch.arange(n_r, dtype=torch.float64) + 0.5) * dr
    t = (torch.arange(n_t, dtype=torch.float64) + 0.5) * dt
    R, T = torch.meshgrid(r, t, indexing="ij")
    v = torch.stack([R * torch.cos(T), R * torch.sin(T)], dim=-1)
    z = M.translate(d.loc, M.expmap0_spatial(v))
    area = sk * torch.sinh(R / sk) if M.name == "Lorentz" else R
    return float((d.log_prob(z).exp() * area).sum() * dr * dt)


@pytest.mark.parametrize("where", ["origin", "far"])
@pytest.mark.parametrize("k", KS)
def test_integrates_to_one_on_h2(k, where):
    M, sk = Lorentz(k), math.sqrt(k)
    loc = M.origin(3, dtype=torch.float64) if where == "origin" else _loc(M, 3.0)
    assert float(M.dist0(loc)) == pytest.approx(0.0 if where == "origin" else 3.0, abs=1e-9)
    d = WrappedNormal(loc, torch.tensor(SCALE, dtype=torch.float64), M)
    # the Gaussian in tangent coordinates has mass < 1e-15 beyond 9 sigma
    assert _polar_mass(M, d, sk, 9 * max(SCALE)) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("where", ["origin", "far"])
def test_integrates_to_one_on_r2(where):
    M = Euclidean()
    loc = torch.zeros(2, dtype=torch.float64) if where == "origin" else torch.tensor([2.0, -1.0], dtype=torch.float64)
    d = WrappedNormal(loc, torch.tensor(SCALE, dtype=torch.float64), M)
    assert _polar_mass(M, d, 1.0, 9 * max(SCALE)) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("k", KS)
def test_log_prob_of_rsample_matches(k, dtype):
    M = Lorentz(k)
    loc = _loc(M, 2.0 * math.sqrt(k), n=3, dtype=dtype)
    d = WrappedNormal(loc, torch.tensor([0.3, 0.7, 1.2], dtype=dtype), M)
    torch.manual_seed(0)
    z, lp = d.rsample_and_log_prob((500,))
    assert z.dtype == dtype and lp.shape == (500,)
    assert bool(M.check_point_on_manifold(z))
    # float32: z at distance ≈ 2 + 3·1.2 from o is rounded to EPS·||ẑ|| ≈ 6e-8·140 in Riemannian distance, and
    # |d log p / dz| <= |v|/σ² + 2 ≈ 4/0.09: ≈ 4e-4 (float64: ≈ 1e-12)
    tol = 1e-3 if dtype == torch.float32 else 1e-9
    assert torch.allclose(d.log_prob(z), lp, atol=tol, rtol=0)
    z2 = d.rsample((7,))
    assert z2.shape == (7, 4) and z2.requires_grad is False


@pytest.mark.parametrize("k", KS)
def test_samples_have_requested_moments_at_origin(k):
    """Transported back to the origin, samples are N(0, diag σ²). Fixed seed, N = 20000; 5-sigma bounds:
    mean σ_i/sqrt(N), variance σ_i²·sqrt(2/N), covariance σ_iσ_j/sqrt(N)."""
    M, N = Lorentz(k), 20000
    scale = torch.tensor([0.3, 0.7, 1.2], dtype=torch.float64)
    loc = _loc(M, 2.5, n=3)
    d = WrappedNormal(loc, scale, M)
    torch.manual_seed(1234)
    z = d.sample((N,))
    for v in (M.logmap0_spatial(M.translate(loc, z, inverse=True)),
              M.transp0back(loc.expand_as(z), M.logmap(loc.expand_as(z), z))[..., 1:]):
        mean = v.mean(0)
        cov = torch.cov(v.T)
        assert bool((mean.abs() <= 5 * scale / math.sqrt(N)).all()), mean
        assert bool(((cov.diagonal() - scale**2).abs() <= 5 * scale**2 * math.sqrt(2 / N)).all()), cov
        off = cov - torch.diag(cov.diagonal())
        assert bool((off.abs() <= 5 * torch.outer(scale, scale) / math.sqrt(N)).all()), cov
    # the samples are spread around loc (not around the origin): their Fréchet mean direction
    assert float(M.dist(z, loc.expand_as(z)).mean()) < float(M.dist0(z).mean())


def test_batch_event_shapes_and_broadcasting():
    M, n = Lorentz(2.0), 3
    loc = M.expmap0_spatial(torch.randn(3, n, dtype=torch.float64))  # (3, n+1)
    d = WrappedNormal(loc, torch.full((n,), 0.5, dtype=torch.float64), M)
    assert d.batch_shape == (3,) and d.event_shape == (n + 1,)
    z = d.sample((5,))
    assert z.shape == (5, 3, n + 1)
    assert d.log_prob(z).shape == (5, 3)
    z1, lp1 = d.rsample_and_log_prob()
    assert z1.shape == (3, n + 1) and lp1.shape == (3,)
    # one loc, a batch of scales
    d2 = WrappedNormal(M.origin(n + 1, dtype=torch.float64), torch.tensor([[0.5] * n, [1.0] * n],
                       dtype=torch.float64), M)
    assert d2.batch_shape == (2,)
    assert d2.log_prob(torch.zeros(4, 1, n + 1, dtype=torch.float64) + M.origin(n + 1, dtype=torch.float64)).shape == (4, 2)
    # log_prob of one point broadcasts over the batch
    assert d.log_prob(z[0, 0]).shape == (3,)
    assert d.expand((2, 3)).batch_shape == (2, 3)
    with pytest.raises(ValueError, match="scale"):
        WrappedNormal(loc, torch.ones(n + 1, dtype=torch.float64), M)


def test_validate_args_rejects_off_manifold():
    M, n = Lorentz(1.0), 2
    loc = M.expmap0_spatial(torch.tensor([0.5, 0.5], dtype=torch.float64))
    bad_loc = loc.clone()
    bad_loc[0] += 1.0
    with pytest.raises(ValueError, match="not on the Lorentz manifold"):
        WrappedNormal(bad_loc, torch.ones(n, dtype=torch.float64), M, validate_args=True)
    d = WrappedNormal(loc, torch.ones(n, dtype=torch.float64), M, validate_args=True)
    z = d.sample((4,))
    d.log_prob(z)  # fine
    off = z.clone()
    off[..., 0] *= 2
    with pytest.raises(ValueError):
        d.log_prob(off)
    with pytest.raises(ValueError):
        WrappedNormal(loc, -torch.ones(n, dtype=torch.float64), M, validate_args=True)


def test_euclidean_is_the_normal():
    M = Euclidean()
    loc, scale = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.3, 1.0, 2.0])
    d = WrappedNormal(loc, scale, M)
    x = torch.randn(10, 3) * 2
    ref = torch.distributions.Normal(loc, scale).log_prob(x).sum(-1)
    assert torch.allclose(d.log_prob(x), ref, atol=1e-5)
    torch.manual_seed(0)
    z, lp = d.rsample_and_log_prob((1000,))
    assert torch.allclose(lp, torch.distributions.Normal(loc, scale).log_prob(z).sum(-1), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("where", ["origin", "near", "far"])
@pytest.mark.parametrize("k", KS)
def test_rsample_in_tangent_coordinates_is_the_same_draw(k, where, dtype):
    """``rsample_logmap0_and_log_prob`` gives ``log_o`` of the draw of ``rsample_and_log_prob`` (same seed), its
    log-density, and the same gradients for the mean and the scales (the fused boost's analytic backward pass
    against autograd through ``expmap0 → translate → logmap0``), at the origin, near it and 8·sqrt(k) away. The
    reference is the explicit path in float64."""
    M = Lorentz(k)
    dist = {"origin": 0.0, "near": 0.3, "far": 8.0}[where] * math.sqrt(k)
    mu_t = torch.tensor([[0.6, -0.8, 0.0], [0.0, 0.6, 0.8]], dtype=torch.float64) * dist
    sigma = torch.tensor([[0.3, 0.7, 1.2], [1.0, 0.5, 0.2]], dtype=torch.float64)
    weights = torch.randn(4, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))  # a test function

    def grads(w, lp, m, s):
        g_mu, g_sigma = torch.autograd.grad((weights.to(w.dtype) * w).sum() + lp.sum(), (m, s))
        return [t.detach().double() for t in (w, lp, g_mu, g_sigma)]

    m, s = mu_t.to(dtype).requires_grad_(True), sigma.to(dtype).requires_grad_(True)
    torch.manual_seed(1)
    w, lp = WrappedNormal(M.expmap0_spatial(m), s, M).rsample_logmap0_and_log_prob((4,))
    assert w.dtype == dtype and w.shape == (4, 2, 3)
    fast = grads(w, lp, m, s)
    # the reference: the same standard-normal draw (v = ε·σ), pushed explicitly in float64
    torch.manual_seed(1)
    eps = torch.randn(4, 2, 3, dtype=dtype).double()
    m, s = mu_t.clone().requires_grad_(True), sigma.clone().requires_grad_(True)
    q = WrappedNormal(M.expmap0_spatial(m), s, M)
    z = M.translate(q.loc, M.expmap0_spatial(eps * s))
    ref = grads(M.logmap0_spatial(z), q.log_prob(z), m, s)
    # float64: the explicit reference itself loses ≈ eps·cosh²(d) ≈ 5e-10 at d = 8 in ambient coordinates (and a
    # few times that in the gradients); float32: inputs and result are rounded to float32
    tol = (1e-7 if where == "far" else 1e-9) if dtype == torch.float64 else 1e-4
    for a, b in zip(fast, ref):
        assert torch.allclose(a, b, atol=tol, rtol=tol), (a - b).abs().max()


def test_rsample_in_tangent_coordinates_on_r2_is_the_sample():
    M = Euclidean()
    f64 = torch.float64
    q = WrappedNormal(torch.tensor([[2.0, -1.0]], dtype=f64), torch.tensor([0.5, 2.0], dtype=f64), M)
    torch.manual_seed(0)
    w, lp = q.rsample_logmap0_and_log_prob((3,))
    torch.manual_seed(0)
    z, lp2 = q.rsample_and_log_prob((3,))
    assert torch.equal(w, z) and torch.equal(lp, lp2)


def test_rsample_in_tangent_coordinates_at_a_fixed_origin_is_the_tangent_draw():
    """For ``μ = o`` (fixed, no batch) the tangent coordinates of the draw are the tangent draw itself, in the dtype
    of the points ``rsample_and_log_prob`` returns."""
    M = Lorentz(2.0)
    q = WrappedNormal(M.origin(3, dtype=torch.float64), torch.tensor([0.5, 2.0], dtype=torch.float64), M)
    torch.manual_seed(0)
    w, lp = q.rsample_logmap0_and_log_prob((6,))
    torch.manual_seed(0)
    z, lp2 = q.rsample_and_log_prob((6,))
    assert w.dtype == z.dtype == torch.float64
    torch.testing.assert_close(w, M.logmap0_spatial(z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lp, lp2)
