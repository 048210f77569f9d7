"""Riemannian continuous flows on Hⁿ (issue 15): the ambient divergence formula against a brute-force chart
computation, the chart form of the field against the ambient one, Hutchinson's estimate, normalisation of the
density (quadrature), the flow-matching target, training by flow matching to a known density, and use by ``Flow``,
the VAE and the graph generator's prior. (Round trips and log-dets against autograd Jacobians, near and far, run
in the shared suite ``test_flow_contract.py``, which covers every registered flow.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import flows
from flows.rfm import (LorentzVectorField, RiemannianFlow, _ChartDynamics, chart_velocity, flow_matching_loss,
                       geodesic_sq_distances, ot_pairing, riemannian_divergence)
from manifolds import Lorentz, WrappedNormal
from manifolds import lorentz_math as lm

F64 = torch.float64


def _field(M: Lorentz, n: int, gain: float = 1.0, seed: int = 0, activation: str = "silu") -> LorentzVectorField:
    V = LorentzVectorField(M, n, hidden=16, layers=2, activation=activation).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in V.parameters():
            std = gain / math.sqrt(p.shape[-1]) if p.dim() >= 2 else 0.5
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * std)
    return V


def _points(n: int, norms, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(len(norms), n, generator=g, dtype=F64)
    return d / d.norm(dim=-1, keepdim=True) * torch.tensor(norms, dtype=F64).unsqueeze(-1)


class _AmbientOnly(torch.nn.Module):
    """The same field without its ``chart`` method: the flow then integrates through ambient points."""

    def __init__(self, field: LorentzVectorField) -> None:
        super().__init__()
        self.inner = field
        self.manifold = field.manifold

    def forward(self, t, x):
        return self.inner(t, x)


NORMS = (1e-4, 0.3, 1.0, 2.5, 4.0)


@pytest.mark.parametrize("k, n, activation",
                         [(1.0, 2, "silu"), (0.5, 3, "tanh"), (2.0, 4, "silu"), (1.0, 2, "tanh")])
def test_ambient_divergence_equals_the_chart_computation(k, n, activation):
    """``div_g V = tr J + ⟨x, Jx⟩_L / k`` (ambient) equals ``div_u w + w·∇_u log ρ`` in tangent coordinates at the
    origin (``w = D log_o[V]`` by autograd through ``log_o``, ``log ρ`` the ℓ terms of the lifted flows, both by
    brute-force autograd), at points from 1e-4 to 4 from the origin, for both activations of the field."""
    M = Lorentz(k=k).double()
    V = _field(M, n, activation=activation)
    t = torch.tensor(0.4, dtype=F64)
    u = _points(n, NORMS)
    x = M.expmap0_spatial(u).requires_grad_(True)
    ambient = riemannian_divergence(V(t, x), x, M.k.double())

    def w_of(u1: torch.Tensor) -> torch.Tensor:  # the field in the chart, by autograd through exp_o and log_o
        x1 = M.expmap0_spatial(u1)
        return torch.autograd.functional.jvp(M.logmap0_spatial, x1, V(t, x1), create_graph=True)[1]

    for i in range(len(NORMS)):
        ui = u[i:i + 1]
        J = torch.autograd.functional.jacobian(w_of, ui).reshape(n, n)
        ui_req = ui.clone().requires_grad_(True)
        (grad_log_rho,) = torch.autograd.grad(M.expmap_logdet(ui_req.norm(dim=-1), n).sum(), ui_req)
        chart = torch.trace(J) + (w_of(ui) * grad_log_rho).sum()
        torch.testing.assert_close(ambient[i], chart, rtol=1e-7, atol=1e-9)


def test_field_activation_is_checked_and_used():
    """``activation`` picks the field's nonlinearity (SiLU by default); anything else is a clear error."""
    M = Lorentz().double()
    u = _points(2, NORMS)
    t = torch.tensor(0.3, dtype=F64)
    silu, tanh = _field(M, 2, activation="silu"), _field(M, 2, activation="tanh")  # same weights (same seed)
    assert LorentzVectorField(M, 2).activation == "silu" == flows.build("rfm", M, 2).field.activation
    assert flows.build("rfm", M, 2, activation="tanh").field.activation == "tanh"
    assert not torch.allclose(silu.frame_coordinates(t, u), tanh.frame_coordinates(t, u))
    with pytest.raises(ValueError, match="activation must be one of"):
        LorentzVectorField(M, 2, activation="relu")


@pytest.mark.parametrize("k, n", [(1.0, 2), (0.5, 3)])
def test_chart_form_of_the_field_equals_the_ambient_field(k, n):
    """``field.chart(t, u)`` is ``D log_o(x)[V(t, x)]`` at ``x = exp_o u`` (:func:`chart_velocity`, itself checked
    against autograd), and the two integration paths give the same flow and log-det."""
    M = Lorentz(k=k).double()
    V = _field(M, n)
    t = torch.tensor(0.7, dtype=F64)
    u = _points(n, NORMS)
    x = M.expmap0_spatial(u)
    torch.testing.assert_close(V.chart(t, u), chart_velocity(x, V(t, x), M.k.double()), rtol=1e-9, atol=1e-10)
    by_autograd = torch.autograd.functional.jvp(M.logmap0_spatial, x, V(t, x))[1]
    torch.testing.assert_close(chart_velocity(x, V(t, x), M.k.double()), by_autograd, rtol=1e-8, atol=1e-10)
    f_chart = RiemannianFlow(M, n, field=V, rtol=1e-9, atol=1e-9)
    f_ambient = RiemannianFlow(M, n, field=_AmbientOnly(V), rtol=1e-9, atol=1e-9)
    y1, l1 = f_chart.forward_tangent(u)
    y2, l2 = f_ambient.forward_tangent(u)
    torch.testing.assert_close(y1, y2, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(l1, l2, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("in_chart", [True, False])
def test_hutchinson_divergence_is_unbiased(in_chart):
    """The mean of Hutchinson's estimates over 4000 probes is within 5 standard errors of the exact divergence, in
    the chart (probes N(0, I_n)) and in ambient coordinates (probes transported to T_xH)."""
    M = Lorentz(k=0.5).double()
    n = 3
    V = _field(M, n)
    field = V if in_chart else _AmbientOnly(V)
    u = _points(n, (0.2, 1.5, 3.0)).repeat_interleave(4000, 0)
    t = torch.tensor(0.3, dtype=F64)
    exact = _ChartDynamics(field, M.k.double(), None)(t, (u, u.new_zeros(len(u))))[1]
    probes = torch.randn(u.shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    est = _ChartDynamics(field, M.k.double(), probes)(t, (u, u.new_zeros(len(u))))[1]
    est, exact = est.reshape(3, 4000), exact.reshape(3, 4000)[:, 0]
    se = est.std(dim=1) / math.sqrt(4000)
    assert bool(((est.mean(dim=1) - exact).abs() < 5 * se).all()), (est.mean(dim=1), exact, se)


def test_rfm_density_integrates_to_one_on_h2():
    """The log-density of an RFM ``Flow`` on H² (a random field, base a wrapped normal) integrates to 1 within 1e-3:
    quadrature over the chart ``u = log_o x`` (``∫ q dvol = ∫ q(exp_o u)·ρ(u) du``, a 201² midpoint grid on
    [-8, 8]²; the integrand is smooth with Gaussian tails)."""
    M = Lorentz(k=1.0).double()
    f = RiemannianFlow(M, 2, field=_field(M, 2, gain=0.8, seed=3), rtol=1e-8, atol=1e-8)
    q = flows.Flow(WrappedNormal.at_origin(torch.full((2,), 0.8, dtype=F64), M), f)
    L, m = 8.0, 201
    h = 2 * L / m
    g = -L + h * (torch.arange(m, dtype=F64) + 0.5)
    u = torch.cartesian_prod(g, g)
    with torch.no_grad():
        log_q = q.log_prob(M.expmap0_spatial(u))
    log_rho = M.expmap_logdet(u.norm(dim=-1), 2)
    total = float(torch.exp(log_q + log_rho).sum() * h * h)
    print(f"RFM density on H2 integrates to {total:.6f}")
    assert abs(total - 1) < 1e-3, total
    # and the flow moved the density: it is not the base's
    base_lp = q.base.log_prob(M.expmap0_spatial(u))
    assert float((log_q - base_lp).abs().max()) > 0.1


def test_flow_matching_target_is_the_geodesic_velocity():
    """The target ``PT_{x₀→x_t}(log_{x₀} x₁)`` equals ``log_{x_t}(x₁)/(1 - t)`` (Chen & Lipman's form) and is tangent."""
    M = Lorentz(k=0.5).double()
    g = torch.Generator().manual_seed(0)
    x0 = M.expmap0_spatial(torch.randn(32, 3, generator=g, dtype=F64))
    x1 = M.expmap0_spatial(torch.randn(32, 3, generator=g, dtype=F64) * 2)
    t = torch.rand(32, 1, generator=g, dtype=F64) * 0.95
    w = M.logmap(x0, x1)
    xt = M.expmap(x0, t * w)
    ut = M.transp(x0, xt, w)
    torch.testing.assert_close(ut, M.logmap(xt, x1) / (1 - t), rtol=1e-7, atol=1e-8)
    assert float(M.inner(xt, xt, ut).abs().max()) < 1e-8


@pytest.mark.parametrize("coupling", ["independent", "ot"])
def test_flow_matching_learns_a_wrapped_normal_to_near_its_entropy(coupling):
    """Trained by flow matching only (no ODE solve in training), the RFM's exact test NLL of a wrapped normal on H²
    (mean at distance 1.2 from the origin, scales 0.3 and 0.6) comes within 0.1 nats of the target's entropy (the
    floor), and the loss falls; with independent pairs and with minibatch-OT pairs (whose marginals are the base
    and the data, so the flow must reach the same distribution)."""
    torch.manual_seed(0)
    M = Lorentz(k=1.0)
    mu = M.expmap0_spatial(torch.tensor([1.0, -0.66]))
    target = WrappedNormal(mu, torch.tensor([0.3, 0.6]), M)
    base = WrappedNormal.at_origin(torch.ones(2), M)
    f = flows.build("rfm", M, 2, hidden=64, layers=2, rtol=1e-5, atol=1e-5)
    opt = torch.optim.Adam(f.parameters(), lr=3e-3)
    losses = []
    for step in range(600):
        loss = flow_matching_loss(f, target.sample((256,)), base, coupling=coupling, ot_block=64)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-50:]) < sum(losses[:50])
    test = target.sample((2000,))
    with torch.no_grad():
        nll = -float(flows.Flow(base, f).log_prob(test).mean())
    entropy = -float(target.log_prob(target.sample((200_000,))).mean())
    assert nll - entropy < 0.1, (nll, entropy)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_geodesic_sq_distances_equal_the_distance_squared(dtype):
    """The matrix form ``k·arccosh²(-⟨x, y⟩_L/k)`` equals :func:`dist`² for points from near the origin to distance
    ~8 (float32 and float64 inputs; the result is float64)."""
    M = Lorentz(k=0.5)
    g = torch.Generator().manual_seed(3)
    radii = torch.logspace(-2, math.log10(8.0), 24, dtype=F64).unsqueeze(-1)
    u = torch.randn(24, 3, generator=g, dtype=F64)
    x = M.double().expmap0_spatial(u / u.norm(dim=-1, keepdim=True) * radii).to(dtype)
    y = M.double().expmap0_spatial(torch.randn(9, 3, generator=g, dtype=F64) * 2).to(dtype)
    C = geodesic_sq_distances(x, y, 0.5)
    assert C.dtype == F64 and C.shape == (24, 9)
    ref = M.double().dist(x.double()[:, None], y.double()[None]) ** 2
    torch.testing.assert_close(C, ref, rtol=1e-6 if dtype == F64 else 1e-4, atol=1e-9 if dtype == F64 else 1e-4)


def test_ot_pairing_is_the_optimal_assignment_within_each_block():
    """A permutation of the base draws that keeps each block's rows in the block and whose total ``d²`` per block is
    the minimum over all of the block's permutations (brute force); a last, shorter block is paired too."""
    import itertools

    M = Lorentz(k=0.5).double()
    g = torch.Generator().manual_seed(4)
    x0 = M.expmap0_spatial(torch.randn(11, 2, generator=g, dtype=F64))
    x1 = M.expmap0_spatial(torch.randn(11, 2, generator=g, dtype=F64) * 3 + 1)
    perm = ot_pairing(x0, x1, 0.5, block=4)
    assert sorted(perm.tolist()) == list(range(11))
    C = geodesic_sq_distances(x0, x1, 0.5)
    for start in (0, 4, 8):
        idx = list(range(start, min(start + 4, 11)))
        assert all(int(perm[i]) in idx for i in idx)
        best = min(sum(float(C[p, i]) for p, i in zip(order, idx)) for order in itertools.permutations(idx))
        assert sum(float(C[perm[i], i]) for i in idx) == pytest.approx(best, rel=1e-12)
    independent = float(C.diagonal().sum())
    assert float(C[perm, torch.arange(11)].sum()) < independent


def test_flow_matching_options_are_checked():
    M = Lorentz()
    f = RiemannianFlow(M, 2, hidden=8)
    base = WrappedNormal.at_origin(torch.ones(2), M)
    x = M.expmap0_spatial(torch.randn(8, 2))
    with pytest.raises(ValueError, match="coupling must be one of"):
        flow_matching_loss(f, x, base, coupling="sinkhorn")
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="OT block must be a positive int"):
            flow_matching_loss(f, x, base, coupling="ot", ot_block=bad)
    with pytest.raises(ValueError, match="same shape"):
        ot_pairing(x, x[:5], 1.0)


def test_rfm_in_the_vae_and_the_generators_prior():
    """Registered like every flow: a VAE posterior and the graph generator's prior (``conditioner="mlp"``) use it."""
    from vae import VAE, GraphGenerator

    M = Lorentz()
    model = VAE(M, 6, 2, hidden=8, flow="rfm", flow_hidden=8)
    model.flow.rtol = model.flow.atol = 1e-5
    loss = model.loss(torch.bernoulli(torch.full((4, 6), 0.5)))
    loss.backward()
    assert math.isfinite(float(loss.detach())) and all(p.grad is not None for p in model.flow.parameters() if p.requires_grad)
    gen = GraphGenerator(M, 2, "rfm", hidden=8, conditioner="mlp")
    z = gen.prior.sample([3, 4])
    assert z.shape == (7, 3) and bool(torch.isfinite(gen.prior.log_prob(z, [3, 4])).all())
    with pytest.raises(ValueError, match="conditioner"):
        GraphGenerator(M, 2, "rfm", hidden=8)  # the default GAT prior: the field is an MLP, said plainly


@pytest.mark.parametrize("centre", [20.0, 50.0])
def test_ot_pairing_is_optimal_far_from_the_origin(centre):
    """Issue 25 item 6: two clouds around a centre at distance 20 or 50 (float64). The costs match the exact
    distances of the given points (50-digit arithmetic on their spatial coordinates, the time coordinate as
    ``projx`` defines it) to 1e-9 relative, and the pairing's cost is the optimum on those exact costs (scipy) to
    1e-9 relative; the ``arccosh(-⟨x, y⟩_L/k)²`` costs gave pairings 8.3-8.7× the optimum here."""
    import mpmath
    from scipy.optimize import linear_sum_assignment

    k = 0.7
    M = Lorentz(k=k).double()
    g = torch.Generator().manual_seed(int(centre))
    direction = torch.nn.functional.normalize(torch.randn(3, generator=g, dtype=F64), dim=0)
    mu = M.expmap0_spatial(direction * centre * math.sqrt(k))
    n = 24
    x0 = lm.translate(mu, M.expmap0_spatial(torch.randn(n, 3, generator=g, dtype=F64) * 0.5), k)
    x1 = lm.translate(mu, M.expmap0_spatial(torch.randn(n, 3, generator=g, dtype=F64) * 0.5 + 0.2), k)
    assert float(M.dist0(x0).mean()) == pytest.approx(centre * math.sqrt(k), rel=0.05)
    with mpmath.workdps(60):
        kk = mpmath.mpf(k)

        def lift(p):
            s = [mpmath.mpf(float(c)) for c in p[1:]]
            return [mpmath.sqrt(kk + sum(c * c for c in s))] + s

        a, b = [lift(p) for p in x0], [lift(p) for p in x1]
        exact = np.array([[float(kk * mpmath.acosh((p[0] * q[0] - sum(u * v for u, v in zip(p[1:], q[1:]))) / kk) ** 2)
                           for q in b] for p in a])
    C = geodesic_sq_distances(x0, x1, k).numpy()
    np.testing.assert_allclose(C, exact, rtol=1e-9)
    rows, cols = linear_sum_assignment(exact)
    optimum = exact[rows, cols].sum()
    perm = ot_pairing(x0, x1, k, block=n)
    assert sorted(perm.tolist()) == list(range(n))
    assert exact[perm.numpy(), np.arange(n)].sum() == pytest.approx(optimum, rel=1e-9)


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan"), float("inf"), torch.tensor([1.0, 2.0])])
def test_ot_pairing_refuses_a_bad_curvature(bad):
    """Issue 25 item 6: ``k = -1`` returned the identity permutation; a bad ``k`` is a one-line error."""
    x = Lorentz().expmap0_spatial(torch.randn(6, 2, dtype=F64))
    with pytest.raises(ValueError, match="one finite positive number") as err:
        ot_pairing(x, x.flip(0), bad)
    assert "\n" not in str(err.value)


# ---- issue 25 item 5: solvers that never hang -----------------------------------------------------------------

def _scored(name: str, dtype=F64, hidden: int = 8):
    from flows import Flow

    M = Lorentz()
    f = flows.build(name, M, 2, layers=1, hidden=hidden).to(dtype)
    return f, Flow(WrappedNormal.at_origin(torch.ones(2, dtype=dtype), M), f), M


@pytest.mark.parametrize("name", ["rfm", "cnf@lorentz"])
def test_a_non_finite_point_gives_nan_in_its_row_only(name):
    """A NaN coordinate in one row stopped the whole batch with ``AssertionError: underflow in dt 0.0`` (and hung
    under ``python -O``): it now never reaches the solver; its row is NaN, the others are what they are alone."""
    torch.manual_seed(0)
    f, q, M = _scored(name)
    x = M.expmap0_spatial(torch.randn(5, 2, dtype=F64))
    bad = x.clone()
    bad[1, 2] = math.nan
    bad[3, 0] = math.inf
    lp = q.log_prob(bad)
    assert torch.isnan(lp[[1, 3]]).all()
    keep = [0, 2, 4]
    torch.testing.assert_close(lp[keep], q.log_prob(x[keep]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["rfm", "cnf@lorentz"])
def test_a_dtype_mismatch_names_both_dtypes(name):
    """float64 points into a float32 flow gave torch's raw "mat1 and mat2" error."""
    f, q, M = _scored(name, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"torch\.float32 parameters but got torch\.float64 inputs") as err:
        q.log_prob(M.expmap0_spatial(torch.randn(3, 2, dtype=F64)))
    assert "\n" not in str(err.value)


def test_the_step_budget_stops_a_solve_under_python_O():
    """A field that blows up in finite time: the adaptive solver's step shrinks to 0; torchdiffeq's own guard is an
    ``assert``, gone under ``python -O`` (it hung). The budget raises a one-line error in bounded time there too."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from flows import ContinuousFlow, RiemannianFlow\n"
        "from manifolds import Lorentz\n"
        "class Blow(torch.nn.Module):\n"
        "    def forward(self, z, t): return 10 * z ** 3\n"
        "class Chart(torch.nn.Module):\n"
        "    manifold = Lorentz()\n"
        "    def chart(self, t, u): return 10 * u ** 3\n"
        "for f in (ContinuousFlow(2, field=Blow(), max_evaluations=300).double(),\n"
        "          RiemannianFlow(Lorentz(), 2, field=Chart(), max_evaluations=300).double()):\n"
        "    try:\n"
        "        getattr(f, 'forward_tangent', f)(torch.full((3, 2), 2.0, dtype=torch.float64))\n"
        "    except RuntimeError as e:\n"
        "        assert 'more than 300 vector-field evaluations' in str(e) and f.last_evaluations == 301, e\n"
        "        print('budget')\n"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(__import__("pathlib").Path(flows.__file__).parents[1])}
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["budget", "budget"]


def test_the_finite_envelope_of_scoring():
    """Issue 25 item 5, the envelope stated in :class:`RiemannianFlow`'s docstring: with the field's weights moved by
    0.2 each, log-densities are finite for points out to the overflow of their ambient coordinates (float32: 88 at
    k = 1; non-finite from 77 on before: ``σ²`` overflowed in the divergence's gradient; float64: 700)."""
    for dtype, radii in ((torch.float32, (40.0, 77.0, 87.0)), (F64, (300.0, 700.0))):
        torch.manual_seed(1)
        f, q, M = _scored("rfm", dtype=dtype, hidden=16)
        with torch.no_grad():
            for p in f.field.parameters():
                p.add_(0.2 * torch.randn_like(p))
        v = torch.nn.functional.normalize(torch.randn(len(radii), 2, dtype=dtype), dim=-1)
        x = M.expmap0_spatial(v * torch.tensor(radii, dtype=dtype)[:, None])
        assert torch.isfinite(x).all()
        lp = q.log_prob(x)
        assert torch.isfinite(lp).all(), (dtype, lp)


def test_fixed_step_log_det_matches_the_jacobian_at_tangent_norm_8():
    """Brute-force log-det checks of ``rfm`` at tangent norm 8 took > 120 s per case with the adaptive solver; with
    ``method="rk4", steps=...`` the cost is fixed, and the integrated divergence is the log-det of the discrete map
    to the method's order (both directions)."""
    torch.manual_seed(2)
    M = Lorentz(k=0.8)
    f = RiemannianFlow(M, 2, hidden=16, method="rk4", steps=40).double()
    with torch.no_grad():
        for p in f.field.parameters():
            p.add_(0.2 * torch.randn_like(p))
    u = torch.nn.functional.normalize(torch.randn(3, 2, dtype=F64), dim=-1) * 8
    for solve in (f.forward_tangent, f.inverse_tangent):
        _, ladj = solve(u)
        assert f.last_evaluations == 4 * 40
        for i in range(3):
            J = torch.autograd.functional.jacobian(lambda w: solve(w[None])[0][0], u[i])
            # the chart's Jacobian, plus the volume terms of exp_o at either end (MATH.md §4)
            expected = torch.linalg.slogdet(J)[1]
            r0, r1 = u[i].norm(), solve(u[i][None])[0][0].norm()
            ls = lambda r: torch.log(torch.sinh(r / M.k.double().sqrt()) / (r / M.k.double().sqrt()))  # noqa: E731
            expected = expected + ls(r1) - ls(r0)
            assert float(ladj[i].detach()) == pytest.approx(float(expected.detach()), abs=1e-6)
    with pytest.raises(ValueError, match="fixed-grid method"):
        RiemannianFlow(M, 2, steps=10)  # dopri5 is adaptive
