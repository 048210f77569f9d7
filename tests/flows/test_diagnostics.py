"""``gaussian_optimum_nll`` (Liao & He, arXiv 2102.06539): the best mean NLL an affine flow with a standard normal
base can reach on the data. Checked three ways: against the closed forms, as a lower bound that the maximum-
likelihood Gaussian attains exactly, and as the value that a dense affine flow of the library trained by maximum
likelihood converges to (from above).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

import flows
from flows import gaussian_optimum_nll
from manifolds import Euclidean

F64 = torch.float64

#: the trained flow's mean NLL must end within this of the optimum. The problem is smooth and has a unique
#: optimal covariance; full-batch L-BFGS in float64 gets within ~2e-14 nats here (measured); 1e-6 nats leaves
#: ample room for other machines' rounding and iteration counts, and is far below the gaps a wrong formula would
#: leave (on these data dropping the bias costs 2.8 nats, a diagonal-only flow 2.0 nats).
TRAINED_TOL = 1e-6


def _gaussian_data(n: int = 4000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.tensor([[1.5, 0.0, 0.0], [1.2, 0.6, 0.0], [-0.4, 0.9, 0.3]], dtype=F64)  # correlated, λ from ~0.05
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    return torch.randn(n, 3, generator=g, dtype=F64) @ a.T + mean


def _standard_normal(d: int):
    return Independent(Normal(torch.zeros(d, dtype=F64), torch.ones(d, dtype=F64)), 1)


def test_matches_the_closed_forms():
    x = _gaussian_data()
    xc = x - x.mean(0)
    cov = xc.T @ xc / x.size(0)
    lam = torch.linalg.eigvalsh(cov)
    expected = 0.5 * float(torch.log(2 * math.pi * math.e * lam).sum())
    assert abs(float(gaussian_optimum_nll(x)) - expected) < 1e-12
    lam0 = torch.linalg.eigvalsh(x.T @ x / x.size(0))
    expected0 = 0.5 * float(torch.log(2 * math.pi * math.e * lam0).sum())
    assert abs(float(gaussian_optimum_nll(x, bias=False)) - expected0) < 1e-12
    # a bias can only help, and here (mean far from 0) it helps a lot
    assert float(gaussian_optimum_nll(x, bias=False)) > float(gaussian_optimum_nll(x)) + 0.5
    assert gaussian_optimum_nll(x.float()).dtype == torch.float32


def test_the_mle_gaussian_attains_it_and_no_affine_flow_beats_it():
    x = _gaussian_data()
    opt = float(gaussian_optimum_nll(x))
    xc = x - x.mean(0)
    mle = MultivariateNormal(x.mean(0), covariance_matrix=xc.T @ xc / x.size(0))
    assert abs(-float(mle.log_prob(x).mean()) - opt) < 1e-10
    g = torch.Generator().manual_seed(1)
    for _ in range(20):  # random affine flows N(b, AAᵀ) are all worse
        a = torch.randn(3, 3, generator=g, dtype=F64)
        b = torch.randn(3, generator=g, dtype=F64) + x.mean(0)
        q = MultivariateNormal(b, scale_tril=torch.linalg.cholesky(a @ a.T + 0.1 * torch.eye(3, dtype=F64)))
        assert -float(q.log_prob(x).mean()) > opt


def _train(f: flows.Transform, x: torch.Tensor) -> float:
    q = flows.Flow(_standard_normal(x.size(1)), f)
    params = [p for p in f.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -q.log_prob(x).mean()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    with torch.no_grad():
        return -float(q.log_prob(x).mean())


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("name", ["linear-lu", "linear-qr"])
def test_a_trained_affine_flow_reaches_it(name, bias):
    x = _gaussian_data()
    torch.manual_seed(0)
    f = flows.build(name, Euclidean(), 3, layers=1).double()
    if not bias:
        for pname, p in f.named_parameters():
            if pname.endswith("bias"):
                p.data.zero_()
                p.requires_grad_(False)
    opt = float(gaussian_optimum_nll(x, bias=bias))
    nll = _train(f, x)
    assert opt - 1e-10 <= nll <= opt + TRAINED_TOL, (nll, opt)


def test_a_diagonal_affine_flow_stays_above_it():
    """ActNorm (diagonal scale + shift) reaches only ½ Σ_i log(2πe Σ_ii): the diagnostic is the line for *dense*
    affine flows, which a diagonal one on correlated data misses by a clear margin."""
    x = _gaussian_data()
    f = flows.ActNorm(3).double()
    f.initialized.fill_(True)
    nll = _train(f, x)
    diag = 0.5 * float(torch.log(2 * math.pi * math.e * x.var(0, unbiased=False)).sum())
    assert abs(nll - diag) < TRAINED_TOL
    assert nll > float(gaussian_optimum_nll(x)) + 0.3


def test_rejects_data_it_cannot_judge():
    with pytest.raises(ValueError, match="shape"):
        gaussian_optimum_nll(torch.randn(10))
    with pytest.raises(ValueError, match="singular"):
        gaussian_optimum_nll(torch.randn(3, 5, dtype=F64))  # fewer samples than dimensions
    x = torch.randn(100, 3, dtype=F64)
    x[:, 1] = 2.0  # a constant coordinate: zero variance
    with pytest.raises(ValueError, match="singular"):
        gaussian_optimum_nll(x)
