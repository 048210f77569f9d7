"""Graph flows: couplings whose conditioners are GCN / GAT layers with ``context=edge_index``.

A graph flow maps all node latents jointly (a node's parameters depend on its neighbours' latents), so its
Jacobian couples nodes. Its per-node ``ladj`` must sum to the log-det of the full (N·n)×(N·n) Jacobian
(MATH.md §4 in tangent coordinates at the origin, node by node for the ℓ terms).
"""

from __future__ import annotations

import pytest
import torch

import flows

F64 = torch.float64
N_NODES, N = 4, 2
#: a path 0-1-2-3 plus the chord 0-2, both directions
EDGE_INDEX = torch.tensor([[0, 1, 1, 2, 2, 3, 0, 2], [1, 0, 2, 1, 3, 2, 2, 0]])

CASES = [pytest.param(name, mid, cond, id=f"{name}-{mid}-{cond}")
         for name, mid in (("nc", "R"), ("tc", "H_k1"), ("whc", "H_k1"), ("tc", "H_k0.5"), ("whc", "H_k0.5"))
         for cond in ("gcn", "gat")]


def _graph_flow(fh, name, mid, cond, layers=2):
    return fh.make_flow(name, mid, N, layers=layers, hidden=8, conditioner=cond, gain=1.5)


def _latents(fh, scale):
    g = torch.Generator().manual_seed(21)
    return torch.randn(N_NODES, N, generator=g, dtype=F64) * scale


@pytest.mark.parametrize("name,mid,cond", CASES)
@pytest.mark.parametrize("scale", [0.7, 5.0], ids=["near", "far"])
def test_graph_flow_round_trip_and_full_jacobian_logdet(fh, name, mid, cond, scale):
    M, f = _graph_flow(fh, name, mid, cond)
    w = _latents(fh, scale)
    x = M.expmap0_spatial(w)
    y, ladj = f(x, EDGE_INDEX)
    assert y.shape == x.shape and ladj.shape == (N_NODES,)
    x_back, ladj_inv = f.inverse(y, EDGE_INDEX)
    torch.testing.assert_close(M.logmap0_spatial(x_back), w, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-8, rtol=0)
    y_fresh = M.expmap0_spatial(w.flip(0))
    torch.testing.assert_close(f(f.inverse(y_fresh, EDGE_INDEX)[0], EDGE_INDEX)[0], y_fresh, atol=1e-9, rtol=1e-9)

    fwd = lambda z: f(z, EDGE_INDEX)[0]  # noqa: E731
    inv = lambda z: f.inverse(z, EDGE_INDEX)[0]  # noqa: E731
    torch.testing.assert_close(ladj.sum(), fh.riemannian_logdet(M, fwd, w), atol=1e-7, rtol=0)
    v = M.logmap0_spatial(y).detach()
    _, ladj_v = f.inverse(M.expmap0_spatial(v), EDGE_INDEX)
    torch.testing.assert_close(ladj_v.sum(), fh.riemannian_logdet(M, inv, v), atol=1e-7, rtol=0)

    # the check is not trivially block-diagonal: the Jacobian couples neighbouring nodes
    J = torch.autograd.functional.jacobian(fh.tangent_map(M, fwd), w).reshape(N_NODES, N, N_NODES, N)
    off = torch.stack([J[i, :, j].abs().max() for i in range(N_NODES) for j in range(N_NODES) if i != j])
    assert float(off.max()) > 1e-3


@pytest.mark.parametrize("name,mid,cond", CASES[:6])
def test_graph_flow_gradients_and_state_dict(fh, name, mid, cond):
    M, f = _graph_flow(fh, name, mid, cond)
    q = flows.Flow(fh.base_distribution(M, N), f, context=EDGE_INDEX)
    z = M.expmap0_spatial(_latents(fh, 1.0))
    q.log_prob(z).sum().backward()
    for pname, p in fh.trainable(f):
        assert p.grad is not None and bool((p.grad != 0).any()), pname
    _, g = _graph_flow(fh, name, mid, cond)
    fh.randomize_(g, seed=7)
    g.load_state_dict(f.state_dict())
    assert torch.equal(g(z, EDGE_INDEX)[0], f(z, EDGE_INDEX)[0])
    # log_prob of the flow's own samples matches rsample_and_log_prob (one graph = one sample of N nodes)
    s, log_s = q.rsample_and_log_prob((N_NODES,))
    assert s.shape == (N_NODES, M.ambient_dim(N))
    torch.testing.assert_close(q.log_prob(s), log_s, atol=1e-8, rtol=0)


@pytest.mark.parametrize("cond", ["gcn", "gat"])
def test_graph_conditioner_requires_edge_index(fh, cond):
    M, f = _graph_flow(fh, "tc", "H_k1", cond)
    with pytest.raises(ValueError, match="edge_index"):
        f(M.expmap0_spatial(_latents(fh, 1.0)))
