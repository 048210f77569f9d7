"""The monotone rational-quadratic spline (Durkan et al. 2019) as an elementwise map: identity outside [-B, B],
C¹ at every knot (the one-sided derivatives agree, and equal 1 at ±B), strictly increasing, an exact
closed-form inverse, and a log-derivative equal to autograd's. Also the spline and additive couplings'
structure (the shared suite checks their round trips and log-dets as flows).

Tolerances (float64): the map and its inverse are a few dozen operations on O(B) numbers, so round trips are
exact to ~1e-14·B; we allow 1e-11. One-sided derivatives are taken 1e-12·B from a knot, where a C¹ spline's
log-derivative moves by ε·|f''/f'| ≲ 5e-12·1e3 (narrowest bins ~1e-2 wide); we allow 1e-6 relative.
"""

from __future__ import annotations

import pytest
import torch

import flows
from flows.constants import SPLINE_BOUND
from flows.splines import rational_quadratic_spline, spline_knots
from manifolds import Euclidean

F64 = torch.float64
B = SPLINE_BOUND


def _raw(shape, bins, scale, seed=0):
    """Unconstrained spline parameters; ``scale`` 3 gives very uneven bins and knot slopes from ~0.01 to ~10."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, 3 * bins - 1, generator=g, dtype=F64) * scale


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_identity_outside_the_interval(inverse):
    x = torch.cat([torch.linspace(-1e4, -B - 1e-9, 50, dtype=F64), torch.linspace(B + 1e-9, 1e4, 50, dtype=F64)])
    y, logd = rational_quadratic_spline(x, _raw(x.shape, 8, 3.0), inverse=inverse)
    assert torch.equal(y, x)
    assert torch.equal(logd, torch.zeros_like(x))
    # the interval's ends are fixed points
    ends = torch.tensor([-B, B], dtype=F64)
    assert torch.equal(rational_quadratic_spline(ends, _raw((2,), 8, 3.0), inverse=inverse)[0], ends)


@pytest.mark.parametrize("bins", [1, 3, 8])
def test_c1_at_every_knot(bins):
    """Values are continuous at the knots (y(x_k) = y_k from both sides) and so are the derivatives, which equal
    δ_k there; at ±B the derivative is 1, the slope of the identity tails."""
    raw = _raw((6,), bins, 2.0, seed=bins)
    xk, yk, dk = spline_knots(raw)
    eps = 1e-12 * B
    R = raw.unsqueeze(1).expand(6, bins + 1, raw.size(-1))
    left, dl = rational_quadratic_spline(xk - eps, R)
    right, dr = rational_quadratic_spline(xk + eps, R)
    at, _ = rational_quadratic_spline(xk, R)
    torch.testing.assert_close(at, yk, atol=1e-12, rtol=0)
    torch.testing.assert_close(left, yk, atol=1e-7, rtol=0)
    torch.testing.assert_close(right, yk, atol=1e-7, rtol=0)
    torch.testing.assert_close(dl.exp(), dr.exp(), rtol=1e-6, atol=0)  # left = right derivative …
    torch.testing.assert_close(dr.exp(), dk, rtol=1e-6, atol=0)  # … = δ_k (left of -B / right of B: the tails)
    assert torch.equal(dk[:, 0], torch.ones(6, dtype=F64)) and torch.equal(dk[:, -1], torch.ones(6, dtype=F64))
    assert bool((dk > 0).all())


def test_strictly_increasing():
    x = torch.linspace(-B - 1, B + 1, 20001, dtype=F64)
    for seed in range(4):
        raw = _raw((), 8, 3.0, seed=seed).expand(x.numel(), -1)
        y, logd = rational_quadratic_spline(x, raw)
        assert bool((y.diff() > 0).all())
        assert bool(torch.isfinite(logd).all())
        # and it maps [-B, B] onto [-B, B]
        inside = x.abs() <= B
        assert float(y[inside].abs().max()) <= B


@pytest.mark.parametrize("dtype,tol,tol_logd", [(torch.float64, 1e-13, 1e-10), (torch.float32, 2e-5, 5e-3)],
                         ids=["f64", "f32"])
def test_inverse_is_exact(dtype, tol, tol_logd):
    """Both compositions, on random points, the knots themselves and points within 1e-12 of them, with very
    uneven bins (slopes from ~1e-6 to ~200).

    ``g⁻¹`` is as accurate as its conditioning allows: rounding ``y`` moves ``g⁻¹(y)`` by ``ulp(y)/g'``, so the
    error in ``x`` is measured as ``|Δx| / (1 + 1/g'(x))``. The log-derivatives ``log (g⁻¹)'(g(x)) = -log g'(x)``
    are compared for moderate parameters: next to a knot with a small slope and a steep neighbour bin
    ``log g'`` changes by ~1e-4 per 1e-12 in ``x``, so there the comparison would measure the conditioning.
    """
    g = torch.Generator().manual_seed(1)
    raw = _raw((2000,), 8, 3.0, seed=2).to(dtype)
    xk, yk, _ = spline_knots(raw)
    pts = (torch.rand(2000, generator=g, dtype=F64) * 2.4 * B - 1.2 * B).to(dtype)
    for label, x in {"random": pts, "knots": xk[:, 3], "near knots": xk[:, 5] + 1e-12}.items():
        y, logd = rational_quadratic_spline(x, raw)
        x2, _ = rational_quadratic_spline(y, raw, inverse=True)
        err = (x2 - x).abs() / (1 + (-logd).exp())
        assert float(err.max()) < tol * B, label
    for y in ((torch.rand(2000, generator=g, dtype=F64) * 2 * B - B).to(dtype), yk[:, 4]):  # g(g⁻¹(y)) = y
        y2, logd2 = rational_quadratic_spline(rational_quadratic_spline(y, raw, inverse=True)[0], raw)
        assert float(((y2 - y).abs() / (1 + logd2.exp())).max()) < tol * B  # rounding x costs ulp(x)·g'
    moderate = _raw((2000,), 8, 1.0, seed=3).to(dtype)
    y, logd = rational_quadratic_spline(pts, moderate)
    _, logd_inv = rational_quadratic_spline(y, moderate, inverse=True)
    assert float((logd_inv + logd).abs().max()) < tol_logd


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_log_derivative_matches_autograd(inverse):
    g = torch.Generator().manual_seed(3)
    raw = _raw((500,), 8, 3.0, seed=4)
    x = (torch.rand(500, generator=g, dtype=F64) * 2.2 * B - 1.1 * B).requires_grad_()
    y, logd = rational_quadratic_spline(x, raw, inverse=inverse)
    (dy,) = torch.autograd.grad(y.sum(), x)  # elementwise map: the gradient of the sum is the diagonal
    torch.testing.assert_close(logd, dy.log(), atol=1e-10, rtol=0)
    assert float(logd.detach().abs().max()) > 1.0  # non-trivial slopes


def test_gradients_wrt_parameters_are_finite():
    raw = _raw((100,), 8, 3.0, seed=5).requires_grad_()
    x = torch.linspace(-1.2 * B, 1.2 * B, 100, dtype=F64)
    y, logd = rational_quadratic_spline(x, raw)
    (y.sum() + logd.sum()).backward()
    assert bool(torch.isfinite(raw.grad).all()) and bool((raw.grad != 0).any())


def test_zero_parameters_give_the_identity():
    x = torch.linspace(-B, B, 101, dtype=F64)
    y, logd = rational_quadratic_spline(x, torch.zeros(101, 3 * 8 - 1, dtype=F64))
    torch.testing.assert_close(y, x, atol=1e-13, rtol=0)
    torch.testing.assert_close(logd, torch.zeros_like(x), atol=1e-13, rtol=0)


def test_bad_parameter_count_is_a_value_error():
    with pytest.raises(ValueError, match="3K - 1"):
        rational_quadratic_spline(torch.zeros(3), torch.zeros(3, 7))
    with pytest.raises(ValueError):
        flows.SplineHalf(bins=0)


@pytest.mark.parametrize("ends,extra", [("periodic", 0), ("free", 1)])
def test_interval_splines_fix_the_ends_and_are_exact(ends, extra):
    """The splines without tails (``ends="periodic"``: the circular spline of Rezende et al. 2020; ``"free"``: the
    sphere's height) map [-B, B] onto itself fixing ±B, take 3K + (0 | 1) parameters, are strictly increasing, C¹
    at their knots, exactly invertible, and their log-derivative is autograd's; a periodic one has the same slope at
    both ends (so it is C¹ on the circle), a free one its own slope at each."""
    bins = 6
    raw = torch.randn(400, 3 * bins + extra, generator=torch.Generator().manual_seed(11), dtype=F64) * 2.0
    xk, yk, dk = spline_knots(raw, B, ends)
    assert bool((xk[:, 0] == -B).all()) and bool((yk[:, -1] == B).all())
    if ends == "periodic":
        assert torch.equal(dk[:, 0], dk[:, -1])
    else:
        assert float((dk[:, 0] - dk[:, -1]).abs().max()) > 1e-2
    ends_out, _ = rational_quadratic_spline(torch.tensor([-B, B], dtype=F64).expand(400, 2).T, raw.expand(2, -1, -1),
                                            ends=ends)
    torch.testing.assert_close(ends_out, torch.tensor([[-B], [B]], dtype=F64).expand(2, 400), atol=1e-12, rtol=0)
    _, d_ends = rational_quadratic_spline(torch.tensor([-B, B], dtype=F64).expand(400, 2).T, raw.expand(2, -1, -1),
                                          ends=ends)
    torch.testing.assert_close(d_ends.exp(), torch.stack([dk[:, 0], dk[:, -1]]), rtol=1e-12, atol=0)
    g = torch.Generator().manual_seed(12)
    x = ((torch.rand(400, generator=g, dtype=F64) * 2 - 1) * B).requires_grad_()
    y, logd = rational_quadratic_spline(x, raw, ends=ends)
    (dy,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(logd, dy.log(), atol=1e-10, rtol=0)
    x2, logd_inv = rational_quadratic_spline(y.detach(), raw, inverse=True, ends=ends)
    assert float(((x2 - x.detach()).abs() / (1 + (-logd.detach()).exp())).max()) < 1e-12 * B
    torch.testing.assert_close(logd_inv, -logd.detach(), atol=1e-9, rtol=0)
    zero = torch.zeros(400, 3 * bins + extra, dtype=F64)  # all-zero parameters: the identity
    torch.testing.assert_close(rational_quadratic_spline(x.detach(), zero, ends=ends)[0], x.detach(), atol=1e-13, rtol=0)
    with pytest.raises(ValueError, match="3K"):
        rational_quadratic_spline(x.detach(), raw[..., :-1] if extra else raw[..., :-2], ends=ends)


# ---------------------------------------------------------------------------------------------------------
# spline and additive couplings (structure; the shared suite checks them as flows)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [2, 8])
def test_spline_coupling_layout(fh, bins):
    """3K - 1 conditioner outputs per transformed coordinate; the conditioning half passes through unchanged; a
    transformed coordinate outside [-B, B] is left alone with log-det 0."""
    f = fh.randomize_(flows.SplineCoupling(5, parity=0, hidden=8, bins=bins).double())
    assert f.bijection.n_params == 3 * bins - 1
    assert f.net.net[-1].out_features == (3 * bins - 1) * len(f.trans_idx)
    x = torch.randn(16, 5, dtype=F64)
    y, _ = f(x)
    assert torch.equal(y[:, f.cond_idx], x[:, f.cond_idx])
    far = x.clone()
    far[:, f.trans_idx] = 2 * B
    y_far, ladj_far = f(far)
    assert torch.equal(y_far, far) and torch.equal(ladj_far, torch.zeros(16, dtype=F64))


def test_additive_coupling_is_volume_preserving_and_nice_scales(fh):
    c = fh.randomize_(flows.AdditiveCoupling(4, parity=1, hidden=8).double())
    x = torch.randn(6, 4, dtype=F64)
    y, ladj = c(x)
    assert torch.equal(ladj, torch.zeros(6, dtype=F64))
    J = torch.autograd.functional.jacobian(lambda v: c(v)[0], x[:1]).reshape(4, 4)
    torch.testing.assert_close(torch.linalg.det(J), torch.tensor(1.0, dtype=F64), atol=1e-12, rtol=0)
    assert float((y - x).detach().abs().max()) > 1e-2
    # the registered NICE flow ends with its diagonal scaling; without it the stack has log-det 0
    f = flows.build("additive", Euclidean(), 4, layers=3, hidden=8)
    assert isinstance(f.transforms[-1], flows.ActNorm) and bool(f.transforms[-1].initialized)
    g = fh.randomize_(flows.build("additive", Euclidean(), 4, layers=3, hidden=8, scaling=False).double())
    assert len(g.transforms) == 3
    assert torch.equal(g(x)[1], torch.zeros(6, dtype=F64))
