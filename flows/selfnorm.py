r"""Self-normalizing flows (Keller, Peters, Jaini, Hoogeboom, Forré, Welling; ICML 2021, arXiv 2011.07248).

A dense or convolutional layer ``z = Wx + b`` is trained without ever computing ``det W`` or ``W⁻¹``: it carries a
learned approximate inverse ``x̂ = R(z − b)`` and the log-det gradient ``∂ log|det W|/∂W = W⁻ᵀ`` is replaced by
``Rᵀ``, an O(D²) step instead of O(D³).

**Which map is W.** In the paper ``f(x) = Wx + b`` maps *data to latent*: the density direction. In this library
a :class:`~flows.Transform` maps base → data, so ``W`` is the matrix of :meth:`SelfNormLinear.inverse`
(data ``y`` ↦ base point ``W y + b``, ``ladj = log|det W|``), which is what ``Flow.log_prob`` and training evaluate;
:meth:`SelfNormLinear.forward` is the paper's ``g``, the sampling direction, base point ``x`` ↦ ``W⁻¹(x − b)`` by a
solve (``exact=True``, the default, so the transform contract holds) or ``R(x − b)`` (``exact=False``, how the
paper samples). Both directions are exact by default (``inverse_tolerance = None``).

**Training** (the paper's notation from here on: ``x`` a layer's input on the data side, ``z`` its output).
:func:`self_normalizing_objective` maximises ``½ log p_f(x) + ½ log p_g(x) − λ Σ_k ‖g_k(f_k(h_k)) −
h_k‖²`` over a :class:`~flows.Flow` that mixes these layers with ordinary ones. Inside it (the
:func:`self_normalizing` context, in training mode) each layer reports ``ladj = 0`` and a custom backward supplies
(``δ_z = ∂ℓ/∂z``, ``δ_x = Wᵀδ_z``, ``u = z − b = Wx``, ``s`` = the upstream gradient of the reported log-det):

* ``∂/∂W ≈ ½(δ_z xᵀ + s·Rᵀ)`` (the ½ log p_f half: ``W⁻ᵀ ≈ Rᵀ``),
* ``∂/∂R ≈ ½(−δ_x uᵀ − s·Wᵀ)`` (the ½ log p_g half, ``p_g`` parameterised by ``R``: ``R⁻ᵀ ≈ Wᵀ``),
* ``∂/∂b = δ_z`` and ``∂/∂x = Wᵀδ_z`` (both halves agree, so other layers get the full gradient),

plus the ordinary autograd gradient of the reconstruction term (its input ``h_k`` detached, so it trains only that
layer's ``W`` and ``R``). With ``R = W⁻¹`` these are exactly half the true gradients of ``log p_f`` and ``log p_g``.
Inside the context the values returned by ``Flow.log_prob`` leave these layers' log-dets out; outside it every
log-det is exact (``slogdet``), as the transform contract requires, in training mode too.

**Stability.** ``R = W⁻¹`` is a fixed point of these dynamics, but an attracting one only where the reconstruction
term is strong enough: for one 1-D layer with input variance ``σ²`` the linearised dynamics have determinant
``4λσ² − ½``, so it attracts iff ``λσ² > 1/8`` (tested). Inputs with a direction of small variance (strongly
correlated coordinates: an :class:`~flows.ActNorm` standardises coordinates, not directions) need a larger λ, or R
drifts away from W⁻¹ and the surrogate gradient with it.

For a convolution ``z = w ⋆ x`` (same padding, stride 1) the projection of ``Rᵀ`` onto the convolution's
parameters is ``flip(r) ⊙ m``: ``flip`` swaps in/out channels and mirrors the kernel, ``m`` counts each tap's
occurrences (:func:`tap_counts`).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input, conv2d_weight

from .constants import LEAKY_RELU_SLOPE, SELFNORM_INIT_NOISE, SELFNORM_RECONSTRUCTION_WEIGHT
from .distribution import Flow
from .transform import Transform

Tensor = torch.Tensor

__all__ = [
    "LeakyReLU", "SelfNormConv2d", "SelfNormLayer", "SelfNormLinear", "SelfNormObjective", "flip_kernel",
    "self_normalizing", "self_normalizing_objective", "tap_counts",
]


# ----------------------------------------------------------------------------------------------------------
# surrogate autograd functions
# ----------------------------------------------------------------------------------------------------------

class _SelfNormLinearFn(torch.autograd.Function):
    """``(x, W, b, R) ↦ (z = xWᵀ + b, 0)`` on rows ``x`` of shape ``(N, D)``, with the surrogate backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, inv: Tensor) -> tuple[Tensor, Tensor]:
        u = x @ weight.T
        ctx.save_for_backward(x, weight, inv, u)
        return u + bias, x.new_zeros(x.shape[0])

    @staticmethod
    def backward(ctx, gz: Tensor, gld: Tensor):
        x, weight, inv, u = ctx.saved_tensors
        gx = gz @ weight  # rows δ_xᵀ = (Wᵀδ_z)ᵀ
        s = gld.sum()
        gw = 0.5 * (gz.T @ x + s * inv.T) if ctx.needs_input_grad[1] else None
        gb = gz.sum(0) if ctx.needs_input_grad[2] else None
        gr = 0.5 * (-(gx.T @ u) - s * weight.T) if ctx.needs_input_grad[3] else None
        return (gx if ctx.needs_input_grad[0] else None), gw, gb, gr


def flip_kernel(kernel: Tensor) -> Tensor:
    """``flip(k)``: swap the in/out channels and mirror the taps; the kernel of the transposed convolution."""
    return kernel.transpose(0, 1).flip(-2, -1)


def tap_counts(height: int, width: int, kernel_size: int, *, dtype: torch.dtype = torch.float64,
               device: Optional[torch.device] = None) -> Tensor:
    r"""``m``: how often each tap of a same-padded ``k×k`` kernel meets a pixel of an ``H×W`` image.

    It is the weight gradient of a convolution with all-ones input and all-ones output gradient (shape ``(k, k)``);
    for a 1×1 kernel ``m = HW``.

    Example:
        >>> tap_counts(3, 3, 3)
        tensor([[4., 6., 4.],
                [6., 9., 6.],
                [4., 6., 4.]], dtype=torch.float64)
    """
    ones = torch.ones(1, 1, height, width, dtype=dtype, device=device)
    return conv2d_weight(ones, (1, 1, kernel_size, kernel_size), ones, padding=kernel_size // 2)[0, 0]


class _SelfNormConvFn(torch.autograd.Function):
    """``(x, w, b, r) ↦ (z = w ⋆ x + b, 0)`` on images ``(N, C, H, W)``, with the surrogate backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, inv: Tensor) -> tuple[Tensor, Tensor]:
        pad = weight.shape[-1] // 2
        u = F.conv2d(x, weight, padding=pad)
        ctx.save_for_backward(x, weight, inv, u)
        return u + bias.view(1, -1, 1, 1), x.new_zeros(x.shape[0])

    @staticmethod
    def backward(ctx, gz: Tensor, gld: Tensor):
        x, weight, inv, u = ctx.saved_tensors
        k = weight.shape[-1]
        pad = k // 2
        gx = conv2d_input(x.shape, weight, gz, padding=pad)
        s = gld.sum()
        m = tap_counts(x.shape[-2], x.shape[-1], k, dtype=x.dtype, device=x.device)
        gw = gb = gr = None
        if ctx.needs_input_grad[1]:
            gw = 0.5 * (conv2d_weight(x, weight.shape, gz, padding=pad) + s * flip_kernel(inv) * m)
        if ctx.needs_input_grad[2]:
            gb = gz.sum((0, 2, 3))
        if ctx.needs_input_grad[3]:
            gr = 0.5 * (-conv2d_weight(u, inv.shape, gx, padding=pad) - s * flip_kernel(weight) * m)
        return (gx if ctx.needs_input_grad[0] else None), gw, gb, gr


# ----------------------------------------------------------------------------------------------------------
# layers
# ----------------------------------------------------------------------------------------------------------

class SelfNormLayer(Transform):
    r"""Base of the self-normalizing layers: density direction ``z = W y + b`` (:meth:`inverse`), sampling
    direction ``W⁻¹(x − b)`` or ``R(x − b)`` (:meth:`forward`).

    Subclasses define ``_map(h, kernel)`` (the linear map of a parameter, no bias), ``_bias()`` (per
    coordinate), ``_dense(kernel)`` (its ``D×D`` matrix) and ``_surrogate(y)``.
    """

    weight: nn.Parameter
    inv_weight: nn.Parameter
    bias: nn.Parameter

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        #: set by :func:`self_normalizing`: use the surrogate gradient (in training mode) …
        self._surrogate = False
        #: … and append each call's per-sample reconstruction error ``‖g(f(h)) − h‖²`` here
        self._reconstructions: Optional[list[Tensor]] = None

    # -- subclass hooks ---------------------------------------------------------------------------------
    def _map(self, h: Tensor, kernel: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _bias(self) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _dense(self, kernel: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _surrogate_apply(self, y: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    # -- public ---------------------------------------------------------------------------------------------
    def dense_weight(self) -> Tensor:
        """``W`` as a ``D×D`` matrix (``z = W y + b`` on flattened inputs)."""
        return self._dense(self.weight)

    def dense_inverse(self) -> Tensor:
        """``R`` as a ``D×D`` matrix."""
        return self._dense(self.inv_weight)

    def logabsdet(self) -> Tensor:
        """``log|det W|`` (exact, ``slogdet``; O(D³))."""
        return torch.linalg.slogdet(self.dense_weight()).logabsdet

    def reconstruction_error(self, y: Tensor) -> Tensor:
        """``‖R W y − y‖²`` per sample (``g(f(y)) = R(W y + b − b)``), batch shape of ``y``."""
        return (self._map(self._map(y, self.weight), self.inv_weight) - y).square().sum(-1)

    def _check(self, t: Tensor) -> None:
        if t.size(-1) != self.dim:
            raise ValueError(f"{type(self).__name__} acts on vectors of size {self.dim}; got shape "
                             f"{tuple(t.shape)} (flatten images to (..., C*H*W))")

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Density direction ``z = W y + b``, ``ladj = log|det W|`` (``0`` with a surrogate gradient inside
        :func:`self_normalizing` in training mode)."""
        self._check(y)
        if self._reconstructions is not None:
            self._reconstructions.append(self.reconstruction_error(y.detach()))
        if self.training and self._surrogate:
            return self._surrogate_apply(y)
        z = self._map(y, self.weight) + self._bias()
        return z, self.logabsdet().expand(y.shape[:-1])

    def forward(self, x: Tensor, context: Optional[Tensor] = None, *, exact: bool = True) -> tuple[Tensor, Tensor]:
        """Sampling direction: ``W⁻¹(x − b)`` by a solve (``exact=True``, ``ladj = −log|det W|``) or the learned
        ``R(x − b)`` (``exact=False``, ``ladj = log|det R|``, the log-det of the map applied)."""
        self._check(x)
        u = x - self._bias()
        if not exact:
            ladj = torch.linalg.slogdet(self.dense_inverse()).logabsdet
            return self._map(u, self.inv_weight), ladj.expand(x.shape[:-1])
        W = self.dense_weight()
        flat = u.reshape(-1, self.dim)
        y = torch.linalg.solve(W.T, flat, left=False)  # rows yᵀ = uᵀ W⁻ᵀ
        return y.reshape(u.shape), (-torch.linalg.slogdet(W).logabsdet).expand(x.shape[:-1])


class SelfNormLinear(SelfNormLayer):
    r"""Self-normalizing dense layer (Keller et al., ICML 2021): ``z = W y + b`` in the density direction, with a
    learned approximate inverse ``ŷ = R(z − b)``.

    ``log p(y) = log p_Z(W y + b) + log|det W|`` is exact outside training; inside :func:`self_normalizing` (used
    by :func:`self_normalizing_objective`) the layer reports ``ladj = 0`` and its backward supplies
    ``∂/∂W ≈ ½(δ_z yᵀ + Rᵀ)``, ``∂/∂R ≈ ½(−δ_y uᵀ − Wᵀ)`` (``u = W y``), an O(D²) step. ``forward`` (base →
    data) is ``W⁻¹(x − b)`` by a solve, or ``R(x − b)`` with ``exact=False``.
    Init: ``W = I + ε``, ``ε ~ N(0, σ²/D)`` (``σ = SELFNORM_INIT_NOISE``), ``R = Wᵀ``, ``b = 0``.

    Args:
        dim: the dimension ``D``.

    Example:
        >>> f = SelfNormLinear(4).double()
        >>> y = torch.randn(8, 4, dtype=torch.float64)
        >>> z, ladj = f.inverse(y)
        >>> torch.allclose(f(z)[0], y), torch.allclose(ladj, -f(z)[1])
        (True, True)
        >>> f(z, exact=False)[0].shape  # sampling with R ≈ W⁻¹
        torch.Size([8, 4])
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        w = torch.eye(dim) + torch.randn(dim, dim) * (SELFNORM_INIT_NOISE / math.sqrt(dim))
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.inv_weight = nn.Parameter(w.T.clone())

    def _map(self, h: Tensor, kernel: Tensor) -> Tensor:
        return h @ kernel.T

    def _bias(self) -> Tensor:
        return self.bias

    def _dense(self, kernel: Tensor) -> Tensor:
        return kernel

    def _surrogate_apply(self, y: Tensor) -> tuple[Tensor, Tensor]:
        z, ld = _SelfNormLinearFn.apply(y.reshape(-1, self.dim), self.weight, self.bias, self.inv_weight)
        return z.reshape(y.shape), ld.reshape(y.shape[:-1])

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class SelfNormConv2d(SelfNormLayer):
    r"""Self-normalizing convolution (Keller et al., ICML 2021): ``z = w ⋆ y + b`` (``C → C`` channels, odd
    ``k×k`` kernel, zero "same" padding, stride 1) in the density direction, approximate inverse ``ŷ = r ⋆ (z − b)``.

    Inputs are flattened images, shape ``(..., C·H·W)`` (channel-major, as ``img.flatten(-3)``), so the layer
    composes with the vector layers of :mod:`flows`. The exact log-det is ``slogdet`` of the dense ``CHW × CHW``
    matrix of the convolution (O((CHW)³)); inside :func:`self_normalizing` the layer reports ``ladj = 0`` and its
    backward uses ``∂ log|det W|/∂w ≈ flip(r) ⊙ m`` (:func:`flip_kernel`, :func:`tap_counts`) and
    ``∂ log|det R|/∂r ≈ flip(w) ⊙ m``. Init: ``w`` = identity tap + noise, ``r = flip(w)`` (so ``R = Wᵀ``).

    Args:
        channels: ``C``.
        height: ``H``.
        width: ``W``.
        kernel_size: odd ``k`` (default 3).

    Example:
        >>> f = SelfNormConv2d(2, 4, 4).double()
        >>> y = torch.randn(5, 2 * 4 * 4, dtype=torch.float64)
        >>> z, ladj = f.inverse(y)
        >>> torch.allclose(f(z)[0], y), ladj.shape
        (True, torch.Size([5]))
    """

    def __init__(self, channels: int, height: int, width: int, kernel_size: int = 3) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"SelfNormConv2d needs an odd kernel_size (same padding); got {kernel_size}")
        super().__init__(channels * height * width)
        self.channels, self.height, self.width, self.kernel_size = channels, height, width, kernel_size
        c, k = channels, kernel_size
        w = torch.randn(c, c, k, k) * (SELFNORM_INIT_NOISE / math.sqrt(c * k * k))
        w[:, :, k // 2, k // 2] += torch.eye(c)
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(c))
        self.inv_weight = nn.Parameter(flip_kernel(w).clone())

    def _images(self, h: Tensor) -> Tensor:
        return h.reshape(-1, self.channels, self.height, self.width)

    def _map(self, h: Tensor, kernel: Tensor) -> Tensor:
        out = F.conv2d(self._images(h), kernel, padding=self.kernel_size // 2)
        return out.reshape(h.shape)

    def _bias(self) -> Tensor:
        return self.bias.repeat_interleave(self.height * self.width)

    def _dense(self, kernel: Tensor) -> Tensor:
        eye = torch.eye(self.dim, dtype=kernel.dtype, device=kernel.device)
        return self._map(eye, kernel).T  # row j of conv(I) is the image of e_j: column j of W

    def _surrogate_apply(self, y: Tensor) -> tuple[Tensor, Tensor]:
        z, ld = _SelfNormConvFn.apply(self._images(y), self.weight, self.bias, self.inv_weight)
        return z.reshape(y.shape), ld.reshape(y.shape[:-1])

    def extra_repr(self) -> str:
        return f"channels={self.channels}, height={self.height}, width={self.width}, kernel_size={self.kernel_size}"


class LeakyReLU(Transform):
    r"""Elementwise leaky ReLU, the nonlinearity between the dense layers of the SNF FC model: density direction
    ``z_i = y_i`` (``y_i ≥ 0``) or ``α y_i`` (``y_i < 0``), ``log|det| = log α · #{i: y_i < 0}``; ``forward`` divides
    the negative coordinates by ``α``. Exact in both directions.

    Args:
        slope: ``α`` in (0, 1] (default ``LEAKY_RELU_SLOPE``).

    Example:
        >>> f = LeakyReLU(0.5)
        >>> f.inverse(torch.tensor([[2.0, -2.0]]))
        (tensor([[ 2., -1.]]), tensor([-0.6931]))
    """

    def __init__(self, slope: float = LEAKY_RELU_SLOPE) -> None:
        if not 0.0 < slope <= 1.0:
            raise ValueError(f"LeakyReLU slope must be in (0, 1]; got {slope}")
        super().__init__()
        self.slope = slope

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        neg = y < 0
        return torch.where(neg, y * self.slope, y), neg.sum(-1).to(y.dtype) * math.log(self.slope)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        neg = x < 0
        return torch.where(neg, x / self.slope, x), neg.sum(-1).to(x.dtype) * -math.log(self.slope)

    def extra_repr(self) -> str:
        return f"slope={self.slope}"


# ----------------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------------

@contextmanager
def self_normalizing(module: nn.Module, surrogate: bool = True) -> Iterator[list[Tensor]]:
    """Within the block, every :class:`SelfNormLayer` of ``module`` uses the surrogate gradient (if ``surrogate``
    and in training mode: ``ladj = 0``, see the module docstring) and appends its per-sample reconstruction
    error ``‖g(f(h)) − h‖²`` (input detached) to the yielded list on each density-direction call.

    Example:
        >>> f = SelfNormLinear(3)
        >>> with self_normalizing(f) as rec:
        ...     z, ladj = f.inverse(torch.randn(2, 3))
        >>> ladj, len(rec)
        (tensor([0., 0.], grad_fn=<ViewBackward0>), 1)
    """
    layers = [m for m in module.modules() if isinstance(m, SelfNormLayer)]
    saved = [(m._surrogate, m._reconstructions) for m in layers]
    recon: list[Tensor] = []
    for m in layers:
        m._surrogate, m._reconstructions = surrogate, recon
    try:
        yield recon
    finally:
        for m, (s, r) in zip(layers, saved):
            m._surrogate, m._reconstructions = s, r


class SelfNormObjective(NamedTuple):
    """What :func:`self_normalizing_objective` returns."""

    #: scalar to minimise: ``−mean(½ log p_f + ½ log p_g − λ Σ_k ‖g_k(f_k(h_k)) − h_k‖²)``
    loss: Tensor
    #: per-sample log-likelihood as computed (with the surrogate, the self-normalizing layers' log-dets are 0)
    log_prob: Tensor
    #: per-sample ``Σ_k ‖g_k(f_k(h_k)) − h_k‖²``
    reconstruction: Tensor


def self_normalizing_objective(flow: Flow, x: Tensor, lam: float = SELFNORM_RECONSTRUCTION_WEIGHT,
                               exact: bool = False) -> SelfNormObjective:
    r"""The self-normalizing objective ``½ log p_f(x) + ½ log p_g(x) − λ Σ_k ‖g_k(f_k(h_k)) − h_k‖²`` on a batch.

    ``flow`` is a :class:`~flows.Flow` whose transform contains :class:`SelfNormLayer` s among ordinary layers
    (ActNorm, :class:`LeakyReLU`, couplings, …). ``exact=False``: the likelihood's gradient with respect to each
    self-normalizing layer is the O(D²) surrogate (module docstring); call it in training mode.
    ``exact=True`` (the comparison): the likelihood is ``log p_f(x)`` with exact log-dets and autograd gradients
    (O(D³); ``p_f = p_g`` when ``R = W⁻¹``), and the same reconstruction term trains ``R``.

    Example:
        >>> from torch.distributions import Independent, Normal
        >>> from flows import ActNorm, Compose
        >>> t = Compose([SelfNormLinear(2), LeakyReLU(), SelfNormLinear(2), ActNorm(2)])
        >>> q = Flow(Independent(Normal(torch.zeros(2), torch.ones(2)), 1), t)
        >>> out = self_normalizing_objective(q, torch.randn(16, 2))
        >>> out.loss.backward()
        >>> out.log_prob.shape, out.reconstruction.shape
        (torch.Size([16]), torch.Size([16]))
    """
    with self_normalizing(flow.transform, surrogate=not exact) as recon:
        log_prob = flow.log_prob(x)
    total = torch.stack(recon).sum(0) if recon else log_prob.new_zeros(log_prob.shape)
    return SelfNormObjective(-(log_prob - lam * total).mean(), log_prob, total)
