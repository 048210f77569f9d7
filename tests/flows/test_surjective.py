"""SurVAE surjections (``abs``, ``sort``): their likelihoods are exact, so a Flow through them is a normalised density.

``log p(y) = log p_Z(g(y)) - log |fibre|`` holds only for a base on the canonical domain (the positive orthant
for ``abs``, sorted vectors for ``sort``), so each test uses such a base: Gamma coordinates (abs), a normal
minimum plus Gamma gaps (sort), or :class:`flows.FoldedDistribution` of a normal. The quadratures are
Gauss–Legendre panels whose edges sit on the kinks of the density where possible (the axes; in polar
coordinates also the diagonals, at angles kπ/4); the Cartesian sort test has its C¹ kink on the diagonal inside
the diagonal panels. Measured errors are ≤ 6e-7 (2-D sort; 1e-7 for the 1-D Gamma(2.5) base, which vanishes like
z^1.5), the tolerance is 1e-5, and a wrong constant (a missing log 2 per coordinate, a missing log 2!)
changes the integral by a factor of 2 or more.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Distribution, Gamma, Independent, Normal

import flows
from flows import AbsSurjection, Flow, FoldedDistribution, SortSurjection
from manifolds import Euclidean, Lorentz
from manifolds import lorentz_math as lm

F64 = torch.float64
QUAD_TOL = 1e-5


def gauss_legendre(edges, order: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of Gauss–Legendre panels between consecutive ``edges``."""
    x, w = np.polynomial.legendre.leggauss(order)
    x, w = torch.tensor(x, dtype=F64), torch.tensor(w, dtype=F64)
    edges = torch.as_tensor(edges, dtype=F64)
    lo, hi = edges[:-1, None], edges[1:, None]
    return ((lo + hi) / 2 + (hi - lo) / 2 * x).reshape(-1), ((hi - lo) / 2 * w).reshape(-1)


def symmetric_edges(limit: float, panels_per_side: int) -> torch.Tensor:
    return torch.linspace(-limit, limit, 2 * panels_per_side + 1, dtype=F64)


def integrate_2d(log_density, limit: float = 30.0, panels_per_side: int = 30) -> float:
    """∫_{[-L, L]²} exp(log_density(y)) dy; panel edges on both axes and (square panels) on the diagonal."""
    x, w = gauss_legendre(symmetric_edges(limit, panels_per_side))
    xx, yy = torch.meshgrid(x, x, indexing="ij")
    with torch.no_grad():
        dens = log_density(torch.stack([xx, yy], -1).reshape(-1, 2)).exp().reshape(xx.shape)
    return float((dens * w[:, None] * w[None, :]).sum())


def orthant_base(conc, rate) -> Distribution:
    """Independent Gamma coordinates: a density on the positive orthant, vanishing (like z^{c-1}) at its faces."""
    return Independent(Gamma(torch.tensor(conc, dtype=F64), torch.tensor(rate, dtype=F64)), 1)


class SortedBase(Distribution):
    """A density on sorted pairs ``z₁ ≤ z₂``: ``z₁ ~ N(m, 1)``, ``z₂ - z₁ ~ Gamma(3, 2)`` (vanishing quadratically
    at the diagonal, so the symmetrised density is C¹ there)."""

    arg_constraints: dict = {}

    def __init__(self, m: float = 0.4) -> None:
        self.first, self.gap = Normal(torch.tensor(m, dtype=F64), 1.0), Gamma(torch.tensor(3.0, dtype=F64), 2.0)
        super().__init__(torch.Size(), torch.Size([2]), validate_args=False)

    def log_prob(self, z):
        gap = z[..., 1] - z[..., 0]
        inside = gap > 0
        lp = self.first.log_prob(z[..., 0]) + Gamma(3.0, 2.0, validate_args=False).log_prob(gap.clamp_min(1e-300))
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))

    def rsample(self, sample_shape=torch.Size()):
        a = self.first.rsample(sample_shape)
        return torch.stack([a, a + self.gap.rsample(sample_shape)], -1)


class TangentPushforward(Distribution):
    """``exp_o(W)``, ``W ~ base`` on ℝⁿ: ``log p(exp_o w) = log p_base(w) - (n-1)ℓ(‖w‖)`` (MATH.md §2)."""

    arg_constraints: dict = {}

    def __init__(self, base: Distribution, M, n: int) -> None:
        self.base, self.M, self.n = base, M, n
        super().__init__(torch.Size(), torch.Size([n + 1]), validate_args=False)

    def log_prob(self, z):
        w = self.M.logmap0_spatial(z)
        return self.base.log_prob(w) - self.M.expmap_logdet(torch.linalg.vector_norm(w, dim=-1), self.n)

    def rsample(self, sample_shape=torch.Size()):
        return self.M.expmap0_spatial(self.base.rsample(sample_shape))


# ---------------------------------------------------------------------------------------------------------
# ℝ¹ and ℝ²
# ---------------------------------------------------------------------------------------------------------


def test_abs_density_integrates_to_one_in_1d():
    base = orthant_base([2.5], [1.5])
    q = Flow(base, AbsSurjection(1))
    x, w = gauss_legendre(symmetric_edges(40.0, 20))
    with torch.no_grad():
        log_q = q.log_prob(x[:, None])
    assert abs(float((log_q.exp() * w).sum()) - 1.0) < QUAD_TOL
    # the density is the base's, halved and mirrored
    torch.testing.assert_close(log_q, base.log_prob(x.abs()[:, None]) - math.log(2.0), atol=1e-12, rtol=0)


def test_abs_density_integrates_to_one_in_2d():
    q = Flow(orthant_base([2.0, 3.5], [1.5, 1.0]), AbsSurjection(2))
    assert abs(integrate_2d(q.log_prob) - 1.0) < QUAD_TOL


def test_sort_density_integrates_to_one_in_2d():
    base = SortedBase()
    q = Flow(base, SortSurjection(2))
    assert abs(integrate_2d(q.log_prob) - 1.0) < QUAD_TOL
    y = torch.tensor([[1.0, -0.5], [-0.5, 1.0]], dtype=F64)
    torch.testing.assert_close(q.log_prob(y), base.log_prob(y.sort(-1).values) - math.log(2.0))


def test_sort_in_1d_is_the_identity():
    f = SortSurjection(1)
    x = torch.randn(5, 1, dtype=F64)
    for y, ladj in (f(x), f.inverse(x)):
        assert torch.equal(y, x) and torch.equal(ladj, torch.zeros(5, dtype=F64))


@pytest.mark.parametrize("cls", [AbsSurjection, SortSurjection])
def test_folded_normal_base_gives_the_symmetrised_density(cls):
    """Flow(Fold(N), g) = (1/|G|) Σ_h N(h·y): normalised, and equal to the explicit symmetrisation."""
    g = cls(2)
    normal = Independent(Normal(torch.tensor([0.7, -0.3], dtype=F64), torch.tensor([0.6, 1.3], dtype=F64)), 1)
    q = Flow(FoldedDistribution(normal, g), g)
    assert abs(integrate_2d(q.log_prob) - 1.0) < QUAD_TOL
    y = torch.randn(16, 2, dtype=F64) * 2
    if cls is AbsSurjection:
        group = [torch.tensor(s, dtype=F64) for s in ([1, 1], [1, -1], [-1, 1], [-1, -1])]
        images = [y * s for s in group]
    else:
        images = [y, y.flip(-1)]
    target = torch.stack([normal.log_prob(im) for im in images]).exp().mean(0)
    torch.testing.assert_close(q.log_prob(y).exp(), target, atol=1e-14, rtol=1e-12)


def test_surjection_after_a_bijection_stays_normalised(fh):
    """base (orthant) → abs → affine coupling → data: the density is no longer symmetric and still integrates to 1
    (the kinks are now curves inside the panels; they are C¹ for these Gamma(3) bases, measured error 4e-8)."""
    c = fh.randomize_(flows.AffineCoupling(2, hidden=8).double(), gain=0.8)
    q = Flow(orthant_base([3.0, 3.0], [2.0, 1.5]), flows.Compose([AbsSurjection(2), c]))
    assert abs(integrate_2d(q.log_prob, limit=35.0, panels_per_side=20) - 1.0) < QUAD_TOL
    y = torch.tensor([[0.8, 0.3]], dtype=F64)
    assert not torch.allclose(q.log_prob(y), q.log_prob(-y))


@pytest.mark.parametrize("cls,base", [(AbsSurjection, lambda: orthant_base([2.0, 3.0, 1.5], [1.0, 2.0, 0.5])),
                                      (SortSurjection, None)], ids=["abs", "sort"])
def test_sampling_and_scoring_agree_and_draws_are_uniform_over_the_fibre(cls, base):
    g = cls(3)
    if base is None:
        base = FoldedDistribution(Independent(Normal(torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)), 1), g)
    else:
        base = base()
    q = Flow(base, g)
    torch.manual_seed(3)
    y, log_q = q.rsample_and_log_prob((6000,))
    torch.testing.assert_close(q.log_prob(y), log_q, atol=1e-12, rtol=0)
    z = g.inverse(y)[0]
    # each of the |G| pre-images is drawn with probability 1/|G|: every cell count within 5 binomial sd
    if cls is AbsSurjection:
        cell = ((y > 0).long() * torch.tensor([1, 2, 4])).sum(-1)
        size = 8
    else:
        cell = torch.tensor([hash(tuple(r)) for r in y.argsort(-1).tolist()])
        cell = torch.unique(cell, return_inverse=True)[1]
        size = 6
    counts = torch.bincount(cell, minlength=size).double()
    p = 1.0 / size
    assert counts.numel() == size
    assert float((counts - 6000 * p).abs().max()) < 5 * math.sqrt(6000 * p * (1 - p)), counts
    # and the inference map undoes the draw: g(forward(z)) = z on the canonical domain
    torch.testing.assert_close(g.inverse(g(z)[0])[0], z, atol=0, rtol=0)


@pytest.mark.parametrize("cls", [AbsSurjection, SortSurjection])
def test_gradients_reach_the_base_through_the_surjection(cls):
    loc = torch.tensor([0.5, -0.2], dtype=F64, requires_grad=True)
    g = cls(2)
    q = Flow(FoldedDistribution(Independent(Normal(loc, torch.ones(2, dtype=F64)), 1), g), g)
    q.log_prob(torch.randn(32, 2, dtype=F64)).sum().backward()
    assert loc.grad is not None and torch.isfinite(loc.grad).all() and bool((loc.grad != 0).all())


def test_errors_say_what_was_wrong():
    with pytest.raises(ValueError, match="last dimension"):
        AbsSurjection(3).inverse(torch.randn(4, 2))
    with pytest.raises(ValueError, match="bijection"):
        FoldedDistribution(Independent(Normal(torch.zeros(2), 1.0), 1), flows.AffineCoupling(2))
    with pytest.raises(ValueError, match="MAX_ORBIT_SIZE"):
        SortSurjection(9).orbit(torch.randn(9))
    with pytest.raises(ValueError, match="no parameters"):
        flows.build("abs", Euclidean(), 3, context_features=2)
    with pytest.raises(ValueError):
        AbsSurjection(0)


def test_registered_with_lifted_versions():
    assert {"abs", "sort"} <= set(flows.available(Euclidean()))
    assert {"abs@lorentz", "sort@lorentz"} <= set(flows.available(Lorentz()))
    for name in ("abs", "sort", "abs@lorentz", "sort@lorentz"):
        M = Lorentz() if name.endswith("@lorentz") else Euclidean()
        f = flows.build(name, M, 3)
        assert f.bijective is False and f.inverse_tolerance is None
        assert flows.Compose([f]).bijective is False


# ---------------------------------------------------------------------------------------------------------
# lifted to H²
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["abs@lorentz", "sort@lorentz"])
def test_lifted_ladj_has_no_exp_map_terms(name):
    """‖g(w)‖ = ‖w‖ (sign flips and permutations are isometries), so the ℓ terms cancel: the lifted ladj is the
    Euclidean constant even at ‖w‖ = 10, where one ℓ term alone would be ≈ 9.3 per dimension."""
    M = Lorentz(k=torch.tensor(0.5, dtype=F64))
    f = flows.build(name, M, 3)
    w = torch.randn(64, 3, dtype=F64)
    w = w / w.norm(dim=-1, keepdim=True) * torch.linspace(1e-3, 10.0, 64, dtype=F64)[:, None]
    const = 3 * math.log(2.0) if name.startswith("abs") else math.log(6.0)
    _, ladj_inv = f.inverse(M.expmap0_spatial(w))
    y, ladj_fwd = f(M.expmap0_spatial(w.abs() if name.startswith("abs") else w.sort(-1).values))
    torch.testing.assert_close(ladj_inv, torch.full((64,), -const, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(ladj_fwd, torch.full((64,), const, dtype=F64), atol=1e-12, rtol=0)
    # the inference map acts on the tangent coordinates at the origin
    canon = w.abs() if name.startswith("abs") else w.sort(-1).values
    torch.testing.assert_close(M.logmap0_spatial(f.inverse(M.expmap0_spatial(w))[0]), canon, atol=1e-12, rtol=0)
    assert M.check_point_on_manifold(y)


def integrate_h2(log_density, k: float, r_max: float = 16.0) -> tuple[float, float]:
    """∫_{H²_k} exp(log_density) dA in geodesic polar coordinates at o (area element sqrt(k)·sinh(r/sqrt(k)) dr dθ),
    with θ panels edged at kπ/4 (the kinks of the abs and sort densities); returns (total, mass beyond 0.9 r_max)."""
    M = Lorentz(k=torch.tensor(k, dtype=F64))
    r, wr = gauss_legendre(torch.linspace(0.0, r_max, 33, dtype=F64))
    t, wt = gauss_legendre(torch.arange(9, dtype=F64) * (math.pi / 4), order=32)
    rr, tt = torch.meshgrid(r, t, indexing="ij")
    z = M.expmap0_spatial(torch.stack([rr * tt.cos(), rr * tt.sin()], -1).reshape(-1, 2))
    with torch.no_grad():
        log_q = log_density(M, z).reshape(rr.shape)
    log_area = torch.log(r) + lm.log_sinhc(r / math.sqrt(k))
    radial = ((log_q + log_area[:, None]).exp() * wt).sum(1) * wr
    return float(radial.sum()), float(radial[r > 0.9 * r_max].sum())


@pytest.mark.parametrize("k", [0.5, 2.0])
@pytest.mark.parametrize("name", ["abs@lorentz", "sort@lorentz"])
def test_lifted_density_integrates_to_one_on_H2(name, k):
    def log_density(M, z):
        f = flows.build(name, M, 2)
        if name.startswith("abs"):
            base = TangentPushforward(orthant_base([2.0, 3.0], [1.5, 2.0]), M, 2)
        else:
            base = TangentPushforward(SortedBase(), M, 2)
        return Flow(base, f).log_prob(z)

    total, tail = integrate_h2(log_density, k)
    assert abs(total - 1.0) < QUAD_TOL, total
    assert tail < 1e-6


@pytest.mark.parametrize("k", [0.5, 2.0])
@pytest.mark.parametrize("name", ["abs@lorentz", "sort@lorentz"])
def test_lifted_folded_wrapped_normal_integrates_to_one_on_H2(fh, name, k):
    """FoldedDistribution also folds a manifold base (an off-centre wrapped normal) through a lifted surjection."""

    def log_density(M, z):
        f = flows.build(name, M, 2)
        base = fh.base_distribution(M, 2, loc_coords=torch.tensor([0.6, -0.4]), scale=torch.tensor([0.7, 1.1]))
        q = Flow(FoldedDistribution(base, f), f)
        torch.manual_seed(0)
        y, log_q = q.rsample_and_log_prob((64,))
        torch.testing.assert_close(q.log_prob(y), log_q, atol=1e-10, rtol=0)
        return q.log_prob(z)

    total, tail = integrate_h2(log_density, k)
    assert abs(total - 1.0) < QUAD_TOL, total
    assert tail < 1e-6
