"""Layers outside the registry and structural promises: Permutation and ActNorm (round trip, log-det), the
fusion of tangent-space layers by Compose (a TC stack computes a single log_o / exp_o pair), and conditional
MLP couplings (context vectors)."""

from __future__ import annotations

import pytest
import torch

import flows
from flows import ActNorm, Compose, Permutation, TangentCoupling, TangentSpaceTransform, WrappedHyperboloidCoupling
from manifolds import Euclidean, Lorentz

F64 = torch.float64
ATOL = 1e-7


def _linear_layers(n):
    perm = Permutation(n, torch.randperm(n))
    act = ActNorm(n).double()
    with torch.no_grad():
        act.log_scale.copy_(torch.randn(n, dtype=F64))
        act.shift.copy_(torch.randn(n, dtype=F64) * 2)
        act.initialized.fill_(True)
    return {"permutation": perm, "actnorm": act}


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("kind", ["permutation", "actnorm"])
@pytest.mark.parametrize("mid", ["R", "H_k0.5"])
def test_linear_layer_round_trip_and_logdet(fh, n, kind, mid):
    """On ℝⁿ directly, and on H as the inner map of a TangentSpaceTransform (MATH.md §4 check)."""
    layer = _linear_layers(n)[kind]
    M = fh.MANIFOLDS[mid]()
    f = layer if mid == "R" else TangentSpaceTransform(M, layer)
    for norms in (fh.NEAR_NORMS, fh.FAR_NORMS):
        w = fh.tangent_points(n, norms, seed=5)
        x = M.expmap0_spatial(w)
        y, ladj = f(x)
        x2, ladj_inv = f.inverse(y)
        torch.testing.assert_close(M.logmap0_spatial(x2), w, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(f(f.inverse(x)[0])[0], x, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(ladj, fh.batched_riemannian_logdet(M, lambda z: f(z)[0], w), atol=ATOL, rtol=0)
        torch.testing.assert_close(ladj_inv, fh.batched_riemannian_logdet(M, lambda z: f.inverse(z)[0],
                                                                          M.logmap0_spatial(y)), atol=ATOL, rtol=0)
        assert ladj.shape == (len(norms),)


def test_permutation_rejects_non_permutations():
    with pytest.raises(ValueError):
        Permutation(3, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError):
        Permutation(3, torch.tensor([0, 1]))


def test_actnorm_data_dependent_init_and_state_dict():
    """In training mode the first density-direction call standardises the data; the init flag is saved, so a
    loaded ActNorm reproduces outputs instead of re-initialising on its first call."""
    g = torch.Generator().manual_seed(0)
    data = torch.randn(500, 3, generator=g, dtype=F64) * torch.tensor([3.0, 0.5, 1.0], dtype=F64) + 2.0
    a = ActNorm(3).double()
    z, _ = a.inverse(data)
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=F64), atol=1e-9, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(3, dtype=F64), atol=1e-6, rtol=0)
    b = ActNorm(3).double()
    b.load_state_dict(a.state_dict())
    other = torch.randn(10, 3, generator=g, dtype=F64) * 7
    for u, v in zip(a.inverse(other), b.inverse(other)):
        assert torch.equal(u, v)
    # sampling-direction init standardises outputs
    c = ActNorm(3).double()
    y, _ = c(data)
    torch.testing.assert_close(y.std(0), torch.ones(3, dtype=F64), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# Compose: fusion of tangent-space layers
# ---------------------------------------------------------------------------------------------------------


class _Counting:
    """Counts calls of the manifold's tangent-coordinate maps (wraps the instance's bound methods)."""

    def __init__(self, M):
        self.calls = {"logmap0_spatial": 0, "expmap0_spatial": 0}
        for name in self.calls:
            orig = getattr(M, name)

            def wrapper(*a, _orig=orig, _name=name, **k):
                self.calls[_name] += 1
                return _orig(*a, **k)

            object.__setattr__(M, name, wrapper)


@pytest.mark.parametrize("name", ["tc", "whc"])
@pytest.mark.parametrize("layers", [1, 2, 6])
def test_stack_computes_a_single_log_exp_pair(name, layers):
    M = Lorentz(k=torch.tensor(2.0, dtype=F64))
    f = flows.build(name, M, 3, layers=layers, hidden=8).double()
    top = [t for t in f.transforms]
    assert len(top) == 1 and isinstance(top[0], TangentSpaceTransform)
    # no TangentSpaceTransform (i.e. no further exp/log pair) below the top level
    assert sum(isinstance(m, TangentSpaceTransform) for m in f.modules()) == 1
    assert len(fh_couplings(f)) == layers
    counter = _Counting(f.manifold)  # the flow's own copy of M (flows.build, share_manifold=False)
    x = M.expmap0_spatial(torch.randn(4, 3, dtype=F64))
    counter.calls.update(logmap0_spatial=0, expmap0_spatial=0)
    f(x)
    assert counter.calls == {"logmap0_spatial": 1, "expmap0_spatial": 1}
    counter.calls.update(logmap0_spatial=0, expmap0_spatial=0)
    f.inverse(x)
    assert counter.calls == {"logmap0_spatial": 1, "expmap0_spatial": 1}


def fh_couplings(f):
    return [m for m in f.modules() if isinstance(m, flows.Coupling)]


@pytest.mark.parametrize("cls", [TangentCoupling, WrappedHyperboloidCoupling])
def test_fused_stack_equals_layer_by_layer_composition(fh, cls):
    """Fusing drops the inner exp_o ∘ log_o pairs and their log-det terms; the result must be unchanged."""
    M = Lorentz(k=torch.tensor(0.5, dtype=F64))
    layers = [fh.randomize_(cls(M, 3, parity=i % 2, hidden=8).double(), seed=i) for i in range(4)]
    fused = Compose(layers)
    assert len(fused.transforms) == 1
    w = torch.cat([fh.tangent_points(3, fh.NEAR_NORMS, seed=6), fh.tangent_points(3, fh.FAR_NORMS, seed=7)])
    x = M.expmap0_spatial(w)
    y, total = x, torch.zeros(w.size(0), dtype=F64)
    for t in layers:
        y, l = t(y)
        total = total + l
    yf, lf = fused(x)
    torch.testing.assert_close(M.logmap0_spatial(yf), M.logmap0_spatial(y), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(lf, total, atol=1e-8, rtol=0)
    x_back, total_inv = yf, torch.zeros(w.size(0), dtype=F64)
    for t in reversed(layers):
        x_back, l = t.inverse(x_back)
        total_inv = total_inv + l
    xf, lfi = fused.inverse(yf)
    torch.testing.assert_close(M.logmap0_spatial(xf), M.logmap0_spatial(x_back), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(lfi, total_inv, atol=1e-8, rtol=0)


def test_compose_does_not_fuse_across_manifolds_or_other_layers():
    M1, M2 = Lorentz(k=1.0), Lorentz(k=2.0)
    a, b = TangentCoupling(M1, 2), TangentCoupling(M1, 2, parity=1)
    with pytest.raises(ValueError):
        Compose([a, TangentCoupling(M2, 2)])
    with pytest.raises(ValueError):
        Compose([])
    e = Compose([flows.AffineCoupling(3), Permutation(3), flows.AffineCoupling(3, parity=1)])
    assert len(e.transforms) == 3
    assert len(Compose([a, b]).transforms) == 1


# ---------------------------------------------------------------------------------------------------------
# conditional couplings (context vectors)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,mid", [("nc", "R"), ("tc", "H_k1"), ("whc", "H_k0.5")])
def test_conditional_mlp_coupling(fh, name, mid):
    n, c_dim = 3, 4
    M, f = fh.make_flow(name, mid, n, layers=3, context_features=c_dim)
    w = torch.cat([fh.tangent_points(n, fh.NEAR_NORMS, seed=8), fh.tangent_points(n, fh.FAR_NORMS, seed=9)])
    x = M.expmap0_spatial(w)
    g = torch.Generator().manual_seed(3)
    for ctx in (torch.randn(c_dim, generator=g, dtype=F64), torch.randn(w.size(0), c_dim, generator=g, dtype=F64)):
        y, ladj = f(x, ctx)
        x2, ladj_inv = f.inverse(y, ctx)
        torch.testing.assert_close(M.logmap0_spatial(x2), w, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(ladj_inv, -ladj, atol=ATOL, rtol=0)
        if ctx.dim() == 1:
            brute = fh.batched_riemannian_logdet(M, lambda z: f(z, ctx)[0], w)
            torch.testing.assert_close(ladj, brute, atol=ATOL, rtol=0)
    # the context matters, and a missing context is an error, not a silent default
    y_a, _ = f(x, torch.zeros(c_dim, dtype=F64))
    y_b, _ = f(x, torch.ones(c_dim, dtype=F64))
    assert not torch.allclose(y_a, y_b)
    with pytest.raises(ValueError):
        f(x)
    # a conditional Flow: log_prob of its own samples equals rsample_and_log_prob's value
    ctx = torch.randn(c_dim, generator=g, dtype=F64)
    q = flows.Flow(fh.base_distribution(M, n), f, context=ctx)
    z, log_q = q.rsample_and_log_prob((16,))
    torch.testing.assert_close(q.log_prob(z), log_q, atol=1e-8, rtol=0)


@pytest.mark.parametrize("learnable", [False, True])
@pytest.mark.parametrize("inverse", [False, True])
def test_whc_half_on_a_line_is_the_general_map(inverse, learnable):
    """``l = 1``: the closed form (translation by the signed distance of ``t``) equals the general float64 formula
    (``exp_o``, boost, ``log_o``; autograd) in values, log-dets and gradients for the input, the conditioner
    outputs and a learnable ``k``, with ``t`` near and far (distance up to 12·sqrt(k)) from the origin."""
    from flows.coupling import HyperboloidHalf

    M = Lorentz(k=2.0, learnable=learnable).double()
    half = HyperboloidHalf(M)
    sk = 2.0 ** 0.5
    torch.manual_seed(0)
    w = (torch.randn(64, 1, dtype=torch.float64) * 3).requires_grad_(True)
    t_dist = torch.linspace(-12, 12, 64, dtype=torch.float64).unsqueeze(-1) * sk
    params = torch.cat([torch.randn(64, 1, dtype=torch.float64) * 2, sk * torch.sinh(t_dist / sk)], -1)
    params.requires_grad_(True)
    sign = -1.0 if inverse else 1.0
    inputs = [w, params] + ([M.k_raw] if learnable else [])
    out = []
    for fn in (lambda: half._map(w, params, sign), lambda: half._map_autograd(w, params, sign)):
        y, ladj = fn()
        grads = torch.autograd.grad((y * torch.arange(1.0, 65.0, dtype=y.dtype).unsqueeze(-1)).sum() + ladj.sum(),
                                    inputs)
        out.append([y.detach(), ladj.detach(), *grads])
    # the general map's boost cancels coordinates of size e^{d/sqrt(k)} (d up to 12·sqrt(k) + |v|): it is good to
    # ~eps·e^{d/sqrt(k)} relative (measured 4e-9); the closed form has no cancellation
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("hidden", [0, -4, 2.5])
def test_build_rejects_a_conditioner_width_that_is_not_positive(hidden):
    """``hidden=0`` used to build a flow that ignores its input; a negative width gave a raw trace."""
    import flows
    from manifolds import Lorentz

    with pytest.raises(ValueError, match="hidden"):
        flows.build("whc", Lorentz(), 3, hidden=hidden)


@pytest.mark.parametrize("name", ["nc", "tc", "whc", "maf"])
def test_models_build_under_the_meta_device(name):
    """Issue 13 row 8: building under ``with torch.device("meta")`` (to size a model without allocating it) used to
    fail with a raw trace in ``Lorentz``; every parameter of the flow, the VAE and the graph VAE is then on meta."""
    from vae import VAE
    from vae.graph import GraphVAE

    with torch.device("meta"):
        M = Euclidean() if name in ("nc", "maf") else Lorentz(k=2.0)
        f = flows.build(name, M, 4)
        models = [f]
        if name != "maf":
            models += [VAE(M, 10, 4, flow=name), GraphVAE(M, 6, 4, flow=name)]
    for m in models:
        assert {p.device.type for p in m.parameters()} == {"meta"}
    assert sum(p.numel() for p in f.parameters()) > 0
    with pytest.raises(ValueError, match="meta tensor"):
        Lorentz(k=torch.tensor(2.0, device="meta"))
