"""Distributions on the sphere, the torus, the ball and products: normalisation (quadrature in 2-D, Monte Carlo
above), closed forms, sampler moments, large concentrations in float32, and ``WrappedNormal``'s dispatch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import torch

from manifolds import (Euclidean, Lorentz, PoincareBall, PoincareWrappedNormal, Product, ProductDistribution,
                       ProductWrappedNormal, Sphere, SphereWrappedNormal, Torus, TorusWrappedNormal, VonMisesFisher,
                       WrappedNormal)
from manifolds.sphere_distributions import bessel_ratio, log_ive
from manifolds.torus_distributions import wrapped_normal_log_density

F64 = torch.float64


def _sphere_grid(count: int = 400):
    """Midpoint grid on S² in polar coordinates about (1, 0, 0) (the origin ``o``): points and area weights."""
    th = (torch.arange(count, dtype=F64) + 0.5) * math.pi / count
    ph = (torch.arange(2 * count, dtype=F64) + 0.5) * math.pi / count
    T, P = torch.meshgrid(th, ph, indexing="ij")
    x = torch.stack([torch.cos(T), torch.sin(T) * torch.cos(P), torch.sin(T) * torch.sin(P)], -1).reshape(-1, 3)
    w = (torch.sin(T) * (math.pi / count) ** 2).reshape(-1)
    return x, w


# -- von Mises-Fisher ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nu", [0.0, 0.5, 1.0, 1.5, 2.5, 7.0])
def test_log_ive_matches_scipy_and_its_derivative(nu):
    k = torch.logspace(-4, 5, 60, dtype=F64)
    ref = torch.as_tensor(np.log(scipy.special.ive(nu, k.numpy())))
    torch.testing.assert_close(log_ive(nu, k), ref, rtol=1e-10, atol=1e-12)
    kk = k[10:50:7].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: log_ive(nu, t), (kk,), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("nu", [0.5, 1.0, 2.5])
def test_bessel_ratio(nu):
    k = torch.logspace(-4, 5, 50, dtype=F64)
    ref = torch.as_tensor(scipy.special.ive(nu + 1, k.numpy()) / scipy.special.ive(nu, k.numpy()))
    torch.testing.assert_close(bessel_ratio(nu, k), ref, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("kappa", [1e-3, 0.5, 10.0, 300.0])
def test_vmf_on_s2_is_normalised_and_matches_the_closed_form(kappa):
    mu = torch.tensor([0.0, 0.6, 0.8], dtype=F64)
    d = VonMisesFisher(mu, torch.tensor(kappa, dtype=F64))
    x, w = _sphere_grid(600 if kappa > 100 else 300)
    lp = d.log_prob(x)
    closed = math.log(kappa / (2 * math.pi * -math.expm1(-2 * kappa))) + kappa * (x @ mu - 1)
    torch.testing.assert_close(lp, closed, rtol=1e-10, atol=1e-10)
    assert abs(float((lp.exp() * w).sum()) - 1) < 1e-4


@pytest.mark.parametrize("kappa", [0.5, 4.0, 40.0])
def test_vmf_on_the_circle_is_normalised(kappa):
    th = (torch.arange(4000, dtype=F64) + 0.5) * 2 * math.pi / 4000
    x = torch.stack([torch.cos(th), torch.sin(th)], -1)
    d = VonMisesFisher(torch.tensor([0.6, -0.8], dtype=F64), torch.tensor(kappa, dtype=F64))
    assert abs(float(d.log_prob(x).exp().mean() * 2 * math.pi) - 1) < 1e-10


@pytest.mark.parametrize("p", [4, 6])
def test_vmf_normalised_in_higher_dimension_monte_carlo(p):
    """E_uniform[p(x)]·vol(S^{p-1}) = 1; 200k uniform draws, tolerance 5 standard errors of the estimate."""
    S = Sphere(p - 1)
    d = VonMisesFisher(S.projx(torch.ones(p, dtype=F64)), torch.tensor(2.0, dtype=F64), S)
    torch.manual_seed(0)
    x = S.uniform(dtype=F64).sample((200_000,))
    f = d.log_prob(x).exp() * math.exp(S.log_volume())
    assert abs(float(f.mean()) - 1) < 5 * float(f.std()) / math.sqrt(len(f))


@pytest.mark.parametrize("p", [2, 3, 4, 7])
@pytest.mark.parametrize("kappa", [0.3, 5.0, 200.0])
def test_vmf_sampler_mean_resultant_length(p, kappa):
    """E[μᵀx] = A_p(κ) = I_{p/2}(κ)/I_{p/2-1}(κ), within 5 standard errors over 40k draws; log_prob of the draw."""
    S = Sphere(p - 1, radius=2.0)
    mu = S.projx(torch.arange(1.0, p + 1, dtype=F64))
    d = VonMisesFisher(mu, torch.tensor(kappa, dtype=F64), S)
    torch.manual_seed(1)
    x, lp = d.rsample_and_log_prob((40_000,))
    assert bool(S.check_point_on_manifold(x))
    c = (x @ mu) / 4.0
    ref = scipy.special.ive(p / 2, kappa) / scipy.special.ive(p / 2 - 1, kappa)
    assert abs(float(c.mean()) - ref) < 5 * float(c.std()) / math.sqrt(len(c)) + 1e-12
    torch.testing.assert_close(float(d.mean_resultant_length), ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(lp, d.log_prob(x), rtol=1e-9, atol=1e-9)
    # the direction orthogonal to μ is uniform: its mean vanishes
    perp = x / 2 - c.unsqueeze(-1) * mu / 2
    assert float(perp.mean(0).norm()) < 5 / math.sqrt(len(c))
    # entropy = -E log p
    assert abs(float(d.entropy()) + float(lp.mean())) < 5 * float(lp.std()) / math.sqrt(len(lp))


@pytest.mark.parametrize("kappa", [1e4, 1e5, 1e7])
def test_vmf_large_concentration_in_float32(kappa):
    mu = Sphere(2).projx(torch.tensor([1.0, -2.0, 0.5]))
    d = VonMisesFisher(mu, torch.tensor(kappa))
    torch.manual_seed(2)
    x, lp = d.rsample_and_log_prob((20_000,))
    assert bool(torch.isfinite(x).all()) and bool(torch.isfinite(lp).all())
    t = 1 - (x.double() @ mu.double())  # ~ Exponential(κ) on S²: mean 1/κ
    assert abs(float(t.mean()) * kappa - 1) < 0.05 + 4 * 2**-24 * kappa
    lp64 = VonMisesFisher(mu.double(), torch.tensor(kappa, dtype=F64)).log_prob(x.double())
    # float32 arithmetic on |x - μ| ≈ sqrt(2/κ): an error of ~κ·EPS·|x - μ| = EPS·sqrt(2κ) per rounding
    torch.testing.assert_close(lp.double(), lp64, rtol=1e-5, atol=1e-4 + 32 * 2**-24 * math.sqrt(2 * kappa))
    # Wood's sampler in higher dimension at large κ (float32 result)
    d5 = VonMisesFisher(Sphere(4).projx(torch.ones(5)), torch.tensor(kappa))
    x5 = d5.sample((2000,))
    t5 = 1 - x5.double() @ d5.loc.double()  # mean ≈ (p-1)/(2κ)
    assert bool(torch.isfinite(x5).all()) and abs(float(t5.mean()) * 2 * kappa / 4 - 1) < 0.1 + 8 * 2**-24 * kappa


def test_vmf_rsample_gradients():
    mu = torch.tensor([0.0, 0.0, 1.0], requires_grad=True)
    kappa = torch.tensor(3.0, requires_grad=True)
    x = VonMisesFisher(mu / mu.norm(), kappa).rsample((64,))
    x.sum().backward()
    assert mu.grad is not None and kappa.grad is not None and bool(torch.isfinite(kappa.grad))
    # on S³ (Wood's sampler) too: the implicit reparameterisation gradient (tests/manifolds/test_vmf_implicit.py)
    k4 = torch.tensor(3.0, requires_grad=True)
    VonMisesFisher(torch.tensor([1.0, 0.0, 0.0, 0.0]), k4).rsample((64,)).sum().backward()
    assert k4.grad is not None and bool(torch.isfinite(k4.grad)) and float(k4.grad) != 0


# -- wrapped normals -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.05, 0.7, 1.99, 2.01, 3.0, 8.0])
def test_torus_wrapped_normal_is_exact_and_normalised(sigma):
    delta = torch.linspace(-math.pi, math.pi, 4001, dtype=F64)[:-1]
    s = torch.tensor(sigma, dtype=F64)
    m = torch.arange(-60, 61, dtype=F64)
    brute = torch.logsumexp(-0.5 * ((delta.unsqueeze(-1) + 2 * math.pi * m) / s) ** 2, -1) - math.log(
        sigma * math.sqrt(2 * math.pi))
    torch.testing.assert_close(wrapped_normal_log_density(delta, s), brute, rtol=1e-13, atol=1e-13)
    # T²: quadrature on the grid
    T = Torus(2)
    d = WrappedNormal(torch.tensor([3.0, -1.0], dtype=F64), torch.tensor([sigma, 0.5], dtype=F64), T)
    assert isinstance(d, TorusWrappedNormal)
    g = torch.linspace(-math.pi, math.pi, 401, dtype=F64)[:-1]
    X = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    assert abs(float(d.log_prob(X).exp().mean()) * (2 * math.pi) ** 2 - 1) < 1e-10
    x, lp = d.rsample_and_log_prob((5,))
    assert bool(((x >= -math.pi) & (x < math.pi)).all())
    torch.testing.assert_close(d.log_prob(x), lp)


@pytest.mark.parametrize("scale", [(0.3, 0.3), (0.8, 0.2), (1.5, 1.0)])
def test_sphere_wrapped_normal_on_s2_is_normalised(scale):
    S = Sphere(2)
    mu = S.expmap0_spatial(torch.tensor([0.0, 0.0], dtype=F64))  # the grid's pole, where the density is singular
    d = WrappedNormal(mu, torch.tensor(scale, dtype=F64), S)
    assert isinstance(d, SphereWrappedNormal)
    x, w = _sphere_grid(400)
    p = d.log_prob(x).exp()
    assert abs(float((p * w).sum()) - 1) < 2e-4
    # samples: log_prob agrees, and they are distributed as the density says (a moment: E[x₀])
    torch.manual_seed(3)
    z, lp = d.rsample_and_log_prob((40_000,))
    torch.testing.assert_close(d.log_prob(z), lp)
    m0 = float((p * w * x[:, 0]).sum())
    assert abs(float(z[:, 0].mean()) - m0) < 5 * float(z[:, 0].std()) / math.sqrt(len(z))


def test_sphere_wrapped_normal_on_the_circle_is_the_torus_one():
    S, T = Sphere(1), Torus(1)
    a = torch.tensor(0.4, dtype=F64)
    mu = torch.stack([torch.cos(a), torch.sin(a)])
    for sigma in (0.3, 1.2, 2.0):
        ds = WrappedNormal(mu, torch.tensor([sigma], dtype=F64), S)
        dt = WrappedNormal(a.reshape(1), torch.tensor([sigma], dtype=F64), T)
        b = torch.linspace(-math.pi, math.pi, 101, dtype=F64)[:-1]
        x = torch.stack([torch.cos(b), torch.sin(b)], -1)
        torch.testing.assert_close(ds.log_prob(x), dt.log_prob(b.unsqueeze(-1)), rtol=1e-10, atol=1e-10)


def test_sphere_wrapped_normal_monte_carlo_normalisation_in_s3():
    S = Sphere(3)
    d = WrappedNormal(S.expmap0_spatial(torch.tensor([0.3, -0.2, 1.0], dtype=F64)),
                      torch.tensor([0.6, 0.9, 0.4], dtype=F64), S)
    torch.manual_seed(4)
    x = S.uniform(dtype=F64).sample((200_000,))
    f = d.log_prob(x).exp() * math.exp(S.log_volume())
    assert abs(float(f.mean()) - 1) < 5 * float(f.std()) / math.sqrt(len(f))


def test_ball_wrapped_normal_is_the_hyperboloid_one_and_normalised():
    B = PoincareBall(2.0)
    mu = B.expmap0_spatial(torch.tensor([0.8, -0.3], dtype=F64))
    d = WrappedNormal(mu, torch.tensor([0.7, 1.1], dtype=F64), B)
    assert isinstance(d, PoincareWrappedNormal)
    ref = WrappedNormal(B.to_lorentz(mu), torch.tensor([0.7, 1.1], dtype=F64), B.lorentz)
    p = B.random(100, 2, dtype=F64)
    torch.testing.assert_close(d.log_prob(p), ref.log_prob(B.to_lorentz(p)))
    # quadrature on the 2-D ball in polar coordinates: ∫ p(x) λ_x² dx = 1 (density w.r.t. the Riemannian volume)
    n_r, n_a = 1500, 400
    rho = (torch.arange(n_r, dtype=F64) + 0.5) / n_r * math.sqrt(2.0) * math.tanh(12 / (2 * math.sqrt(2.0)))
    ang = (torch.arange(n_a, dtype=F64) + 0.5) / n_a * 2 * math.pi
    R, A = torch.meshgrid(rho, ang, indexing="ij")
    X = torch.stack([R * torch.cos(A), R * torch.sin(A)], -1).reshape(-1, 2)
    lam = B.lambda_x(X)
    total = (d.log_prob(X).exp() * lam**2 * R.reshape(-1)).sum() * (rho[1] - rho[0]) * (ang[1] - ang[0])
    assert abs(float(total) - 1) < 1e-3
    z, lp = d.rsample_and_log_prob((7,))
    torch.testing.assert_close(d.log_prob(z), lp, rtol=1e-8, atol=1e-8)


def test_product_distribution_log_densities_add_and_normalise():
    M = Product(Torus(1), Sphere(1))
    loc = torch.tensor([1.0, 0.6, 0.8], dtype=F64)
    d = WrappedNormal(loc, torch.tensor([0.5, 0.9], dtype=F64), M)
    assert isinstance(d, ProductWrappedNormal)
    g = (torch.arange(300, dtype=F64) + 0.5) / 300 * 2 * math.pi - math.pi
    A, Bb = torch.meshgrid(g, g, indexing="ij")
    X = torch.stack([A, torch.cos(Bb), torch.sin(Bb)], -1).reshape(-1, 3)
    assert abs(float(d.log_prob(X).exp().mean()) * (2 * math.pi) ** 2 - 1) < 1e-8
    parts = [WrappedNormal(loc[:1], torch.tensor([0.5], dtype=F64), M.factors[0]),
             WrappedNormal(loc[1:], torch.tensor([0.9], dtype=F64), M.factors[1])]
    torch.testing.assert_close(d.log_prob(X), parts[0].log_prob(X[:, :1]) + parts[1].log_prob(X[:, 1:]))
    z, lp = d.rsample_and_log_prob((6,))
    torch.testing.assert_close(d.log_prob(z), lp)
    # mixed: hyperboloid × sphere, and the uniform of a compact product
    H = Product(Lorentz(dim=2), Sphere(2), Euclidean(dim=1))
    dh = WrappedNormal(H.origin(6, dtype=F64), torch.full((5,), 0.5, dtype=F64), H)
    z, lp = dh.rsample_and_log_prob((4,))
    torch.testing.assert_close(dh.log_prob(z), lp)
    u = Product(Sphere(2), Torus(2)).uniform(dtype=F64)
    assert isinstance(u, ProductDistribution)
    torch.testing.assert_close(u.log_prob(u.sample((3,))), torch.full((3,), -math.log(4 * math.pi)
                                                                       - 2 * math.log(2 * math.pi), dtype=F64))
    with pytest.raises(ValueError, match="not compact"):
        H.uniform()


def test_wrapped_normal_keeps_its_fast_paths_and_at_origin_works_everywhere():
    L = Lorentz(1.0)
    d = WrappedNormal(L.origin(3), torch.ones(2), L)
    assert type(d) is WrappedNormal and type(d.expand((4,))) is WrappedNormal
    assert WrappedNormal.at_origin(torch.ones(2), L)._at_origin
    for M in (Sphere(2), Torus(2), PoincareBall(dim=2), Product(Sphere(1), Lorentz(dim=1))):
        q = WrappedNormal.at_origin(torch.full((2,), 0.5), M)
        w, lp = q.rsample_logmap0_and_log_prob((5,))
        torch.testing.assert_close(q.log_prob_logmap0(w), lp, rtol=1e-5, atol=1e-5)


def test_parameter_validation():
    with pytest.raises(ValueError, match="loc: angle 4 at index"):
        WrappedNormal(torch.tensor([4.0, 0.0]), torch.ones(2), Torus(2), validate_args=True)
    with pytest.raises(ValueError, match="loc: not on the sphere"):
        WrappedNormal(torch.tensor([2.0, 0.0, 0.0]), torch.ones(2), Sphere(2), validate_args=True)
    with pytest.raises(ValueError, match="scale must have the manifold's intrinsic dimension n=2"):
        WrappedNormal(torch.tensor([1.0, 0.0, 0.0]), torch.ones(3), Sphere(2))
    with pytest.raises(ValueError, match="concentration must be positive"):
        VonMisesFisher(torch.tensor([1.0, 0.0, 0.0]), torch.tensor(-1.0), validate_args=True)


@pytest.mark.parametrize("p", [3, 5])
def test_kl_vmf_to_uniform_is_the_expected_log_ratio(p):
    S = Sphere(p - 1)
    q = VonMisesFisher(S.projx(torch.ones(p, dtype=F64)), torch.tensor(6.0, dtype=F64), S)
    u = S.uniform(dtype=F64)
    torch.manual_seed(5)
    x = q.sample((100_000,))
    ratio = q.log_prob(x) - u.log_prob(x)
    kl = torch.distributions.kl_divergence(q, u)
    assert abs(float(kl) - float(ratio.mean())) < 5 * float(ratio.std()) / math.sqrt(len(ratio))
