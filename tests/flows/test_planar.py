"""Planar, radial and Sylvester flows: closed-form log-dets against the autograd Jacobian in both directions
(including the variants the registry does not build), the invertibility parameterisations under adversarial
raw parameters, and the stated accuracy of the numerical inverses."""

from __future__ import annotations

import math

import pytest
import torch

from flows import Planar, Radial, Sylvester, solve_tanh_equation

F64 = torch.float64

#: closed-form log-dets vs slogdet of an autograd Jacobian, float64: rounding only (the values are O(1..10))
LOGDET_ATOL = 1e-10


def _jac_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(fn, xi))[1] for xi in x])


def _points(n: int, seed: int = 0) -> torch.Tensor:
    """Random directions with norms from 0.01 to 100."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(12, n, generator=g, dtype=F64)
    norms = torch.logspace(-2, 2, 12, dtype=F64)
    return d / d.norm(dim=-1, keepdim=True) * norms[:, None]


def _make(kind: str, n: int, fh, gain: float = 1.5):
    layer = {
        "planar": lambda: Planar(n),
        "radial": lambda: Radial(n),
        "sylvester-householder": lambda: Sylvester(n),
        "sylvester-rank": lambda: Sylvester(n, rank=max(1, n - 2)),
        "sylvester-triangular": lambda: Sylvester(n, variant="triangular"),
        "sylvester-triangular-reversed": lambda: Sylvester(n, variant="triangular", reverse=True),
    }[kind]()
    return fh.randomize_(layer.double(), gain=gain)


KINDS = ["planar", "radial", "sylvester-householder", "sylvester-rank", "sylvester-triangular",
         "sylvester-triangular-reversed"]


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("kind", KINDS)
def test_logdet_matches_autograd_jacobian_both_directions(fh, kind, n):
    f = _make(kind, n, fh)
    x = _points(n)
    y, ladj = f(x)
    torch.testing.assert_close(ladj, _jac_logdet(lambda v: f(v)[0], x), atol=LOGDET_ATOL, rtol=0)
    xi, ladj_inv = f.inverse(x)  # fresh data points: the density direction
    torch.testing.assert_close(ladj_inv, _jac_logdet(lambda v: f.inverse(v)[0], x), atol=LOGDET_ATOL, rtol=0)
    torch.testing.assert_close(f.inverse(y)[1], -ladj, atol=LOGDET_ATOL, rtol=0)
    assert float(ladj.detach().abs().max()) > 1e-2


def test_sylvester_logdet_is_the_sylvester_determinant(fh):
    """``det(I_n + U diag(h′) Wᵀ) = det(I_M + diag(h′) Wᵀ U)`` with ``U = QR``, ``W = QR̃ᵀ`` (the paper's identity),
    for a rank-deficient Householder layer, computed from the explicit matrices."""
    n, m = 5, 3
    f = _make("sylvester-rank", n, fh)
    assert f.rank == m
    r, rt, _ = f.triangles()
    q = f._q(torch.eye(n, dtype=F64)).T[:, :m]  # row j of _q(I) is Q e_j; Q is n×m, orthonormal columns
    torch.testing.assert_close(q.T @ q, torch.eye(m, dtype=F64), atol=1e-13, rtol=0)
    u, w = q @ r, q @ rt.T
    x = _points(n)
    h = torch.tanh(x @ w + f.b)
    torch.testing.assert_close(f(x)[0], x + h @ u.T, atol=1e-12, rtol=0)
    dh = 1 - h * h
    det_m = torch.linalg.det(torch.eye(m, dtype=F64) + dh[:, :, None] * (w.T @ u))
    det_n = torch.linalg.det(torch.eye(n, dtype=F64) + (u * dh[:, None, :]) @ w.T)
    torch.testing.assert_close(det_m, det_n, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(f(x)[1], det_m.log(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_planar_reparameterisation_keeps_it_invertible(scale):
    """Raw ``u`` anti-aligned with ``w`` (``wᵀu ≪ −1``: the raw map would fold) still gives ``ûᵀw > −1``, a
    positive determinant everywhere, and a working inverse."""
    torch.manual_seed(1)
    f = Planar(3).double()
    with torch.no_grad():
        f.w.copy_(torch.tensor([1.0, -2.0, 0.5]))
        f.u.copy_(-scale * f.w)
        f.b.fill_(0.3)
    u_hat, m = f.u_hat()
    wu = float((f.w @ f.u).detach())
    assert wu < -1
    torch.testing.assert_close(u_hat @ f.w, m, atol=1e-12, rtol=0)
    one_plus_m = torch.nn.functional.softplus(torch.tensor(wu, dtype=F64))
    torch.testing.assert_close(m, one_plus_m - 1)
    assert float(one_plus_m) > 0  # m > −1 (at scale 30, m rounds to −1: the log-det uses 1 + m directly)
    # across the critical line wᵀx + b = 0, where tanh′ = 1, the determinant 1 + m·tanh′ is smallest but positive
    x = (torch.linspace(-20, 20, 101, dtype=F64)[:, None] - 0.3) * f.w / (f.w @ f.w)
    y, ladj = f(x)
    assert torch.isfinite(ladj).all()
    torch.testing.assert_close(ladj.max(), torch.tensor(0.0, dtype=F64), atol=1e-12, rtol=0)  # far from the line
    assert float(ladj.detach().min()) >= float(one_plus_m.log()) - 1e-9  # never below log(1 + m) …
    if scale == 1.0:  # … and reached on the line
        torch.testing.assert_close(ladj.min(), one_plus_m.log(), atol=1e-9, rtol=0)
    back, _ = f.inverse(y)
    assert torch.isfinite(back).all()
    # the inverse solves the equation (small residual) even where the map is nearly singular (scale 30:
    # det ≈ 1e-68, so x itself is determined only to ~eps/det); at scale 1 it is accurate to its tolerance
    assert float((f(back)[0] - y).detach().abs().max()) <= 1e-12
    if scale == 1.0:
        assert float((back - x).detach().abs().max()) <= f.inverse_tolerance


def test_radial_parameterisation_enforces_beta_at_least_minus_alpha():
    """β̂ → −∞ gives β → −α (the boundary): the map stays a bijection with finite log-det away from x₀."""
    f = Radial(2).double()
    with torch.no_grad():
        f.alpha_hat.fill_(0.7)
        f.beta_hat.fill_(-25.0)
        f.x0.copy_(torch.tensor([0.5, -1.0]))
    alpha, beta, apb = (v.detach() for v in f.alpha_beta())
    assert float(alpha) > 0 and float(beta) >= -float(alpha) and float(apb) > 0
    x = f.x0 + _points(2, seed=4)
    y, ladj = f(x)
    assert torch.isfinite(ladj).all()
    back, ladj_inv = f.inverse(y)
    torch.testing.assert_close(back, x, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-9, rtol=0)


@pytest.mark.parametrize("kind", ["planar", "sylvester-householder", "sylvester-rank", "sylvester-triangular"])
def test_numerical_inverse_meets_its_stated_tolerance(fh, kind):
    """Round trips in both directions, float64, ‖y‖ up to 100 (the documented working range), within
    ``inverse_tolerance``; several random layers of each kind, with O(1) parameters (gain 2)."""
    n = 4
    worst = 0.0
    for seed in range(5):
        f = fh.randomize_(_make(kind, n, fh, gain=2.0), gain=2.0, seed=seed)
        tol = f.inverse_tolerance
        assert tol is not None
        pts = _points(n, seed=seed)
        with torch.no_grad():
            worst = max(worst, float((f.inverse(f(pts)[0])[0] - pts).abs().max()),
                        float((f(f.inverse(pts)[0])[0] - pts).abs().max()))
    assert worst <= tol, worst


def test_radial_inverse_is_exact():
    assert Radial(3).inverse_tolerance is None


@pytest.mark.parametrize("a", [-0.999, -0.5, 0.0, 0.7, 20.0])
def test_scalar_solver_finds_the_root_and_its_implicit_derivative(a):
    """``s + a·tanh(c·s + d) = t``: residual at rounding level, and the autograd derivatives are those of the
    implicit function (checked by finite differences of the solver itself)."""
    c = torch.tensor(1.0 if a > -1 else 0.5, dtype=F64)
    a_t = torch.tensor(a, dtype=F64, requires_grad=True)
    d = torch.tensor(0.3, dtype=F64, requires_grad=True)
    t = torch.linspace(-50, 50, 41, dtype=F64).requires_grad_()
    s = solve_tanh_equation(a_t, c, d, t)
    resid = s + a_t * torch.tanh(c * s + d) - t
    assert float(resid.detach().abs().max()) <= 1e-13 * 50
    torch.autograd.gradcheck(lambda a_, d_, t_: solve_tanh_equation(a_, c, d_, t_), (a_t, d, t[::8].detach()
                             .requires_grad_()), atol=1e-6, rtol=1e-6)
    # derivative in t is 1/g′(s)
    (ds_dt,) = torch.autograd.grad(s.sum(), t)
    th = torch.tanh(c * s + d)
    torch.testing.assert_close(ds_dt, 1 / (1 + a * c * (1 - th * th)).detach(), atol=1e-12, rtol=1e-10)
    assert not math.isnan(float(ds_dt.sum()))


def test_registered_with_lifted_versions():
    import flows
    from manifolds import Euclidean, Lorentz

    for name in ("planar", "radial", "sylvester"):
        assert name in flows.available(Euclidean()) and name + "@lorentz" in flows.available(Lorentz())
        f = flows.build(name, Euclidean(), 3, layers=3)
        assert len(f.transforms) == 3
    with pytest.raises(ValueError, match="conditioner"):
        flows.build("planar", Euclidean(), 3, conditioner="gcn")
