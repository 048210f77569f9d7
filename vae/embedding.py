r"""Hyperbolic embeddings of a graph's nodes trained by a ranking loss (Nickel & Kiela 2017, "Poincaré embeddings
for learning hierarchical representations"; 2018, the Lorentz model): the classic baseline of the graph VAEs.

One point ``z_u`` per node on a hyperbolic manifold (any :class:`~manifolds.base.ManifoldOps` with ``dist``: the
Poincaré ball or the hyperboloid), a ``geoopt.ManifoldParameter`` trained with ``geoopt.optim.RiemannianAdam``. For
each training edge ``(u, v)``, in both directions, and ``K`` negatives ``v'_1..v'_K`` drawn uniformly among the nodes
other than ``u`` (Nickel & Kiela 2017, eq. 6):

.. math::

    \ell(u, v) = -\log \frac{e^{-d(z_u, z_v)}}{e^{-d(z_u, z_v)} + \sum_{j=1}^{K} e^{-d(z_u, z_{v'_j})}},

and the loss is the mean of ``ℓ`` over the directed training edges. The negatives are drawn on the device with
``torch.randint`` (static shapes, no host read). A negative that happens to be a neighbour of ``u`` (or ``v``
itself) is kept: the original code rejects neighbours with a bounded number of tries and can keep some too; here
none are rejected (rejection would need a data-dependent loop), which costs a little contrast at high-degree
nodes. ``u`` itself is never drawn (``d(u, u) = 0``, where the distance has no gradient).

:class:`HyperbolicEmbedding` answers what the graph-reconstruction runner asks of a :class:`~vae.GraphVAE`
(``prepare_graph``, ``loss``, ``evaluate``, ``embed``), so one training loop serves both; node features are ignored
(an embedding is a free point per node).
"""

from __future__ import annotations

import geoopt
import torch
import torch.nn.functional as F
from torch import nn

from .constants import EMBEDDING_INIT_SCALE, EMBEDDING_NEGATIVES
from .graph import GraphLoss, _auc_ap, check_pairs, prepare_edge_index

Tensor = torch.Tensor


class HyperbolicEmbedding(nn.Module):
    r"""Node embeddings on ``manifold`` trained by the ranking loss of Nickel & Kiela (module docstring).

    Args:
        manifold: the latent manifold (e.g. ``PoincareBall(1.0)`` or ``Lorentz(1.0)``); its curvature is fixed.
        num_nodes: ``N``, one point per node.
        latent_dim: the intrinsic dimension ``n`` (points have ``manifold.ambient_dim(n)`` coordinates).
        negatives: ``K``, negatives per directed training edge.
        init_scale: initial tangent coordinates at the origin uniform in ``[-init_scale, init_scale]``, then
            ``exp_o`` (Nickel & Kiela: 1e-3).
        generator: the ``torch.Generator`` of the initialisation (default: torch's global one).

    ``model.points`` is the ``(N, ambient)`` ``ManifoldParameter``; ``.to()``, ``.double()``, ``state_dict()`` work
    as on any ``nn.Module``. Unlike a ``GraphVAE`` there is no encoder: ``x`` arguments are accepted and ignored.

    Example:
        >>> from manifolds import PoincareBall
        >>> ei = torch.tensor([[0, 1, 0, 2], [1, 0, 2, 0]])  # a root 0 with two children
        >>> model = HyperbolicEmbedding(PoincareBall(1.0), num_nodes=3, latent_dim=2, negatives=4)
        >>> opt = geoopt.optim.RiemannianAdam(model.parameters(), lr=0.05)
        >>> graph = model.prepare_graph(ei, 3)
        >>> for _ in range(50):
        ...     opt.zero_grad(); model.loss(None, graph).total.backward(); opt.step()
        >>> model.embed().shape
        torch.Size([3, 2])
    """

    def __init__(self, manifold: nn.Module, num_nodes: int, latent_dim: int, *, negatives: int = EMBEDDING_NEGATIVES,
                 init_scale: float = EMBEDDING_INIT_SCALE, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if num_nodes < 2:
            raise ValueError(f"an embedding needs at least 2 nodes (negatives are other nodes); got {num_nodes}")
        if negatives < 1:
            raise ValueError(f"negatives must be >= 1 (K of the ranking loss); got {negatives}")
        self.manifold = manifold
        self.num_nodes = int(num_nodes)
        self.latent_dim = int(latent_dim)
        self.negatives = int(negatives)
        coords = torch.empty(num_nodes, latent_dim).uniform_(-init_scale, init_scale, generator=generator)
        with torch.no_grad():
            points = manifold.expmap0_spatial(coords)
        self.points = geoopt.ManifoldParameter(points, manifold=manifold)

    def extra_repr(self) -> str:
        return f"num_nodes={self.num_nodes}, latent_dim={self.latent_dim}, negatives={self.negatives}"

    def prepare_graph(self, edge_index: Tensor, num_nodes: int | None = None) -> Tensor:
        """The training edges, checked and in both directions (:func:`~vae.graph.prepare_edge_index`), on the
        points' device: what :meth:`loss` reads (checked once here, so a training step reads nothing on the host)."""
        n = self.num_nodes if num_nodes is None else num_nodes
        if n != self.num_nodes:
            raise ValueError(f"the graph has {n} nodes but the embedding has {self.num_nodes} points; build it with "
                             f"num_nodes={n}")
        return prepare_edge_index(edge_index, n).to(self.points.device)

    def negative_samples(self, sources: Tensor) -> Tensor:
        """``(E, K)`` nodes drawn uniformly among those other than each source (``(u + 1 + r) mod N``, ``r`` uniform
        in ``[0, N-2]``): on the device, static shape."""
        r = torch.randint(self.num_nodes - 1, (sources.numel(), self.negatives), device=sources.device)
        return (sources.unsqueeze(1) + 1 + r) % self.num_nodes

    def ranking_loss(self, edges: Tensor, negatives: Tensor) -> Tensor:
        """The mean over the directed ``edges`` (``(2, E)``) of ``-log softmax`` of ``-d(u, ·)`` at ``v`` among
        ``{v} ∪ negatives`` (``(E, K)``): Nickel & Kiela 2017, eq. 6."""
        u, v = edges
        others = torch.cat([v.unsqueeze(1), negatives], dim=1)  # (E, 1 + K), the true neighbour first
        z = self.points
        d = self.manifold.dist(z[u].unsqueeze(1).expand(-1, others.size(1), -1), z[others])
        return F.cross_entropy(-d, torch.zeros_like(u))

    def loss(self, x: Tensor | None, graph: Tensor, pos_pairs: Tensor | None = None) -> GraphLoss:
        """One training step's loss on the prepared edges ``graph`` (:meth:`prepare_graph`) with fresh negatives, as
        a :class:`~vae.graph.GraphLoss` (``recon``: the ranking loss; ``kl``: 0, an embedding has no posterior).
        ``x`` and ``pos_pairs`` are ignored: every directed edge of ``graph`` is a positive."""
        loss = self.ranking_loss(graph, self.negative_samples(graph[0]))
        return GraphLoss(recon=loss, kl=torch.zeros_like(loss))

    def embed(self, x: Tensor | None = None, graph: Tensor | None = None, sample: bool | None = None) -> Tensor:
        """The node points ``(N, ambient)``, detached (the arguments match :meth:`GraphVAE.embed`'s and are
        ignored: an embedding has neither features nor posterior samples)."""
        return self.points.detach().clone()

    def forward(self, x: Tensor | None = None, graph: Tensor | None = None) -> Tensor:
        return self.embed()

    def scores(self, pairs: Tensor) -> Tensor:
        """Edge scores ``-d(z_u, z_v)`` of ``(2, P)`` pairs: nearer is likelier (no gradient)."""
        with torch.no_grad():
            return -self.manifold.dist(self.points[pairs[0]], self.points[pairs[1]])

    def evaluate(self, x: Tensor | None, graph: Tensor | None, pos_pairs: Tensor,
                 neg_pairs: Tensor) -> dict[str, float]:
        """ROC-AUC and average precision (scikit-learn) of the scores ``-d`` on ``pos_pairs`` vs ``neg_pairs``, as
        :meth:`GraphVAE.evaluate` (one host read; a non-finite score is a ``FloatingPointError``)."""
        for pairs, what in ((pos_pairs, "pos_pairs"), (neg_pairs, "neg_pairs")):
            check_pairs(pairs, self.num_nodes, what)
        return _auc_ap(self.scores(torch.cat([pos_pairs, neg_pairs], 1)), pos_pairs.size(1), neg_pairs.size(1))
