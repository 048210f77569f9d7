"""Continuous normalizing flows (``flows/continuous.py``; FLOW_FAMILIES.md "Continuous-time flows").

* a linear field ``F(z) = Az`` integrates to ``expm(AT)z`` with ``log|det| = tr(A)·T`` (``Δ log p = -tr(A)·T``);
* integrating backwards inverts, with the opposite log-det;
* Hutchinson's trace is unbiased, and its probe is fixed for the whole solve;
* for a small nonlinear field the log-det matches the autograd Jacobian of the solve (both directions);
* adjoint gradients match backprop through the solver; a learnable end time receives its (exact) gradient.

The shared suite (``test_flow_contract.py``) also checks ``"cnf"`` and ``"cnf@lorentz"``. All solves here use the
default tolerances (``rtol = atol = 1e-10``, float64), whose measured global errors are ≲ 5e-9; the tolerances
below (1e-8 for coordinates and log-dets, 1e-6 relative for gradients) leave a margin above that.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import flows
from flows import ContinuousFlow
from manifolds import Euclidean, Lorentz

F64 = torch.float64
ATOL = 1e-8


class LinearField(nn.Module):
    """``F(z, t) = A z`` (time-independent)."""

    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return z @ self.A.T


def _linear_flow(A: torch.Tensor, T: float, **kw) -> ContinuousFlow:
    return ContinuousFlow(A.size(0), field=LinearField(A), end_time=T, **kw).double()


def _nonlinear_flow(fh, n: int = 3, **kw) -> ContinuousFlow:
    f = ContinuousFlow(n, hidden=8, **kw).double()
    return fh.randomize_(f, gain=1.5)  # O(1) field; T = softplus(N(0, 0.5²))


def _points(n: int, count: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, n, generator=torch.Generator().manual_seed(seed), dtype=F64) * 1.5


@pytest.mark.parametrize("T", [0.7, 1.3])
def test_linear_field_integrates_to_matrix_exponential(T):
    A = torch.tensor([[0.3, -1.0, 0.2], [0.8, -0.4, 0.1], [0.0, 0.5, 0.6]], dtype=F64)
    f = _linear_flow(A, T, learn_end_time=False)
    T = float(f.end_time)  # T as stored (softplus of its float32-initialised raw value)
    x = _points(3)
    y, ladj = f(x)
    torch.testing.assert_close(y, x @ torch.linalg.matrix_exp(A * T).T, atol=ATOL, rtol=0)
    # log|det ∂y/∂x| = ∫ tr(A) dt = tr(A)·T, i.e. Δ log p = -tr(A)·T
    torch.testing.assert_close(ladj, torch.full((6,), float(torch.trace(A)) * T, dtype=F64), atol=ATOL, rtol=0)


def test_integrating_backwards_inverts(fh):
    f = _nonlinear_flow(fh)
    x = _points(3)
    y, ladj = f(x)
    assert float((y - x).detach().abs().min()) > 1e-3  # a non-trivial map
    x_back, ladj_inv = f.inverse(y)
    torch.testing.assert_close(x_back, x, atol=ATOL, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=ATOL, rtol=0)
    # and forward(inverse(y)) = y at fresh points
    y0 = _points(3, seed=1)
    torch.testing.assert_close(f(f.inverse(y0)[0])[0], y0, atol=ATOL, rtol=0)


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_hutchinson_trace_is_unbiased(fh, noise):
    """K probes of one point (one row each): their mean is within 4 standard errors of the exact log-det."""
    f = _nonlinear_flow(fh, n=3)
    x = _points(3, count=1, seed=2)
    exact = f(x)[1].detach()
    g = _nonlinear_flow(fh, n=3, trace="hutchinson", noise=noise)
    g.load_state_dict(f.state_dict())
    K = 400
    torch.manual_seed(0)
    with torch.no_grad():
        est = g(x.expand(K, 3))[1]
    se = float(est.std()) / math.sqrt(K)
    assert float(est.std()) > 1e-3  # it is an estimate, not the exact trace
    assert abs(float(est.mean() - exact)) < 4 * se, (float(est.mean()), float(exact), se)


def test_hutchinson_probe_is_fixed_per_solve():
    """``F = c·[[0, 1], [1, 0]]`` with Rademacher probes: ``εᵀAε = ±2c`` exactly, so a probe held for the whole
    solve gives log-dets of exactly ``±2cT`` (one redrawn at each evaluation would average towards 0)."""
    c, T = 0.4, 1.0
    f = _linear_flow(c * torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64), T, trace="hutchinson",
                     noise="rademacher")
    torch.manual_seed(0)
    ladj = f(_points(2, count=64))[1]
    torch.testing.assert_close(ladj.abs(), torch.full_like(ladj, 2 * c * T), atol=ATOL, rtol=0)
    assert bool((ladj > 0).any()) and bool((ladj < 0).any())


def test_closed_form_divergence_equals_n_vector_jacobian_products(fh):
    """TimeMLP's closed-form trace (used by the exact CNF) is the trace of its autograd Jacobian."""
    field = fh.randomize_(flows.TimeMLP(4, hidden=8, layers=3).double())
    z = (_points(4, count=7, seed=7) * 2).requires_grad_(True)
    t = torch.tensor(0.37, dtype=F64)
    v, div = field.divergence(z, t)
    torch.testing.assert_close(v, field(z, t), atol=1e-14, rtol=0)
    torch.testing.assert_close(div, flows.continuous.exact_trace(field(z, t), z, create_graph=False), atol=1e-12,
                               rtol=0)
    assert float(div.detach().abs().min()) > 1e-3  # a field with a non-trivial trace


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_nonlinear_logdet_matches_autograd_jacobian_of_the_solve(fh, direction):
    f = _nonlinear_flow(fh, n=3)
    w = _points(3, count=3, seed=3)
    fn = (lambda x: f(x)[0]) if direction == "forward" else (lambda y: f.inverse(y)[0])
    ladj = (f if direction == "forward" else f.inverse)(w)[1]
    brute = fh.batched_riemannian_logdet(Euclidean(), fn, w)
    assert float(brute.abs().max()) > 1e-2
    torch.testing.assert_close(ladj, brute, atol=ATOL, rtol=0)
    assert f.logdet_tolerance >= ATOL / 10 and f.inverse_tolerance is not None


def _grads(f: ContinuousFlow, x: torch.Tensor) -> list[torch.Tensor]:
    x = x.clone().requires_grad_(True)
    y, ladj = f(x)
    (y.sin().sum() + ladj.sum()).backward()
    return [x.grad] + [p.grad.clone() for p in f.parameters()]


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_adjoint_gradients_match_backprop(fh, trace):
    f = _nonlinear_flow(fh, n=2, trace=trace)
    g = _nonlinear_flow(fh, n=2, trace=trace, adjoint=True)
    g.load_state_dict(f.state_dict())
    x = _points(2, count=4, seed=4)
    torch.manual_seed(5)  # the same Hutchinson probes for both
    direct = _grads(f, x)
    torch.manual_seed(5)
    adjoint = _grads(g, x)
    assert len(direct) == len(list(f.parameters())) + 1
    for a, b in zip(adjoint, direct):
        assert bool((b != 0).any())
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("adjoint", [False, True], ids=["backprop", "adjoint"])
def test_learnable_end_time_gets_its_gradient(adjoint):
    """Linear field: ``log|det| = tr(A)·T`` with ``T = softplus(τ)``, so ``∂ log|det| / ∂τ = tr(A)·sigmoid(τ)``."""
    A = torch.tensor([[0.5, 0.2], [-0.3, 0.9]], dtype=F64)
    f = _linear_flow(A, 0.8, adjoint=adjoint)
    assert f.raw_end_time.requires_grad
    f(_points(2, count=1))[1].sum().backward()
    expected = float(torch.trace(A)) * float(torch.sigmoid(f.raw_end_time.detach()))
    assert abs(float(f.raw_end_time.grad) - expected) < 1e-6
    # with learn_end_time=False, T is a buffer and not trained
    g = _linear_flow(A, 0.8, learn_end_time=False)
    assert "raw_end_time" not in dict(g.named_parameters()) and abs(float(g.end_time) - 0.8) < 1e-7


def test_lifted_cnf_is_exp_f_log_on_the_hyperboloid():
    M = Lorentz(k=torch.tensor(0.5, dtype=F64))
    f = flows.build("cnf@lorentz", M, 2, hidden=8).double()
    w = _points(2, count=4, seed=6)
    y, ladj = f(M.expmap0_spatial(w))
    v, inner_ladj = f.inner(w)
    torch.testing.assert_close(M.logmap0_spatial(y), v)
    norm = lambda u: torch.linalg.vector_norm(u, dim=-1)  # noqa: E731
    torch.testing.assert_close(ladj, inner_ladj + M.expmap_logdet(norm(v), 2) - M.expmap_logdet(norm(w), 2))


def test_build_options_and_errors():
    assert isinstance(flows.build("cnf", Euclidean(), 2, blocks=2, hidden=8), flows.Compose)
    assert isinstance(flows.build("cnf", Euclidean(), 2, hidden=8), ContinuousFlow)
    with pytest.raises(ValueError, match="trace"):
        ContinuousFlow(2, trace="skilling")
    with pytest.raises(ValueError, match="noise"):
        ContinuousFlow(2, trace="hutchinson", noise="uniform")
    with pytest.raises(ValueError, match="coordinates"):
        ContinuousFlow(3, hidden=8)(torch.randn(4, 2))


def test_float32_solves_at_its_tolerance_floor():
    """The float64 default tolerances are floored for float32 (CNF_MIN_TOLERANCE): the solve finishes and is
    accurate to float32 solver precision."""
    f = ContinuousFlow(2, hidden=8)
    with torch.no_grad():
        f.field.out.weight.mul_(100)  # an O(1) field
    x = _points(2).float()
    y, ladj = f(x)
    x_back, ladj_inv = f.inverse(y)
    assert float((y - x).detach().abs().max()) > 1e-2
    assert float((x_back - x).detach().abs().max()) < 1e-4 and float((ladj + ladj_inv).detach().abs().max()) < 1e-4
