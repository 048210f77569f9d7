r"""Masked autoregressive flows: MADE conditioners (Germain et al. 2015), MAF (Papamakarios et al. 2017) and IAF
(Kingma et al. 2016) orientations, with affine or rational-quadratic-spline transformers.

An autoregressive layer transforms every coordinate, ``y_i = τ(x_i; θ_i)``, with the parameters ``θ_i`` of
coordinate ``i`` a function of the coordinates before it in the layer's variable order. The Jacobian is
triangular in that order and ``log|det| = Σ_i log τ'(x_i; θ_i)``. The two orientations differ in which side
the parameters are read from (our ``forward`` is base → data):

* MAF: ``θ_i = θ_i(y_{<i})`` (the data side). The density direction (``inverse``) is one parallel pass of the
  conditioner on ``y``; sampling (``forward``) solves for ``y`` coordinate by coordinate: ``n`` passes.
* IAF: ``θ_i = θ_i(x_{<i})`` (the base side). Sampling is one pass; the density direction takes ``n``.

Layers built by :func:`flows.build` alternate the variable order (identity, reversed, …), so across two layers
every coordinate depends on all the others.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .conditioners import _near_identity_
from .constants import DEFAULT_HIDDEN, DEFAULT_HIDDEN_LAYERS, SPLINE_BINS, SPLINE_BOUND
from .coupling import AffineHalf, CouplingHalf
from .registry import on_rn, register
from .splines import SplineHalf
from .transform import Compose, Transform

Tensor = torch.Tensor


class MADE(nn.Module):
    r"""Masked autoencoder for distribution estimation (Germain, Gregor, Murray, Larochelle, ICML 2015): an MLP
    ``h_1 = tanh((W_1 ⊙ M_1)[x, c] + b_1)``, …, ``out = (W_L ⊙ M_L) h_{L-1} + b_L`` whose binary masks make output
    ``θ_{p,i}`` depend only on the inputs ``x_j`` with ``d(j) < d(i)`` (and on the context ``c``). The tanh layers
    are evaluated as ``tanh(a) = 2σ(2a) - 1`` with the affine part folded into the next layer's weights (one
    sigmoid per hidden layer: torch's CPU tanh kernel is several times slower); the parameters are those of the
    tanh MLP.

    Degrees: input ``j`` has ``d(j) = j + 1`` (``n - j`` when ``reverse``), hidden units ``1 … max(1, n - 1)``
    cyclically (``0 … n - 1`` with a context), context inputs 0; ``M[u, v] = 1`` iff ``d(u) ≥ d(v)`` between
    hidden layers and from the inputs, ``d(u) > d(v)`` into the outputs. Output ``p·n + i`` (parameter-major)
    has the degree of input ``i``. One masked matmul per layer; the last layer starts near zero
    (``OUTPUT_INIT_SCALE``), so the flow starts near the identity.

    Args:
        features: ``n``.
        n_params: parameters per coordinate (outputs: ``n_params·n``).
        hidden: hidden width.
        layers: number of hidden layers.
        context_features: size of a context vector (conditional flows), seen by every output.
        reverse: use the reversed variable order.

    Example:
        >>> net = MADE(3, n_params=2, hidden=8)
        >>> x = torch.randn(4, 3)
        >>> J = torch.autograd.functional.jacobian(lambda v: net(v).sum(0), x).sum(1)  # (6, 3)
        >>> bool((J.reshape(2, 3, 3).abs().sum(0).triu() == 0).all())  # θ_i depends on x_{<i} only
        True
    """

    def __init__(self, features: int, n_params: int, hidden: int = DEFAULT_HIDDEN,
                 layers: int = DEFAULT_HIDDEN_LAYERS, context_features: int = 0, reverse: bool = False) -> None:
        super().__init__()
        if int(features) != features or features < 1:
            raise ValueError(f"MADE needs at least one feature; got {features}")
        n = int(features)
        self.features, self.n_params, self.context_features, self.reverse = n, n_params, context_features, reverse
        order = torch.arange(n, 0, -1) if reverse else torch.arange(1, n + 1)
        self.register_buffer("order", order, persistent=False)  # d(j), the degree of input j
        d_in = torch.cat([order, torch.zeros(context_features, dtype=torch.long)])
        # hidden degrees 1 … n-1; with a context also 0 (units that see only the context), so that the first
        # coordinate's parameters depend on the context too
        lo = 0 if context_features else 1
        d_hidden = [torch.arange(hidden) % max(1, n - lo) + lo for _ in range(layers)]
        d_out = order.repeat(n_params)
        masks = []
        prev = d_in
        for d in d_hidden:
            masks.append(d[:, None] >= prev[None, :])
            prev = d
        masks.append(d_out[:, None] > prev[None, :])
        sizes = [n + context_features] + [hidden] * layers + [n_params * n]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        _near_identity_(self.linears[-1])
        for i, m in enumerate(masks):
            self.register_buffer(f"mask{i}", m.float(), persistent=False)

    def masks(self) -> list[Tensor]:
        """The MADE connectivity masks of the linear layers, input to output (buffers ``mask0``, ``mask1``, …)."""
        return [getattr(self, f"mask{i}") for i in range(len(self.linears))]

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        if self.context_features:
            if context is None:
                raise ValueError(f"this conditioner expects a context of {self.context_features} features; got None")
            x = torch.cat([x, context.expand(*x.shape[:-1], context.size(-1))], dim=-1)
        # tanh(a) = 2·σ(2a) - 1, evaluated as one sigmoid per hidden layer: the layer after absorbs the affine
        # map, W(2σ - 1) + b = (2W)σ + (b - W·1) (small matrices, instead of extra passes over the activations)
        weights = [lin.weight * m for lin, m in zip(self.linears, self.masks())]
        h, W, b = x, weights[0], self.linears[0].bias
        for lin, Wm in zip(self.linears[1:], weights[1:]):
            h = torch.sigmoid(F.linear(h, 2 * W, 2 * b))
            W, b = 2 * Wm, lin.bias - Wm.sum(1)
        return F.linear(h, W, b)

    def extra_repr(self) -> str:
        return f"features={self.features}, n_params={self.n_params}, order={'reversed' if self.reverse else 'natural'}"


def make_transformer(transformer: str, bins: int = SPLINE_BINS, bound: float = SPLINE_BOUND) -> CouplingHalf:
    """``"affine"`` → :class:`~flows.coupling.AffineHalf` (bounded log-scale), ``"rqs"`` →
    :class:`~flows.splines.SplineHalf`."""
    if transformer == "affine":
        return AffineHalf()
    if transformer == "rqs":
        return SplineHalf(bins, bound)
    raise ValueError(f"unknown autoregressive transformer {transformer!r}; choose 'affine' or 'rqs'")


class MaskedAutoregressive(Transform):
    r"""One masked autoregressive layer on ℝⁿ: ``y_i = τ(x_i; θ_i)``, ``θ = MADE(v)`` with ``v = y`` (MAF,
    ``params_from="output"``) or ``v = x`` (IAF, ``params_from="input"``);
    ``log|det ∂y/∂x| = Σ_i log τ'(x_i; θ_i)``.

    The direction whose parameters come from its own input is one conditioner pass; the other solves the
    triangular system by ``n`` passes: pass ``k`` fixes the coordinate of degree ``k`` (its parameters depend
    only on coordinates of lower degree, already exact), and the last pass's parameters are all exact, so its
    log-det is too. :class:`MAF` and :class:`IAF` fix the orientation.

    Args:
        dim: ``n``.
        params_from: ``"output"`` (MAF) or ``"input"`` (IAF), in the base → data direction.
        transformer: ``"affine"`` (``y = x·exp(s) + t``, ``|s| < 4`` by :func:`~flows.coupling.bounded_log_scale`)
            or ``"rqs"`` (rational-quadratic spline, :mod:`flows.splines`).
        reverse: reversed variable order.
        hidden, context_features: of the :class:`MADE` conditioner.
        bins, bound: of the spline transformer.

    Example:
        >>> f = MaskedAutoregressive(4, params_from="output", transformer="rqs", bins=4)
        >>> y = torch.randn(6, 4)
        >>> x, ladj = f.inverse(y)
        >>> torch.allclose(f(x)[0], y, atol=1e-5), ladj.shape
        (True, torch.Size([6]))
    """

    def __init__(self, dim: int, params_from: str, transformer: str = "affine", reverse: bool = False,
                 hidden: int = DEFAULT_HIDDEN, context_features: int = 0, bins: int = SPLINE_BINS,
                 bound: float = SPLINE_BOUND) -> None:
        super().__init__()
        if params_from not in ("output", "input"):
            raise ValueError(f"params_from must be 'output' (MAF) or 'input' (IAF); got {params_from!r}")
        self.dim, self.params_from = int(dim), params_from
        self.transformer = make_transformer(transformer, bins, bound)
        self.net = MADE(dim, self.transformer.n_params, hidden, context_features=context_features, reverse=reverse)

    def _check(self, v: Tensor) -> None:
        if v.size(-1) != self.dim:
            raise ValueError(f"{type(self).__name__} expects {self.dim} coordinates in the last dimension; "
                             f"got shape {tuple(v.shape)}")

    def _solve(self, u: Tensor, context: Optional[Tensor], inverse: bool) -> tuple[Tensor, Tensor]:
        """``v`` with ``v = τ^{±1}(u; MADE(v))``, by ``n`` conditioner passes (see the class docstring)."""
        apply = self.transformer.inverse if inverse else self.transformer
        v = torch.zeros_like(u)
        for _ in range(self.dim):
            v, ladj = apply(u, self.net(v, context))
        return v, ladj

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        if self.params_from == "input":
            return self.transformer(x, self.net(x, context))
        return self._solve(x, context, inverse=False)

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        self._check(y)
        if self.params_from == "output":
            return self.transformer.inverse(y, self.net(y, context))
        return self._solve(y, context, inverse=True)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, params_from={self.params_from!r}"


class MAF(MaskedAutoregressive):
    r"""Masked autoregressive flow layer (Papamakarios, Pavlakou, Murray, NeurIPS 2017): ``y_i = τ(x_i; θ_i(y_{<i}))``
    (affine: ``y_i = x_i·exp(s_i(y_{<i})) + t_i(y_{<i})``), ``log|det ∂y/∂x| = Σ_i log τ'(x_i)``.

    The density direction ``inverse`` is one MADE pass on the data ``y``; sampling (``forward``) takes ``n``.

    Example:
        >>> f = MAF(3)
        >>> y = torch.randn(5, 3)
        >>> x, ladj = f.inverse(y)  # one conditioner pass
        >>> torch.allclose(f(x)[0], y, atol=1e-6)  # n passes
        True
    """

    def __init__(self, dim: int, transformer: str = "affine", reverse: bool = False, hidden: int = DEFAULT_HIDDEN,
                 context_features: int = 0, bins: int = SPLINE_BINS, bound: float = SPLINE_BOUND) -> None:
        super().__init__(dim, "output", transformer, reverse, hidden, context_features, bins, bound)


class IAF(MaskedAutoregressive):
    r"""Inverse autoregressive flow layer (Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling, NeurIPS 2016):
    ``y_i = τ(x_i; θ_i(x_{<i}))`` (affine: ``y_i = x_i·exp(s_i(x_{<i})) + t_i(x_{<i})``),
    ``log|det ∂y/∂x| = Σ_i log τ'(x_i)``.

    Sampling (``forward``) is one MADE pass on the base sample ``x``; the density direction takes ``n``.

    Example:
        >>> f = IAF(3, transformer="rqs", bins=4)
        >>> x = torch.randn(5, 3)
        >>> y, ladj = f(x)  # one conditioner pass
        >>> x2, ladj_inv = f.inverse(y)  # n passes
        >>> torch.allclose(x2, x, atol=1e-5), torch.allclose(ladj_inv, -ladj, atol=1e-5)
        (True, True)
    """

    def __init__(self, dim: int, transformer: str = "affine", reverse: bool = False, hidden: int = DEFAULT_HIDDEN,
                 context_features: int = 0, bins: int = SPLINE_BINS, bound: float = SPLINE_BOUND) -> None:
        super().__init__(dim, "input", transformer, reverse, hidden, context_features, bins, bound)


def _stack(cls: type, transformer: str, dim: int, layers: int, hidden: int, conditioner: str, **kw) -> Transform:
    if conditioner != "mlp":
        raise ValueError(f"autoregressive flows use a MADE (masked MLP) conditioner: conditioner must be 'mlp'; "
                         f"got {conditioner!r}")
    return Compose([cls(dim, transformer, reverse=i % 2 == 1, hidden=hidden, **kw) for i in range(layers)])


@register("maf", on_rn, "masked autoregressive flow, affine (MAF; one-pass density)", lift=True)
def _maf(manifold, dim, **kw) -> Transform:
    return _stack(MAF, "affine", dim, **kw)


@register("iaf", on_rn, "inverse autoregressive flow, affine (IAF; one-pass sampling)", lift=True)
def _iaf(manifold, dim, **kw) -> Transform:
    return _stack(IAF, "affine", dim, **kw)


@register("maf-rqs", on_rn, "masked autoregressive flow, rational-quadratic splines (MAF-RQS)", lift=True)
def _maf_rqs(manifold, dim, **kw) -> Transform:
    return _stack(MAF, "rqs", dim, **kw)


@register("iaf-rqs", on_rn, "inverse autoregressive flow, rational-quadratic splines (IAF-RQS)", lift=True)
def _iaf_rqs(manifold, dim, **kw) -> Transform:
    return _stack(IAF, "rqs", dim, **kw)
