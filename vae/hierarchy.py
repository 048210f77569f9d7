"""How well node latents show a graph and its hierarchy: the hyperbolic-embedding literature's metrics.

* :func:`mean_average_precision`: graph reconstruction by latent distance (Nickel & Kiela 2017, "Poincaré
  embeddings"): every node ranks all others by their latent distance to it, and the precision of that ranking
  is averaged over the node's true neighbours, then over nodes.
* :func:`distortion`: average relative distortion of all pairwise distances (Sala et al. 2018, "Representation
  tradeoffs for hyperbolic embeddings") after the best global rescaling, since a VAE's latents have no fixed scale.
* :func:`depth_spearman`: the Spearman rank correlation between a node's depth in the hierarchy and its latent's
  distance from the origin (a hierarchy drawn from the centre outwards scores 1).

:func:`hierarchy_metrics` computes all three from a model's latents, once per evaluation on the host (numpy /
scipy), never inside a training step, in memory linear in nodes + edges: it walks source nodes one block of rows
at a time (a BFS from each for the graph distances, latent distances in chunks). Up to
:data:`~vae.constants.HIERARCHY_EXACT_MAX_NODES` nodes every node is a source and the numbers are the exact
all-pairs ones (as :func:`mean_average_precision` and :func:`distortion` give on full matrices); above, a seeded
sample of sources gives estimates with their standard errors.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from .constants import HIERARCHY_DIST_CHUNK, HIERARCHY_EXACT_MAX_NODES, HIERARCHY_SOURCES


def _check_square(dist: np.ndarray, name: str) -> int:
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) matrix; got shape {dist.shape}")
    return dist.shape[0]


def mean_average_precision(dist: np.ndarray, edge_index: np.ndarray | Tensor) -> float:
    r"""Mean average precision of graph reconstruction from the pairwise latent distances ``dist`` (``(N, N)``):

    ``MAP = (1/|V'|) Σ_{u∈V'} (1/|N_u|) Σ_{v∈N_u} |N_u ∩ R_{u,v}| / |R_{u,v}|``, with ``R_{u,v}`` the nodes
    ``w ≠ u`` with ``d(u, w) ≤ d(u, v)`` and ``V'`` the nodes with at least one neighbour. 1 means every node's
    neighbours are its nearest nodes.

    Example:
        >>> d = np.array([[0., 1., 2.], [1., 0., 1.], [2., 1., 0.]])  # a path 0 - 1 - 2 on a line
        >>> mean_average_precision(d, np.array([[0, 1, 1, 2], [1, 0, 2, 1]]))
        1.0
    """
    n = _check_square(np.asarray(dist), "dist")
    ei = np.asarray(edge_index.cpu() if isinstance(edge_index, Tensor) else edge_index)
    adj = np.zeros((n, n), dtype=bool)
    adj[ei[0], ei[1]] = True
    adj[ei[1], ei[0]] = True
    np.fill_diagonal(adj, False)
    d = np.array(dist, dtype=np.float64, copy=True)
    np.fill_diagonal(d, np.inf)  # a node is not its own neighbour
    aps = [_average_precision(d[u], adj[u]) for u in np.flatnonzero(adj.any(1))]
    if not aps:
        raise ValueError("the graph has no edges: mean average precision needs at least one")
    return float(np.mean(aps))


def _average_precision(row: np.ndarray, neighbours: np.ndarray) -> float:
    """AP of one node: ``row`` its latent distances (``inf`` at itself), ``neighbours`` a mask or sorted ids."""
    # rank of each neighbour: how many nodes are at least as close (ties count against the neighbour)
    dn = np.sort(row[neighbours])
    ranks = np.searchsorted(np.sort(row), dn, side="right")
    hits = np.searchsorted(dn, dn, side="right")  # neighbours at least as close
    return float(np.mean(hits / ranks))


def _best_scale(r: np.ndarray) -> float | None:
    """The ``c > 0`` minimising ``Σ|c·r - 1|`` (the r-weighted median of ``1/r``); ``None`` when every ``r`` is 0."""
    if not np.isfinite(r).all():
        raise ValueError("latent distances must be finite")
    pos = r > 0
    if not pos.any():
        return None  # every latent at one point: the best scale cannot help
    # Σ|c·r - 1| = Σ r·|c - 1/r| is minimised by the r-weighted median of 1/r
    inv, w = 1.0 / r[pos], r[pos]
    order = np.argsort(inv)
    cw = np.cumsum(w[order])
    return float(inv[order][np.searchsorted(cw, 0.5 * cw[-1])])


def _best_scale_pooled(ratios: list[np.ndarray], bins: int = 1 << 16) -> float | None:
    """:func:`_best_scale` of the concatenation of ``ratios`` without forming it (nor its sort): the weighted
    median is located in a histogram of ``log r`` (one pass for the range, one for the histogram), then found
    exactly among the values of its bin (a third pass). Memory: ``bins`` plus one bin's values."""
    if not all(np.isfinite(a).all() for a in ratios):
        raise ValueError("latent distances must be finite")
    lo = min((float(np.log(a[a > 0].min())) for a in ratios if (a > 0).any()), default=None)
    if lo is None:
        return None  # every latent at one point: the best scale cannot help
    hi = max(float(np.log(a.max())) for a in ratios if (a > 0).any())
    width = max(hi - lo, 1e-300) / bins

    def bin_of(a: np.ndarray) -> np.ndarray:  # bins in order of decreasing r (increasing 1/r)
        return np.clip(((hi - np.log(a)) / width).astype(np.int64), 0, bins - 1)

    hist = np.zeros(bins)
    for a in ratios:
        p = a[a > 0].astype(np.float64)
        hist += np.bincount(bin_of(p), weights=p, minlength=bins)
    half = 0.5 * hist.sum()
    cum = np.cumsum(hist)
    j = int(np.searchsorted(cum, half))
    before = cum[j - 1] if j > 0 else 0.0
    inside = np.concatenate([p[bin_of(p) == j] for p in (a[a > 0].astype(np.float64) for a in ratios)])
    inside = -np.sort(-inside)  # decreasing r: increasing 1/r
    k = min(int(np.searchsorted(before + np.cumsum(inside), half)), inside.size - 1)
    return float(1.0 / inside[k])


def distortion(dist: np.ndarray, graph_dist: np.ndarray) -> float:
    r"""Average relative distortion ``min_c mean_{u<v} |c·d(u, v) / d_G(u, v) - 1|`` over the connected pairs,
    with the best global scale ``c > 0`` (a weighted median; 0 = the latent distances are the graph's up to scale).

    Example:
        >>> g = np.array([[0., 1., 2.], [1., 0., 1.], [2., 1., 0.]])
        >>> round(distortion(3 * g, g), 12)  # a rescaled copy has no distortion
        0.0
    """
    n = _check_square(np.asarray(dist), "dist")
    if np.asarray(graph_dist).shape != (n, n):
        raise ValueError(f"graph_dist must have the shape of dist {(n, n)}; got {np.asarray(graph_dist).shape}")
    iu = np.triu_indices(n, 1)
    dg, de = np.asarray(graph_dist, np.float64)[iu], np.asarray(dist, np.float64)[iu]
    keep = np.isfinite(dg) & (dg > 0)
    if not keep.any():
        raise ValueError("no connected pair of distinct nodes: distortion needs at least one")
    r = de[keep] / dg[keep]
    c = _best_scale(r)
    return 1.0 if c is None else float(np.mean(np.abs(c * r - 1.0)))


def depth_spearman(radius: np.ndarray, depth: np.ndarray) -> float:
    r"""Spearman rank correlation between the nodes' depths and their latents' distances from the origin (the
    Pearson correlation of the average ranks); ``nan`` when either is constant.

    Example:
        >>> depth_spearman(np.array([0.1, 0.5, 0.4, 2.0]), np.array([0, 1, 1, 2]))
        0.9486832980505138
    """
    from scipy.stats import rankdata  # average ranks: ties share the mean of their positions

    radius, depth = np.asarray(radius, np.float64), np.asarray(depth, np.float64)
    if radius.shape != depth.shape or radius.ndim != 1:
        raise ValueError(f"radius and depth must be 1-D of one length; got {radius.shape} and {depth.shape}")
    a, b = rankdata(radius), rankdata(depth)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def depth_spearman_ceiling(depth: np.ndarray) -> float:
    """The largest :func:`depth_spearman` any radii can reach for these depths: that of radii sorted exactly by
    depth. Below 1 when depths tie (in a balanced 3-ary tree two thirds of the nodes are leaves: about 0.83).

    Example:
        >>> round(depth_spearman_ceiling(np.array([0, 1, 1, 1])), 4)
        0.7746
    """
    depth = np.asarray(depth, np.float64)
    return depth_spearman(depth + np.linspace(0.0, 0.5, depth.size), depth)


def graph_distances(edge_index: np.ndarray | Tensor, num_nodes: int) -> np.ndarray:
    """All-pairs shortest-path lengths (hops) of an undirected graph; ``inf`` between components."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import shortest_path

    ei = np.asarray(edge_index.cpu() if isinstance(edge_index, Tensor) else edge_index)
    a = coo_matrix((np.ones(ei.shape[1]), (ei[0], ei[1])), shape=(num_nodes, num_nodes)).tocsr()
    return shortest_path(a, method="D", directed=False, unweighted=True)


def _adjacency(edge_index: np.ndarray | Tensor, num_nodes: int):
    """The symmetric CSR adjacency without self-loops (sorted neighbour ids per row)."""
    from scipy.sparse import coo_matrix

    ei = np.asarray(edge_index.cpu() if isinstance(edge_index, Tensor) else edge_index)
    keep = ei[0] != ei[1]
    rows, cols = np.concatenate([ei[0, keep], ei[1, keep]]), np.concatenate([ei[1, keep], ei[0, keep]])
    a = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(num_nodes, num_nodes)).tocsr()
    a.sum_duplicates()
    a.sort_indices()
    return a


def _source_blocks(manifold: nn.Module, z: Tensor, adjacency, sources: np.ndarray,
                   graph_dist: np.ndarray | None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(rows, latent distances (b, N), graph distances (b, N))`` for blocks of source nodes: a BFS per source
    (or rows of ``graph_dist``), latent distances by ``manifold.dist`` in chunks of
    :data:`~vae.constants.HIERARCHY_DIST_CHUNK` pairs. Memory: ``O(b·N)`` with ``b·N ≈ HIERARCHY_DIST_CHUNK``."""
    from scipy.sparse.csgraph import shortest_path

    n = z.size(0)
    b = max(1, HIERARCHY_DIST_CHUNK // n)
    width = max(1, HIERARCHY_DIST_CHUNK // b)
    for start in range(0, sources.size, b):
        rows = sources[start:start + b]
        zr = z[torch.as_tensor(rows, device=z.device)].unsqueeze(1)
        d = np.empty((rows.size, n))
        for t in range(0, n, width):
            d[:, t:t + width] = manifold.dist(zr, z[t:t + width].unsqueeze(0)).cpu().numpy()
        g = graph_dist[rows] if graph_dist is not None else shortest_path(
            adjacency, method="D", directed=False, unweighted=True, indices=rows).reshape(rows.size, n)
        yield rows, d, g


@torch.no_grad()
def hierarchy_metrics(manifold: nn.Module, z: Tensor, edge_index: Tensor, depth: np.ndarray | None = None,
                      graph_dist: np.ndarray | None = None, *, sources: int | None = None,
                      seed: int = 0) -> dict[str, float]:
    """``{"map", "distortion"[, "depth_spearman"]}`` of latents ``z`` (points of ``manifold``, ``(N, ·)``) for the
    graph ``edge_index`` (every edge: graph *reconstruction*), distances by ``manifold.dist`` and from the origin
    by ``manifold.dist0``; ``depth_spearman`` only if ``depth`` is given. ``graph_dist`` (from
    :func:`graph_distances`) may be passed to reuse it.

    Memory is linear in nodes + edges (see the module). With ``N ≤ HIERARCHY_EXACT_MAX_NODES`` (or ``sources ≥ N``)
    every node is a source and MAP and distortion are exact, equal to :func:`mean_average_precision` and
    :func:`distortion` on the full matrices. Otherwise ``sources`` nodes (default
    :data:`~vae.constants.HIERARCHY_SOURCES`) drawn without replacement by ``numpy.random.default_rng(seed)`` are
    the sources: MAP is the mean AP of those with a neighbour, distortion the best-scale distortion of their pairs
    ``(s, v)``; the result then also has ``map_se`` and ``distortion_se`` (standard errors over sources) and
    ``hierarchy_sources``.

    Example:
        >>> from manifolds import Lorentz
        >>> M = Lorentz()
        >>> z = M.expmap0_spatial(torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=torch.float64))
        >>> m = hierarchy_metrics(M, z, torch.tensor([[0, 1], [1, 2]]), depth=np.array([0, 1, 2]))
        >>> m["map"], round(m["distortion"], 6), m["depth_spearman"]
        (1.0, 0.0, 1.0)
    """
    n = z.size(0)
    if sources is not None and (int(sources) != sources or sources < 1):
        raise ValueError(f"sources (the number of sampled source nodes) must be a positive integer; got {sources!r}")
    count = sources if sources is not None else (n if n <= HIERARCHY_EXACT_MAX_NODES else HIERARCHY_SOURCES)
    exact = count >= n
    chosen = np.arange(n) if exact else np.sort(np.random.default_rng(seed).choice(n, size=int(count), replace=False))
    zd = z.detach().double()
    adjacency = _adjacency(edge_index, n)
    aps, ratios, per_source = [], [], []
    for rows, d, g in _source_blocks(manifold, zd, adjacency, chosen, graph_dist):
        for i, u in enumerate(rows):
            nbrs = adjacency.indices[adjacency.indptr[u]:adjacency.indptr[u + 1]]
            d[i, u] = np.inf  # a node is not its own neighbour
            if nbrs.size:
                aps.append(_average_precision(d[i], nbrs))
            d[i, u] = 0.0
            # exact: the pairs u < v (each once, in the order of distortion's upper triangle); sampled: all v ≠ s
            dg, de = (g[i, u + 1:], d[i, u + 1:]) if exact else (g[i], d[i])
            keep = np.isfinite(dg) & (dg > 0)
            r = de[keep] / dg[keep]
            ratios.append(r if exact else r.astype(np.float32))
            per_source.append(r.size)
    if not aps:
        raise ValueError("the graph has no edges: mean average precision needs at least one")
    if sum(per_source) == 0:
        raise ValueError("no connected pair of distinct nodes: distortion needs at least one")
    out = {"map": float(np.mean(aps))}
    if exact:  # today's numbers: the dense definition on the pairs u < v in its order
        r = np.concatenate(ratios)
        c = _best_scale(r)
        out["distortion"] = 1.0 if c is None else float(np.mean(np.abs(c * r - 1.0)))
    else:
        c = _best_scale_pooled(ratios)
        sums = np.array([np.abs(c * x.astype(np.float64) - 1.0).sum() if c is not None else float(x.size)
                         for x in ratios])
        counts = np.asarray(per_source, np.float64)
        out["distortion"] = float(sums.sum() / counts.sum())
        m = counts.size
        resid = sums - out["distortion"] * counts
        out["map_se"] = float(np.std(aps, ddof=1) / np.sqrt(len(aps))) if len(aps) > 1 else float("nan")
        out["distortion_se"] = (float(np.sqrt((resid ** 2).sum() / (m * (m - 1))) / counts.mean())
                                if m > 1 and counts.mean() > 0 else float("nan"))
        out["hierarchy_sources"] = float(chosen.size)
    if depth is not None:
        radius = manifold.dist0(zd).cpu().numpy()
        out["depth_spearman"] = depth_spearman(radius, np.asarray(depth))
    return out
