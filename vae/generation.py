r"""Two-stage graph generator (Bose et al. 2020 §4.3; MATH.md §6).

1. :class:`GraphAutoEncoder`: GAT layers give each node a latent point ``z_v`` on the manifold; a
   :class:`DistanceDecoder` scores pairs with ``p(A_uv) = σ((-d(z_u, z_v) - b_uv)/τ_uv)``, trained on the exact
   likelihood of the whole adjacency matrix (every pair, :meth:`GraphAutoEncoder.loss`) so that its
   probabilities are calibrated to the graphs' true edge rate: generation samples every pair independently.
2. :class:`FlowPrior`: a flow with GAT coupling networks, trained by maximum likelihood on the (frozen) encoder
   latents of the training graphs.

**Message-passing structure of the flow.** The coupling networks pass messages on the *complete graph* over
the nodes of each graph, in training and in sampling alike (:func:`complete_edge_index`): at sampling time the
true edges do not exist yet, so training on them (as the reference code does) and sampling on another
structure would evaluate the flow on inputs it never saw.

Generation draws a node count from the training graphs' sizes, samples ``z₀ ~ WrappedNormal(o, I)`` per node,
``z = f(z₀)`` on the complete graph, decodes every pair and samples each edge independently (``sampler=
"bernoulli"``, the paper's), or draws a spanning tree under the decoded odds (``"spanning-tree"``: the
independent-edge model conditioned on being a spanning tree, :func:`random_spanning_tree`; ``"max-spanning-tree"``:
its mode, :func:`max_spanning_tree`), which gives valid trees by construction for data sets of hierarchies.

The encoder's input (``node_input``) is structural (:func:`node_features`, the default), each node's row of the
adjacency matrix zero-padded to the data set's largest graph (:func:`adjacency_rows`, the reference code's
input), or both concatenated (:func:`encoder_input`).

Input graphs are ``networkx`` graphs: directed graphs are made undirected, self-loops dropped (both
documented and tested); a graph with fewer than two nodes or no edge is a ``ValueError``; isolated nodes are kept.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flows.distribution import FlowDistribution
from flows.extras import require
from manifolds import WrappedNormal

from .constants import (DEGREE_FEATURE_CAP, FLOW_LAYERS, GAT_HEADS, GENERATOR_HIDDEN, MAX_TANGENT_NORM,
                        MIN_TEMPERATURE, NODE_INPUTS, RANDOM_WALK_STEPS, SAMPLERS)
from .model import bound_tangent

nx = require("networkx", "vae.generation (the graph generator)")

Tensor = torch.Tensor


# ----------------------------------------------------------------------------------------------------------
# graphs in, tensors out
# ----------------------------------------------------------------------------------------------------------

def clean_graph(g: nx.Graph) -> nx.Graph:
    """Undirected simple copy of ``g`` with nodes relabelled ``0..N-1``; ``ValueError`` if unusable."""
    if g.is_directed():
        g = g.to_undirected()
    h = nx.convert_node_labels_to_integers(nx.Graph(g))
    h.remove_edges_from(list(nx.selfloop_edges(h)))
    if h.number_of_nodes() < 2:
        raise ValueError(f"a training graph needs at least 2 nodes; got {h.number_of_nodes()}")
    if h.number_of_edges() == 0:
        raise ValueError("a training graph has no edges (besides self-loops); the auto-encoder needs positive edges")
    return h


def node_features(edge_index: Tensor, num_nodes: int) -> Tensor:
    r"""Structural node features (the graphs carry none): one-hot degree capped at
    :data:`~vae.constants.DEGREE_FEATURE_CAP` and random-walk return probabilities ``(P^t)_vv`` for
    ``t = 1..RANDOM_WALK_STEPS`` (dense; meant for graphs of up to a few hundred nodes)."""
    A = torch.zeros(num_nodes, num_nodes, device=edge_index.device)
    A[edge_index[0], edge_index[1]] = 1.0
    deg = A.sum(1)
    onehot = F.one_hot(deg.long().clamp(max=DEGREE_FEATURE_CAP), DEGREE_FEATURE_CAP + 1).float()
    P = A / deg.clamp(min=1.0)[:, None]
    rw, Pt = [], torch.eye(num_nodes, device=edge_index.device)
    for _ in range(RANDOM_WALK_STEPS):
        Pt = Pt @ P
        rw.append(Pt.diagonal())
    return torch.cat([onehot, torch.stack(rw, 1)], 1)


NUM_NODE_FEATURES = DEGREE_FEATURE_CAP + 1 + RANDOM_WALK_STEPS


def adjacency_rows(edge_index: Tensor, num_nodes: int, max_nodes: int) -> Tensor:
    r"""Each node's row of the adjacency matrix, zero-padded to ``max_nodes`` columns (the reference
    implementation's encoder input): ``x_v = [A_v1, ..., A_vn, 0, ..., 0] ∈ {0, 1}^max_nodes``.

    Example:
        >>> adjacency_rows(torch.tensor([[0, 1], [1, 0]]), 2, 4)
        tensor([[0., 1., 0., 0.],
                [1., 0., 0., 0.]])
    """
    if num_nodes > max_nodes:
        raise ValueError(f"a graph of {num_nodes} nodes does not fit the adjacency-row input padded to "
                         f"max_nodes={max_nodes}; build the model with max_nodes >= the largest graph's node count")
    x = torch.zeros(num_nodes, max_nodes, device=edge_index.device)
    x[edge_index[0], edge_index[1]] = 1.0
    return x


def input_dim(node_input: str = "structural", max_nodes: int | None = None) -> int:
    """Width of the encoder input of :func:`encoder_input` (``max_nodes`` is needed unless ``"structural"``).

    Example:
        >>> input_dim("structural") == NUM_NODE_FEATURES, input_dim("adjacency", 100), input_dim("both", 100) - 100
        (True, 100, 25)
    """
    if node_input not in NODE_INPUTS:
        raise ValueError(f"node_input must be one of {', '.join(NODE_INPUTS)}; got {node_input!r}")
    if node_input != "structural" and (max_nodes is None or max_nodes < 1):
        raise ValueError(f"node_input={node_input!r} needs max_nodes, the largest graph's node count (the width "
                         f"the adjacency rows are padded to); got {max_nodes!r}")
    return {"structural": NUM_NODE_FEATURES, "adjacency": max_nodes,
            "both": NUM_NODE_FEATURES + (max_nodes or 0)}[node_input]


def encoder_input(edge_index: Tensor, num_nodes: int, node_input: str = "structural",
                  max_nodes: int | None = None) -> Tensor:
    """The encoder's input for one graph: :func:`node_features` (``"structural"``), :func:`adjacency_rows`
    (``"adjacency"``) or both concatenated (``"both"``); shape ``(num_nodes, input_dim(node_input, max_nodes))``.

    Example:
        >>> encoder_input(torch.tensor([[0, 1], [1, 0]]), 2, "both", 5).shape
        torch.Size([2, 30])
    """
    input_dim(node_input, max_nodes)  # validates
    parts = []
    if node_input in ("structural", "both"):
        parts.append(node_features(edge_index, num_nodes))
    if node_input in ("adjacency", "both"):
        parts.append(adjacency_rows(edge_index, num_nodes, max_nodes))
    return torch.cat(parts, 1)


def complete_edge_index(sizes: Sequence[int], device: torch.device | str | None = None) -> Tensor:
    """Block-diagonal complete graphs (no self-loops) over consecutive node blocks of the given sizes.

    Example:
        >>> complete_edge_index([2, 1])
        tensor([[0, 1],
                [1, 0]])
    """
    blocks, offset = [], 0
    for n in sizes:
        idx = torch.arange(n, device=device)
        u, v = torch.meshgrid(idx, idx, indexing="ij")
        keep = u != v
        blocks.append(torch.stack([u[keep], v[keep]]) + offset)
        offset += n
    return torch.cat(blocks, 1) if blocks else torch.zeros(2, 0, dtype=torch.long, device=device)


def all_pairs(edge_index: Tensor, sizes: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Every pair ``u < v`` within each block of the given sizes, and whether it is an edge of ``edge_index``.

    Example:
        >>> pairs, is_edge = all_pairs(torch.tensor([[0, 1], [1, 0]]), [3])
        >>> pairs.tolist(), is_edge.tolist()
        ([[0, 0, 1], [1, 2, 2]], [1.0, 0.0, 0.0])
    """
    device = edge_index.device
    blocks, offset = [], 0
    for n in sizes:
        blocks.append(torch.triu_indices(n, n, 1, device=device) + offset)
        offset += n
    pairs = torch.cat(blocks, 1) if blocks else torch.zeros(2, 0, dtype=torch.long, device=device)
    # compare pairs by their flat position u·N + v in the N×N adjacency matrix (no dense matrix is built)
    is_edge = torch.isin(pairs[0] * offset + pairs[1], edge_index[0] * offset + edge_index[1])
    return pairs, is_edge.float()


def _batch(graphs: Sequence[nx.Graph], device, node_input: str = "structural",
           max_nodes: int | None = None) -> tuple[Tensor, Tensor, Tensor, list[int]]:
    """``(x, edge_index, batch, sizes)`` of the block-diagonal union of ``graphs`` (both edge directions); ``x``
    is :func:`encoder_input` per graph."""
    xs, eis, batch, sizes, offset = [], [], [], [], 0
    for i, g in enumerate(graphs):
        n = g.number_of_nodes()
        e = torch.tensor(list(g.edges()), dtype=torch.long, device=device).T
        e = torch.cat([e, e.flip(0)], 1)
        xs.append(encoder_input(e, n, node_input, max_nodes))
        eis.append(e + offset)
        batch.append(torch.full((n,), i, dtype=torch.long, device=device))
        sizes.append(n)
        offset += n
    return torch.cat(xs), torch.cat(eis, 1), torch.cat(batch), sizes


# ----------------------------------------------------------------------------------------------------------
# stage 1: auto-encoder with the distance decoder
# ----------------------------------------------------------------------------------------------------------

class DistanceDecoder(nn.Module):
    r"""``logit p(A_uv) = (-d(z_u, z_v) - b_uv)/τ_uv`` (MATH.md §6), with ``b_uv`` and
    ``τ_uv = softplus(·) + MIN_TEMPERATURE > 0`` from a small MLP on the symmetric pair features
    ``[w_u + w_v, w_u ⊙ w_v]`` of the tangent vectors ``w = log_o(z)`` (so ``p(A_uv) = p(A_vu)``)."""

    def __init__(self, latent_dim: int, hidden: int = GENERATOR_HIDDEN) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, z: Tensor, pairs: Tensor, manifold: nn.Module) -> Tensor:
        w = manifold.logmap0_spatial(z)
        wu, wv = w[pairs[0]], w[pairs[1]]
        b, t = self.net(torch.cat([wu + wv, wu * wv], -1)).unbind(-1)
        tau = F.softplus(t) + MIN_TEMPERATURE
        return (-manifold.dist(z[pairs[0]], z[pairs[1]]) - b) / tau


class GraphAutoEncoder(nn.Module):
    r"""GAT encoder ``x ↦ z = exp_o(bound(GAT₂(elu(GAT₁(x)))))`` and :class:`DistanceDecoder`.

    Example:
        >>> from manifolds import Lorentz
        >>> ae = GraphAutoEncoder(Lorentz(), latent_dim=2)
        >>> loss = ae.loss([nx.path_graph(5), nx.star_graph(4)])
        >>> loss.dim()
        0
    """

    def __init__(self, manifold: nn.Module, latent_dim: int = 2, hidden: int = GENERATOR_HIDDEN,
                 heads: int = GAT_HEADS, max_tangent_norm: float = MAX_TANGENT_NORM, *,
                 node_input: str = "structural", max_nodes: int | None = None) -> None:
        """``node_input``/``max_nodes``: the encoder input (:func:`encoder_input`; ``max_nodes`` = the data set's
        largest node count, needed for the adjacency rows)."""
        super().__init__()
        from torch_geometric.nn import GATConv

        self.manifold = manifold
        self.latent_dim = latent_dim
        self.max_tangent_norm = max_tangent_norm
        self.node_input, self.max_nodes = node_input, max_nodes
        self.conv1 = GATConv(input_dim(node_input, max_nodes), hidden, heads=heads, concat=False)
        self.conv2 = GATConv(hidden, hidden, heads=heads, concat=False)
        self.out = nn.Linear(hidden, latent_dim)
        self.decoder = DistanceDecoder(latent_dim, hidden)

    def _device(self) -> torch.device:
        return self.out.weight.device

    def encode(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Node latents (points of the manifold) from node inputs ``x`` and the graph: two GAT layers, a bounded
        tangent read-out, ``exp_o``."""
        h = F.elu(self.conv1(x, edge_index))
        h = F.elu(self.conv2(h, edge_index))
        return self.manifold.expmap0_spatial(bound_tangent(self.out(h), self.max_tangent_norm))

    def embed_graphs(self, graphs: Sequence[nx.Graph]) -> tuple[Tensor, list[int]]:
        """Latents of all nodes of ``graphs`` (concatenated) and the graph sizes."""
        graphs = [clean_graph(g) for g in graphs]
        x, ei, _, sizes = _batch(graphs, self._device(), self.node_input, self.max_nodes)
        return self.encode(x.to(self.out.weight.dtype), ei), sizes

    def loss(self, graphs: Sequence[nx.Graph]) -> Tensor:
        r"""Exact negative log-likelihood of the adjacency matrices, averaged over the graphs of the batch:

        ``L = (1/G) Σ_g Σ_{u<v ∈ g} BCE(A_uv, p(A_uv)) = -(1/G) Σ_g log p(A_g | z_g)``, with
        ``BCE(a, p) = -a log p - (1-a) log(1-p)`` and every one of the ``n_g(n_g-1)/2`` pairs of graph ``g``.

        Every non-edge is scored (dense: a graph of 100 nodes has 4950 pairs), so at the optimum the decoder's
        probabilities match the true edge rate (``2/n`` for a tree) instead of the 50 % rate of the usual
        "as many sampled non-edges as edges" objective, which makes independently sampled graphs far too dense.
        Normalised per *graph*, not per pair: then ``L`` is the per-graph NLL (nats per graph, like the flow
        prior's loss), a mini-batch gives an unbiased estimate of the data set's mean NLL and its gradient, and
        each pair of each graph weighs the same, as in the likelihood itself (per-pair normalisation would
        up-weight the pairs of small graphs).
        """
        return self.pairs_loss(*self.batch(graphs))

    def batch(self, graphs: Sequence[nx.Graph]) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        """The tensors of :meth:`loss` for ``graphs``, built on the host from networkx: ``(x, edge_index, pairs,
        is_edge, number of graphs)`` of their block-diagonal union."""
        graphs = [clean_graph(g) for g in graphs]
        x, ei, _, sizes = _batch(graphs, self._device(), self.node_input, self.max_nodes)
        pairs, target = all_pairs(ei, sizes)
        return x.to(self.out.weight.dtype), ei, pairs, target, len(graphs)

    def pairs_loss(self, x: Tensor, edge_index: Tensor, pairs: Tensor, is_edge: Tensor, num_graphs: int) -> Tensor:
        """:meth:`loss` from the tensors of :meth:`batch` (the part a compiler can take)."""
        z = self.encode(x, edge_index)
        logits = self.decoder(z, pairs, self.manifold)
        return F.binary_cross_entropy_with_logits(logits, is_edge.to(logits.dtype), reduction="sum") / num_graphs


# ----------------------------------------------------------------------------------------------------------
# stage 2: flow prior over node latents
# ----------------------------------------------------------------------------------------------------------

class FlowPrior(nn.Module):
    r"""``p(z) = q₀(f⁻¹(z)) · |det ∂f⁻¹/∂z|`` over all node latents of a graph, ``q₀ = WrappedNormal(o, I)`` per
    node, ``f = flows.build(flow, manifold, n, conditioner="gat")`` conditioned on the complete graph.

    Example:
        >>> from manifolds import Lorentz
        >>> prior = FlowPrior(Lorentz(), 2, "whc", hidden=8)
        >>> z = prior.sample([3, 4])
        >>> z.shape, prior.log_prob(z, [3, 4]).shape
        (torch.Size([7, 3]), torch.Size([7]))
    """

    def __init__(self, manifold: nn.Module, latent_dim: int = 2, flow: str = "whc", layers: int = FLOW_LAYERS,
                 hidden: int = GENERATOR_HIDDEN, conditioner: str = "gat") -> None:
        super().__init__()
        import flows

        self.manifold = manifold
        self.latent_dim = latent_dim
        self.transform = flows.build(flow, manifold, latent_dim, layers=layers, hidden=hidden, conditioner=conditioner,
                                     share_manifold=True)
        self._ref = nn.Parameter(torch.zeros(()), requires_grad=False)  # carries dtype and device

    def base(self) -> WrappedNormal:
        """``q₀ = WrappedNormal(o, I)`` per node (the model's dtype and device)."""
        return WrappedNormal.at_origin(self._ref.new_ones(self.latent_dim), self.manifold)

    def log_prob(self, z: Tensor, sizes: Sequence[int]) -> Tensor:
        """Per-node ``log q₀(f⁻¹(z)) + log|det ∂f⁻¹/∂z|`` (sum them per graph for the graph's log-density)."""
        return self.log_prob_on(z, complete_edge_index(sizes, z.device))

    def log_prob_on(self, z: Tensor, context: Tensor) -> Tensor:
        """:meth:`log_prob` given the complete graphs' ``edge_index`` (``complete_edge_index(sizes)``), in tangent
        coordinates at the origin where the flow acts in them (:class:`flows.FlowDistribution`)."""
        return FlowDistribution(self.base(), self.transform, context).log_prob(z)

    def sample(self, sizes: Sequence[int]) -> Tensor:
        """Latents for graphs of the given sizes (concatenated), ``z = f(z₀)`` on the complete graphs."""
        n = sum(sizes)
        return FlowDistribution(self.base(), self.transform, complete_edge_index(sizes, self._ref.device)).rsample((n,))


# ----------------------------------------------------------------------------------------------------------
# spanning-tree samplers
# ----------------------------------------------------------------------------------------------------------

def _check_logits(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1] or logits.shape[0] < 1:
        raise ValueError(f"edge logits must be a square n×n matrix with n >= 1; got shape {logits.shape}")
    if not np.allclose(logits, logits.T, equal_nan=True):
        raise ValueError("edge logits must be symmetric (logits[u, v] == logits[v, u]); symmetrise them first")
    off = ~np.eye(len(logits), dtype=bool)
    if not np.isfinite(logits[off]).all():
        raise ValueError("edge logits must be finite off the diagonal (a pair with logit -inf could not be an edge "
                         "of a spanning tree of the complete graph)")
    return logits


def max_spanning_tree(logits: np.ndarray) -> list[tuple[int, int]]:
    r"""Edges of the maximum-weight spanning tree of the complete graph with weights ``logits[u, v] =
    log(p_uv / (1-p_uv))`` (Prim's algorithm, O(n²); the diagonal is ignored): the most probable spanning tree
    under independent edges, ``argmax_T Π_{e∈T} p_e Π_{e∉T} (1-p_e)``.

    Example:
        >>> L = np.array([[0., 3., -1.], [3., 0., 2.], [-1., 2., 0.]])
        >>> sorted(max_spanning_tree(L))
        [(0, 1), (1, 2)]
    """
    logits = _check_logits(logits)
    n = len(logits)
    in_tree = np.zeros(n, dtype=bool)
    in_tree[0] = True
    best, parent = logits[0].copy(), np.zeros(n, dtype=int)
    edges = []
    for _ in range(n - 1):
        v = int(np.argmax(np.where(in_tree, -np.inf, best)))
        edges.append((int(min(parent[v], v)), int(max(parent[v], v))))
        in_tree[v] = True
        closer = ~in_tree & (logits[v] > best)
        best[closer], parent[closer] = logits[v][closer], v
    return edges


def random_spanning_tree(logits: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int]]:
    r"""A random spanning tree of the complete graph drawn with ``P(T) ∝ Π_{e∈T} exp(logits_e)``.

    With ``logits_e = log(p_e/(1-p_e))`` this is exactly the independent-edge model conditioned on the graph
    being a spanning tree: ``Π_{e∈T} p_e Π_{e∉T} (1-p_e) = Π_{all e}(1-p_e) · Π_{e∈T} p_e/(1-p_e)``.

    Wilson's algorithm (the tree grows from node 0 by loop-erased random walks with steps
    ``P(u → v) ∝ exp(logits[u, v])``), with each loop-erased walk drawn as the equivalent *Laplacian random
    walk* (Lawler): from the end ``x`` of the path ``γ`` so far, the next node is ``v`` with probability
    ``∝ P(x → v) h(v)``, where ``h(v)`` = the probability that the walk from ``v`` reaches the tree before ``γ``
    (harmonic off ``γ`` ∪ tree: ``(I - P_AA) h_A = P_{A,tree} 1`` on the free nodes ``A``). One linear solve per
    tree edge, O(n⁴) in all, instead of a random walk whose length grows like ``exp(logit gap)`` when two nodes
    are much closer to each other than to the rest (a walk that bounces between them). Where the decoder is so
    confident that the solve loses its precision (escape probabilities below ~1e-16, or transition
    probabilities that underflow to 0 for logit gaps beyond ~745), ``h`` is clipped to ``[0, 1]`` and, where no
    step is left, the step falls back to ``P(x → v)`` off the path: approximate only in that degenerate case.

    Example:
        >>> L = np.full((4, 4), -50.0); L[0, 1] = L[1, 0] = L[1, 2] = L[2, 1] = L[2, 3] = L[3, 2] = 0.0
        >>> sorted(random_spanning_tree(L, np.random.default_rng(0)))  # the path carries all the weight
        [(0, 1), (1, 2), (2, 3)]
    """
    logits = _check_logits(logits)
    n = len(logits)
    if n == 1:
        return []
    w = np.where(np.eye(n, dtype=bool), -np.inf, logits)
    P = np.exp(w - w.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)  # the random walk's transition matrix (each row's largest entry was 1)
    in_tree = np.zeros(n, dtype=bool)
    in_tree[0] = True
    edges: list[tuple[int, int]] = []
    for start in range(1, n):
        if in_tree[start]:
            continue
        on_path = np.zeros(n, dtype=bool)
        on_path[start] = True
        x = start
        while True:
            free = ~in_tree & ~on_path
            h = in_tree.astype(float)
            if free.any():
                A = np.flatnonzero(free)
                M = np.eye(len(A)) - P[np.ix_(A, A)]
                b = P[np.ix_(A, np.flatnonzero(in_tree))].sum(1)
                try:
                    h[A] = np.linalg.solve(M, b)
                except np.linalg.LinAlgError:
                    h[A] = np.linalg.lstsq(M, b, rcond=None)[0]
            weights = P[x] * np.clip(np.nan_to_num(h), 0.0, 1.0)
            if not (np.isfinite(weights).all() and weights.sum() > 0):  # lost to underflow: a plain step off the
                lw = np.where(on_path, -np.inf, logits[x])  # path, from the logits (no underflow: the best is 1)
                weights = np.exp(lw - lw.max())
            v = int(rng.choice(n, p=weights / weights.sum()))
            edges.append((min(x, v), max(x, v)))
            if in_tree[v]:
                break
            on_path[v] = True
            x = v
        in_tree |= on_path
    return edges


# ----------------------------------------------------------------------------------------------------------
# the generator
# ----------------------------------------------------------------------------------------------------------

class GraphGenerator(nn.Module):
    r"""Stage 1 + stage 2 and sampling; see the module docstring for the message-passing structure.

    Example:
        >>> from manifolds import Lorentz
        >>> gen = GraphGenerator(Lorentz(), latent_dim=2, flow="whc", hidden=8)
        >>> graphs = gen.generate(3, sizes=[5, 8, 6])  # untrained: train the auto-encoder, then the prior, first
        >>> len(graphs), all(isinstance(g, nx.Graph) for g in graphs)
        (3, True)
    """

    def __init__(self, manifold: nn.Module, latent_dim: int = 2, flow: str = "whc", *, hidden: int = GENERATOR_HIDDEN,
                 flow_layers: int = FLOW_LAYERS, flow_hidden: int | None = None, conditioner: str = "gat",
                 node_input: str = "structural", max_nodes: int | None = None) -> None:
        """``conditioner``: the prior flow's networks, ``"gat"`` (the paper: conditioned on the complete graph of
        the nodes) or ``"mlp"`` (node by node; e.g. ``flow="rfm"``, whose field is an MLP). ``node_input``,
        ``max_nodes``: the encoder's input (:class:`GraphAutoEncoder`)."""
        super().__init__()
        self.autoencoder = GraphAutoEncoder(manifold, latent_dim, hidden, node_input=node_input, max_nodes=max_nodes)
        self.prior = FlowPrior(manifold, latent_dim, flow, flow_layers, flow_hidden or hidden, conditioner)
        self.sizes: list[int] = []

    @torch.no_grad()
    def generate(self, num: int, *, sizes: Sequence[int] | None = None, seed: int | None = None,
                 sampler: str = "bernoulli") -> list[nx.Graph]:
        """``num`` graphs; node counts drawn from the training sizes unless ``sizes`` is given. ``sampler``: each
        pair an edge independently with its decoded probability (``"bernoulli"``, the paper's), or a spanning tree
        under the decoded odds (``"spanning-tree"``: :func:`random_spanning_tree`, ``"max-spanning-tree"``:
        :func:`max_spanning_tree`; trees on all nodes by construction). Randomness comes from torch's generator."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
        if sizes is None:
            if not self.sizes:
                raise ValueError("no training sizes known: set gen.sizes to the training graphs' node counts after "
                                 "fitting, or pass sizes")
            rng = random.Random(seed)
            sizes = [rng.choice(self.sizes) for _ in range(num)]
        if len(sizes) != num or min(sizes) < 1:
            raise ValueError(f"need {num} positive sizes; got {list(sizes)}")
        z = self.prior.sample(list(sizes))
        out, offset = [], 0
        for n in sizes:
            zi = z[offset:offset + n]
            offset += n
            g = nx.empty_graph(n)
            if n > 1:
                u, v = torch.triu_indices(n, n, 1, device=z.device)
                logits = self.autoencoder.decoder(zi, torch.stack([u, v]), self.autoencoder.manifold)
                if sampler == "bernoulli":
                    keep = torch.bernoulli(torch.sigmoid(logits)).bool()
                    g.add_edges_from(zip(u[keep].tolist(), v[keep].tolist()))
                else:
                    L = np.zeros((n, n))
                    L[u.cpu().numpy(), v.cpu().numpy()] = logits.double().cpu().numpy()
                    L = L + L.T
                    if sampler == "max-spanning-tree":
                        g.add_edges_from(max_spanning_tree(L))
                    else:
                        tree_rng = np.random.default_rng(int(torch.randint(2**62, ())))
                        g.add_edges_from(random_spanning_tree(L, tree_rng))
            out.append(g)
        return out
