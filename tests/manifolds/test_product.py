"""Products of manifolds: factor-wise operations, dist² adds, log-dets add, the spec parser and its errors."""

from __future__ import annotations

import math

import pytest
import torch

from manifolds import Euclidean, Lorentz, PoincareBall, Product, Sphere, Torus, parse_product


def _mixed():
    return Product(Lorentz(dim=2), Sphere(2), Euclidean(dim=1), Torus(2), PoincareBall(2.0, dim=2))


def _coords(M, count, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(count, M.dim, generator=gen, dtype=torch.float64)


def test_declared_properties():
    M = _mixed()
    assert M.dim == 9 and M.curvature_sign is None and not M.is_compact and not M.is_flat
    assert M.injectivity_radius == math.pi and not M.coords_are_points
    assert Product(Sphere(1), Torus(2)).is_compact and Product(Torus(1), Euclidean(dim=2)).is_flat
    assert Product(Euclidean(dim=1), Euclidean(dim=2)).coords_are_points
    assert Product(Lorentz(dim=2), PoincareBall(dim=2)).curvature_sign == -1
    assert Product(Lorentz(dim=2, learnable=True), Sphere(2)).learnable_curvature
    torch.testing.assert_close(Product(Sphere(2, radius=2.0), Lorentz(4.0, dim=1)).curvature(),
                               torch.tensor([0.25, -0.25]))
    assert M.same_as(_mixed()) and not M.same_as(Product(Sphere(2)))


def test_factorwise_identities_and_adding_distances():
    M = _mixed()
    x = M.expmap0_spatial(_coords(M, 32, 0))
    y = M.expmap0_spatial(_coords(M, 32, 1))
    assert M.check_point_on_manifold(x)
    # dist² = Σ dist_i²
    d2 = sum(m.dist(a, b) ** 2 for m, a, b in zip(M.factors, M.split(x), M.split(y)))
    torch.testing.assert_close(M.dist(x, y) ** 2, d2)
    torch.testing.assert_close(M.dist(x, y), M.dist(y, x))
    # exp∘log and the norm of log is the distance (below every factor's injectivity radius)
    w = M.logmap(x, y)
    torch.testing.assert_close(M.expmap(x, w), y, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(M.norm(w, x), M.dist(x, y), rtol=1e-9, atol=1e-9)
    # transport keeps inner products and is reversible
    u = M.proju(x, torch.randn(x.shape, dtype=torch.float64))
    t = M.transp(x, y, u)
    torch.testing.assert_close(M.inner(y, t, t), M.inner(x, u, u), rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(M.transp(y, x, t), u, rtol=1e-8, atol=1e-9)
    # projx idempotent; origin forms
    torch.testing.assert_close(M.projx(M.projx(x)), M.projx(x))
    v = _coords(M, 32, 2, 0.5)
    torch.testing.assert_close(M.logmap0_spatial(M.expmap0_spatial(v)), v, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(M.dist0(M.expmap0_spatial(v)), v.norm(dim=-1), rtol=1e-9, atol=1e-9)
    mu = M.expmap0_spatial(_coords(M, 32, 3, 0.5))
    torch.testing.assert_close(M.translate(mu, M.origin(32, x.size(-1), dtype=torch.float64)), mu, rtol=1e-9,
                               atol=1e-9)
    torch.testing.assert_close(M.translate(mu, M.translate(mu, x), inverse=True), x, rtol=1e-8, atol=1e-8)


def test_log_dets_add():
    M = _mixed()
    v = _coords(M, 8, 4, 0.7)
    ref = sum(m.expmap_logdet(w.norm(dim=-1), m.dim) for m, w in zip(M.factors, M.split_coords(v)))
    torch.testing.assert_close(M.expmap0_logdet(v), ref)
    # against the autograd Jacobian of exp_o in coordinates, one sample (float64): ½ log det(Jᵀ G J) with the
    # ambient metric of each factor (Minkowski on the hyperboloid, λ² on the ball) is Σ of the factors'
    for m, w in zip(M.factors, M.split_coords(v[:1])):
        if m.curvature_sign == 1:
            J = torch.autograd.functional.jacobian(m.expmap0_spatial, w[0])
            torch.testing.assert_close(m.expmap0_logdet(w[0]), 0.5 * torch.logdet(J.T @ J))
    with pytest.raises(ValueError, match="expmap0_logdet"):
        M.expmap_logdet(v.norm(dim=-1), M.dim)


@pytest.mark.parametrize("spec, names", [
    ("h2,s2,e2", ["Lorentz", "Sphere", "Euclidean"]),
    ("lorentz:2,sphere:2", ["Lorentz", "Sphere"]),
    ("P3, t1 ,euclidean:4", ["PoincareBall", "Torus", "Euclidean"]),
])
def test_parse_product(spec, names):
    M = parse_product(spec)
    assert [m.name for m in M.factors] == names


@pytest.mark.parametrize("spec", ["", "h2;s2", "x2", "h0", "sphere", "h2,,s2", "s-1"])
def test_parse_product_errors_are_one_line(spec):
    with pytest.raises(ValueError, match="cannot parse the product spec .* write comma-separated factors") as e:
        parse_product(spec)
    assert "\n" not in str(e.value)


def test_construction_errors():
    with pytest.raises(ValueError, match=r"no fixed dimension: build it with one, e\.g\. Lorentz\(dim=2\)"):
        Product(Lorentz(), Sphere(2))
    with pytest.raises(ValueError, match="at least one factor"):
        Product()
    M = Product(Sphere(2), Torus(1), validate=True)
    with pytest.raises(ValueError, match="points have 4"):
        M.dist(torch.zeros(5), torch.zeros(5))
    with pytest.raises(ValueError, match=r"angle 4 at index \(0,\) is outside the chart .* Torus\.projx"):
        M.logmap0_spatial(torch.tensor([1.0, 0.0, 0.0, 4.0]))
    M.logmap0_spatial(M.projx(torch.tensor([1.0, 0.0, 0.0, 4.0])))  # the fix works


def test_curvature_parameter_is_the_learnable_factors():
    """A product's ``curvature_parameter`` / ``set_k`` are its one learnable factor's (what a curvature schedule and
    an optimiser reach through the interface); none without one; an error naming the factors with several."""
    H = Lorentz(k=2.0, learnable=True, dim=2)
    M = Product(Sphere(2), H)
    assert M.learnable_curvature and M.curvature_parameter is H.curvature_parameter
    M.set_k(3.0)
    assert math.isclose(float(H.k.detach()), 3.0, rel_tol=1e-6)
    fixed = Product(Sphere(2), Lorentz(dim=2))
    assert fixed.curvature_parameter is None
    with pytest.raises(ValueError, match="no factor with a learnable curvature"):
        fixed.set_k(2.0)
    two = Product(Lorentz(learnable=True, dim=2), Lorentz(learnable=True, dim=1))
    with pytest.raises(ValueError, match=r"2 factors with a learnable curvature \(\[0, 1\]\).*M\.factors\[i\]"):
        two.curvature_parameter


def test_features_concatenate_the_factors():
    """``features`` is each factor's encoding side by side (the torus's ``cos θ, sin θ``), ``feature_dim`` its length."""
    M = Product(Sphere(2), Torus(1), Euclidean(dim=2))
    x = M.random(4, 6, dtype=torch.float64)
    f = M.features(x)
    assert f.shape == (4, M.feature_dim(5)) and M.feature_dim(5) == 3 + 2 + 2
    torch.testing.assert_close(f[:, 3:5], torch.cat([torch.cos(x[:, 3:4]), torch.sin(x[:, 3:4])], -1))
    torch.testing.assert_close(f[:, :3], x[:, :3])
    with pytest.raises(ValueError, match="has dimension 5"):
        M.feature_dim(4)


def test_chart_features_are_log_o_where_it_is_a_chart_and_features_elsewhere():
    """What a decoder reads of a product's points: ``log_o`` of a ball or Euclidean factor (tangent coordinates,
    unbounded: a point at distance 10 from the origin reads as a vector of norm 10), ``cos θ, sin θ`` of a torus
    factor and the coordinates of a sphere factor; on a single manifold, ``log_o`` exactly where ``exp_o`` is a
    global chart."""
    ball = PoincareBall(1.0, dim=2)
    M = Product(Torus(1), ball, Sphere(2), Euclidean(dim=1))
    theta = torch.tensor([[2.5]], dtype=torch.float64)
    v = torch.tensor([[6.0, 8.0]], dtype=torch.float64)
    s = torch.tensor([[0.0, 0.6, 0.8]], dtype=torch.float64)
    e = torch.tensor([[-3.0]], dtype=torch.float64)
    x = torch.cat([theta, ball.expmap0_spatial(v), s, e], -1)
    f = M.chart_features(x)
    assert f.shape == (1, M.chart_feature_dim(6)) and M.chart_feature_dim(6) == 2 + 2 + 3 + 1
    torch.testing.assert_close(f[:, :2], torch.cat([torch.cos(theta), torch.sin(theta)], -1))
    torch.testing.assert_close(f[:, 2:4], v, atol=1e-9, rtol=0)
    torch.testing.assert_close(f[:, 4:7], s)
    torch.testing.assert_close(f[:, 7:], e)
    for single, chart in ((ball, True), (Lorentz(dim=2), True), (Sphere(2), False), (Torus(2), False)):
        p = single.random(3, single.ambient_dim(2), dtype=torch.float64)
        want = single.logmap0_spatial(p) if chart else single.features(p)
        torch.testing.assert_close(single.chart_features(p), want)
        assert single.chart_feature_dim(2) == want.size(-1)
