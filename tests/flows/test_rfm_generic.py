"""rfm written against the manifold interface (issue 23): the ambient integration with the divergence a manifold
declares, the geodesic target from ``expmap`` / ``logmap``, OT pairs from ``dist``; checked on ℝⁿ (a flat manifold,
where everything has a closed form) and on Hⁿ_k, where the generic path must agree with the hyperboloid's own chart
implementation. (The sphere / torus / product cases come with those manifolds.)"""

from __future__ import annotations

import math

import pytest
import torch

import flows
from flows.rfm import (AmbientRiemannianFlow, LorentzVectorField, RiemannianFlow, TangentVectorField,
                       flow_matching_loss, geodesic_path, geodesic_sq_distances, riemannian_divergence)
from manifolds import Euclidean, Lorentz, WrappedNormal

F64 = torch.float64


def _brute_divergence_flat(V, t, x):
    J = torch.autograd.functional.jacobian(lambda y: V(t, y), x)
    return torch.einsum("bibi->b", J)


def test_rfm_is_registered_on_every_manifold_and_picks_its_implementation():
    assert "rfm" in flows.available(Euclidean()) and "rfm" in flows.available(Lorentz())
    assert isinstance(flows.build("rfm", Euclidean(), 2), AmbientRiemannianFlow)
    assert isinstance(flows.build("rfm", Lorentz(), 2), RiemannianFlow)  # the hyperboloid's chart implementation
    with pytest.raises(ValueError, match="AmbientRiemannianFlow"):
        RiemannianFlow(Euclidean(), 2)


@pytest.mark.parametrize("probe", [False, True])
def test_euclidean_divergence_is_the_trace(fh, probe):
    """``Euclidean.divergence`` is ``tr J`` (exact), and Hutchinson's estimate averages to it."""
    M = Euclidean()
    V = fh.randomize_(TangentVectorField(M, 3, hidden=16).double(), gain=1.0)
    t = torch.tensor(0.3, dtype=F64)
    x = torch.randn(4, 3, dtype=F64) * 3
    want = _brute_divergence_flat(V, t, x)
    if not probe:
        xr = x.clone().requires_grad_(True)
        torch.testing.assert_close(M.divergence(V(t, xr), xr), want, rtol=1e-10, atol=1e-12)
        return
    xr = x.repeat_interleave(4000, 0).requires_grad_(True)
    est = M.divergence(V(t, xr), xr, probe=torch.randn(xr.shape, dtype=F64)).reshape(4, 4000)
    se = est.std(dim=1) / math.sqrt(4000)
    assert bool(((est.mean(dim=1) - want).abs() < 5 * se).all())


@pytest.mark.parametrize("k", [1.0, 0.5])
def test_lorentz_divergence_method_is_the_hyperboloid_formula(fh, k):
    """``Lorentz.divergence`` (the interface method) is ``tr J + ⟨x, Jx⟩_L / k`` (:func:`riemannian_divergence`,
    itself checked against the chart computation), and its probes give an unbiased estimate."""
    M = Lorentz(k=k).double()
    V = fh.randomize_(LorentzVectorField(M, 3, hidden=16).double(), gain=1.0)
    t = torch.tensor(0.6, dtype=F64)
    x = M.expmap0_spatial(torch.randn(3, 3, dtype=F64) * 1.5).requires_grad_(True)
    exact = M.divergence(V(t, x), x)
    torch.testing.assert_close(exact, riemannian_divergence(V(t, x), x, M.k.double()), rtol=1e-12, atol=1e-12)
    xr = x.detach().repeat_interleave(4000, 0).requires_grad_(True)
    est = M.divergence(V(t, xr), xr, probe=torch.randn(xr.shape, dtype=F64)).reshape(3, 4000)
    se = est.std(dim=1) / math.sqrt(4000)
    assert bool(((est.mean(dim=1) - exact.detach()).abs() < 5 * se).all())


@pytest.mark.parametrize("k, n", [(1.0, 2), (0.5, 3)])
def test_generic_ambient_flow_on_the_hyperboloid_equals_its_chart_flow(fh, k, n):
    """The interface-only integration (ambient coordinates, ``projx``, ``Lorentz.divergence``) gives the same map and
    log-det as the hyperboloid's chart implementation, for the same field: the generic path is right on a curved
    manifold, not only on a flat one."""
    M = Lorentz(k=k).double()
    V = fh.randomize_(LorentzVectorField(M, n, hidden=16).double(), gain=0.8)
    u = torch.randn(6, n, dtype=F64, generator=torch.Generator().manual_seed(2)) * 1.2
    x = M.expmap0_spatial(u)
    chart = RiemannianFlow(M, n, field=V, rtol=1e-9, atol=1e-9)
    generic = AmbientRiemannianFlow(M, n, field=V, rtol=1e-9, atol=1e-9)  # calls V(t, x) at ambient points only
    y1, l1 = chart(x)
    y2, l2 = generic(x)
    torch.testing.assert_close(M.logmap0_spatial(y2), M.logmap0_spatial(y1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(l2, l1, rtol=1e-6, atol=1e-7)
    assert float(M.inner(y2, y2).add(M.k.double()).abs().max().detach()) < 1e-10  # on the manifold
    xb, lb = generic.inverse(y2)
    torch.testing.assert_close(xb, x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lb, -l2, rtol=1e-6, atol=1e-7)


def test_generic_flow_log_det_matches_the_jacobian_on_rn(fh):
    """On ℝⁿ the ambient flow's log-det is ``log|det ∂f|`` of its own map (autograd through the solver), both
    ways, near and far from the origin."""
    M = Euclidean()
    f = fh.randomize_(flows.build("rfm", M, 3, hidden=16, rtol=1e-10, atol=1e-10).double(), gain=1.2)
    x = torch.randn(3, 3, dtype=F64) * torch.tensor([[0.1], [2.0], [10.0]], dtype=F64)
    y, ladj = f(x)
    for i in range(len(x)):
        J = torch.autograd.functional.jacobian(lambda z: f(z)[0], x[i:i + 1]).reshape(3, 3)
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(J)[1], rtol=1e-6, atol=1e-7)
        Ji = torch.autograd.functional.jacobian(lambda z: f.inverse(z)[0], y[i:i + 1].detach()).reshape(3, 3)
        torch.testing.assert_close(f.inverse(y[i:i + 1])[1][0], torch.linalg.slogdet(Ji)[1], rtol=1e-6, atol=1e-7)


def test_generic_rfm_density_integrates_to_one_on_r2(fh):
    """``Flow(N(0, 0.8² I), rfm on ℝ²)`` with a random field: the density integrates to 1 within 1e-3 (midpoint
    rule, 161² grid on [-8, 8]²), and differs from the base's."""
    M = Euclidean()
    f = fh.randomize_(flows.build("rfm", M, 2, hidden=16, rtol=1e-8, atol=1e-8).double(), gain=0.8, seed=3)
    q = flows.Flow(WrappedNormal.at_origin(torch.full((2,), 0.8, dtype=F64), M), f)
    h = 16.0 / 161  # cell side; cell centres from -8 + h/2 to 8 - h/2
    centres = torch.linspace(-8.0 + h / 2, 8.0 - h / 2, 161, dtype=F64)
    x = torch.cartesian_prod(centres, centres)
    with torch.no_grad():
        log_q = q.log_prob(x)
    total = float(torch.logsumexp(log_q, 0).exp() * h ** 2)
    assert abs(total - 1) < 1e-3, total
    assert float((log_q - q.base.log_prob(x)).abs().max()) > 0.1


@pytest.mark.parametrize("k", [1.0, 0.5])
def test_geodesic_path_on_the_hyperboloid_is_the_transported_velocity(k):
    """``geodesic_path`` (closed form from expmap / logmap) equals ``(exp_{x₀}(t w), PT_{x₀→x_t} w)``,
    ``w = log_{x₀} x₁``, for ``t`` from 0 to 1 inclusive (no division by a small number at either end)."""
    M = Lorentz(k=k).double()
    g = torch.Generator().manual_seed(0)
    x0 = M.expmap0_spatial(torch.randn(40, 3, generator=g, dtype=F64))
    x1 = M.expmap0_spatial(torch.randn(40, 3, generator=g, dtype=F64) * 2)
    t = torch.cat([torch.tensor([0.0, 1e-9, 0.5, 1 - 1e-9, 1.0], dtype=F64), torch.rand(35, generator=g, dtype=F64)])
    xt, ut = geodesic_path(M, x0, x1, t)
    w = M.logmap(x0, x1)
    torch.testing.assert_close(xt, M.expmap(x0, t[:, None] * w), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ut, M.transp(x0, xt, w), rtol=1e-7, atol=1e-8)


def test_geodesic_path_on_rn_is_the_straight_line():
    x0, x1, t = torch.randn(9, 4, dtype=F64), torch.randn(9, 4, dtype=F64), torch.linspace(0, 1, 9, dtype=F64)
    xt, ut = geodesic_path(Euclidean(), x0, x1, t)
    torch.testing.assert_close(xt, x0 + t[:, None] * (x1 - x0))
    torch.testing.assert_close(ut, x1 - x0)


def test_ot_costs_from_the_manifolds_dist():
    """``geodesic_sq_distances`` with a manifold in place of ``k`` is ``dist²`` (the pairing's cost on any manifold),
    and on Hⁿ_k agrees with the hyperboloid's matrix form (to its arccosh form's precision)."""
    M = Lorentz(k=0.5).double()
    x = M.expmap0_spatial(torch.randn(5, 2, dtype=F64))
    y = M.expmap0_spatial(torch.randn(7, 2, dtype=F64) * 2)
    torch.testing.assert_close(geodesic_sq_distances(x, y, M), geodesic_sq_distances(x, y, 0.5), rtol=1e-6, atol=1e-9)
    a, b = torch.randn(5, 3), torch.randn(7, 3)
    torch.testing.assert_close(geodesic_sq_distances(a, b, Euclidean()), torch.cdist(a.double(), b.double()) ** 2)


@pytest.mark.parametrize("coupling", ["independent", "ot"])
def test_flow_matching_on_rn_learns_a_gaussian_to_near_its_entropy(coupling):
    """Trained by flow matching only, the generic rfm on ℝ² fits ``N(μ, diag(0.3², 0.6²))`` (base ``N(0, I)``): exact
    test NLL within 0.1 nats of the target's entropy, with independent and with OT pairs."""
    torch.manual_seed(0)
    M = Euclidean()
    mu, sd = torch.tensor([1.5, -1.0]), torch.tensor([0.3, 0.6])
    base = WrappedNormal.at_origin(torch.ones(2), M)
    f = flows.build("rfm", M, 2, hidden=64, layers=2, rtol=1e-5, atol=1e-5)
    opt = torch.optim.Adam(f.parameters(), lr=3e-3)
    losses = []
    for _ in range(500):
        loss = flow_matching_loss(f, mu + sd * torch.randn(256, 2), base, coupling=coupling, ot_block=64)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-50:]) < sum(losses[:50])
    test = mu + sd * torch.randn(2000, 2)
    with torch.no_grad():
        nll = -float(flows.Flow(base, f).log_prob(test).mean())
    entropy = float(torch.log(sd).sum() + math.log(2 * math.pi * math.e))
    assert nll - entropy < 0.1, (nll, entropy)
