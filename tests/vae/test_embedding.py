"""The classic baseline (Nickel & Kiela 2017): hyperbolic node embeddings trained by a ranking loss. Its loss is eq. (6)
of the paper (checked by hand), training pulls a tree's root to the middle, its points stay on the manifold under
RiemannianAdam in float32, and it scores held-out pairs as a GraphVAE does."""

from __future__ import annotations

import math

import geoopt
import networkx as nx
import pytest
import torch

from manifolds import Lorentz, PoincareBall
from vae import prepare_edge_index
from vae.embedding import HyperbolicEmbedding

MANIFOLDS = {"poincare": lambda: PoincareBall(1.0), "lorentz": lambda: Lorentz(1.0)}


def _ball_dist(x: list[float], y: list[float]) -> float:
    """The unit ball's distance by hand: arcosh(1 + 2|x - y|² / ((1 - |x|²)(1 - |y|²)))."""
    sq = lambda v: sum(c * c for c in v)  # noqa: E731
    return math.acosh(1 + 2 * sq([a - b for a, b in zip(x, y)]) / ((1 - sq(x)) * (1 - sq(y))))


def test_the_loss_is_nickel_and_kiela_eq_6_by_hand():
    """Three nodes on the unit ball, edges 0-1 and 1-2 in both directions, negatives fixed: the loss is the mean over
    the four directed edges of -log(e^{-d(u,v)} / (e^{-d(u,v)} + Σ_j e^{-d(u,v'_j)}))."""
    z = [[0.1, 0.2], [-0.3, 0.05], [0.5, -0.4]]
    model = HyperbolicEmbedding(PoincareBall(1.0), num_nodes=3, latent_dim=2, negatives=2).double()
    with torch.no_grad():
        model.points.copy_(torch.tensor(z, dtype=torch.float64))
    edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    negatives = torch.tensor([[2, 1], [2, 2], [0, 0], [0, 1]])  # (E, K); 1 for u = 2 is a neighbour: kept
    expected = 0.0
    for (u, v), negs in zip(edges.T.tolist(), negatives.tolist()):
        pos = math.exp(-_ball_dist(z[u], z[v]))
        expected += -math.log(pos / (pos + sum(math.exp(-_ball_dist(z[u], z[w])) for w in negs)))
    got = model.ranking_loss(edges, negatives)
    assert got.item() == pytest.approx(expected / 4, rel=1e-10)


def test_negatives_are_other_nodes_with_the_asked_shape():
    model = HyperbolicEmbedding(PoincareBall(1.0), num_nodes=5, latent_dim=2, negatives=7)
    sources = torch.arange(5).repeat(200)
    negs = model.negative_samples(sources)
    assert negs.shape == (1000, 7)
    assert not (negs == sources.unsqueeze(1)).any()  # d(u, u) = 0 has no gradient: never drawn
    assert set(negs.unique().tolist()) == set(range(5))  # every node can be a negative (uniform among the others)


def _closure_of_tree(branching: int = 3, depth: int = 3) -> tuple[torch.Tensor, list[int]]:
    """A balanced tree with every node linked to all its ancestors (the transitive closure Nickel & Kiela embed)."""
    g = nx.balanced_tree(branching, depth)
    levels = nx.single_source_shortest_path_length(g, 0)
    pairs = [(a, v) for v in g for a in nx.shortest_path(g, 0, v)[:-1]]
    return torch.tensor(pairs).T, [levels[v] for v in range(g.number_of_nodes())]


@pytest.mark.parametrize("name", list(MANIFOLDS))
def test_training_on_a_tree_lowers_the_loss_and_puts_the_root_in_the_middle(name):
    torch.manual_seed(0)
    ei, depth = _closure_of_tree()
    n = len(depth)
    manifold = MANIFOLDS[name]()
    model = HyperbolicEmbedding(manifold, n, latent_dim=2)
    graph = model.prepare_graph(ei, n)
    opt = geoopt.optim.RiemannianAdam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(300):
        opt.zero_grad()
        loss = model.loss(None, graph).total
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.7 * sum(losses[:20]) / 20
    radius = manifold.dist0(model.embed())
    leaves = radius[torch.tensor(depth) == max(depth)]
    assert radius[0] < leaves.min()  # the root nearer the origin than every leaf


@pytest.mark.parametrize("name", list(MANIFOLDS))
def test_points_stay_on_the_manifold_under_riemannian_adam_in_float32(name):
    """A large learning rate drives points far out (distance ≫ 1 from the origin); every step's points still pass
    the manifold's own check (inside the ball; on the hyperboloid within its float32 tolerance)."""
    torch.manual_seed(1)
    ei, depth = _closure_of_tree(2, 4)
    manifold = MANIFOLDS[name]()
    model = HyperbolicEmbedding(manifold, len(depth), latent_dim=2)
    assert model.points.dtype == torch.float32 and isinstance(model.points, geoopt.ManifoldParameter)
    graph = model.prepare_graph(ei, len(depth))
    opt = geoopt.optim.RiemannianAdam(model.parameters(), lr=0.5)
    for _ in range(100):
        opt.zero_grad()
        model.loss(None, graph).total.backward()
        opt.step()
        ok, why = manifold.check_point_on_manifold(model.points.detach(), explain=True)
        assert ok, why
    assert float(manifold.dist0(model.points.detach()).max()) > 3  # the check was made far from the origin


def test_evaluate_scores_pairs_by_distance():
    """AUC 1 when every held-out edge is shorter than every held-out non-edge, 0 when the reverse."""
    model = HyperbolicEmbedding(PoincareBall(1.0), num_nodes=4, latent_dim=2)
    with torch.no_grad():
        model.points.copy_(torch.tensor([[0.0, 0.0], [0.1, 0.0], [-0.8, 0.0], [0.0, 0.8]]))
    near, far = torch.tensor([[0], [1]]), torch.tensor([[2, 1], [3, 2]])
    assert model.evaluate(None, None, near, far) == {"auc": 1.0, "ap": 1.0}
    assert model.evaluate(None, None, far, near)["auc"] == 0.0
    with pytest.raises(ValueError, match="pos_pairs"):
        model.evaluate(None, None, torch.tensor([[0], [4]]), far)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="negatives must be >= 1"):
        HyperbolicEmbedding(PoincareBall(1.0), num_nodes=4, latent_dim=2, negatives=0)
    model = HyperbolicEmbedding(PoincareBall(1.0), num_nodes=4, latent_dim=2)
    with pytest.raises(ValueError, match="num_nodes=5"):
        model.prepare_graph(prepare_edge_index(torch.tensor([[0], [4]]), 5), 5)
