"""i-ResNet blocks: the power series converges to ``slogdet(I + A)`` for linear ``F(x) = Ax`` (within its stated
truncation bound), the Hutchinson and Russian-roulette estimators are unbiased, the Lipschitz cap holds, the
fixed-point inverse meets its stated tolerance, and the inverse's implicit gradients are exact."""

from __future__ import annotations

import math

import pytest
import torch

from flows import InvertibleResidual, logdet_power_series
from flows.residual import series_terms

F64 = torch.float64


def _contraction(n: int, norm: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=F64)
    return a * (norm / torch.linalg.matrix_norm(a, ord=2))


def _block(fh, n: int = 3, seed: int = 0, **kw) -> InvertibleResidual:
    f = InvertibleResidual(n, hidden=16, **kw).double()
    return fh.randomize_(f, gain=1.5, seed=seed)


@pytest.mark.parametrize("norm", [0.3, 0.729, 0.95])
@pytest.mark.parametrize("n", [1, 4])
def test_series_converges_to_slogdet_for_linear_F(n, norm):
    """``F(x) = Ax``, ``‖A‖₂ < 1``: with ``N = series_terms(‖A‖, n)`` terms the series is within its bound
    ``n·L^{N+1}/((N+1)(1 − L)) ≤ 1e-8`` of ``slogdet(I + A)``, and fewer terms are measurably worse."""
    a = _contraction(n, norm)
    x = torch.zeros(2, n, dtype=F64)
    exact = torch.linalg.slogdet(torch.eye(n, dtype=F64) + a)[1]
    terms = series_terms(norm, n)
    series = logdet_power_series(lambda v: v @ a, x, terms)  # vᵀA
    assert float((series - exact).abs().max()) <= 1e-8
    few = logdet_power_series(lambda v: v @ a, x, 3)
    if norm > 0.5:
        assert float((few - exact).abs().max()) > 1e-4  # the check is not vacuous: truncation matters


def test_block_with_linear_F_has_the_slogdet_log_det(fh):
    """No hidden layer: ``F(x) = Wx + b`` with ``‖W‖₂ ≤ 0.9``; the block's log-det is ``slogdet(I + W)``
    everywhere, in both directions."""
    f = _block(fh, 4, hidden_layers=0)
    w = f.net[0].weight
    assert float(torch.linalg.matrix_norm(w.detach(), ord=2)) <= 0.9 + 1e-12
    exact = torch.linalg.slogdet(torch.eye(4, dtype=F64) + w)[1].detach()
    x = torch.randn(6, 4, dtype=F64) * 5
    y, ladj = f(x)
    torch.testing.assert_close(ladj, exact.expand(6), atol=1e-8, rtol=0)
    torch.testing.assert_close(f.inverse(y)[1], -exact.expand(6), atol=1e-8, rtol=0)
    torch.testing.assert_close(y, x + x @ w.T + f.net[0].bias, atol=1e-12, rtol=0)


def test_default_exact_logdet_matches_autograd_jacobian(fh):
    f = _block(fh, 5)
    assert f.logdet == "exact" and f.terms == series_terms(0.9 ** 3, 5)
    x = torch.randn(6, 5, dtype=F64) * 3
    _, ladj = f(x)
    brute = torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(lambda v: f(v)[0], xi))[1]
                         for xi in x])
    torch.testing.assert_close(ladj, brute, atol=1e-8, rtol=0)
    assert float(brute.abs().max()) > 1e-2


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_estimator_is_unbiased(fh, probe):
    """Mean over many probes of the Hutchinson series (same number of terms) vs the exact-trace series: within
    4 standard errors (and the standard error is small enough for that to mean something)."""
    f = _block(fh, 4, logdet="hutchinson", terms=8, probe=probe, n_probes=1)
    exact = _block(fh, 4, logdet="exact", terms=8)
    x = torch.randn(3, 4, dtype=F64)
    with torch.no_grad():
        target = exact(x)[1]
        torch.manual_seed(0)
        reps = 4000  # one independent probe per row: replicate the points
        samples = f(x.repeat(reps, 1))[1].reshape(reps, -1)
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(samples.size(0))
    assert bool((se > 0).all()) and float(se.max()) < 0.05 * float(target.abs().max())
    assert bool(((mean - target).abs() <= 4 * se).all()), (mean, target, se)


def test_russian_roulette_estimator_is_unbiased_for_the_full_series(fh):
    """Residual Flows' estimator has no truncation bias: its mean is the true ``log det(I + J)``."""
    f = _block(fh, 3, logdet="roulette", n_probes=1)
    exact = _block(fh, 3)
    x = torch.randn(2, 3, dtype=F64)
    with torch.no_grad():
        target = exact(x)[1]
        torch.manual_seed(1)
        # the number of terms is drawn once per call: i.i.d. samples are per-call averages (16 probes each)
        samples = torch.stack([f(x.repeat(16, 1))[1].reshape(16, -1).mean(0) for _ in range(1000)])
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(samples.size(0))
    assert bool(((mean - target).abs() <= 4 * se).all()), (mean, target, se)


def test_lipschitz_cap(fh):
    f = _block(fh, 3)
    for layer in f.net:
        if isinstance(layer, torch.nn.Linear):
            assert float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2)) <= 0.9 * (1 + 1e-12)
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2000, 3, generator=g, dtype=F64) * 3, torch.randn(2000, 3, generator=g, dtype=F64) * 3
    with torch.no_grad():
        ratio = (f.net(a) - f.net(b)).norm(dim=-1) / (a - b).norm(dim=-1)
    assert float(ratio.max()) < f.lipschitz_bound < 1


@pytest.mark.parametrize("explicit", ["forward", "inverse"])
def test_fixed_point_inverse_meets_its_stated_tolerance(fh, explicit):
    """Round trips in both directions, float64, ‖y‖ up to 100, within ``inverse_tolerance``."""
    n = 4
    worst = 0.0
    for seed in range(3):
        f = _block(fh, n, seed=seed, explicit=explicit)
        g = torch.Generator().manual_seed(seed)
        d = torch.randn(20, n, generator=g, dtype=F64)
        pts = d / d.norm(dim=-1, keepdim=True) * torch.logspace(-2, 2, 20, dtype=F64)[:, None]
        with torch.no_grad():
            worst = max(worst, float((f.inverse(f(pts)[0])[0] - pts).abs().max()),
                        float((f(f.inverse(pts)[0])[0] - pts).abs().max()))
    assert worst <= f.inverse_tolerance, worst


def test_inverse_jacobian_and_parameter_gradients_are_exact(fh):
    """The fixed-point inverse's autograd derivatives: in ``y`` the inverse of the forward Jacobian, in the
    parameters the same as differentiating a long unrolled fixed-point iteration."""
    f = _block(fh, 3)
    y = torch.randn(4, 3, dtype=F64) * 2
    x = f.inverse(y)[0].detach()
    for xi, yi in zip(x, y):
        jac_inv = torch.autograd.functional.jacobian(lambda v: f.inverse(v)[0], yi)
        jac_fwd = torch.autograd.functional.jacobian(lambda v: f(v)[0], xi)
        torch.testing.assert_close(jac_inv, torch.linalg.inv(jac_fwd), atol=1e-9, rtol=0)
    weights = torch.randn(4, 3, dtype=F64)
    params = [p for p in f.parameters()]
    got = torch.autograd.grad((f.inverse(y)[0] * weights).sum() + f.inverse(y)[1].sum(), params)
    z = y.clone()
    for _ in range(150):  # unrolled: x_{k+1} = y − F(x_k), with the graph (contraction ≤ 0.729^k)
        z = y - f.net(z)
    ref = torch.autograd.grad((z * weights).sum() - f(z)[1].sum(), params)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_explicit_inverse_direction_logdets(fh):
    """``explicit="inverse"``: the density direction is the one-pass map, sampling the fixed point; log-dets match
    the autograd Jacobian in both directions."""
    f = _block(fh, 3, explicit="inverse")
    y = torch.randn(4, 3, dtype=F64) * 2
    for direction in (f.forward, f.inverse):
        _, ladj = direction(y)
        brute = torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(lambda v: direction(v)[0],
                                                                                      yi))[1] for yi in y])
        torch.testing.assert_close(ladj, brute, atol=1e-8, rtol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="lipschitz"):
        InvertibleResidual(3, lipschitz=1.0)
    with pytest.raises(ValueError, match="logdet"):
        InvertibleResidual(3, logdet="svd")
    with pytest.raises(ValueError, match="dimension 3"):
        InvertibleResidual(3)(torch.randn(2, 4))


def test_registered_with_lifted_version():
    import flows
    from manifolds import Euclidean, Lorentz

    assert "iresnet" in flows.available(Euclidean()) and "iresnet@lorentz" in flows.available(Lorentz())
    f = flows.build("iresnet", Euclidean(), 3, layers=2, hidden=8)
    assert all(isinstance(t, InvertibleResidual) and t.logdet == "exact" for t in f.transforms)
    assert f.inverse_tolerance == 2 * f.transforms[0].inverse_tolerance
