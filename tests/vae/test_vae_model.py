"""The manifold VAE: exactness of the objectives, hand-computed ELBO terms, training, devices, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from manifolds import Euclidean, Lorentz, lorentz_math as lm
from experiments.models import BY_PAPER_NAME, paper_model
from vae import (
    VAE,
    CurvatureSchedule,
    GaussianLikelihood,
    evaluate_log_likelihood,
    iwae_bound,
)
from vae.constants import MIN_SCALE



LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------------------------------------
# a linear-Gaussian model whose log p(x) is known in closed form
# --------------------------------------------------------------------------------------------------------

class _LinearPosterior(nn.Module):
    """Encoder returning a given affine posterior mean and a constant std (as pre-softplus scales)."""

    def __init__(self, A: torch.Tensor, c: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.A, self.c = nn.Parameter(A), nn.Parameter(c)
        raw = torch.log(torch.expm1(std - MIN_SCALE))  # softplus⁻¹
        self.raw = nn.Parameter(raw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x @ self.A.T + self.c
        return torch.cat([mean, self.raw.expand(*mean.shape[:-1], -1)], -1)


def _linear_gaussian(exact_posterior: bool, sigma: float = 0.5):
    """z ~ N(0, I₂), x | z ~ N(Wz + b, σ² I₃) with orthogonal columns of W (diagonal exact posterior)."""
    W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    W = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0] @ W  # rotate: W^T W stays diagonal
    b = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    post_cov = torch.linalg.inv(torch.eye(2, dtype=torch.float64) + W.T @ W / sigma**2)
    A = post_cov @ W.T / sigma**2  # posterior mean = A (x - b)
    std = post_cov.diagonal().sqrt()
    if not exact_posterior:  # a deliberately imperfect posterior: shrunk mean, inflated std
        A, std = 0.6 * A, 1.8 * std
    decoder = nn.Linear(2, 3).double()
    with torch.no_grad():
        decoder.weight.copy_(W)
        decoder.bias.copy_(b)
    model = VAE(
        Euclidean(), 3, 2,
        encoder=_LinearPosterior(A, -A @ b, std),
        decoder=decoder,
        likelihood=GaussianLikelihood(3, scale=sigma, learnable=False).double(),
        max_tangent_norm=None,
    ).double()
    marginal = torch.distributions.MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(3, dtype=torch.float64))
    return model, marginal


def test_iwae_is_exact_with_the_exact_posterior():
    """With q = p(z|x) every importance weight equals p(x): ELBO = IWAE_K = log p(x) for every sample."""
    model, marginal = _linear_gaussian(exact_posterior=True)
    x = marginal.sample((16,))
    log_px = marginal.log_prob(x)
    torch.testing.assert_close(model.elbo(x).elbo, log_px, atol=1e-6, rtol=0)  # softplus⁻¹∘softplus of σ: ~1e-8
    torch.testing.assert_close(iwae_bound(model, x, 50, chunk_size=7), log_px, atol=1e-6, rtol=0)  # softplus⁻¹∘softplus of σ: ~1e-8


def test_elbo_le_iwae_le_log_px_and_iwae_converges():
    """E[ELBO] ≤ E[IWAE_K] ≤ log p(x), and the gap to log p(x) shrinks as K grows (to < 0.05 nats at K=5000).

    Means over 32 inputs × many draws; the Monte-Carlo standard errors (printed on failure) are far below the
    gaps compared (the imperfect posterior makes the ELBO gap ≈ 1.5 nats).
    """
    model, marginal = _linear_gaussian(exact_posterior=False)
    x = marginal.sample((32,))
    log_px = marginal.log_prob(x).mean()
    with torch.no_grad():
        elbo = torch.stack([model.elbo(x).elbo for _ in range(400)]).mean()
        gaps = {}
        for K in (1, 10, 100, 5000):
            reps = 40 if K <= 100 else 2
            est = torch.stack([iwae_bound(model, x, K, chunk_size=1000) for _ in range(reps)]).mean()
            gaps[K] = float(log_px - est)
    assert abs(float(log_px - elbo) - gaps[1]) < 0.1, (float(log_px - elbo), gaps)  # IWAE_1 = ELBO
    assert float(log_px - elbo) > 0.5, "the imperfect posterior should leave a visible ELBO gap"
    assert gaps[1] > gaps[10] > gaps[100] > gaps[5000] > -0.02, gaps
    assert gaps[5000] < 0.05, gaps


def test_iwae_chunking_does_not_change_the_estimate():
    model, marginal = _linear_gaussian(exact_posterior=False)
    x = marginal.sample((4,))
    torch.manual_seed(1)
    a = iwae_bound(model, x, 30, chunk_size=30)
    torch.manual_seed(1)
    b = torch.logsumexp(model.log_weights(x, 30), 0) - math.log(30)
    torch.testing.assert_close(a, b)
    # chunks draw the same total number of samples; different chunking is a different draw but the same law
    est = evaluate_log_likelihood(model, x, 30, batch_size=3, chunk_size=4)
    assert est.shape == (4,) and torch.isfinite(est).all()


# --------------------------------------------------------------------------------------------------------
# hand-written float64 ELBO terms for a hyperbolic posterior
# --------------------------------------------------------------------------------------------------------

def _log_sinhc(z: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.sinh(z) / z)


def _hand_elbo_terms(model: VAE, x: torch.Tensor, eps: torch.Tensor):
    """Every piece from the formulas of MATH.md §2–§5, with no call into manifolds.* or the wrapped normal."""
    k = float(model.manifold.k)
    sk = math.sqrt(k)
    n = model.latent_dim
    out = model.encoder(x)
    m, raw = out[..., :n], out[..., n:]
    r_m = m.norm(dim=-1, keepdim=True)
    B = model.max_tangent_norm
    m = m * torch.tanh(r_m / B) * B / r_m
    sigma = nn.functional.softplus(raw) + MIN_SCALE

    def exp_o(v):  # (0, v) -> point
        r = v.norm(dim=-1, keepdim=True)
        return torch.cat([sk * torch.cosh(r / sk), sk * torch.sinh(r / sk) * v / r], -1)

    def log_o(z):  # point -> spatial coords, from d = sqrt(k) arccosh(z0 / sqrt(k))
        d = sk * torch.acosh(z[..., :1] / sk)
        return d * z[..., 1:] / z[..., 1:].norm(dim=-1, keepdim=True)

    def mink(a, b):
        return -a[..., 0] * b[..., 0] + (a[..., 1:] * b[..., 1:]).sum(-1)

    mu = exp_o(m)
    o = torch.zeros_like(mu)
    o[..., 0] = sk
    v = eps * sigma
    u0 = torch.cat([torch.zeros_like(v[..., :1]), v], -1)
    u = u0 + (mink(mu, u0) / (k - mink(o, mu)))[..., None] * (o + mu)  # PT_{o→μ}
    nu = torch.sqrt(mink(u, u))[..., None]
    z0 = torch.cosh(nu / sk) * mu + sk * torch.sinh(nu / sk) * u / nu  # exp_μ(u)
    r = v.norm(dim=-1)
    log_q0 = (-0.5 * (v / sigma) ** 2 - sigma.log() - 0.5 * LOG_2PI).sum(-1) - (n - 1) * _log_sinhc(r / sk)
    return z0, log_q0, log_o, exp_o


def _brute_force_ladj(flow, z0: torch.Tensor, k: float, n: int, log_o, exp_o) -> torch.Tensor:
    """MATH.md §4: log|det ∂log_o f(exp_o w)/∂w| + (n-1)ℓ(|log_o y|) - (n-1)ℓ(|w|), float64 autograd."""
    sk = math.sqrt(k)
    out = []
    for zi in z0:
        w = log_o(zi[None])[0].detach()
        J = torch.autograd.functional.jacobian(lambda w_: log_o(flow(exp_o(w_[None]))[0])[0], w)
        y = log_o(flow(zi[None])[0])[0]
        out.append(torch.linalg.slogdet(J)[1] + (n - 1) * (_log_sinhc(y.norm() / sk) - _log_sinhc(w.norm() / sk)))
    return torch.stack(out)


def _check_hand_terms(model: VAE, x: torch.Tensor) -> None:
    n = model.latent_dim
    torch.manual_seed(123)
    terms = model.elbo(x)
    torch.manual_seed(123)
    eps = torch.randn(x.shape[0], n, dtype=torch.float64)
    with torch.no_grad():
        z0, log_q0, log_o, exp_o = _hand_elbo_terms(model, x, eps)
        k = float(model.manifold.k)
        if model.flow is None:
            zk, ladj = z0, torch.zeros(x.shape[0], dtype=torch.float64)
        else:
            zk = model.flow(z0)[0]
    if model.flow is not None:
        ladj = _brute_force_ladj(model.flow, z0, k, n, log_o, exp_o).detach()
    with torch.no_grad():
        wk = log_o(zk)
        log_pz = (-0.5 * wk**2 - 0.5 * LOG_2PI).sum(-1) - (n - 1) * _log_sinhc(wk.norm(dim=-1) / math.sqrt(k))
        logits = model.decoder(wk)
        log_px_z = -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    tol = dict(atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(terms.log_q0.detach(), log_q0, **tol)
    torch.testing.assert_close(terms.ladj.detach(), ladj, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(terms.log_pz.detach(), log_pz, **tol)
    torch.testing.assert_close(terms.log_px_z.detach(), log_px_z, **tol)
    torch.testing.assert_close(terms.kl.detach(), log_q0 - ladj - log_pz, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(terms.elbo.detach(), log_px_z + log_pz - log_q0 + ladj, atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("k", [1.0, 2.5])
def test_elbo_terms_match_hand_computation_hvae(k):
    model = paper_model("h-vae", data_dim=5, latent_dim=3, hidden=7, k=k).double()
    x = torch.bernoulli(torch.full((4, 5), 0.5, dtype=torch.float64))
    _check_hand_terms(model, x)


@pytest.mark.parametrize("k", [1.0, 2.5])
def test_elbo_terms_match_hand_computation_whc(k):
    model = paper_model("whc", data_dim=5, latent_dim=3, hidden=7, k=k, flow_hidden=8).double()
    # randomise every parameter so the flow is far from the identity
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "k_raw" not in name:
                p.copy_(0.5 * torch.randn_like(p))
    x = torch.bernoulli(torch.full((4, 5), 0.5, dtype=torch.float64))
    _check_hand_terms(model, x)


# --------------------------------------------------------------------------------------------------------
# training on a small synthetic hierarchy
# --------------------------------------------------------------------------------------------------------

def _hierarchy(depth: int = 4, dim: int = 12, children: int = 2, noise: float = 0.5, seed: int = 0):
    """A tiny branching-diffusion hierarchy (BDP-like), binarised: node = parent + N(0, I), leaves noisy."""
    g = torch.Generator().manual_seed(seed)
    level = [torch.zeros(dim)]
    nodes = []
    for _ in range(depth):
        level = [p + torch.randn(dim, generator=g) for p in level for _ in range(children)]
        nodes.extend(level)
    x = torch.stack(nodes)
    x = x + noise * torch.randn(x.shape, generator=g)
    return (x > 0).double()


def _mean_elbo(model, x, reps: int = 50) -> float:
    with torch.no_grad():
        return float(torch.stack([model.elbo(x).elbo.mean() for _ in range(reps)]).mean())


@pytest.mark.parametrize("name", ["h-vae", pytest.param("whc")])
def test_hyperbolic_vae_improves_its_elbo_on_a_hierarchy(name):
    x = _hierarchy()
    model = paper_model(name, data_dim=x.shape[1], latent_dim=2, hidden=32, flow_hidden=32,
                        learnable_curvature=True).double()
    before = _mean_elbo(model, x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = CurvatureSchedule(model.manifold, "warmup", epochs=3, start_radius=3.0, final_radius=1.0)
    for epoch in range(6):
        sched.step(epoch)
        for _ in range(25):
            opt.zero_grad()
            loss = model.loss(x)
            loss.backward()
            opt.step()
    after = _mean_elbo(model, x)
    assert math.isfinite(after) and after > before + 1.0, (before, after)


# --------------------------------------------------------------------------------------------------------
# every paper model: runs, moves across dtypes/devices, rejects bad input
# --------------------------------------------------------------------------------------------------------

def _available_paper_models():
    return list(BY_PAPER_NAME)


@pytest.mark.parametrize("name", _available_paper_models())
def test_every_paper_model_runs_and_moves(name, device):
    model = paper_model(name, data_dim=6, latent_dim=2, hidden=8, flow_hidden=8).to(device)
    x = torch.bernoulli(torch.full((3, 6), 0.5, device=device))
    terms = model.elbo(x)
    assert terms.elbo.shape == (3,) and terms.elbo.device.type == device.type
    assert torch.isfinite(terms.elbo).all()
    model.loss(x).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    ll = evaluate_log_likelihood(model, x, num_samples=7, batch_size=2)
    assert ll.shape == (3,) and torch.isfinite(ll).all()
    assert model.sample(4).shape == (4, 6)
    m64 = model.double()
    assert m64.elbo(x.double()).elbo.dtype == torch.float64


def test_paper_model_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown paper model"):
        paper_model("realnvp", 4, 2)


def test_input_dimension_mismatch_is_a_clear_error():
    model = paper_model("h-vae", data_dim=6, latent_dim=2, hidden=8)
    with pytest.raises(ValueError, match="data_dim=6"):
        model.elbo(torch.zeros(3, 5))
    bad = VAE(Lorentz(), 6, 2, encoder=nn.Linear(6, 3))
    with pytest.raises(ValueError, match="2·latent_dim = 4"):
        bad.elbo(torch.zeros(3, 6))


def test_gaussian_likelihood_learns_its_scale():
    model = paper_model("n-vae", data_dim=4, latent_dim=2, hidden=8, likelihood="gaussian")
    x = torch.randn(8, 4) * 3
    model.loss(x).backward()
    assert model.likelihood.log_scale.grad is not None


# --------------------------------------------------------------------------------------------------------
# curvature schedule
# --------------------------------------------------------------------------------------------------------

def test_warmup_schedule_follows_the_paper():
    M = Lorentz(k=1.0)
    sched = CurvatureSchedule(M, "warmup", after="learnable")
    ks = [sched.step(e) for e in range(10)]
    assert ks == pytest.approx([float((11 - e) ** 2) for e in range(10)])
    assert not M.k_raw.requires_grad
    assert sched.step(10) == pytest.approx(4.0) and M.k_raw.requires_grad
    M.set_k(5.0)  # as if training moved it
    assert sched.step(11) == pytest.approx(5.0)  # learnable: the schedule no longer touches k

    M2 = Lorentz(k=1.0, learnable=True)
    fixed_after = CurvatureSchedule(M2, "warmup", after="fixed")
    for e in range(15):
        k = fixed_after.step(e)
    assert k == pytest.approx(4.0) and not M2.k_raw.requires_grad


def test_fixed_and_learnable_modes_and_euclidean_noop():
    M = Lorentz(k=2.0, learnable=True)
    assert CurvatureSchedule(M, "fixed").step(0) == pytest.approx(2.0) and not M.k_raw.requires_grad
    assert CurvatureSchedule(M, "learnable").step(3) == pytest.approx(2.0) and M.k_raw.requires_grad
    assert CurvatureSchedule(Euclidean(), "warmup").step(0) is None
    with pytest.raises(ValueError):
        CurvatureSchedule(M, "cosine")


def test_learnable_curvature_gets_a_gradient():
    model = paper_model("h-vae", data_dim=6, latent_dim=2, hidden=8, learnable_curvature=True)
    model.loss(torch.bernoulli(torch.full((5, 6), 0.5))).backward()
    assert model.manifold.k_raw.grad is not None and torch.isfinite(model.manifold.k_raw.grad)


def test_curvature_schedule_reads_no_tensor_on_the_host():
    """The schedule runs every epoch of a training loop: setting ``k`` (warm-up, then fixed) must not read a tensor
    (a GPU sync; the graph bench found one per epoch when ``set_k`` went through a tensor)."""
    from torch.overrides import TorchFunctionMode

    class NoHostReads(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            assert func not in (torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__float__,
                                torch.Tensor.tolist), func
            return func(*args, **(kwargs or {}))

    M = Lorentz(k=1.0)
    sched = CurvatureSchedule(M, "warmup", after="fixed")
    with NoHostReads():
        for epoch in range(14):
            sched.step(epoch)
    assert float(M.k) == pytest.approx(4.0, rel=1e-6)
