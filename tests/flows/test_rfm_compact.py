"""``rfm`` on the sphere, the torus, the Poincaré ball and products (issue 23): the ambient flow with each manifold's
divergence (:meth:`~manifolds.base.ManifoldOps.divergence`) is a bijection whose log-density is a density (quadrature
over S², T² and the ball), whose log-det is the brute-force one in a chart, whose divergence is the chart formula,
and which learns a target by flow matching (independent and OT pairs). Float64, small fields, fixed rk4 grids: the
module runs in seconds."""

from __future__ import annotations

import math

import pytest
import torch

import flows
from flows.rfm import AmbientRiemannianFlow, flow_matching_loss, ot_pairing
from manifolds import Euclidean, PoincareBall, Product, Sphere, Torus, WrappedNormal
from manifolds.product import parse_product

F64 = torch.float64
STEPS = 24  # rk4 steps: the flows below move points by O(1), so the grid's error is ~1e-7 in the log-det


def _manifold(name: str):
    """(manifold, n) by test id."""
    return {"S2": (Sphere(2), 2), "T2": (Torus(2), 2), "ball2": (PoincareBall(dim=2), 2),
            "s2,e1": (parse_product("s2,e1"), 3), "t1,e1": (Product(Torus(1), Euclidean(dim=1)), 2)}[name]


def _flow(fh, M, n, gain=0.8, seed=3, **kw):
    kw = {"method": "rk4", "steps": STEPS, **kw}
    return fh.randomize_(flows.build("rfm", M, n, hidden=16, **kw).double(), gain=gain, seed=seed)


def _points(M, n, count=6, seed=0, scale=1.0):
    """Points ``exp_o(v)``, ``|v|`` from near 0 to ``2.5·scale`` (inside the injectivity radius of S² and T²)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(count, n, generator=g, dtype=F64)
    v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True) * torch.linspace(1e-3, 2.5 * scale, count, dtype=F64)[:, None]
    return M.expmap0_spatial(v)


@pytest.mark.parametrize("name", ["S2", "T2", "ball2", "s2,e1", "t1,e1"])
def test_rfm_round_trip_and_stays_on_the_manifold(fh, name):
    """``build("rfm", M, n)`` works on every new manifold (the ball through its hyperboloid model): ``inverse`` undoes
    ``forward`` (adaptive solver, tight tolerances), the log-dets are opposite, and the image is on the manifold."""
    M, n = _manifold(name)
    f = _flow(fh, M, n, method="dopri5", steps=None, rtol=1e-9, atol=1e-9)
    x = _points(M, n)
    y, ladj = f(x)
    assert float((y - x).abs().max().detach()) > 0.05  # the flow moves points
    ok, reason = M._check_point_on_manifold(y.detach())
    assert ok, reason
    xb, lb = f.inverse(y)
    torch.testing.assert_close(xb, x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lb, -ladj, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["S2", "s2,e1", "t1,e1"])
def test_rfm_log_det_matches_the_brute_force_jacobian_in_a_chart(fh, name):
    """The integrated divergence is ``log|det|`` of the flow's own map, in the chart ``log_o`` (autograd through the
    fixed-grid solver, ``+ ℓ(log_o y) - ℓ(log_o x)`` for the volume of ``exp_o``), both directions, near and far from
    the origin (to 2.5, most of the way to the sphere's cut locus at π). (The ball's flow is the hyperboloid's, whose
    log-det is checked in ``test_rfm.py``; here its density integrates to 1.)"""
    M, n = _manifold(name)
    f = _flow(fh, M, n, steps=32)
    x = _points(M, n, count=3, seed=1)
    y, ladj = f(x)
    for i in range(len(x)):
        w = M.logmap0_spatial(x[i:i + 1])
        want = fh.riemannian_logdet(M, lambda p: f(p)[0], w)
        torch.testing.assert_close(ladj[i], want, rtol=1e-5, atol=1e-5)
        wy = M.logmap0_spatial(y[i:i + 1].detach())
        want_inv = fh.riemannian_logdet(M, lambda p: f.inverse(p)[0], wy)
        torch.testing.assert_close(f.inverse(y[i:i + 1].detach())[1][0], want_inv, rtol=1e-5, atol=1e-5)


def _polar_total(q, M, r_max, nr, nphi):
    """``∫ q dvol`` over the geodesic disc of radius ``r_max`` about ``o`` on a 2-manifold, in polar normal
    coordinates: ``dvol = exp(ℓ(v))·r dr dφ`` (midpoint rule)."""
    hr, hphi = r_max / nr, 2 * math.pi / nphi
    r = torch.linspace(hr / 2, r_max - hr / 2, nr, dtype=F64)
    phi = torch.linspace(hphi / 2, 2 * math.pi - hphi / 2, nphi, dtype=F64)
    rr, pp = torch.meshgrid(r, phi, indexing="ij")
    v = torch.stack([rr * torch.cos(pp), rr * torch.sin(pp)], -1).reshape(-1, 2)
    with torch.no_grad():
        log_q = q.log_prob(M.expmap0_spatial(v))
    log_w = M.expmap0_logdet(v) + torch.log(rr.reshape(-1)) + math.log(hr * hphi)
    return float(torch.logsumexp(log_q + log_w, 0).exp()), log_q, M.expmap0_spatial(v)


@pytest.mark.parametrize("name", ["S2", "T2", "ball2"])
def test_rfm_density_integrates_to_one(fh, name):
    """``Flow(base, rfm)`` with a random field is a probability density on S² and T² (uniform base) and on the ball
    (wrapped normal base): its quadrature is 1 within 2e-3 (S², ball: polar normal coordinates, midpoint; T²: the
    periodic midpoint rule), and it differs from the base's density by more than 0.1 somewhere."""
    M, n = _manifold(name)
    f = _flow(fh, M, n)
    if name == "T2":
        base = M.uniform(dtype=F64)
        q = flows.Flow(base, f)
        h = 2 * math.pi / 64
        c = torch.linspace(-math.pi + h / 2, math.pi - h / 2, 64, dtype=F64)
        x = torch.cartesian_prod(c, c)
        with torch.no_grad():
            log_q = q.log_prob(x)
        total = float(torch.logsumexp(log_q, 0).exp() * h * h)
    elif name == "S2":
        base = M.uniform(dtype=F64)
        q = flows.Flow(base, f)
        total, log_q, x = _polar_total(q, M, math.pi, 48, 64)
    else:
        base = WrappedNormal.at_origin(torch.full((2,), 0.6, dtype=F64), M)
        q = flows.Flow(base, f)
        total, log_q, x = _polar_total(q, M, 6.0, 64, 48)
    assert abs(total - 1) < 2e-3, total
    assert float((log_q - base.log_prob(x)).abs().max()) > 0.1


def _chart_field(n):
    """A smooth chart field ``w(u) = tanh(A u + b)`` (fixed random ``A, b``)."""
    g = torch.Generator().manual_seed(5)
    A, b = torch.randn(n, n, generator=g, dtype=F64), torch.randn(n, generator=g, dtype=F64) * 0.5
    return lambda u: torch.tanh(u @ A.T + b)


@pytest.mark.parametrize("name", ["S2", "T2", "s2,e1", "t1,e1", "p2,s2 model"])
def test_divergence_is_the_chart_formula(name):
    """``M.divergence(V(x), x)`` of the push-forward ``V = d exp_o[w]`` of a known chart field ``w`` equals the chart
    formula ``div_u w + w·∇_u log ρ`` (``ρ = exp ℓ``, the volume density of ``exp_o``), by autograd in the chart;
    and Hutchinson's estimate with the manifold's tangent probes averages to it (within 5 standard errors).
    "p2,s2 model": the product of the ball and S² as flows see it, through its isometric model (H² × S²)."""
    if name == "p2,s2 model":
        M, n = parse_product("p2,s2").isometric_model()[0].double(), 4
    else:
        M, n = _manifold(name)
    w_of = _chart_field(n)
    u = torch.randn(5, n, generator=torch.Generator().manual_seed(7), dtype=F64).clamp(-1.2, 1.2)

    ur = u.clone().requires_grad_(True)
    w = w_of(ur)
    div_w = sum(torch.autograd.grad(w[:, i].sum(), ur, retain_graph=True)[0][:, i] for i in range(n))
    log_rho = M.expmap0_logdet(ur)  # a constant 0 on flat manifolds (no graph)
    grad_log_rho = torch.autograd.grad(log_rho.sum(), ur)[0] if log_rho.requires_grad else torch.zeros_like(u)
    want = (div_w + (w * grad_log_rho).sum(-1)).detach()

    def V(x):  # the push-forward, as a function of ambient x (through log_o): tangent at x
        z = M.logmap0_spatial(x)
        return torch.func.jvp(M.expmap0_spatial, (z,), (w_of(z),))[1]

    x = M.expmap0_spatial(u).requires_grad_(True)
    torch.testing.assert_close(M.divergence(V(x), x), want, rtol=1e-9, atol=1e-9)
    reps = 3000
    xr = x.detach().repeat_interleave(reps, 0).requires_grad_(True)
    probe = torch.randn(xr.shape, generator=torch.Generator().manual_seed(8), dtype=F64)
    est = M.divergence(V(xr), xr, probe=probe).reshape(5, reps).detach()
    se = est.std(dim=1) / math.sqrt(reps)
    assert bool(((est.mean(dim=1) - want).abs() < 5 * se + 1e-12).all()), (est.mean(1), want, se)


def test_hutchinson_log_density_is_unbiased_on_the_sphere(fh):
    """``trace="hutchinson"`` on S² gives log-dets whose mean over probes is the exact one (same field)."""
    M, n = Sphere(2), 2
    exact = _flow(fh, M, n)
    hutch = flows.build("rfm", M, n, hidden=16, trace="hutchinson", method="rk4", steps=STEPS).double()
    hutch.load_state_dict(exact.state_dict())
    x = _points(M, n, count=3, seed=4)
    _, want = exact(x)
    reps = 2000
    torch.manual_seed(0)
    _, est = hutch(x.repeat_interleave(reps, 0))
    est = est.reshape(3, reps).detach()
    se = est.std(dim=1) / math.sqrt(reps)
    assert bool(((est.mean(dim=1) - want.detach()).abs() < 5 * se).all())


def _target(M, name, count, g):
    """A concentrated target: a wrapped normal (σ = 0.3) at a point away from the origin."""
    v = torch.tensor([1.2, -0.6], dtype=F64) + 0.3 * torch.randn(count, 2, generator=g, dtype=F64)
    return M.expmap0_spatial(v)


@pytest.mark.parametrize("coupling", ["independent", "ot"])
@pytest.mark.parametrize("name", ["S2", "T2"])
def test_flow_matching_learns_a_concentrated_target(name, coupling):
    """Flow matching alone (uniform base) trains the rfm on S² and T² towards a concentrated target: the loss falls,
    and the exact test NLL ends more than 1 nat below the uniform law's (``log 4π`` / ``log 4π²``; the target's own
    entropy is ≈ 1.7 nats below it), with independent and with OT pairs."""
    torch.manual_seed(0)
    M, n = _manifold(name)
    base = M.uniform(dtype=F64)
    f = flows.build("rfm", M, n, hidden=32, layers=2, method="rk4", steps=16).double()
    opt = torch.optim.Adam(f.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(250):
        loss = flow_matching_loss(f, _target(M, name, 128, g), base, coupling=coupling, ot_block=64)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-25:]) < 0.8 * sum(losses[:25]), (losses[:5], losses[-5:])
    with torch.no_grad():
        nll = -float(flows.Flow(base, f).log_prob(_target(M, name, 400, g)).mean())
    assert nll < M.log_volume() - 1.0, (nll, M.log_volume())


@pytest.mark.parametrize("name", ["S2", "T2", "s2,e1"])
def test_ot_pairing_lowers_the_transport_cost(name):
    """On the compact manifolds and a product, ``ot_pairing`` returns a permutation whose total ``dist²`` is at most
    the identity pairing's, and is below it for independent samples."""
    M, n = _manifold(name)
    g = torch.Generator().manual_seed(2)
    x0 = M.expmap0_spatial(torch.randn(32, n, generator=g, dtype=F64))
    x1 = M.expmap0_spatial(torch.randn(32, n, generator=g, dtype=F64))
    perm = ot_pairing(x0, x1, M, block=32)
    assert sorted(perm.tolist()) == list(range(32))
    cost = lambda a: float((M.dist(a, x1) ** 2).sum())  # noqa: E731
    assert cost(x0[perm]) < 0.8 * cost(x0)


def test_rfm_on_the_ball_goes_through_the_hyperboloid():
    """The ball has no ``divergence`` of its own (its metric is not induced by ℝⁿ's): ``build`` carries the ambient
    flow through the isometric model (H²), and asking the ball directly is a one-line error naming the way out."""
    f = flows.build("rfm", PoincareBall(dim=2), 2)
    assert isinstance(f.inner, flows.rfm.RiemannianFlow)
    with pytest.raises(NotImplementedError, match="isometric_model"):
        PoincareBall(dim=2).divergence(torch.zeros(1, 2), torch.zeros(1, 2))
    assert isinstance(flows.build("rfm", Sphere(2), 2), AmbientRiemannianFlow)
