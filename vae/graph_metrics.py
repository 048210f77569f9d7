"""Metrics of generated graphs (Bose et al. 2020 §4.3; MMDs as in GraphRNN / GRAN).

The headline metrics take ``networkx`` graphs as generated (no largest-component extraction: MATH.md §6). The
``*_lcc`` metrics repeat ``accuracy``, triangles and clustering under the reference code's protocol (isolated nodes
removed, then the largest connected component; graphs without an edge left out), which is how the paper's numbers
were computed, so that ours can be set beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from flows.extras import require

from .constants import (CLUSTERING_BINS, HISTOGRAM_EPS, MMD_SIGMA_CLUSTERING, MMD_SIGMA_DEGREE, MMD_SIGMA_SPECTRAL,
                        SPECTRAL_BINS)

nx = require("networkx", "vae.graph_metrics")


def is_tree(g: nx.Graph) -> bool:
    """A non-empty connected acyclic graph (``networkx.is_tree``; the empty graph is not a tree)."""
    return g.number_of_nodes() > 0 and nx.is_tree(g)


def is_lobster(g: nx.Graph) -> bool:
    """A tree that becomes a path (or nothing) after removing its leaves twice (GRAN's test).

    Example:
        >>> is_lobster(nx.path_graph(5)), is_lobster(nx.star_graph(4)), is_lobster(nx.cycle_graph(4))
        (True, True, False)
    """
    if not is_tree(g):
        return False
    h = g.copy()
    for _ in range(2):
        h.remove_nodes_from([v for v, d in h.degree() if d <= 1])
    if h.number_of_nodes() == 0:
        return True
    return nx.is_connected(h) and max(d for _, d in h.degree()) <= 2  # a path (a forest would be disconnected)


def triangle_count(g: nx.Graph) -> int:
    """Number of triangles."""
    return sum(nx.triangles(g).values()) // 3


def global_clustering(g: nx.Graph) -> float:
    """Transitivity ``3 × triangles / connected triples`` (0 for graphs without triples)."""
    return float(nx.transitivity(g))


def largest_component(g: nx.Graph) -> nx.Graph | None:
    """The reference evaluation's view of a generated graph: isolated nodes removed, then the largest connected
    component; ``None`` for a graph without edges (the reference skips those).

    Example:
        >>> g = nx.disjoint_union(nx.path_graph(3), nx.cycle_graph(4))
        >>> g.add_node(99)
        >>> largest_component(g).number_of_nodes(), largest_component(nx.empty_graph(5))
        (4, None)
    """
    h = nx.Graph(g)
    h.remove_nodes_from(list(nx.isolates(h)))
    if h.number_of_nodes() == 0:
        return None
    return h.subgraph(max(nx.connected_components(h), key=len)).copy()


def edges_per_node(g: nx.Graph) -> float:
    """``|E| / |V|`` (0 for the empty graph): ``(n-1)/n`` for a tree on ``n`` nodes, below that for a forest, above
    for a graph with cycles, so it shows a generator that games the LCC protocol with sparse graphs.

    Example:
        >>> edges_per_node(nx.path_graph(4)), edges_per_node(nx.empty_graph(4)), edges_per_node(nx.cycle_graph(4))
        (0.75, 0.0, 1.0)
    """
    n = g.number_of_nodes()
    return g.number_of_edges() / n if n else 0.0


def lcc_share(g: nx.Graph) -> float:
    """Share of the nodes in the largest connected component, isolated nodes included in the count:
    ``max_C |C| / |V|`` (1 for a connected graph; 0 for the empty graph).

    Example:
        >>> lcc_share(nx.disjoint_union(nx.path_graph(3), nx.empty_graph(1))), lcc_share(nx.path_graph(3))
        (0.75, 1.0)
    """
    if g.number_of_nodes() == 0:
        return 0.0
    return max(len(c) for c in nx.connected_components(g)) / g.number_of_nodes()


def mean_triangles_per_node(g: nx.Graph) -> float:
    """``Σ_v triangles(v) / |V|`` (each triangle counted at its three corners), the reference code's "Avg_Tri"."""
    return float(np.mean(list(nx.triangles(g).values()))) if g.number_of_nodes() else 0.0


# ----------------------------------------------------------------------------------------------------------
# MMD² with the Gaussian-TV kernel
# ----------------------------------------------------------------------------------------------------------

def gaussian_tv(x: np.ndarray, y: np.ndarray, sigma: float = 1.0) -> float:
    r"""``exp(-TV(x, y)² / (2σ²))`` with ``TV = ½ Σ |x̄ - ȳ|`` between histograms normalised to sum 1
    (zero-padded to a common length), as in GRAN's ``gaussian_tv``."""
    n = max(len(x), len(y))
    x = np.pad(np.asarray(x, float), (0, n - len(x)))
    y = np.pad(np.asarray(y, float), (0, n - len(y)))
    x = x / (x.sum() + HISTOGRAM_EPS)
    y = y / (y.sum() + HISTOGRAM_EPS)
    tv = np.abs(x - y).sum() / 2.0
    return float(np.exp(-tv * tv / (2 * sigma * sigma)))


def mmd2(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], kernel: Callable[[np.ndarray, np.ndarray], float]) -> float:
    r"""Biased MMD² estimate ``mean k(X,X) + mean k(Y,Y) - 2 mean k(X,Y)`` between two sets of histograms.

    Example:
        >>> h = [np.array([1.0, 2.0])]
        >>> mmd2(h, h, gaussian_tv)
        0.0
    """
    if not xs or not ys:
        raise ValueError("mmd2 needs two non-empty sets of histograms")

    def mean_k(a, b):
        return float(np.mean([kernel(u, v) for u in a for v in b]))

    return mean_k(xs, xs) + mean_k(ys, ys) - 2 * mean_k(xs, ys)


def degree_histogram(g: nx.Graph) -> np.ndarray:
    return np.asarray(nx.degree_histogram(g), float)


def clustering_histogram(g: nx.Graph, bins: int = CLUSTERING_BINS) -> np.ndarray:
    values = list(nx.clustering(g).values()) if g.number_of_nodes() else []
    return np.histogram(values, bins=bins, range=(0.0, 1.0))[0].astype(float)


def spectral_histogram(g: nx.Graph, bins: int = SPECTRAL_BINS) -> np.ndarray:
    """Histogram of the normalised-Laplacian eigenvalues (in ``[0, 2]``), normalised to a pmf as in GRAN."""
    if g.number_of_nodes() == 0:
        return np.zeros(bins)
    eig = np.linalg.eigvalsh(nx.normalized_laplacian_matrix(g).toarray())
    hist = np.histogram(eig, bins=bins, range=(-1e-5, 2.0), density=False)[0].astype(float)
    return hist / max(hist.sum(), HISTOGRAM_EPS)


def generation_metrics(generated: Sequence[nx.Graph], reference: Sequence[nx.Graph], kind: str = "tree") -> dict[str, float]:
    r"""The paper's generation metrics of ``generated`` graphs against held-out ``reference`` graphs.

    Returns ``accuracy`` (% of generated graphs that are trees, or lobsters with ``kind="lobster"``, on the raw
    generated graph), ``avg_triangles``, ``avg_clustering`` (transitivity), and ``mmd_degree``,
    ``mmd_clustering``, ``mmd_spectral`` (MMD² with Gaussian-TV kernels, σ = 1, 0.1, 1 as in GRAN); and under the
    reference code's protocol (:func:`largest_component` of each generated graph, graphs without an edge left out):
    ``accuracy_lcc`` (% of those whose largest component is valid), ``avg_triangles_lcc``
    (:func:`mean_triangles_per_node`) and ``avg_clustering_lcc`` (transitivity), each ``nan`` when every
    generated graph is empty. Two sparsity checks on the raw graphs that the LCC protocol hides:
    ``edges_per_node`` (mean :func:`edges_per_node`; a tree on ``n`` nodes has ``(n-1)/n``) and ``lcc_share``
    (mean :func:`lcc_share`, 1 for connected graphs).

    Example:
        >>> trees = [nx.random_labeled_tree(20, seed=s) for s in range(3)]
        >>> m = generation_metrics(trees, trees)
        >>> m["accuracy"], m["avg_triangles"], round(m["mmd_degree"], 6)
        (100.0, 0.0, 0.0)
    """
    if kind not in ("tree", "lobster"):
        raise ValueError(f"kind must be 'tree' or 'lobster'; got {kind!r}")
    if not generated or not reference:
        raise ValueError("generation_metrics needs non-empty lists of generated and reference graphs")
    valid = is_tree if kind == "tree" else is_lobster
    lcc = [h for h in (largest_component(g) for g in generated) if h is not None]
    nan = float("nan")
    return {
        "accuracy_lcc": 100.0 * float(np.mean([valid(h) for h in lcc])) if lcc else nan,
        "avg_triangles_lcc": float(np.mean([mean_triangles_per_node(h) for h in lcc])) if lcc else nan,
        "avg_clustering_lcc": float(np.mean([global_clustering(h) for h in lcc])) if lcc else nan,
        "accuracy": 100.0 * float(np.mean([valid(g) for g in generated])),
        "avg_triangles": float(np.mean([triangle_count(g) for g in generated])),
        "avg_clustering": float(np.mean([global_clustering(g) for g in generated])),
        "edges_per_node": float(np.mean([edges_per_node(g) for g in generated])),
        "lcc_share": float(np.mean([lcc_share(g) for g in generated])),
        "mmd_degree": mmd2([degree_histogram(g) for g in generated], [degree_histogram(g) for g in reference],
                           lambda a, b: gaussian_tv(a, b, MMD_SIGMA_DEGREE)),
        "mmd_clustering": mmd2([clustering_histogram(g) for g in generated],
                               [clustering_histogram(g) for g in reference],
                               lambda a, b: gaussian_tv(a, b, MMD_SIGMA_CLUSTERING)),
        "mmd_spectral": mmd2([spectral_histogram(g) for g in generated], [spectral_histogram(g) for g in reference],
                             lambda a, b: gaussian_tv(a, b, MMD_SIGMA_SPECTRAL)),
    }


# ----------------------------------------------------------------------------------------------------------
# baselines: what a trivial generator scores, and the floor set by the data's own sampling noise
# ----------------------------------------------------------------------------------------------------------

def edge_density(graphs: Sequence[nx.Graph]) -> float:
    r"""Pooled edge density ``p = Σ_g |E_g| / Σ_g n_g(n_g-1)/2`` (the maximum-likelihood ``p`` of one G(n, p) model
    for all ``graphs``).

    Example:
        >>> edge_density([nx.path_graph(3), nx.complete_graph(3)])  # (2 + 3) / (3 + 3)
        0.8333333333333334
    """
    pairs = sum(g.number_of_nodes() * (g.number_of_nodes() - 1) // 2 for g in graphs)
    if pairs == 0:
        raise ValueError("edge_density needs graphs with at least one pair of nodes; got none")
    return sum(g.number_of_edges() for g in graphs) / pairs


def erdos_renyi_graphs(sizes: Sequence[int], p: float, seed: int = 0) -> list[nx.Graph]:
    """One G(n, p) graph per size in ``sizes`` (every pair an edge independently with probability ``p``).

    Example:
        >>> [g.number_of_nodes() for g in erdos_renyi_graphs([3, 5], 0.5, seed=1)]
        [3, 5]
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"edge probability p must be in [0, 1]; got {p}")
    rng = np.random.default_rng(seed)
    return [nx.gnp_random_graph(int(n), p, seed=int(rng.integers(2**31))) for n in sizes]
