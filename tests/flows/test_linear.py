"""Dense and elementwise linear layers ``y = Ax + b`` (LU, QR, ActNorm, permutations): a Gaussian is pushed
to a Gaussian, ``N(μ, Σ) ↦ N(Aμ + b, AΣAᵀ)`` (Kobyzev et al.'s test; the survey misprints AᵀΣA), with exact
log-densities in float64; the factor structure that gives the O(n) log-det holds."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import MultivariateNormal

import flows
from flows import ActNorm, LULinear, Permutation, QRLinear, householder
from manifolds import Euclidean

F64 = torch.float64


def _layer(kind: str, n: int, fh) -> flows.Transform:
    if kind == "lu":
        f = LULinear(n)
    elif kind == "qr":
        f = QRLinear(n)
    elif kind == "actnorm":
        f = ActNorm(n)
        f.initialized.fill_(True)  # no data-dependent initialisation: keep the randomised parameters
    elif kind == "permutation":
        f = Permutation(n, torch.randperm(n))
    elif kind == "stack":  # the registered flows, composed
        f = flows.Compose([flows.build("linear-lu", Euclidean(), n, layers=2),
                           flows.build("linear-qr", Euclidean(), n, layers=2)])
    else:
        raise AssertionError(kind)
    return fh.randomize_(f.double(), gain=1.2)


def _affine(f, n):
    """``(A, b)`` of an affine map, read off its autograd Jacobian and its value at 0."""
    zero = torch.zeros(n, dtype=F64)
    a = torch.autograd.functional.jacobian(lambda x: f(x)[0], zero)
    return a, f(zero)[0].detach()


KINDS = ["lu", "qr", "actnorm", "permutation", "stack"]


@pytest.mark.parametrize("kind,n", [(k, n) for k in KINDS for n in (1, 3, 6) if (k, n) != ("permutation", 1)])
def test_gaussian_is_pushed_to_gaussian(fh, kind, n):
    f = _layer(kind, n, fh)
    g = torch.Generator().manual_seed(3)
    mu = torch.randn(n, generator=g, dtype=F64)
    s = torch.randn(n, n, generator=g, dtype=F64)
    sigma = s @ s.T + 0.5 * torch.eye(n, dtype=F64)
    base = MultivariateNormal(mu, sigma)
    a, b = _affine(f, n)
    target = MultivariateNormal(a @ mu + b, a @ sigma @ a.T)
    q = flows.Flow(base, f)
    y = torch.randn(64, n, generator=g, dtype=F64) * 3
    # log-densities reach O(1e3) at these points; float64 rounding through two solves is ~1e-13 relative
    torch.testing.assert_close(q.log_prob(y), target.log_prob(y), atol=1e-10, rtol=1e-11)
    # and the sampling direction: samples with their log-density
    z, log_q = q.rsample_and_log_prob((32,))
    torch.testing.assert_close(log_q, target.log_prob(z), atol=1e-10, rtol=1e-11)


@pytest.mark.parametrize("n", [2, 5])
def test_lu_factors_and_logdet(fh, n):
    f = _layer("lu", n, fh)
    lower, upper = f.factors()
    assert torch.equal(torch.triu(lower, 1), torch.zeros_like(lower))
    assert torch.equal(torch.diagonal(lower), torch.ones(n, dtype=F64))
    assert torch.equal(torch.tril(upper, -1), torch.zeros_like(upper))
    p = torch.eye(n, dtype=F64)[f.perm]
    assert torch.equal(p.sum(0), torch.ones(n, dtype=F64)) and torch.equal(p.sum(1), torch.ones(n, dtype=F64))
    a = f.weight()
    torch.testing.assert_close(a, p @ lower @ upper, atol=1e-14, rtol=0)
    x = torch.randn(4, n, dtype=F64)
    _, ladj = f(x)
    # log|det A| = Σ log|U_ii|, and it is the log-det of the actual map
    torch.testing.assert_close(ladj, torch.diagonal(upper).abs().log().sum().expand(4), atol=1e-14, rtol=0)
    torch.testing.assert_close(ladj, torch.linalg.slogdet(_affine(f, n)[0])[1].expand(4), atol=1e-12, rtol=0)
    assert float(ladj.detach().abs().max()) > 1e-2
    torch.testing.assert_close(f.inverse(f(x)[0])[0], x, atol=1e-12, rtol=0)


@pytest.mark.parametrize("n", [2, 5])
def test_qr_factors_and_logdet(fh, n):
    f = _layer("qr", n, fh)
    r = f.triangular()
    q = householder(torch.eye(n, dtype=F64), f.vectors).T  # columns Q e_j
    torch.testing.assert_close(q.T @ q, torch.eye(n, dtype=F64), atol=1e-13, rtol=0)
    torch.testing.assert_close(torch.linalg.det(q).abs(), torch.tensor(1.0, dtype=F64), atol=1e-13, rtol=0)
    assert torch.equal(torch.tril(r, -1), torch.zeros_like(r)) and bool((torch.diagonal(r) > 0).all())
    a, _ = _affine(f, n)
    torch.testing.assert_close(a, q @ r, atol=1e-13, rtol=0)
    torch.testing.assert_close(f.weight(), a, atol=1e-13, rtol=0)
    x = torch.randn(4, n, dtype=F64)
    _, ladj = f(x)
    torch.testing.assert_close(ladj, torch.linalg.slogdet(a)[1].expand(4), atol=1e-12, rtol=0)
    torch.testing.assert_close(f.inverse(f(x)[0])[0], x, atol=1e-12, rtol=0)


def test_lu_starts_volume_preserving_and_mixing():
    f = LULinear(4).double()
    a = f.weight()
    torch.testing.assert_close(a.T @ a, torch.eye(4, dtype=F64), atol=1e-6, rtol=0)  # a rotation (float32 init)
    assert bool((a.abs() > 0).all())


def test_wrong_dimension_raises_value_error():
    for f in (LULinear(3), QRLinear(3)):
        with pytest.raises(ValueError, match="dimension 3"):
            f(torch.randn(2, 4))
        with pytest.raises(ValueError, match="dimension 3"):
            f.inverse(torch.randn(2, 2))


def test_registered_with_lifted_versions():
    from manifolds import Lorentz

    for name, cls in (("linear-lu", LULinear), ("linear-qr", QRLinear)):
        assert name in flows.available(Euclidean()) and name + "@lorentz" in flows.available(Lorentz())
        f = flows.build(name, Euclidean(), 3, layers=2)
        assert all(isinstance(t, cls) for t in f.transforms) and len(f.transforms) == 2
