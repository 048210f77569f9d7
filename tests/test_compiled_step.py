"""The training step as one graph: it compiles whole (``torch.compile(fullgraph=True)``, checked on the CPU with the
``aot_eager`` backend, so CI checks it without a GPU), computes what the eager step computes (float64: values,
log-dets, gradients), and reads nothing on the host."""

from __future__ import annotations

import pytest
import torch

from experiments.run.steps import adam
from experiments.run.steps import TrainStep, compile_loss
from manifolds import Euclidean, Lorentz
from vae import VAE, GraphVAE

F64 = torch.float64
GRAPH_MODELS = [("lorentz", None), ("lorentz", "tc"), ("lorentz", "whc"), ("euclidean", "nc"), ("euclidean", None),
                ("lorentz", "whc+gcn")]  # +gcn: graph (GCN) conditioners, GraphVAE's default


def _manifold(kind: str):
    return Lorentz(k=4.0) if kind == "lorentz" else Euclidean()


def _graph(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    from vae import prepare_edge_index

    gen = torch.Generator().manual_seed(seed)
    ei = prepare_edge_index(torch.randint(n, (2, 3 * n), generator=gen), n)
    return ei, ei[:, ei[0] < ei[1]]


def _graph_model(kind, flow, n=40, scale=1.0):
    torch.manual_seed(0)
    flow, _, conditioner = (flow or "").partition("+")
    model = GraphVAE(_manifold(kind), in_features=6, latent_dim=3, num_nodes=n, hidden=8, flow=flow or None,
                     flow_hidden=16, flow_conditioner=conditioner or "mlp").double()
    with torch.no_grad():  # latents near and far from the origin
        for p in model.parameters():
            p.mul_(scale)
    return model


def _terms_and_grads(fn, params):
    torch.manual_seed(7)  # the same posterior draw and negatives for both
    terms = fn()
    grads = torch.autograd.grad(terms[0], params)
    return terms.detach(), grads


@pytest.mark.parametrize("scale", [1.0, 3.0])
@pytest.mark.parametrize("kind, flow", GRAPH_MODELS)
def test_graph_vae_step_compiles_whole_and_equals_eager(kind, flow, scale):
    ei, pos = _graph()
    model = _graph_model(kind, flow, scale=scale)
    graph = model.prepare_graph(ei, 40)
    x = torch.randn(40, 6, dtype=F64) * scale

    def loss():
        t = model.loss(x, graph, pos)  # negatives drawn inside the step, on the device
        # the flow's log-det as a term of its own, so that its value is compared too
        q0 = model.encode(x, graph)
        ladj = model._latents(q0, graph, sample=True).ladj
        return torch.stack([t.total, t.recon, t.kl, ladj.sum()])

    params = [p for p in model.parameters() if p.requires_grad]
    eager = _terms_and_grads(loss, params)
    compiled = _terms_and_grads(compile_loss(loss, backend="aot_eager"), params)  # fullgraph: a break is an error
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(compiled[1], eager[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind, flow, learnable", [("lorentz", None, False), ("lorentz", "tc", True),
                                                   ("lorentz", "whc", False), ("euclidean", "nc", False)])
def test_density_vae_step_compiles_whole_and_equals_eager(kind, flow, learnable):
    torch.manual_seed(0)
    manifold = Lorentz(k=4.0, learnable=learnable) if kind == "lorentz" else Euclidean()
    model = VAE(manifold, data_dim=10, latent_dim=3, hidden=16, flow=flow).double()
    x = torch.bernoulli(torch.full((32, 10), 0.5, dtype=F64))

    def loss(batch):
        terms = model.elbo(batch)
        return torch.stack([-terms.elbo.mean(), terms.ladj.mean(), terms.log_pz.mean()])

    params = [p for p in model.parameters() if p.requires_grad]
    eager = _terms_and_grads(lambda: loss(x), params)
    compiled_loss = compile_loss(loss, backend="aot_eager")
    compiled = _terms_and_grads(lambda: compiled_loss(x), params)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(compiled[1], eager[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("flow,weight_decay", [(None, 0.0), ("whc", 0.0), ("whc", 1.0)])
def test_train_step_reads_nothing_on_the_host_and_compiled_training_matches_eager(flow, weight_decay, host_reads):
    """A graph-VAE training step (loss, backward, Adam or AdamW with ``--weight-decay``) with a prepared graph makes
    no host read; ten compiled steps give the parameters of ten eager ones."""
    ei, pos = _graph()
    x = torch.randn(40, 6, dtype=F64)

    def build():
        model = _graph_model("lorentz", flow)
        graph = model.prepare_graph(ei, 40)
        # fused: torch's loop Adam reads its step count with .item()
        opt = adam(model.parameters(), lr=1e-2, weight_decay=weight_decay)
        return model, opt, lambda: model.loss(x, graph, pos)

    _check_steps_compile_without_host_reads(build, host_reads)


def _check_steps_compile_without_host_reads(build, host_reads) -> None:
    """``build() -> (model, opt, loss)`` (``loss()`` a :class:`vae.graph.GraphLoss`), built twice: trained eagerly and
    with the loss compiled whole, a step after the first (which compiles) reads nothing on the host, and ten compiled
    steps give the parameters of ten eager ones."""
    torch._dynamo.reset()  # every caller compiles the one `loss` below: a fresh cache, not a recompile per caller
    finals = []
    for compiled in (False, True):
        model, opt, graph_loss = build()

        def loss():
            t = graph_loss()
            return torch.stack([t.total, t.recon, t.kl])

        step = TrainStep(opt, loss, compile=compiled, backend="aot_eager")
        torch.manual_seed(3)
        step()  # the first call compiles
        assert host_reads(step) == 0
        for _ in range(8):
            step()
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(finals[1], finals[0], rtol=1e-9, atol=1e-12)


def test_cuda_graph_needs_cuda_and_static_inputs():
    lin = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(lin.parameters())
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            TrainStep(opt, lambda: lin(torch.ones(1, 2)).reshape(1), cuda_graph=True)
        return
    step = TrainStep(opt, lambda b: lin(b).reshape(1), cuda_graph=True)
    with pytest.raises(ValueError, match="no inputs"):
        step(torch.ones(1, 2, device="cuda"))


@pytest.mark.parametrize("flow", ["tc", "whc"])
def test_cuda_graph_step_trains_like_the_eager_step(device, flow):
    """On ``--device cuda``: the step captured in a CUDA graph (after its eager warm-up steps) and replayed gives the
    parameters of the eager step after 12 steps (a deterministic loss: a flow's maximum likelihood on fixed data,
    through the fused hyperboloid maps and Adam with ``capturable=True``)."""
    if device.type != "cuda":
        pytest.skip("a CUDA graph needs a GPU: run with --device cuda (the CPU has test_cuda_graph_needs_cuda_...)")
    import flows
    from manifolds import WrappedNormal

    M = Lorentz(k=2.0).to(device)
    data = M.expmap0_spatial(torch.randn(256, 4, device=device, generator=torch.Generator(device).manual_seed(0)))
    finals = []
    for graph in (False, True):
        torch.manual_seed(0)
        f = flows.build(flow, M, 4, layers=2, hidden=32).to(device)
        q = flows.Flow(WrappedNormal.at_origin(torch.ones(4, device=device), M), f)
        opt = adam(f.parameters(), lr=1e-2, capturable=graph)
        step = TrainStep(opt, lambda: (-q.log_prob(data).mean()).reshape(1), cuda_graph=graph)
        losses = [step() for _ in range(12)]
        torch.cuda.synchronize()
        assert torch.isfinite(torch.cat(losses)).all()
        finals.append(torch.cat([p.detach().flatten() for p in f.parameters()]))
    torch.testing.assert_close(finals[1], finals[0], rtol=1e-5, atol=1e-6)


def test_a_step_that_cannot_be_captured_falls_back_to_eager(device):
    """On ``--device cuda``: a loss that synchronises (a boolean mask) cannot be captured; the step warns once and
    trains eagerly, with the eager result."""
    if device.type != "cuda":
        pytest.skip("a CUDA graph needs a GPU: run with --device cuda (the CPU has test_cuda_graph_needs_cuda_...)")
    x = torch.randn(64, 3, device=device)
    finals = []
    for graph in (False, True):
        torch.manual_seed(0)
        lin = torch.nn.Linear(3, 1).to(device)
        opt = adam(lin.parameters(), lr=1e-2, capturable=graph)
        step = TrainStep(opt, lambda: lin(x)[x[:, 0] > 0].pow(2).mean().reshape(1), cuda_graph=graph)
        if graph:
            with pytest.warns(RuntimeWarning, match="cannot be captured"):
                for _ in range(6):
                    step()
        else:
            for _ in range(6):
                step()
        finals.append(torch.cat([p.detach().flatten() for p in lin.parameters()]))
    torch.testing.assert_close(finals[1], finals[0])


def test_graph_generator_losses_compile_and_equal_eager():
    """``graph-gen --compile`` compiles the tensor parts of both stages' losses (dynamic shapes: batches of graphs
    of varying size); compiled, they give the eager values and gradients (float64, ``aot_eager``)."""
    import networkx as nx

    from vae import GraphGenerator
    from vae.generation import complete_edge_index

    torch.manual_seed(0)
    gen = GraphGenerator(Lorentz(), 2, "whc", hidden=8).double()
    ae, prior = gen.autoencoder, gen.prior
    for graphs in ([nx.path_graph(5), nx.star_graph(4)], [nx.random_labeled_tree(9, seed=1)]):
        batch = ae.batch(graphs)
        compiled = torch.compile(ae.pairs_loss, dynamic=True, backend="aot_eager")
        params = [p for p in ae.parameters() if p.requires_grad]
        want = _terms_and_grads(lambda: ae.pairs_loss(*batch).reshape(1), params)
        got = _terms_and_grads(lambda: compiled(*batch).reshape(1), params)
        torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
        for a, b in zip(got[1], want[1]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        sizes = [g.number_of_nodes() for g in graphs]
        z = prior.sample(sizes).detach()
        ctx = complete_edge_index(sizes)
        log_prob = torch.compile(prior.log_prob_on, dynamic=True, backend="aot_eager")
        torch.testing.assert_close(log_prob(z, ctx), prior.log_prob(z, sizes), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["poincare", "lorentz"])
def test_embedding_step_reads_nothing_on_the_host_and_compiled_training_matches_eager(kind, host_reads):
    """``graph-recon --model embedding``: the ranking loss (negatives drawn on the device), its backward and a
    RiemannianAdam step make no host read; the loss compiles whole, and ten compiled steps give the points of ten eager
    ones."""
    import geoopt

    from manifolds import PoincareBall
    from vae.embedding import HyperbolicEmbedding

    ei, _ = _graph()

    def build():
        torch.manual_seed(0)
        manifold = PoincareBall(1.0) if kind == "poincare" else Lorentz(1.0)
        model = HyperbolicEmbedding(manifold, 40, latent_dim=3).double()
        graph = model.prepare_graph(ei, 40)
        return model, geoopt.optim.RiemannianAdam(model.parameters(), lr=1e-2), lambda: model.loss(None, graph)

    _check_steps_compile_without_host_reads(build, host_reads)
