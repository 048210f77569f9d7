"""The von Mises–Fisher distribution on every Sⁿ without a host read: ``log_ive`` and ``bessel_ratio`` in torch for
every order (against 40-digit mpmath, float64 and float32, their derivatives), Wood's sampler with a fixed number of
proposals (the mean and the law of ``t = 1 - μᵀx``), and a step that reads nothing on the host and compiles whole."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
import torch

from manifolds import Sphere, VonMisesFisher
from manifolds.constants import VMF_WOOD_PROPOSALS
from manifolds.sphere_distributions import _one_minus_bessel_ratio, _symmetric_beta, bessel_ratio, log_ive

F64 = torch.float64
NUS = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.5, 10.0, 24.5, 50.0, 99.5]
KAPPAS = np.logspace(-6, 6, 49)


def _reference(nu: float, kappas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``log ive(ν, κ)``, ``A = I_{ν+1}/I_ν``, ``1 - A`` and ``dA/dκ = 1 - A² - (2ν + 1)A/κ`` by 40-digit mpmath."""
    out = []
    with mpmath.workdps(40):
        for k in kappas:
            k = mpmath.mpf(float(k))
            i0, i1 = mpmath.besseli(nu, k), mpmath.besseli(nu + 1, k)
            a = i1 / i0
            out.append((float(mpmath.log(i0) - k), float(a), float(1 - a), float(1 - a * a - (2 * nu + 1) * a / k)))
    return tuple(np.array(c) for c in zip(*out))


@pytest.fixture(scope="module")
def references() -> dict[float, tuple[np.ndarray, ...]]:
    return {nu: _reference(nu, KAPPAS) for nu in NUS}


@pytest.mark.parametrize("nu", NUS)
def test_log_ive_and_ratio_match_mpmath_in_float64(nu, references):
    """Over ``κ`` from 1e-6 to 1e6: ``log ive`` to ``5e-14·max(1, |log ive|)`` (it is ``-1714`` at ``ν = 99.5``,
    ``κ = 1e-6``: no underflow), ``A`` and ``1 - A`` (no cancellation at either end) to 5e-14 relative."""
    log_ref, a_ref, om_ref, _ = references[nu]
    k = torch.tensor(KAPPAS, dtype=F64)
    got = log_ive(nu, k).numpy()
    assert np.all(np.isfinite(got))
    assert np.all(np.abs(got - log_ref) <= 5e-14 * np.maximum(1, np.abs(log_ref))), np.abs(got - log_ref).max()
    a = bessel_ratio(nu, k).numpy()
    np.testing.assert_allclose(a, a_ref, rtol=5e-14, atol=0)
    np.testing.assert_allclose(_one_minus_bessel_ratio(nu, k).numpy(), om_ref, rtol=5e-14, atol=0)
    # the limits: A ≈ κ/(2ν + 2) at small κ, 1 - A ≈ (2ν + 1)/(2κ) at large κ (next terms ~κ² and ~(2ν + 1)/(4κ))
    assert abs(a[0] / (1e-6 / (2 * nu + 2)) - 1) < 1e-11
    assert abs(_one_minus_bessel_ratio(nu, k[-1:]).item() / ((2 * nu + 1) / 2e6) - 1) < (2 * nu + 1) / 2e6


@pytest.mark.parametrize("nu", NUS)
def test_log_ive_and_ratio_in_float32(nu):
    """A float32 ``κ`` gets the float64 result rounded: within a few float32 ulps, finite everywhere."""
    k = torch.tensor(KAPPAS, dtype=torch.float32)
    log_ref, a_ref, om_ref, _ = _reference(nu, k.double().numpy())  # at the float32-rounded κ
    eps = 2.0**-24
    got = log_ive(nu, k)
    assert got.dtype == torch.float32 and bool(torch.isfinite(got).all())
    err = np.abs(got.double().numpy() - log_ref) / np.maximum(1, np.abs(log_ref))
    assert err.max() < 2 * eps, err.max()
    np.testing.assert_allclose(bessel_ratio(nu, k).double().numpy(), a_ref, rtol=2 * eps, atol=0)
    np.testing.assert_allclose(_one_minus_bessel_ratio(nu, k).double().numpy(), om_ref, rtol=2 * eps, atol=0)


@pytest.mark.parametrize("nu", NUS)
def test_ratio_is_increasing_and_inside_its_bounds(nu):
    """``A`` increases in ``κ`` (``dA/dκ = Var > 0``), and lies between the bounds
    ``κ/(ν + 1 + sqrt((ν + 1)² + κ²)) <= A <= κ/(ν + ½ + sqrt((ν + ½)² + κ²))`` (Amos 1974; ``ν >= 0``)."""
    k = torch.logspace(-6, 6, 400, dtype=F64)
    a = bessel_ratio(nu, k)
    assert bool((a.diff() > 0).all())
    lo = k / (nu + 1 + torch.sqrt((nu + 1) ** 2 + k * k))
    hi = k / (nu + 0.5 + torch.sqrt((nu + 0.5) ** 2 + k * k))
    assert bool((a >= lo * (1 - 1e-14)).all()) and bool((a <= hi * (1 + 1e-14)).all())
    om = _one_minus_bessel_ratio(nu, k)
    assert bool((om.diff() < 0).all()) and bool((om > 0).all())


@pytest.mark.parametrize("nu", NUS)
def test_derivatives_are_the_ratio_identities(nu, references):
    """Autograd: ``d/dκ log ive = ν/κ - (1 - A)`` and ``dA/dκ = 1 - A² - (2ν + 1)A/κ`` against mpmath (relative to
    the size of the terms: ``ν/κ + 1`` and ``|dA/dκ|``), and the first against a central difference of ``log ive``."""
    _, _, om_ref, da_ref = references[nu]
    k = torch.tensor(KAPPAS, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(log_ive(nu, k).sum(), k)
    want = nu / KAPPAS - om_ref
    assert np.all(np.abs(g.numpy() - want) <= 1e-13 * (nu / KAPPAS + 1)), np.abs(g.numpy() - want).max()
    (ga,) = torch.autograd.grad(bessel_ratio(nu, k).sum(), k)
    np.testing.assert_allclose(ga.numpy(), da_ref, rtol=1e-12, atol=0)
    (gom,) = torch.autograd.grad(_one_minus_bessel_ratio(nu, k).sum(), k)
    np.testing.assert_allclose(gom.numpy(), -da_ref, rtol=1e-12, atol=0)
    # central difference in log κ (h = 1e-5: truncation ~1e-10, rounding ~1e-16·|log ive|/1e-5)
    kd = torch.tensor([1e-3, 0.7, 20.0, 300.0, 5e4], dtype=F64)
    h = 1e-5
    fd = (log_ive(nu, kd * math.exp(h)) - log_ive(nu, kd * math.exp(-h))) / (2 * h) / kd
    kd.requires_grad_(True)
    (gd,) = torch.autograd.grad(log_ive(nu, kd).sum(), kd)
    kd = kd.detach()
    tol = 1e-8 * (nu / kd + 1) + 1e-10 * log_ive(nu, kd).abs() / kd
    assert bool(((gd - fd).abs() <= tol).all()), (gd - fd).abs().max()


def test_orders_up_to_150_and_the_limit():
    """The largest order (``p = 302``) is finite over the whole range; larger orders are refused (not extrapolated)."""
    k = torch.tensor(KAPPAS, dtype=F64)
    assert bool(torch.isfinite(log_ive(150.0, k)).all()) and bool(torch.isfinite(bessel_ratio(150.0, k)).all())
    with pytest.raises(ValueError, match="150"):
        log_ive(150.5, k)


# -- the sampler -------------------------------------------------------------------------------------------------
def _law_of_t(kappa: float, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The CDF of ``t = 1 - μᵀx`` on ``S^m`` (density ``∝ e^{-κτ}(τ(2 - τ))^{(m-2)/2}`` on ``[0, 2]``) on a grid, by
    the trapezoid rule on 400 001 points up to where the density is ``e^{-60}`` of its largest value."""
    al = 0.5 * (m - 2)
    upper = min(2.0, 2 * al / (kappa + 2 * al) + 40 * math.sqrt(m) / kappa + 60 / kappa)
    tau = np.linspace(0.0, upper, 400_001)
    with np.errstate(divide="ignore"):
        logd = -kappa * tau + al * np.log(tau * (2 - tau))
    d = np.exp(logd - logd[np.isfinite(logd)].max())
    d[~np.isfinite(d)] = 0.0
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (d[1:] + d[:-1]) * np.diff(tau))])
    return tau, cdf / cdf[-1]


@pytest.mark.parametrize("p", [4, 5, 10, 33])
@pytest.mark.parametrize("kappa", [1e-3, 1.0, 10.0, 1e3, 1e5])
def test_wood_sampler_mean_of_t(p, kappa):
    """``E[t] = 1 - A_p(κ)`` within 5 standard errors over 20 000 draws (fixed seed), in float64: points on the
    sphere, finite, ``t`` in ``[0, 2]``, and the draws are reparameterised (a finite gradient in ``κ``)."""
    S = Sphere(p - 1)
    mu = S.projx(torch.arange(1.0, p + 1, dtype=F64))
    k = torch.tensor(kappa, dtype=F64, requires_grad=True)
    torch.manual_seed(5)
    x, lp = VonMisesFisher(mu, k, S).rsample_and_log_prob((20_000,))
    assert bool(torch.isfinite(x).all()) and bool(torch.isfinite(lp).all())
    assert bool(S.check_point_on_manifold(x.detach()))
    t = 1 - x.detach() @ mu
    assert bool((t >= -1e-15).all()) and bool((t <= 2 + 1e-15).all())
    a = float(_one_minus_bessel_ratio(p / 2 - 1, k.detach()))
    assert abs(float(t.mean()) - a) < 5 * float(t.std()) / math.sqrt(len(t)), (float(t.mean()), a)
    (g,) = torch.autograd.grad(lp.sum(), k)
    assert bool(torch.isfinite(g))


@pytest.mark.parametrize("m", [1, 3, 4, 32])
def test_symmetric_beta_proposals(m):
    """The proposals of Wood's sampler are ``Beta(m/2, m/2)`` (KS over 200 000 draws, p-value above 1e-3), in
    ``(0, 1)``."""
    torch.manual_seed(8)
    z = _symmetric_beta(float(m), torch.Size([200_000]), torch.zeros((), dtype=F64)).numpy()
    assert np.all(z > 0) and np.all(z < 1)
    assert scipy.stats.kstest(z, scipy.stats.beta(m / 2, m / 2).cdf).pvalue > 1e-3


@pytest.mark.parametrize("p, kappa", [(4, 1.0), (5, 10.0), (33, 1e3), (10, 1e5)])
def test_wood_sampler_law_of_t(p, kappa):
    """The empirical law of ``t`` over 20 000 draws against its CDF (Kolmogorov–Smirnov, p-value above 1e-3 at a fixed
    seed)."""
    mu = torch.zeros(p, dtype=F64)
    mu[0] = 1.0
    torch.manual_seed(6)
    t = (1 - VonMisesFisher(mu, torch.tensor(kappa, dtype=F64)).sample((20_000,))[:, 0]).numpy()
    tau, cdf = _law_of_t(kappa, p - 1)
    res = scipy.stats.kstest(t, lambda v: np.interp(v, tau, cdf))
    assert res.pvalue > 1e-3, res


def _wood_acceptance(kappa: float, m: int) -> float:
    """Wood's acceptance probability ``E_z[exp(κw + m log(1 - x₀w) - c)]``, ``z ~ Beta(m/2, m/2)``, by quadrature."""
    b = m / (2 * kappa + math.sqrt(4 * kappa * kappa + m * m))
    x0 = (1 - b) / (1 + b)
    c = kappa * x0 + m * math.log(4 * b / (1 + b) ** 2)
    a, log_b = m / 2, -scipy.special.betaln(m / 2, m / 2)

    def f(z: float) -> float:
        w = (1 - (1 + b) * z) / (1 - (1 - b) * z)
        return math.exp(log_b + (a - 1) * (math.log(z) + math.log1p(-z)) + kappa * w + m * math.log1p(-x0 * w) - c)

    opts = dict(limit=500, epsabs=0.0, epsrel=1e-10)
    return scipy.integrate.quad(f, 0, 0.5, **opts)[0] + scipy.integrate.quad(f, 0.5, 1, **opts)[0]


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")  # roundoff at 1e-10: the check is 1e-6
@pytest.mark.parametrize("m", [1, 3, 4, 9, 32, 199])
def test_wood_acceptance_is_above_the_bound_of_the_proposal_count(m):
    """Wood's acceptance probability is at least 0.6577 (the bound behind ``VMF_WOOD_PROPOSALS``) from ``κ = 1e-6`` to
    1e10, and decreases in ``κ``; with it all 33 proposals fail with probability below 1e-15."""
    ps = [_wood_acceptance(k, m) for k in np.logspace(-6, 10, 17)]
    assert min(ps) >= 0.6577 and all(q <= p + 1e-6 for p, q in zip(ps, ps[1:])), ps  # quad: ~1e-7 at large κ
    assert (1 - 0.6577) ** VMF_WOOD_PROPOSALS < 1e-15


def test_wood_takes_the_first_accepted_proposal(monkeypatch):
    """With every proposal accepted the draw is the first proposal; with none, the last (the documented fallback,
    probability below 4.3e-16 per draw)."""
    d = VonMisesFisher(torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64), torch.tensor(2.0, dtype=F64))
    k = torch.full((3,), 2.0, dtype=F64)
    for u_value, pick in ((0.0, 0), (1.0, VMF_WOOD_PROPOSALS - 1)):
        # log U = -inf accepts every proposal; U = 1 (log U = 0) rejects all (the acceptance ratio is < 1 here)
        monkeypatch.setattr(torch, "rand_like", lambda x, v=u_value: torch.full_like(x, v))
        torch.manual_seed(7)
        t = d._wood(k)
        torch.manual_seed(7)
        z = _symmetric_beta(3.0, torch.Size([VMF_WOOD_PROPOSALS, 3]), k)
        b = 3 / (4 + math.sqrt(16 + 9))
        torch.testing.assert_close(t, 2 * b * z[pick] / (1 - (1 - b) * z[pick]), rtol=1e-15, atol=0)


# -- no host read, one graph ------------------------------------------------------------------------------------
def _step(loc: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    x, lp = VonMisesFisher(loc, kappa).rsample_and_log_prob()
    return lp.sum() + (x * loc).sum()


def _s4_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    loc = torch.nn.functional.normalize(torch.randn(8, 5, dtype=dtype), dim=-1).requires_grad_(True)
    kappa = torch.tensor([1e-3, 0.5, 1.0, 10.0, 30.0, 1e3, 1e5, 3.0], dtype=dtype, requires_grad=True)
    return loc, kappa


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_vmf_step_on_s4_reads_nothing_on_the_host(dtype, host_reads):
    """``VonMisesFisher(loc, κ).rsample_and_log_prob()`` and ``backward`` on S⁴ (p = 5, Wood's sampler, the Bessel
    quadrature, the implicit gradient in ``κ``) make no host read after a warm-up call."""
    loc, kappa = _s4_inputs(dtype)

    def step() -> None:
        _step(loc, kappa).backward()

    step()
    assert host_reads(step) == 0
    assert bool(torch.isfinite(kappa.grad).all()) and bool(torch.isfinite(loc.grad).all())


def test_vmf_step_on_s4_compiles_whole_and_equals_eager():
    """``torch.compile(fullgraph=True)`` (the ``aot_eager`` backend, as the CI's compiled-step tests) captures the
    step, from a cold cache of quadrature rules too (a custom op), and gives the eager values and gradients."""
    from manifolds import sphere_distributions

    torch._dynamo.reset()
    sphere_distributions._QUADRATURES.clear()  # the rules are built while tracing
    loc, kappa = _s4_inputs(F64)
    compiled = torch.compile(_step, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (compiled, _step):
        torch.manual_seed(3)
        value = fn(loc, kappa)
        results.append((value.detach(), *torch.autograd.grad(value, (loc, kappa))))
    for c, e in zip(*results):
        torch.testing.assert_close(c, e, rtol=1e-12, atol=1e-12)
