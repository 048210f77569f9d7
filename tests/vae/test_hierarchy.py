"""Hierarchy metrics of node latents (MAP of graph reconstruction, distortion, depth–radius Spearman): their
definitions on cases with known answers, and that they tell a hierarchical embedding from a scrambled one."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch

from manifolds import Euclidean, Lorentz
from vae.hierarchy import depth_spearman, distortion, graph_distances, hierarchy_metrics, mean_average_precision


def _tree(branching: int = 3, depth: int = 4):
    g = nx.balanced_tree(branching, depth)
    ei = torch.tensor(list(g.edges())).T
    return g, torch.cat([ei, ei.flip(0)], 1)


def _hyperbolic_tree_embedding(g: nx.Graph, step: float = 5.0) -> tuple[Lorentz, torch.Tensor, np.ndarray]:
    """A low-distortion embedding of a tree in H² (after Sarkar 2011): every child at distance ``step`` from its
    parent, the root's children evenly around the origin, every other node's children fanned out within ±π/4 of
    the direction away from the origin (a direction at the origin carried to the parent by the boost
    ``translate``, which is parallel transport along the geodesic from the origin)."""
    depth = nx.single_source_shortest_path_length(g, 0)
    M = Lorentz(1.0)
    z = M.expmap0_spatial(torch.zeros(g.number_of_nodes(), 2, dtype=torch.float64))
    for parent in nx.bfs_tree(g, 0):
        kids = [k for k in sorted(g.neighbors(parent)) if depth[k] > depth[parent]]
        heading = math.atan2(float(z[parent, 2]), float(z[parent, 1]))
        for i, k in enumerate(kids):
            a = 2 * math.pi * i / len(kids) if parent == 0 else heading + (math.pi / 2) * ((i + 0.5) / len(kids) - 0.5)
            rel = M.expmap0_spatial(step * torch.tensor([math.cos(a), math.sin(a)], dtype=torch.float64))
            z[k] = M.translate(z[parent], rel)
    return M, z, np.array([depth[v] for v in range(g.number_of_nodes())])


def test_map_counts_nodes_at_least_as_close_as_each_neighbour():
    # node 0's neighbours are 1 (d=1) and 3 (d=3); node 2 (a non-neighbour) at d=2 sits between them:
    # AP_0 = (1/1 + 2/3) / 2; every other node ranks its only neighbour first
    d = np.array([[0, 1, 2, 3], [1, 0, 5, 5], [2, 5, 0, 6], [3, 5, 6, 0]], dtype=float)
    ei = np.array([[0, 0, 1, 3], [1, 3, 0, 0]])  # node 2 has no neighbour: not averaged
    expected = ((1 + 2 / 3) / 2 + 1 + 1) / 3
    assert mean_average_precision(d, ei) == pytest.approx(expected)


def test_map_of_a_hyperbolic_tree_embedding_beats_a_scrambled_one():
    g, ei = _tree()
    M, z, depth = _hyperbolic_tree_embedding(g)
    good = hierarchy_metrics(M, z, ei, depth)
    perm = torch.randperm(z.size(0), generator=torch.Generator().manual_seed(0))
    bad = hierarchy_metrics(M, z[perm], ei, depth)
    assert good["map"] > 0.95 and bad["map"] < 0.3
    # radii grow strictly with depth; within a level they differ a little while depths tie, so Spearman < 1
    assert good["depth_spearman"] > 0.8
    assert abs(bad["depth_spearman"]) < 0.3
    assert good["distortion"] < bad["distortion"]


def test_distortion_is_zero_for_a_rescaled_isometry_and_positive_otherwise():
    g, ei = _tree(2, 3)
    gd = graph_distances(ei, g.number_of_nodes())
    assert gd[0, 7] == 3 and gd[7, 8] == 2  # hops
    assert distortion(2.5 * gd, gd) == pytest.approx(0.0, abs=1e-12)
    noisy = gd * np.exp(np.random.default_rng(0).normal(0, 0.3, gd.shape))
    noisy = (noisy + noisy.T) / 2
    assert 0.05 < distortion(noisy, gd) < 0.5


def test_distortion_ignores_disconnected_pairs():
    ei = np.array([[0, 1, 2, 3], [1, 0, 3, 2]])  # two components
    gd = graph_distances(ei, 4)
    assert np.isinf(gd[0, 2])
    d = np.ones((4, 4)) - np.eye(4)
    assert distortion(d, gd) == pytest.approx(0.0)


def test_spearman_is_rank_correlation_with_ties():
    assert depth_spearman(np.array([0.0, 1.0, 4.0, 9.0]), np.array([0, 1, 2, 3])) == pytest.approx(1.0)
    assert depth_spearman(np.array([9.0, 4.0, 1.0, 0.0]), np.array([0, 1, 2, 3])) == pytest.approx(-1.0)
    assert math.isnan(depth_spearman(np.ones(4), np.array([0, 1, 2, 3])))
    with pytest.raises(ValueError, match="1-D of one length"):
        depth_spearman(np.ones(3), np.ones(4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_euclidean_latents_use_euclidean_distances(dtype):
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 3.0]], dtype=dtype)
    ei = torch.tensor([[0, 1, 1, 2, 0, 3], [1, 0, 2, 1, 3, 0]])
    m = hierarchy_metrics(Euclidean(), z, ei, np.array([0, 1, 2, 1]))
    assert m["map"] == pytest.approx(((1 / 1 + 2 / 3) / 2 + 1 + 1 + 1) / 4)
    assert m["depth_spearman"] > 0.5


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="square"):
        mean_average_precision(np.zeros((2, 3)), np.array([[0], [1]]))
    with pytest.raises(ValueError, match="no edges"):
        mean_average_precision(np.zeros((3, 3)), np.zeros((2, 0), dtype=int))
    with pytest.raises(ValueError, match="shape of dist"):
        distortion(np.zeros((3, 3)), np.zeros((2, 2)))


def _graph_and_latents(n: int, seed: int):
    """A random tree plus a few extra edges and a separate component, with noisy latents in H²."""
    g = nx.random_labeled_tree(n - 5, seed=seed)
    rng = np.random.default_rng(seed)
    g.add_edges_from((int(a), int(b)) for a, b in rng.integers(0, n - 5, size=(n // 20, 2)) if a != b)
    g.add_edges_from([(n - 5, n - 4), (n - 4, n - 3)])  # a second component; n - 2, n - 1 isolated
    g.add_nodes_from(range(n))
    ei = np.array(list(g.edges())).T
    depth = nx.shortest_path_length(g, 0)
    w = torch.tensor([[depth.get(v, 1) * 0.3, 0.0] for v in range(n)], dtype=torch.float64)
    w = w + 0.4 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return g, torch.as_tensor(ei), Lorentz().double().expmap0_spatial(w)


def test_exact_below_the_threshold_equals_the_full_matrix_metrics():
    """Issue 25 item 9: below HIERARCHY_EXACT_MAX_NODES every node is a source and the numbers are today's (the
    dense all-pairs definitions), so existing results stay comparable; no standard error is reported."""
    g, ei, z = _graph_and_latents(300, 3)
    M = Lorentz().double()
    dense = M.dist(z[:, None], z[None]).numpy()
    gd = graph_distances(ei, 300)
    m = hierarchy_metrics(M, z, ei)
    assert m["map"] == pytest.approx(mean_average_precision(dense, ei), rel=1e-12)
    assert m["distortion"] == pytest.approx(distortion(dense, gd), rel=1e-12)
    assert "map_se" not in m
    assert hierarchy_metrics(M, z, ei, sources=300) == m


def test_sampled_sources_estimate_the_exact_metrics_within_their_standard_errors():
    """Above the threshold (here: ``sources`` < N), a seeded sample of BFS sources estimates MAP and distortion; the
    exact values lie within 4 reported standard errors, the same seed gives the same numbers, another seed others."""
    g, ei, z = _graph_and_latents(1500, 5)
    M = Lorentz().double()
    exact = hierarchy_metrics(M, z, ei)
    est = hierarchy_metrics(M, z, ei, sources=150, seed=1)
    assert est["hierarchy_sources"] == 150
    for key in ("map", "distortion"):
        assert 0 < est[f"{key}_se"] < 0.1
        assert abs(est[key] - exact[key]) < 4 * est[f"{key}_se"], (key, est, exact)
    assert hierarchy_metrics(M, z, ei, sources=150, seed=1) == est
    assert hierarchy_metrics(M, z, ei, sources=150, seed=2)["map"] != est["map"]
    with pytest.raises(ValueError, match="sources"):
        hierarchy_metrics(M, z, ei, sources=0)


def test_hierarchy_metrics_memory_is_linear_in_the_graph(monkeypatch):
    """No N × N array: with the exact threshold lowered to 100, a 4 000-node graph's metrics allocate far less than
    one dense float64 distance matrix (128 MB)."""
    import tracemalloc

    import vae.hierarchy as h

    monkeypatch.setattr(h, "HIERARCHY_EXACT_MAX_NODES", 100)
    g, ei, z = _graph_and_latents(4000, 7)
    M = Lorentz().double()
    tracemalloc.start()
    m = h.hierarchy_metrics(M, z, ei, sources=32)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16e6 and np.isfinite(m["map"]) and np.isfinite(m["distortion"])


def test_the_pooled_best_scale_is_the_sorted_one():
    """The sampled path's weighted median (histogram, then the crossing bin sorted) equals the sort of the pool."""
    from vae.hierarchy import _best_scale, _best_scale_pooled

    rng = np.random.default_rng(0)
    parts = [rng.lognormal(0.0, 1.5, size=s) * (rng.random(s) > 0.05) for s in (1, 50, 1000, 333)]
    assert _best_scale_pooled(parts, bins=64) == _best_scale(np.concatenate(parts))
    assert _best_scale_pooled([np.zeros(3)]) is None
