"""Generation metrics that the largest-component protocol cannot hide, their baselines, the adjacency-row encoder
input and the spanning-tree samplers."""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
import pytest
import torch

from manifolds import Lorentz
from vae import GraphGenerator, generation_metrics
from vae.generation import (GraphAutoEncoder, adjacency_rows, encoder_input, input_dim, max_spanning_tree,
                            random_spanning_tree)
from experiments.tasks.graph_gen_baselines import baseline_rows
from vae.graph_metrics import edge_density, edges_per_node, erdos_renyi_graphs, lcc_share


def _trees(sizes, seed0):
    return [nx.random_labeled_tree(n, seed=seed0 + i) for i, n in enumerate(sizes)]


# ----------------------------------------------------------------------------------------------------------
# the new metrics and the baselines
# ----------------------------------------------------------------------------------------------------------

def test_edges_per_node_and_lcc_share_on_known_graphs():
    forest = nx.disjoint_union(nx.path_graph(6), nx.path_graph(2))  # 6 edges on 8 nodes, largest part 6
    m = generation_metrics([forest], [nx.path_graph(8)])
    assert m["edges_per_node"] == pytest.approx(6 / 8) and m["lcc_share"] == pytest.approx(6 / 8)
    assert edges_per_node(nx.complete_graph(5)) == 2.0 and lcc_share(nx.empty_graph(4)) == 0.25
    assert edges_per_node(nx.empty_graph(0)) == 0.0 and lcc_share(nx.empty_graph(0)) == 0.0


def test_erdos_renyi_baseline_has_the_training_density_and_the_held_out_sizes():
    train = _trees(range(20, 60, 4), 0)
    test = _trees((25, 40, 55), 100)
    p = edge_density(train)
    assert p == pytest.approx(sum(n - 1 for n in range(20, 60, 4)) / sum(n * (n - 1) / 2 for n in range(20, 60, 4)))
    graphs = erdos_renyi_graphs([test[i % 3].number_of_nodes() for i in range(60)], p, seed=0)
    assert [g.number_of_nodes() for g in graphs[:4]] == [25, 40, 55, 25]
    pairs = sum(g.number_of_nodes() * (g.number_of_nodes() - 1) / 2 for g in graphs)
    edges = sum(g.number_of_edges() for g in graphs)
    assert abs(edges / pairs - p) < 4 * math.sqrt(p * (1 - p) / pairs)  # within 4 binomial standard errors
    rows = baseline_rows(train, test, "tree", seed=0, num=30)
    assert rows["erdos_renyi"]["edge_density"] == pytest.approx(p)
    # the ER graphs have about the trees' edge count but are rarely trees and rarely connected
    assert rows["erdos_renyi"]["lcc_share"] < 0.9 and rows["erdos_renyi"]["accuracy"] < 20
    # the floor: held-out trees against training trees are all trees; their MMDs are below the ER row's
    floor = rows["training"]
    assert floor["accuracy"] == 100.0 and floor["lcc_share"] == 1.0
    for k in ("mmd_degree", "mmd_spectral"):
        assert floor[k] < rows["erdos_renyi"][k], k
    # the spanning-tree control: uniformly random trees of the held-out sizes
    assert rows["random_tree"]["accuracy"] == 100.0 and rows["random_tree"]["edges_per_node"] == pytest.approx(
        np.mean([(test[i % 3].number_of_nodes() - 1) / test[i % 3].number_of_nodes() for i in range(30)]))
    with pytest.raises(ValueError, match=r"edge probability p must be in \[0, 1\]"):
        erdos_renyi_graphs([5], 1.5)
    with pytest.raises(ValueError, match="non-empty"):
        baseline_rows([], test)


def test_sparse_generators_that_game_the_lcc_protocol_are_caught():
    """Accuracy of the largest component rewards sparsity: a forest made by dropping half of a tree's edges, or
    G(n, 1/(n-1)), often has a tree as its largest component. Edges per node, LCC share and the degree MMD all
    show that they are not trees, and true trees (another sample) beat them on the degree MMD."""
    held_out = _trees([30, 45, 60, 75] * 3, 0)
    true_trees = _trees([30, 45, 60, 75] * 3, 500)
    rng = np.random.default_rng(0)
    forests = []
    for g in _trees([30, 45, 60, 75] * 3, 900):
        h = nx.Graph(g)
        h.remove_edges_from([e for e in g.edges() if rng.random() < 0.5])
        forests.append(h)
    er = [nx.gnp_random_graph(n, 1 / (n - 1), seed=s) for s, n in enumerate([30, 45, 60, 75] * 3)]
    good = generation_metrics(true_trees, held_out)
    for fake in (generation_metrics(forests, held_out), generation_metrics(er, held_out)):
        assert fake["accuracy_lcc"] >= 40  # the LCC protocol is fooled ...
        assert fake["accuracy"] < good["accuracy"] == 100.0  # ... the raw graphs, sparsity checks and MMDs are not
        assert fake["lcc_share"] < 0.8 and good["lcc_share"] == 1.0
        assert fake["mmd_degree"] > good["mmd_degree"] + 0.05 and fake["mmd_spectral"] > good["mmd_spectral"] + 0.1
    assert generation_metrics(forests, held_out)["edges_per_node"] < 0.6 < good["edges_per_node"]


# ----------------------------------------------------------------------------------------------------------
# adjacency-row encoder input
# ----------------------------------------------------------------------------------------------------------

def test_adjacency_rows_are_the_adjacency_matrix_zero_padded():
    g = nx.random_labeled_tree(7, seed=3)
    e = torch.tensor(list(g.edges())).T
    e = torch.cat([e, e.flip(0)], 1)
    x = adjacency_rows(e, 7, 10)
    assert x.shape == (7, 10)
    assert torch.equal(x[:, :7], torch.tensor(nx.to_numpy_array(g, nodelist=range(7)), dtype=torch.float32))
    assert (x[:, 7:] == 0).all()
    both = encoder_input(e, 7, "both", 10)
    assert both.shape == (7, input_dim("both", 10)) and torch.equal(both[:, -10:], x)
    with pytest.raises(ValueError, match="does not fit .* max_nodes=5"):
        adjacency_rows(e, 7, 5)
    with pytest.raises(ValueError, match="needs max_nodes"):
        input_dim("adjacency")
    with pytest.raises(ValueError, match="node_input must be one of"):
        input_dim("degree", 10)


def test_autoencoder_with_adjacency_input_trains_and_refuses_larger_graphs():
    torch.manual_seed(0)
    graphs = _trees([8, 10, 12], 0)
    ae = GraphAutoEncoder(Lorentz(), latent_dim=2, hidden=8, node_input="adjacency", max_nodes=12)
    assert ae.conv1.in_channels == 12
    opt = torch.optim.Adam(ae.parameters(), lr=1e-2)
    first = ae.loss(graphs).item()
    for _ in range(20):
        opt.zero_grad()
        ae.loss(graphs).backward()
        opt.step()
    assert ae.loss(graphs).item() < first
    with pytest.raises(ValueError, match="does not fit"):
        ae.loss([nx.path_graph(13)])


# ----------------------------------------------------------------------------------------------------------
# spanning-tree samplers
# ----------------------------------------------------------------------------------------------------------

def _symmetric(n, seed):
    a = np.random.default_rng(seed).normal(size=(n, n)) * 3
    return (a + a.T) / 2


def test_max_spanning_tree_is_networkx_s_maximum_spanning_tree():
    for seed, n in ((0, 2), (1, 9), (2, 40)):
        L = _symmetric(n, seed)
        edges = max_spanning_tree(L)
        g = nx.Graph(edges)
        assert g.number_of_nodes() == n and nx.is_tree(g)
        ref = nx.maximum_spanning_tree(nx.from_numpy_array(L - np.diag(np.diag(L))))
        assert sum(L[u, v] for u, v in edges) == pytest.approx(ref.size(weight="weight"))


def test_random_spanning_tree_follows_the_product_of_odds():
    """On K4 (16 spanning trees), Wilson's algorithm draws T with P(T) ∝ Π_{e∈T} exp(logit_e)."""
    L = _symmetric(4, 5) / 3
    rng = np.random.default_rng(0)
    trees = [T for T in itertools.combinations(itertools.combinations(range(4), 2), 3) if nx.is_tree(nx.Graph(T))]
    assert len(trees) == 16
    weight = np.array([math.exp(sum(L[u, v] for u, v in T)) for T in trees])
    counts = dict.fromkeys(trees, 0)
    draws = 4000
    for _ in range(draws):
        counts[tuple(sorted(random_spanning_tree(L, rng)))] += 1
    freq = np.array([counts[T] for T in trees]) / draws
    expected = weight / weight.sum()
    assert np.abs(freq - expected).max() < 4 * np.sqrt(expected * (1 - expected) / draws).max()
    with pytest.raises(ValueError, match="symmetric"):
        random_spanning_tree(np.triu(L), rng)


def test_random_spanning_tree_is_fast_when_pairs_are_far_more_likely_than_the_rest():
    """Pairs with odds e^60 times those of every other pair: a plain Wilson walk would bounce inside a pair for
    ~e^60 steps; the Laplacian random walk needs one solve per edge, and keeps every such pair."""
    L = np.full((40, 40), -30.0)
    for i in range(0, 40, 2):
        L[i, i + 1] = L[i + 1, i] = 30.0
    edges = random_spanning_tree(L, np.random.default_rng(0))
    assert nx.is_tree(nx.Graph(edges)) and nx.Graph(edges).number_of_nodes() == 40
    assert all((i, i + 1) in edges for i in range(0, 40, 2))
    # logit gaps beyond float64's exp range (transition probabilities underflow to 0): still a tree, no NaN
    for wild in (L * 50 / 3, _symmetric(60, 3) * 400):
        edges = random_spanning_tree(wild, np.random.default_rng(0))
        assert nx.is_tree(nx.Graph(edges)) and nx.Graph(edges).number_of_nodes() == len(wild)
    assert all((i, i + 1) in random_spanning_tree(L * 50 / 3, np.random.default_rng(1)) for i in range(0, 40, 2))


@pytest.mark.parametrize("sampler", ["spanning-tree", "max-spanning-tree"])
def test_spanning_tree_samplers_generate_trees_on_all_nodes(sampler):
    torch.manual_seed(0)
    gen = GraphGenerator(Lorentz(), latent_dim=2, flow="whc", hidden=8)
    graphs = gen.generate(4, sizes=[2, 9, 30, 57], sampler=sampler)
    assert [g.number_of_nodes() for g in graphs] == [2, 9, 30, 57]
    assert all(nx.is_tree(g) for g in graphs)
    m = generation_metrics(graphs, _trees([10, 30], 0))
    assert m["accuracy"] == 100.0 and m["lcc_share"] == 1.0
    with pytest.raises(ValueError, match="sampler must be one of"):
        gen.generate(1, sizes=[3], sampler="kruskal")
