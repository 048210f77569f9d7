"""The von Mises–Fisher draw's gradient in κ on spheres other than S² (implicit reparameterisation of Wood's sampler):
``dt/dκ`` against a finite difference of the quantile function, its large-κ limit, the unbiasedness of the pathwise
estimator of ``d/dκ E[μᵀx]``, and the wiring through ``rsample``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.stats
import torch

from manifolds import Sphere, VonMisesFisher
from manifolds.sphere_distributions import bessel_ratio, vmf_t_grad_kappa

F64 = torch.float64


def _masses(t: float, kappa: float, m: int) -> tuple[float, float]:
    """``∫_0^t`` and ``∫_t^2`` of ``e^{-κ(τ - t)}(τ(2 - τ))^α``, ``α = (m - 2)/2``: the law of ``t = 1 - μᵀx`` up to
    a constant, scaled so neither underflows (``κ < 0``: the law of ``2 - t``), by ``scipy.integrate.quad`` with the
    algebraic endpoint weights at 0 and 2, split at ``t ∓ 60/|κ|`` so the mass within ``~1/|κ|`` of ``t`` is
    resolved."""
    al = 0.5 * (m - 2)
    opts = dict(epsabs=0.0, epsrel=1e-13, limit=500)

    def smooth(lo: float, hi: float) -> float:
        return scipy.integrate.quad(lambda s: math.exp(-kappa * (s - t)) * (s * (2 - s)) ** al, lo, hi, **opts)[0]

    def at_0(hi: float) -> float:
        return scipy.integrate.quad(lambda s: math.exp(-kappa * (s - t)) * (2 - s) ** al, 0.0, hi, weight="alg",
                                    wvar=(al, 0.0), **opts)[0]

    def at_2(lo: float) -> float:
        return scipy.integrate.quad(lambda s: math.exp(-kappa * (s - t)) * s ** al, lo, 2.0, weight="alg",
                                    wvar=(0.0, al), **opts)[0]

    near = 60.0 / abs(kappa)
    c, d = t - near, t + near
    low = at_0(c) + smooth(c, t) if c > 0 else at_0(t)
    up = smooth(t, d) + at_2(d) if d < 2 else at_2(t)
    return low, up


def _lower_quantile(level: float, kappa: float, m: int) -> float:
    """``t`` with ``F(t; κ) = level``, by Brent's method on ``log F`` after a bracket search that keeps
    ``|κ|·|τ - t|`` small enough for ``_masses`` not to overflow. ``κ < 0`` gives the quantile of ``2 - t``: the
    upper tail of ``t`` with all the digits of ``2 - t``."""
    def g(t: float) -> float:
        low, up = _masses(t, kappa, m)
        return math.log(low / (low + up)) - math.log(level)

    a = float(bessel_ratio(0.5 * (m + 1) - 1, torch.tensor(abs(kappa), dtype=F64)))
    mean = 1 - a if kappa > 0 else 1 + a
    step = min(1.0, 1 / abs(kappa))
    lo, hi, j = mean, mean, 0
    while g(lo) >= 0:
        j += 1
        lo = max(mean - step * 2**j, mean * 10.0**-j)
    j = 0
    while g(hi) <= 0:
        j += 1
        hi = min(mean + step * 2**j, 2 - (2 - mean) * 10.0**-j)
    return scipy.optimize.brentq(g, lo, hi, xtol=1e-300, rtol=1e-15, maxiter=400)


def _a(kappa: torch.Tensor, m: int) -> torch.Tensor:
    return 1 - bessel_ratio(0.5 * (m + 1) - 1, kappa)


# (m, κ, quantile level, upper tail)
CASES = [(m, k, lev, up) for m in (1, 3, 4, 9, 49) for k in (1e-3, 2.0, 40.0, 1e5)
         for lev, up in ((1e-8, False), (0.5, False), (1e-4, True))]


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")  # roundoff at 1e-13: the check is 1e-5
@pytest.mark.parametrize("m, kappa, level, upper", CASES)
def test_dt_dkappa_is_the_derivative_of_the_quantile(m, kappa, level, upper):
    """``dt/dκ`` at fixed quantile level equals the central difference ``(q(κ(1+h)) - q(κ(1-h)))/(2κh)`` of the
    quantile computed by quadrature and root-finding (``h = 1e-4``: truncation ``~h²``, rounding ``~1e-13/h``),
    within 1e-5 relative, from the far lower tail to the upper tail (there of ``2 - t``, which keeps its digits), on
    the circle (``m = 1``) and up to S⁴⁹."""
    h, sign = 1e-4, -1.0 if upper else 1.0
    q = _lower_quantile(level, sign * kappa, m)
    fd = (_lower_quantile(level, sign * kappa * (1 + h), m) - _lower_quantile(level, sign * kappa * (1 - h), m)) / (
        2 * kappa * h)
    t, fd = (2 - q, -fd) if upper else (q, fd)
    k = torch.tensor([kappa], dtype=F64)
    got = float(vmf_t_grad_kappa(torch.tensor([t], dtype=F64), k, _a(k, m), m))
    assert got < 0
    assert abs(got / fd - 1) < 1e-5, (t, got, fd)


@pytest.mark.parametrize("m", [1, 3, 4, 9, 49])
def test_dt_dkappa_tends_to_the_gamma_limit(m):
    """At large κ, ``t ≈ Gamma(m/2, rate κ + (m - 2)/4)`` (the factor ``(1 - τ/2)^{(m-2)/2} ≈ e^{-(m-2)τ/4}``), so
    ``dt/dκ → -t/κ`` with relative deviation ``|m - 2|/(4κ)`` to first order: tested at three quantiles of the
    gamma law and κ from 1e4 to 1e6."""
    for kappa in (1e4, 1e5, 1e6):
        t = torch.as_tensor(scipy.stats.gamma(m / 2).ppf([1e-6, 0.5, 1 - 1e-6]) / kappa)
        k = torch.full((3,), kappa, dtype=F64)
        dev = (vmf_t_grad_kappa(t, k, _a(k, m), m) / (-t / k) - 1).abs()
        assert bool((dev <= 1.02 * abs(m - 2) / (4 * kappa) + 1e-9).all()), (kappa, dev)


@pytest.mark.parametrize("p, kappa", [(2, 1.5), (4, 0.5), (4, 30.0), (10, 3.0), (50, 200.0)])
def test_pathwise_gradient_of_the_mean_resultant_length_is_unbiased(p, kappa):
    """The mean over draws of the autograd gradient ``d(μᵀx)/dκ`` estimates ``d/dκ E[μᵀx] = A_p'(κ) =
    1 - A² - (p - 1)A/κ``: within 5 standard errors over 100k draws (fixed seed), in float64."""
    S = Sphere(p - 1)
    mu = S.projx(torch.arange(1.0, p + 1, dtype=F64))
    k = torch.full((100_000,), kappa, dtype=F64, requires_grad=True)
    torch.manual_seed(3)
    x = VonMisesFisher(mu.expand(100_000, p), k, S).rsample()
    (x @ mu).sum().backward()
    g = k.grad
    a = float(bessel_ratio(p / 2 - 1, torch.tensor(kappa, dtype=F64)))
    exact = 1 - a * a - (p - 1) * a / kappa
    assert bool(torch.isfinite(g).all())
    assert abs(float(g.mean()) - exact) < 5 * float(g.std()) / math.sqrt(len(g)), (float(g.mean()), exact)


def test_rsample_gradient_in_kappa_is_dt_dkappa_at_the_draw():
    """Through ``rsample_and_log_prob`` on S³ (a batch of κ): ``∂(μᵀx)/∂κ = -dt/dκ`` at each draw, the log-density's
    gradient in κ is finite, and the gradient in ``μ`` (the Householder map) still flows."""
    kappa = torch.tensor([0.1, 5.0, 300.0, 3e4], dtype=F64, requires_grad=True)
    loc = torch.full((4, 4), 0.5, dtype=F64, requires_grad=True)
    torch.manual_seed(4)
    x, lp = VonMisesFisher(loc, kappa).rsample_and_log_prob()
    t = 1 - (x.double() * loc.double()).sum(-1)
    (g,) = torch.autograd.grad((x * loc.detach()).sum(), kappa, retain_graph=True)
    k64 = kappa.detach().double()
    ref = -vmf_t_grad_kappa(t.detach(), k64, _a(k64, 3), 3)
    torch.testing.assert_close(g, ref, rtol=1e-9, atol=0.0)
    (gl,) = torch.autograd.grad(lp.sum(), kappa, retain_graph=True)
    assert bool(torch.isfinite(gl).all())
    x.sum().backward()
    assert loc.grad is not None and bool(torch.isfinite(loc.grad).all()) and bool(loc.grad.abs().sum() > 0)
