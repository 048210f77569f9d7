"""Graph VAE for link prediction (Bose et al. 2020, §4.2; Kipf & Welling 2016) on any latent manifold.

Input handling (validated by :func:`prepare_edge_index`, used by every entry point):

* ``edge_index`` must be an integer tensor of shape ``(2, E)`` with node ids in ``[0, num_nodes)``; a graph with
  no edges (after removing self-loops) is a ``ValueError``, since link prediction needs positive edges.
* Self-loops are removed (a node is not its own neighbour for link prediction; GCN layers add their own).
* Directed edge lists are symmetrised (``u→v`` means the undirected edge ``{u, v}``), duplicates merged.
* Isolated nodes are kept: they get a latent from their own features (GCN self-loop) and take part in the
  sampled negative pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution

from flows.distribution import FlowDistribution, Latent
from flows.extras import require
from manifolds import WrappedNormal
from manifolds.validation import validation_enabled

from .constants import (FLOW_HIDDEN, FLOW_LAYERS, GAT_HEADS, GRAPH_HIDDEN, MAX_TANGENT_NORM, MIN_SCALE,
                        MIN_TEMPERATURE, TEST_FRACTION, VAL_FRACTION)
from .model import check_flow_manifold
from .posteriors import closed_form_kl, posterior_head, prior_log_prob, standard_prior

Tensor = torch.Tensor
#: a ``torch_geometric.data.Data`` (node features ``x``, possibly ``None``, and ``edge_index``)
GraphData = object


# ----------------------------------------------------------------------------------------------------------
# edges: validation, split, negatives
# ----------------------------------------------------------------------------------------------------------

def prepare_edge_index(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Validate and canonicalise an edge list: undirected (both directions), coalesced, no self-loops.

    Raises:
        ValueError: wrong shape or dtype, ids outside ``[0, num_nodes)``, or no edge left.

    Example:
        >>> prepare_edge_index(torch.tensor([[0, 1, 2], [1, 1, 0]]), 3)  # 1→1 dropped, 0→1 and 2→0 mirrored
        tensor([[0, 0, 1, 2],
                [1, 2, 0, 0]])
    """
    pyg_utils = require("torch_geometric.utils", "prepare_edge_index / split_edges")
    coalesce, remove_self_loops, to_undirected = pyg_utils.coalesce, pyg_utils.remove_self_loops, pyg_utils.to_undirected

    if not torch.is_tensor(edge_index) or edge_index.dim() != 2 or edge_index.size(0) != 2:
        shape = tuple(edge_index.shape) if torch.is_tensor(edge_index) else type(edge_index).__name__
        raise ValueError(f"edge_index must be a tensor of shape (2, E); got {shape}")
    if edge_index.is_floating_point() or edge_index.dtype == torch.bool:
        raise ValueError(f"edge_index must hold integer node ids; got dtype {edge_index.dtype}")
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1; got {num_nodes}")
    edge_index = edge_index.long()
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(
            f"edge_index has node ids in [{int(edge_index.min())}, {int(edge_index.max())}], outside "
            f"[0, num_nodes={num_nodes})"
        )
    edge_index, _ = remove_self_loops(edge_index)
    if edge_index.size(1) == 0:
        raise ValueError("the graph has no edges (besides self-loops): link prediction needs positive edges")
    return coalesce(to_undirected(edge_index, num_nodes=num_nodes), num_nodes=num_nodes)


def check_pairs(pairs: Tensor, num_nodes: int, what: str = "pairs") -> None:
    """A ``ValueError`` unless ``pairs`` is a ``(2, P)`` integer tensor of node ids in ``[0, num_nodes)`` (a negative
    id would index from the end). Reads the ids on the host: for evaluation and validated calls, not a compiled step.

    Example:
        >>> check_pairs(torch.tensor([[0, 1], [2, -1]]), 3, "neg_pairs")
        Traceback (most recent call last):
        ...
        ValueError: neg_pairs has node ids in [-1, 2], outside [0, num_nodes=3): pass ids of this graph's nodes
    """
    if not torch.is_tensor(pairs) or pairs.dim() != 2 or pairs.size(0) != 2 or pairs.is_floating_point():
        shape = tuple(pairs.shape) if torch.is_tensor(pairs) else type(pairs).__name__
        raise ValueError(f"{what} must be an integer tensor of shape (2, P); got {shape}")
    if pairs.numel() and (int(pairs.min()) < 0 or int(pairs.max()) >= num_nodes):
        raise ValueError(f"{what} has node ids in [{int(pairs.min())}, {int(pairs.max())}], outside "
                         f"[0, num_nodes={num_nodes}): pass ids of this graph's nodes")


def _upper(edge_index: Tensor) -> Tensor:
    """Each undirected edge once, as ``u < v``."""
    return edge_index[:, edge_index[0] < edge_index[1]]


@dataclass
class EdgeSplit:
    """An 85/5/10 link-prediction split. Pair tensors are ``(2, P)`` with each undirected pair once (``u<v``);
    ``train_edge_index`` holds the training edges in both directions, for message passing."""

    num_nodes: int
    train_edge_index: Tensor
    train_pos: Tensor
    val_pos: Tensor
    val_neg: Tensor
    test_pos: Tensor
    test_neg: Tensor

    def to(self, device: torch.device | str) -> "EdgeSplit":
        """The split with every pair tensor moved to ``device``."""
        return EdgeSplit(self.num_nodes, *(getattr(self, f).to(device) for f in
                                           ("train_edge_index", "train_pos", "val_pos", "val_neg", "test_pos",
                                            "test_neg")))


def split_edges(edge_index: Tensor, num_nodes: int, *, val_fraction: float = VAL_FRACTION,
                test_fraction: float = TEST_FRACTION, seed: int = 0) -> EdgeSplit:
    """Split the undirected edges into train/val/test (default 85/5/10) and sample as many non-edges as
    positives for validation and test (non-edges of the **full** graph, distinct between the two).

    Input is canonicalised by :func:`prepare_edge_index` (self-loops dropped, directed lists symmetrised).
    Raises ``ValueError`` when a fraction is out of range or a split would be empty.

    Example:
        >>> import networkx as nx
        >>> from torch_geometric.utils import from_networkx
        >>> g = nx.random_labeled_tree(60, seed=0)
        >>> s = split_edges(from_networkx(g).edge_index, 60)
        >>> s.train_pos.size(1), s.val_pos.size(1), s.test_pos.size(1), s.test_neg.size(1)
        (52, 2, 5, 5)
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 < val_fraction, test_fraction and their sum < 1; got {val_fraction}, {test_fraction}")
    edge_index = prepare_edge_index(edge_index, num_nodes)
    pairs = _upper(edge_index)
    n_edges = pairs.size(1)
    n_val, n_test = int(math.floor(val_fraction * n_edges)), int(math.floor(test_fraction * n_edges))
    if n_val < 1 or n_test < 1 or n_edges - n_val - n_test < 1:
        raise ValueError(
            f"the graph has {n_edges} undirected edges: too few for a {val_fraction:.0%}/{test_fraction:.0%} "
            "validation/test split with at least one edge in each part"
        )
    gen = torch.Generator(device="cpu").manual_seed(seed)
    perm = torch.randperm(n_edges, device="cpu", generator=gen).to(pairs.device)
    val_pos, test_pos = pairs[:, perm[:n_val]], pairs[:, perm[n_val:n_val + n_test]]
    train_pos = pairs[:, perm[n_val + n_test:]]
    neg = NonEdgeSampler(edge_index.cpu(), num_nodes).distinct_pairs(n_val + n_test, generator=gen).to(pairs.device)
    from torch_geometric.utils import to_undirected

    return EdgeSplit(num_nodes, to_undirected(train_pos, num_nodes=num_nodes), train_pos, val_pos,
                     neg[:, :n_val], test_pos, neg[:, n_val:])


class NonEdgeSampler:
    r"""Uniformly random non-edges of a graph, drawn on its device with a fixed number of operations.

    Draws ordered pairs ``(u, v)``, ``u ≠ v``, with ``(u, v)`` not in ``edge_index``, independently and uniformly
    (with replacement): the distribution of rejection sampling ("draw ``(u, v)`` uniformly, redraw self-pairs and
    edges"), computed without rejection. With ``e₀ < e₁ < …`` the sorted excluded keys ``u·N + v`` (the edges and
    the self-pairs) and ``gᵢ = eᵢ - i`` (how many allowed keys lie below ``eᵢ``), the allowed key of rank ``r`` is
    ``r + #{i : gᵢ ≤ r}``; so a draw is ``r ~ U{0, …, N² - |excluded| - 1}`` and one binary search. No host sync,
    no data-dependent shape: it runs inside a compiled or CUDA-graph-captured training step.

    The sorted keys are built once per graph (``torch.unique``; ``O(E log E)``). Raises ``ValueError`` for a
    complete graph (there is no non-edge to draw).

    It is the library's one negative sampler: training steps call it (:meth:`__call__`, with replacement, on the
    device), and :func:`split_edges` takes its validation and test non-edges from it without replacement
    (:meth:`distinct_pairs`, once per dataset).

    Example:
        >>> ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])  # the path 0 - 1 - 2
        >>> pairs = NonEdgeSampler(ei, 3)(1000)
        >>> sorted(set(map(tuple, pairs.T.tolist())))  # only (0, 2) and (2, 0) are not edges
        [(0, 2), (2, 0)]
    """

    def __init__(self, edge_index: Tensor, num_nodes: int) -> None:
        n = int(num_nodes)
        if n < 2:
            raise ValueError(f"non-edges need at least 2 nodes; got num_nodes={n}")
        device = edge_index.device
        self.num_nodes = n
        diagonal = torch.arange(n, device=device) * (n + 1)
        excluded = torch.unique(torch.cat([edge_index[0].long() * n + edge_index[1].long(), diagonal]))
        self.allowed = n * n - excluded.numel()
        if self.allowed <= 0:
            raise ValueError(f"the graph ({n} nodes) is complete: there is no non-edge to sample")
        self.gaps = excluded - torch.arange(excluded.numel(), device=device)

    def __call__(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """``(2, count)`` node pairs, each an independent uniform draw among the non-edges."""
        r = torch.randint(self.allowed, (count,), device=self.gaps.device, generator=generator)
        keys = r + torch.searchsorted(self.gaps, r, right=True)
        return torch.stack([keys // self.num_nodes, keys % self.num_nodes])

    def distinct_pairs(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """``(2, count)`` distinct unordered non-edges ``u < v``, a uniformly random subset (sampling without
        replacement) of an undirected graph's non-edges (``edge_index`` holding both directions, as
        :func:`prepare_edge_index` returns it).

        Each undirected non-edge is two ordered draws of :meth:`__call__`, so ``(min, max)`` of a draw is uniform over
        the unordered non-edges; the first ``count`` distinct ones in draw order are a uniform random subset. Reads
        on the host (a top-up loop of variable length): for building a split once, not for a training step.
        Raises ``ValueError`` when the graph has fewer than ``count`` non-edges.
        """
        possible = self.allowed // 2
        if count > possible:
            raise ValueError(f"asked for {count} distinct non-edges but the graph has only {possible}")
        n, chosen, taken = self.num_nodes, [], set()
        while len(chosen) < count:
            u, v = self(2 * (count - len(chosen)) + 16, generator=generator)
            for key in (torch.minimum(u, v) * n + torch.maximum(u, v)).tolist():
                if key not in taken:
                    taken.add(key)
                    chosen.append(key)
                    if len(chosen) == count:
                        break
        keys = torch.tensor(chosen, dtype=torch.long, device=self.gaps.device)
        return torch.stack([keys // n, keys % n])


@dataclass
class MessageGraph:
    """A graph prepared once for :class:`GraphVAE` (:meth:`GraphVAE.prepare_graph`): the message-passing edges,
    the encoder's normalised adjacency, and a sampler of its non-edges. Passing it instead of ``edge_index``
    makes a training step free of per-call graph work (no normalisation, no checks, no host reads)."""

    edge_index: Tensor
    num_nodes: int
    conv_index: Tensor
    conv_weight: Tensor | None
    negatives: NonEdgeSampler


# ----------------------------------------------------------------------------------------------------------
# decoders
# ----------------------------------------------------------------------------------------------------------

class EdgeDecoder(nn.Module):
    r"""The edge-decoder contract of :class:`GraphVAE`: ``forward(z, pairs, manifold) -> logits`` for latent points
    ``z`` (``(N, n+1)``) and node pairs ``pairs`` (``(2, P)``).

    A decoder that reads the latents' tangent coordinates ``w = log_o(z)`` at the origin says so with
    :attr:`reads_tangent` and implements :meth:`forward_tangent`; the model then hands it the tangent coordinates
    it already holds and never forms the points (no ``exp_o`` / ``log_o`` pair). A subclass inherits the
    declaration: one that replaces ``forward`` on points sets ``reads_tangent = False`` (or overrides
    :meth:`forward_tangent` as well).
    """

    #: whether :meth:`forward_tangent` is the decoder's map (the model then passes tangent coordinates)
    reads_tangent: bool = False

    def forward(self, z: Tensor, pairs: Tensor, manifold: nn.Module) -> Tensor:  # pragma: no cover - abstract
        """Edge logits of ``pairs`` for latent points ``z``."""
        raise NotImplementedError

    def forward_tangent(self, w: Tensor, pairs: Tensor, manifold: nn.Module) -> Tensor:
        """Edge logits of ``pairs`` for latents given by their tangent coordinates ``w`` at the origin (default:
        :meth:`forward` on the points ``exp_o(w)``)."""
        return self(manifold.expmap0_spatial(w), pairs, manifold)


class InnerProductDecoder(EdgeDecoder):
    r"""``logit p(A_uv = 1) = ⟨w_u, w_v⟩`` with tangent vectors ``w = log_o(z)`` (the paper's reconstruction
    decoder; MATH.md §5). It reads tangent coordinates (:attr:`EdgeDecoder.reads_tangent`).

    Example:
        >>> from manifolds import Lorentz
        >>> M = Lorentz()
        >>> z = M.expmap0_spatial(torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
        >>> InnerProductDecoder()(z, torch.tensor([[0], [1]]), M)
        tensor([2.])
    """

    reads_tangent = True

    def forward(self, z: Tensor, pairs: Tensor, manifold: nn.Module, tangent: Tensor | None = None) -> Tensor:
        """Logits for points ``z``; ``tangent = log_o(z)`` if the caller has it, saving the ``log_o``."""
        return self.forward_tangent(manifold.logmap0_spatial(z) if tangent is None else tangent, pairs, manifold)

    def forward_tangent(self, w: Tensor, pairs: Tensor, manifold: nn.Module | None = None) -> Tensor:
        """``⟨w_u, w_v⟩`` for the tangent coordinates ``w`` of the latents."""
        return (w[pairs[0]] * w[pairs[1]]).sum(-1)


class FermiDiracDecoder(EdgeDecoder):
    r"""Fermi–Dirac decoder ``p(A_uv = 1) = 1 / (exp((d(z_u, z_v) - r)/τ) + 1)``; returns the logit
    ``(r - d)/τ``. ``r`` is learnable; ``τ = softplus(·) + MIN_TEMPERATURE > 0``.

    Example:
        >>> from manifolds import Euclidean
        >>> dec = FermiDiracDecoder(radius=2.0, temperature=1.0)
        >>> z = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
        >>> round(float(dec(z, torch.tensor([[0], [1]]), Euclidean())), 4)  # (2 - 5) / 1
        -3.0
    """

    def __init__(self, radius: float = 2.0, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= MIN_TEMPERATURE:
            raise ValueError(f"temperature must exceed MIN_TEMPERATURE={MIN_TEMPERATURE}; got {temperature}")
        self.radius = nn.Parameter(torch.tensor(float(radius)))
        t = temperature - MIN_TEMPERATURE
        self.raw_temperature = nn.Parameter(torch.tensor(t + math.log(-math.expm1(-t))))  # softplus⁻¹

    @property
    def temperature(self) -> Tensor:
        """``τ = softplus(raw) + MIN_TEMPERATURE > 0``."""
        return F.softplus(self.raw_temperature) + MIN_TEMPERATURE

    def forward(self, z: Tensor, pairs: Tensor, manifold: nn.Module) -> Tensor:
        """``(r - d(z_u, z_v))/τ`` for the node pairs ``pairs``."""
        d = manifold.dist(z[pairs[0]], z[pairs[1]])
        return (self.radius.to(d.dtype) - d) / self.temperature.to(d.dtype)


def make_edge_decoder(name: str) -> nn.Module:
    """``"inner"`` → :class:`InnerProductDecoder`; ``"fermi-dirac"`` (or ``"distance"``) → :class:`FermiDiracDecoder`."""
    if name == "inner":
        return InnerProductDecoder()
    if name in ("fermi-dirac", "distance"):
        return FermiDiracDecoder()
    raise ValueError(f"edge decoder must be 'inner' or 'fermi-dirac'; got {name!r}")


# ----------------------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------------------

def _conv(kind: str, a: int, b: int, heads: int = GAT_HEADS) -> nn.Module:
    pyg_nn = require("torch_geometric.nn", "GraphVAE's graph encoder")
    GATConv, GCNConv = pyg_nn.GATConv, pyg_nn.GCNConv

    if kind == "gcn":  # normalised once per graph by GraphEncoder (the same D^{-1/2}(A + I)D^{-1/2} GCNConv forms)
        return GCNConv(a, b, normalize=False)
    if kind == "gat":
        return GATConv(a, b, heads=heads, concat=False)
    raise ValueError(f"graph encoder must be 'gcn' or 'gat'; got {kind!r}")


class GraphEncoder(nn.Module):
    r"""Two message-passing layers: ``h = relu(conv₁(x))``, then ``conv_μ(h)`` (tangent means, ``n``) and
    ``conv_σ(h)`` (pre-softplus scales, ``n``) per node, as in the VGAE (``out_sizes``: other sizes, e.g. a vMF's
    ``n + 1`` locations and one concentration, :class:`vae.posteriors.PosteriorHead`). ``in_features=None`` means identity
    (one-hot) node features, implemented as a learnable ``(num_nodes, hidden)`` table followed by the stack
    (the same function class as a first layer on the identity, without an ``N × N`` input).

    GCN layers share one normalised adjacency ``D^{-1/2}(A + I)D^{-1/2}``, computed once per graph: it is kept for
    the ``edge_index`` tensor it was computed from and recomputed when another tensor (or an in-place change of
    that one) is passed.
    """

    def __init__(self, in_features: int | None, latent_dim: int, hidden: int = GRAPH_HIDDEN, kind: str = "gcn",
                 num_nodes: int | None = None, heads: int = GAT_HEADS,
                 out_sizes: tuple[int, int] | None = None) -> None:
        super().__init__()
        if in_features is None:
            if num_nodes is None:
                raise ValueError("identity features (in_features=None) need num_nodes")
            self.embedding: nn.Embedding | None = nn.Embedding(num_nodes, hidden)
            in_features = hidden
        else:
            self.embedding = None
        self.in_features = in_features
        self.conv1 = _conv(kind, in_features, hidden, heads)
        loc_size, scale_size = out_sizes if out_sizes is not None else (latent_dim, latent_dim)
        self.conv_mu = _conv(kind, hidden, loc_size, heads)
        self.conv_scale = _conv(kind, hidden, scale_size, heads)
        self.kind = kind
        from flows.conditioners import GCNNormCache

        self._norm = GCNNormCache()  # the normalised adjacency, once per graph

    def normalized(self, edge_index: Tensor, num_nodes: int, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
        """``(edge_index, edge_weight)`` for the convolutions: GCN's normalised adjacency with self-loops (cached
        for this ``edge_index``: :class:`flows.conditioners.GCNNormCache`), or the edges as given for GAT."""
        if self.kind != "gcn":
            return edge_index, None
        return self._norm(edge_index, num_nodes, dtype)

    def forward(self, x: Tensor | None, edge_index: Tensor, edge_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(μ̃, raw σ)`` per node. With ``edge_weight`` given, ``(edge_index, edge_weight)`` is the graph the
        convolutions use as it is (for GCN: the normalised adjacency from :meth:`normalized`, computed once)."""
        if self.embedding is not None:
            if x is not None:
                raise ValueError("this encoder uses identity features (in_features=None); pass x=None")
            x = self.embedding.weight
        elif x is None or x.dim() != 2 or x.size(1) != self.in_features:
            raise ValueError(
                f"node features must have shape (num_nodes, {self.in_features}); got "
                f"{None if x is None else tuple(x.shape)}"
            )
        ei, ew = (edge_index, edge_weight) if edge_weight is not None else self.normalized(edge_index, x.size(0), x.dtype)
        h = F.relu(self.conv1(x, ei, ew))
        return self.conv_mu(h, ei, ew), self.conv_scale(h, ei, ew)


@dataclass
class GraphLoss:
    """Terms of the graph-VAE loss ``recon + β·kl`` (see :meth:`GraphVAE.loss`): ``kl`` is the unweighted
    ``(1/N)·mean_v KL̂_v`` and ``kl_weight`` the model's β."""

    recon: Tensor
    kl: Tensor
    kl_weight: float = 1.0

    @property
    def total(self) -> Tensor:
        return self.recon + self.kl_weight * self.kl


class GraphVAE(nn.Module):
    r"""Variational graph autoencoder with per-node posteriors on ``manifold`` and an optional flow.

    * Encoder (:class:`GraphEncoder`, GCN by default, GAT optional) gives each node ``q₀(z₀ᵥ) =
      WrappedNormal(exp_o(μ̃ᵥ), σᵥ)`` (on a sphere ``vMF(μᵥ, κᵥ)``, on a product the factors' side by side:
      :func:`vae.posteriors.posterior_head`); an optional flow ``f`` (``flows.build(flow, manifold, n,
      conditioner=flow_conditioner)``) maps all node latents together, with ``context=edge_index`` when its
      conditioner is a graph network (``"gcn"`` / ``"gat"``), so a node's coupling sees its neighbours.
    * Prior ``WrappedNormal(o, I)`` per node (uniform on a compact manifold, the factors' on a product:
      :func:`vae.posteriors.standard_prior`; without a flow the KL is in closed form where one is registered);
      decoder :class:`InnerProductDecoder` (default) or
      :class:`FermiDiracDecoder`.
    * Loss (per epoch O(E), MATH.md §5):
      ``BCE_mean(positive train edges) + BCE_mean(as many sampled non-edges) + β·(1/N)·mean_v KL̂_v`` with the
      single-sample ``KL̂_v = log q₀(z₀ᵥ) - log|det ∂f/∂z₀|_v - log p(z_Kᵥ)`` (the KL scaled by ``1/N`` as in
      the paper and the VGAE reference; the flow's log-det is split evenly over nodes). ``kl_weight`` is β
      (default 1, the paper's): with β = 1 the posterior scales collapse towards zero over a long run and a flow
      then overfits (issue #14: on Dis-II σ falls from ~0.1 to ~0.015); a larger β keeps them open.

    Example:
        >>> from manifolds import Lorentz
        >>> edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> model = GraphVAE(Lorentz(), in_features=3, latent_dim=2)
        >>> model.loss(torch.randn(3, 3), edge_index, torch.tensor([[0, 1], [1, 2]])).total.dim()
        0
    """

    def __init__(self, manifold: nn.Module, in_features: int | None, latent_dim: int, *, num_nodes: int | None = None,
                 hidden: int = GRAPH_HIDDEN, encoder: str = "gcn", decoder: str = "inner",
                 flow: str | nn.Module | None = None, flow_layers: int = FLOW_LAYERS, flow_hidden: int = FLOW_HIDDEN,
                 flow_conditioner: str = "gcn", heads: int = GAT_HEADS,
                 max_tangent_norm: float | None = MAX_TANGENT_NORM, kl_weight: float = 1.0) -> None:
        super().__init__()
        if not (math.isfinite(kl_weight) and kl_weight >= 0):
            raise ValueError(f"kl_weight must be a finite number >= 0 (β of recon + β·KL/N; 1 is the paper's); "
                             f"got {kl_weight!r}")
        self.kl_weight = float(kl_weight)
        self.manifold = manifold
        self.latent_dim = int(latent_dim)
        self.num_nodes = num_nodes
        self.max_tangent_norm = max_tangent_norm
        self.head = posterior_head(manifold, self.latent_dim, max_tangent_norm)
        self.encoder = GraphEncoder(in_features, latent_dim, hidden, encoder, num_nodes, heads,
                                    out_sizes=(self.head.loc_size, self.head.scale_size))
        self.decoder = make_edge_decoder(decoder) if isinstance(decoder, str) else decoder
        if isinstance(flow, str):
            import flows

            flow = flows.build(flow, manifold, latent_dim, layers=flow_layers, hidden=flow_hidden,
                               conditioner=flow_conditioner, share_manifold=True)
        check_flow_manifold(flow, manifold)
        self.flow = flow
        self.graph_flow = flow is not None and flow_conditioner in ("gcn", "gat")
        self.flow_conditioner = flow_conditioner
        from flows.conditioners import PerGraphCache

        self._graph_cache = PerGraphCache()  # a raw edge_index prepared once (prepare_graph)

    # -- the graph, prepared once ---------------------------------------------------------------------------
    def prepare_graph(self, edge_index: Tensor, num_nodes: int | None = None) -> MessageGraph:
        """Check ``edge_index`` once (node ids in range: a host read) and prepare what every step needs: the
        encoder's normalised adjacency and the non-edge sampler. Pass the result wherever ``edge_index`` is taken
        (:meth:`loss`, :meth:`encode`, :meth:`embed`, :meth:`evaluate`) to keep a training step free of graph work.

        Example:
            >>> from manifolds import Lorentz
            >>> model = GraphVAE(Lorentz(), in_features=3, latent_dim=2)
            >>> g = model.prepare_graph(torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
            >>> model.loss(torch.randn(3, 3), g, torch.tensor([[0, 1], [1, 2]])).total.dim()
            0
        """
        n = num_nodes if num_nodes is not None else self.num_nodes
        if n is None:
            raise ValueError("prepare_graph needs num_nodes (the model was built without num_nodes)")
        if self.num_nodes is not None and n != self.num_nodes:
            raise ValueError(f"num_nodes={n} but the model was built for num_nodes={self.num_nodes}")
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f"edge_index must have shape (2, E); got {tuple(edge_index.shape)}")
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n):
            raise ValueError(f"edge_index has node ids in [{int(edge_index.min())}, {int(edge_index.max())}], outside "
                             f"[0, {n}): there are only {n} nodes")
        dtype = next(self.parameters()).dtype
        ei, ew = self.encoder.normalized(edge_index, n, dtype)
        return MessageGraph(edge_index, n, ei, ew, NonEdgeSampler(edge_index, n))

    def _num_nodes(self, x: Tensor | None) -> int | None:
        if x is not None:
            return x.size(0)
        emb = self.encoder.embedding
        return emb.num_embeddings if emb is not None else self.num_nodes

    def _graph(self, x: Tensor | None, graph: Tensor | MessageGraph) -> MessageGraph:
        """``graph`` as a :class:`MessageGraph` for features ``x`` (shapes checked). A raw ``edge_index`` is prepared
        (and checked) once and kept for that tensor: a weak reference, its version counter (bumped by in-place
        changes), the node count and the model's dtype are the key, as for the encoder's normalisation."""
        n = self._num_nodes(x)
        if self.num_nodes is not None and n != self.num_nodes:
            raise ValueError(f"got features for {n} nodes but the model was built for num_nodes={self.num_nodes}")
        if isinstance(graph, MessageGraph):
            if graph.num_nodes != n:
                raise ValueError(f"the prepared graph has {graph.num_nodes} nodes but the features have {n}")
            return graph
        return self._graph_cache.get(graph, (n, next(self.parameters()).dtype), lambda: self.prepare_graph(graph, n))

    def encode(self, x: Tensor | None | GraphData, edge_index: Tensor | MessageGraph | None = None) -> Distribution:
        """Per-node base posteriors ``q₀`` (batch shape ``(N,)``); ``edge_index`` is the message-passing graph (or a
        :class:`MessageGraph`). ``x`` may be a ``torch_geometric.data.Data`` (then no ``edge_index``).

        Differs from PyG's ``VGAE.encode``, which returns a sample ``z``: this returns the distribution (draw with
        ``.rsample()``, or use :meth:`embed` / ``model(data)`` for the flow's latents)."""
        x, edge_index = _unpack(x, edge_index)
        graph = self._graph(x, edge_index)
        return self.head(*self.encoder(x, graph.conv_index, graph.conv_weight))

    def _context(self, graph: Tensor | MessageGraph) -> Tensor | tuple[Tensor, Tensor] | None:
        """The flow's context: ``None`` for MLP conditioners; for GCN conditioners on a prepared graph with a GCN
        encoder, its normalised adjacency (the same ``D^{-1/2}(A + I)D^{-1/2}``: nothing recomputed in the step);
        else the edges."""
        if not self.graph_flow:
            return None
        if isinstance(graph, MessageGraph):
            if self.flow_conditioner == "gcn" and graph.conv_weight is not None:
                return graph.conv_index, graph.conv_weight
            return graph.edge_index
        return graph

    def _latents(self, q0: WrappedNormal, edge_index: Tensor | MessageGraph, sample: bool) -> Latent:
        """A posterior sample (``sample``) or the flow image of the posterior means, through the flow with this
        graph's context: :meth:`flows.FlowDistribution.rsample_latent` / :meth:`~flows.FlowDistribution.mean_latent`
        (the library's one latent path: tangent coordinates at the origin from the draw through the flow to the
        decoder and prior wherever the flow acts in them)."""
        q = FlowDistribution(q0, self.flow, self._context(edge_index))
        return q.rsample_latent() if sample else q.mean_latent()

    def prior(self, like: Tensor) -> Distribution:
        """The prior per node (:func:`vae.posteriors.standard_prior`): ``WrappedNormal(o, I)`` declared at the origin
        (:meth:`~manifolds.WrappedNormal.at_origin`), uniform on a compact manifold, the factors' on a product."""
        return standard_prior(self.manifold, self.latent_dim, like)

    def embed(self, x: Tensor | None | GraphData, edge_index: Tensor | MessageGraph | None = None,
              sample: bool | None = None) -> Tensor:
        """Node latents ``z_K`` (points, ``(N, n+1)`` on Lorentz): a posterior sample (``sample=True``, default in
        training mode) or the flow image of the posterior means (default in eval mode). ``x`` may be a ``Data``."""
        x, edge_index = _unpack(x, edge_index)
        q0 = self.encode(x, edge_index)
        return self._latents(q0, edge_index, self.training if sample is None else sample).points()

    def forward(self, x: Tensor | None | GraphData, edge_index: Tensor | MessageGraph | None = None) -> Tensor:
        """``model(data)`` or ``model(x, edge_index)``: the node embeddings, :meth:`embed` (posterior means through
        the flow in eval mode, a sample in training mode).

        Example:
            >>> from manifolds import Lorentz
            >>> model = GraphVAE(Lorentz(), in_features=3, latent_dim=2).eval()
            >>> model(torch.randn(3, 3), torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])).shape
            torch.Size([3, 3])
        """
        return self.embed(x, edge_index)

    def _logits(self, latent: Latent, pairs: Tensor) -> Tensor:
        """Edge logits for latents held either way: tangent coordinates go to a decoder that reads them
        (:attr:`EdgeDecoder.reads_tangent`), points to any other."""
        if isinstance(self.decoder, EdgeDecoder) and self.decoder.reads_tangent:
            # log_o is a global chart only where exp_o is a diffeomorphism (ℝⁿ, Hⁿ, the ball); elsewhere it jumps at
            # the cut locus, with an unbounded derivative on Sⁿ (NaN in training): there the decoder reads the
            # points' chart features (on Sⁿ the ambient coordinates: ⟨z_u, z_v⟩, the S-VGAE decoder of Davidson et
            # al.; on a product log_o of the factors where it is a chart, features of the others)
            w = (latent.tangents() if self.manifold.exp0_is_diffeomorphism
                 else self.manifold.chart_features(latent.points()))
            return self.decoder.forward_tangent(w, pairs, self.manifold)
        return self.decoder(latent.points(), pairs, self.manifold)

    def pair_logits(self, z: Tensor | None, pairs: Tensor, tangent: Tensor | None = None) -> Tensor:
        """Edge logits of the node pairs ``pairs`` (``(2, P)``) for latents ``z``; ``tangent = log_o(z)`` if known
        (a decoder that reads tangent coordinates gets it, saving the ``log_o``; ``z`` may then be ``None``)."""
        return self._logits(Latent(self.manifold, z if tangent is None else None, tangent, None, pairs.new_zeros(())),
                            pairs)

    def decode(self, z: Tensor, edge_index: Tensor, sigmoid: bool = True) -> Tensor:
        """Edge probabilities ``p(A_uv = 1)`` of the pairs ``edge_index`` (``(2, P)``) for latents ``z``, as PyG's
        ``VGAE.decode``; ``sigmoid=False`` gives the logits."""
        logits = self.pair_logits(z, edge_index)
        return torch.sigmoid(logits) if sigmoid else logits

    def _kl(self, latent: Latent, num_nodes: int, q0: Distribution | None = None) -> Tensor:
        """``(1/N)·mean_v KL̂_v`` with ``KL̂_v = log q₀(z₀ᵥ) - log|det ∂f/∂z₀|_v - log p(z_Kᵥ)`` (one sample), or
        the closed-form ``KL(q₀ᵥ ‖ p)`` where there is no flow, ``q0`` is given and one is registered."""
        prior = self.prior(latent.ladj.new_empty(()))
        exact = closed_form_kl(q0, prior) if q0 is not None and self.flow is None else None
        kl = exact if exact is not None else latent.log_q0 - latent.ladj - prior_log_prob(prior, latent)
        return kl.mean() / num_nodes

    def loss(self, x: Tensor | None | GraphData, edge_index: Tensor | MessageGraph | None = None,
             pos_pairs: Tensor | None = None, neg_pairs: Tensor | None = None) -> GraphLoss:
        """Loss on ``pos_pairs`` (training edges; default: the message-passing edges as given, PyG's convention)
        and ``neg_pairs`` (default: as many fresh uniformly random non-edges of the message-passing graph,
        :class:`NonEdgeSampler`). ``x`` may be a ``torch_geometric.data.Data`` (``model.loss(data)``).

        With a :class:`MessageGraph` (:meth:`prepare_graph`) the step reads no value on the host and has static
        shapes, so it can be compiled whole (``torch.compile(..., fullgraph=True)``) and captured in a CUDA graph."""
        x, edge_index = _unpack(x, edge_index)
        graph = self._graph(x, edge_index)
        if pos_pairs is None:
            pos_pairs = graph.edge_index
        if pos_pairs.numel() == 0:
            raise ValueError("pos_pairs is empty: the loss needs at least one positive edge")
        if validation_enabled():  # host reads: opt-in (manifolds.validation)
            check_pairs(pos_pairs, graph.num_nodes, "pos_pairs")
            if neg_pairs is not None:
                check_pairs(neg_pairs, graph.num_nodes, "neg_pairs")
        if neg_pairs is None:
            neg_pairs = graph.negatives(pos_pairs.size(1))
        q0 = self.encode(x, graph)
        latent = self._latents(q0, graph, sample=True)
        # both pair sets in one decoder call (one gather of the latents)
        pos, neg = self._logits(latent, torch.cat([pos_pairs, neg_pairs], 1)).split(
            [pos_pairs.size(1), neg_pairs.size(1)])
        return GraphLoss(_bce(pos, neg), self._kl(latent, graph.num_nodes, q0), self.kl_weight)

    def recon_loss(self, z: Tensor, pos_edge_index: Tensor, neg_edge_index: Tensor | None = None) -> Tensor:
        """PyG's ``VGAE.recon_loss``: mean binary cross-entropy of the positive pairs plus that of the negative pairs
        (default: as many uniformly random non-edges of ``pos_edge_index``) for latent points ``z``."""
        if neg_edge_index is None:
            neg_edge_index = NonEdgeSampler(pos_edge_index, z.size(0))(pos_edge_index.size(1))
        return _bce(self.pair_logits(z, pos_edge_index), self.pair_logits(z, neg_edge_index))

    def kl_loss(self, x: Tensor | None | GraphData, edge_index: Tensor | MessageGraph | None = None) -> Tensor:
        """The loss's KL term ``(1/N)·mean_v KL̂_v`` of one posterior sample through the flow (unweighted by β).

        Differs from PyG's ``VGAE.kl_loss(mu, logstd)``, the closed-form Gaussian KL of the last :meth:`encode`: with a
        flow (or on Hⁿ) there is no closed form, so this draws a sample and takes the inputs, not cached state."""
        x, edge_index = _unpack(x, edge_index)
        graph = self._graph(x, edge_index)
        q0 = self.encode(x, graph)
        return self._kl(self._latents(q0, graph, sample=True), graph.num_nodes, q0)

    @torch.no_grad()
    def test(self, z: Tensor, pos_edge_index: Tensor, neg_edge_index: Tensor) -> tuple[float, float]:
        """PyG's ``VGAE.test``: ``(ROC-AUC, average precision)`` of the decoder's scores for latent points ``z`` on
        ``pos_edge_index`` vs ``neg_edge_index`` (scikit-learn)."""
        scores = self.pair_logits(z, torch.cat([pos_edge_index, neg_edge_index], 1))
        m = _auc_ap(scores, pos_edge_index.size(1), neg_edge_index.size(1))
        return m["auc"], m["ap"]

    @torch.no_grad()
    def evaluate(self, x: Tensor | None | GraphData, edge_index: Tensor | MessageGraph | None = None,
                 pos_pairs: Tensor | None = None, neg_pairs: Tensor | None = None) -> dict[str, float]:
        """ROC-AUC and average precision (scikit-learn) of the decoder on ``pos_pairs`` vs ``neg_pairs``,
        using the posterior means (eval mode). One host read (the scores); a non-finite score (training diverged,
        or a latent beyond the dtype's range with validation off) is a ``FloatingPointError`` here. ``x`` may be a
        ``Data`` (``model.evaluate(data, pos_pairs=..., neg_pairs=...)``)."""
        x, edge_index = _unpack(x, edge_index)
        if pos_pairs is None or neg_pairs is None:
            raise ValueError("evaluate needs pos_pairs and neg_pairs (e.g. split.test_pos and split.test_neg)")
        was = self.training
        self.eval()
        try:
            q0 = self.encode(x, edge_index)
            for pairs, what in ((pos_pairs, "pos_pairs"), (neg_pairs, "neg_pairs")):
                check_pairs(pairs, q0.batch_shape[0], what)
            latent = self._latents(q0, edge_index, sample=False)
            scores = self._logits(latent, torch.cat([pos_pairs, neg_pairs], 1))
        finally:
            self.train(was)
        return _auc_ap(scores, pos_pairs.size(1), neg_pairs.size(1))


def _unpack(x: Tensor | None | GraphData, edge_index: Tensor | MessageGraph | None) -> tuple[Tensor | None,
                                                                                            Tensor | MessageGraph]:
    """``(x, edge_index)`` from a ``torch_geometric.data.Data`` (``data.x`` may be ``None``: identity features), or
    the pair as given."""
    if x is None or torch.is_tensor(x):
        if edge_index is None:
            raise ValueError("no graph given: pass a torch_geometric Data object, or node features and edge_index")
        return x, edge_index
    if edge_index is not None:
        raise ValueError("got a Data object and an edge_index: pass either the Data object or (x, edge_index); give "
                         "training pairs as pos_pairs=...")
    return getattr(x, "x", None), x.edge_index


def _bce(pos: Tensor, neg: Tensor) -> Tensor:
    """``BCE_mean(pos logits, 1) + BCE_mean(neg logits, 0)``."""
    return F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + \
        F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))


def _auc_ap(scores: Tensor, num_pos: int, num_neg: int) -> dict[str, float]:
    """ROC-AUC and AP of edge scores (positives first); a non-finite score is a ``FloatingPointError``."""
    metrics = require("sklearn.metrics", "GraphVAE.evaluate / GraphVAE.test")
    scores = scores.cpu().numpy()
    if not np.isfinite(scores).all():
        raise FloatingPointError(
            f"{int((~np.isfinite(scores)).sum())} of {scores.size} edge scores are NaN or inf: the model diverged "
            "or a latent overflowed its dtype. Rerun with RF_VALIDATE=1 (manifolds.validation) to stop where it "
            "happens, or lower the learning rate")
    labels = np.concatenate([np.ones(num_pos), np.zeros(num_neg)])
    return {"auc": float(metrics.roc_auc_score(labels, scores)), "ap": float(metrics.average_precision_score(labels, scores))}
