"""Conditioner networks: they map the conditioning half of a coupling (and a context) to its parameters."""

from __future__ import annotations

import weakref

from typing import Any, Callable, Optional

import torch
from torch import nn

from .constants import DEFAULT_HIDDEN, DEFAULT_HIDDEN_LAYERS, OUTPUT_INIT_SCALE
from .extras import require

Tensor = torch.Tensor


#: ``-1`` as a 0-dim tensor (it does not promote the dtype of the tensors it is added to).
_MINUS_ONE = torch.tensor(-1.0)


class _TanhViaSigmoid(torch.autograd.Function):
    """``tanh(x) = 2·sigmoid(2x) - 1`` with tanh's own derivative ``1 - y²`` (see :func:`tanh`)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        # -1 + 2·σ in one pass (2·σ is exact, so the single rounding matches σ·2 - 1)
        return torch.add(_MINUS_ONE, torch.sigmoid(x * 2), alpha=2)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)

    @staticmethod
    def jvp(ctx, tangent: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(tangent, y)


def tanh(x: Tensor) -> Tensor:
    """``tanh``, the conditioners' activation. On the CPU it is evaluated as ``2·sigmoid(2x) - 1``: torch's CPU
    ``tanh`` kernel is about 3× slower than ``sigmoid`` (torch 2.x, AVX2), and the conditioner activations
    are a large part of a coupling flow's training step. Same function; the absolute error is below 2e-7 in
    float32 (``torch.tanh``: 3e-8), immaterial for a hidden activation (and it does not touch exactness: a
    coupling's inverse and log-det use the same conditioner output). Elsewhere ``torch.tanh``.

    Example:
        >>> x = torch.linspace(-5, 5, 11, dtype=torch.float64)
        >>> bool(torch.allclose(tanh(x), torch.tanh(x), atol=1e-15))
        True
    """
    if x.device.type == "cpu":
        return _TanhViaSigmoid.apply(x)
    return torch.tanh(x)


class _TanhInPlace(torch.autograd.Function):
    """:func:`tanh` written over its input (``2·sigmoid(2x) - 1`` in place, tanh's derivative ``1 - y²``): for the
    fresh output of a linear layer, which nothing else holds (no new buffer in the forward pass)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x.mul_(2).sigmoid_().mul_(2).sub_(1)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def _tanh_fresh(h: Tensor) -> Tensor:
    """``tanh(h)`` for a fresh layer output that nothing else holds: written over ``h`` on the CPU."""
    return _TanhInPlace.apply(h) if h.device.type == "cpu" else torch.tanh(h)


def _linear_tanh(layer: nn.Linear, x: Tensor) -> Tensor:
    """``tanh(layer(x))``, with the activation written over the linear layer's own (fresh) output on the CPU."""
    return _tanh_fresh(layer(x))


class Tanh(nn.Tanh):
    """``nn.Tanh`` computed by :func:`tanh` (no parameters: state dicts are unchanged)."""

    def forward(self, x: Tensor) -> Tensor:
        return tanh(x)


def _near_identity_(layer: nn.Linear) -> nn.Linear:
    with torch.no_grad():
        layer.weight.mul_(OUTPUT_INIT_SCALE)
        layer.bias.zero_()
    return layer


class MLPConditioner(nn.Module):
    r"""``x ↦ W_L tanh(… tanh(W_1 [x, c] + b_1) …) + b_L`` (the paper: two hidden layers of 128, tanh).

    Args:
        in_features: size of the conditioning input.
        out_features: number of outputs.
        hidden: hidden width.
        layers: number of hidden layers.
        context_features: size of an optional context vector concatenated to the input (conditional flows).

    Example:
        >>> net = MLPConditioner(3, 4)
        >>> net(torch.randn(5, 3)).shape
        torch.Size([5, 4])
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = DEFAULT_HIDDEN,
                 layers: int = DEFAULT_HIDDEN_LAYERS, context_features: int = 0) -> None:
        super().__init__()
        self.context_features = context_features
        sizes = [in_features + context_features] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            mods += [nn.Linear(a, b), Tanh()]
        mods.append(_near_identity_(nn.Linear(sizes[-1], out_features)))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        if self.context_features:
            if context is None:
                raise ValueError(f"this conditioner expects a context of {self.context_features} features; got None")
            x = torch.cat([x, context.expand(*x.shape[:-1], context.size(-1))], dim=-1)
        layers = self.net  # (Linear, Tanh) × hidden layers, then the output Linear
        for i in range(0, len(layers) - 1, 2):
            x = _linear_tanh(layers[i], x)
        return layers[-1](x)


class PerGraphCache:
    r"""One value computed from a graph's ``edge_index`` and kept for that tensor, so per-graph work (a
    normalisation, a sampler's index) runs once per graph instead of in every training step.

    The key is the tensor itself (a weak reference), its version counter (bumped by in-place changes, though not by
    writes through ``.data`` or a shared numpy array), inference mode (whose tensors cannot be saved for a later
    backward pass) and the caller's extra key. Not pickled: a copy recomputes on its first call.

    Example:
        >>> cache, ei = PerGraphCache(), torch.tensor([[0, 1], [1, 0]])
        >>> a = cache.get(ei, (2,), lambda: ei.flip(0))
        >>> cache.get(ei, (2,), lambda: None) is a  # the same graph: not recomputed
        True
    """

    def __init__(self) -> None:
        self._entry: tuple | None = None

    def get(self, edge_index: Tensor, key: tuple, compute: Callable[[], Any]) -> Any:
        """The value kept for ``(edge_index, key)``, or ``compute()`` (then kept)."""
        # inference mode cannot be on in a compiled training step, and torch.compile cannot ask
        inference = False if torch.compiler.is_compiling() else torch.is_inference_mode_enabled()
        full = (edge_index._version, inference, *key)
        c = self._entry
        if c is not None and c[0]() is edge_index and c[1] == full:
            return c[2]
        out = compute()
        self._entry = (weakref.ref(edge_index), full, out)
        return out

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._entry = None


class GCNNormCache(PerGraphCache):
    r"""GCN's normalised adjacency ``D^{-1/2}(A + I)D^{-1/2}`` of an ``edge_index`` as ``(edge_index, edge_weight)``
    (``torch_geometric``'s ``gcn_norm`` with self-loops), computed once per graph (:class:`PerGraphCache`).

    ``gcn_norm`` finds the nodes without a self-loop with a data-dependent mask: a device synchronisation on a GPU
    and a graph break under ``torch.compile``; kept, it runs once per graph instead of in every training step.

    Example:
        >>> norm = GCNNormCache()
        >>> ei = torch.tensor([[0, 1], [1, 0]])
        >>> a = norm(ei, 2, torch.float32)
        >>> norm(ei, 2, torch.float32) is a  # the same graph: nothing recomputed
        True
    """

    def __call__(self, edge_index: Tensor, num_nodes: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        def compute() -> tuple[Tensor, Tensor]:
            from torch_geometric.nn.conv.gcn_conv import gcn_norm

            return gcn_norm(edge_index, None, num_nodes, add_self_loops=True, dtype=dtype)

        return self.get(edge_index, (num_nodes, dtype), compute)


class GraphConditioner(nn.Module):
    r"""Graph conditioner: ``layers`` message-passing layers (GCN or GAT, tanh) and a linear read-out per node.

    The node features are the conditioning half of each node's latent; the context is the graph's
    ``edge_index`` (shape ``(2, E)``), so a coupling on node latents can use the neighbours' latents.

    Args:
        in_features, out_features, hidden, layers: as in :class:`MLPConditioner`.
        kind: ``"gcn"`` (``torch_geometric.nn.GCNConv``) or ``"gat"`` (``GATConv``, one head).

    Example:
        >>> net = GraphConditioner(2, 4, kind="gcn")
        >>> edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> net(torch.randn(3, 2), edge_index).shape
        torch.Size([3, 4])
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = DEFAULT_HIDDEN,
                 layers: int = DEFAULT_HIDDEN_LAYERS, kind: str = "gcn") -> None:
        super().__init__()
        pyg_nn = require("torch_geometric.nn", f"a graph conditioner (conditioner={kind!r})")
        GATConv, GCNConv = pyg_nn.GATConv, pyg_nn.GCNConv

        conv: Callable[[int, int], nn.Module]
        if kind == "gcn":  # normalised once per graph (GCNNormCache), the same layers as GCNConv(a, b)
            conv = lambda a, b: GCNConv(a, b, normalize=False)  # noqa: E731
        elif kind == "gat":
            conv = lambda a, b: GATConv(a, b, heads=1)  # noqa: E731
        else:
            raise ValueError(f"graph conditioner kind must be 'gcn' or 'gat'; got {kind!r}")
        sizes = [in_features] + [hidden] * layers
        self.convs = nn.ModuleList(conv(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = _near_identity_(nn.Linear(sizes[-1], out_features))
        self.kind = kind
        self._norm = GCNNormCache()

    def forward(self, x: Tensor, context: Optional[Tensor | tuple[Tensor, Tensor]] = None) -> Tensor:
        """``context``: the graph's ``edge_index``, or for GCN the normalised pair ``(edge_index, edge_weight)``
        that :class:`GCNNormCache` (or :meth:`vae.GraphVAE.prepare_graph`) made, used as it is."""
        if self.kind == "gcn" and isinstance(context, tuple):
            edge_index, edge_weight = context
        else:
            if not torch.is_tensor(context) or context.dim() != 2 or context.size(0) != 2:
                raise ValueError(
                    "a graph conditioner needs context=edge_index, a LongTensor of shape (2, E); got "
                    f"{None if context is None else tuple(getattr(context, 'shape', ())) or type(context).__name__}"
                )
            edge_index, edge_weight = (self._norm(context, x.size(0), x.dtype) if self.kind == "gcn"
                                       else (context, None))
        h = x
        for conv in self.convs:
            h = _tanh_fresh(conv(h, edge_index, edge_weight) if edge_weight is not None else conv(h, edge_index))
        return self.out(h)


def make_conditioner(kind: str, in_features: int, out_features: int, hidden: int = DEFAULT_HIDDEN,
                     context_features: int = 0) -> nn.Module:
    """``"mlp"`` → :class:`MLPConditioner`; ``"gcn"`` / ``"gat"`` → :class:`GraphConditioner`."""
    if kind == "mlp":
        return MLPConditioner(in_features, out_features, hidden, context_features=context_features)
    if kind in ("gcn", "gat"):
        return GraphConditioner(in_features, out_features, hidden, kind=kind)
    raise ValueError(f"unknown conditioner {kind!r}; choose 'mlp', 'gcn' or 'gat'")
