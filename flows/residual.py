r"""Invertible residual networks (i-ResNet; Behrmann, Grathwohl, Chen, Duvenaud & Jacobsen, ICML 2019):
``y = x + F(x)`` with ``Lip(F) < 1``, a fixed-point inverse and a power-series log-determinant; optionally the
Russian-roulette estimator of Residual Flows (Chen, Behrmann, Duvenaud & Jacobsen, NeurIPS 2019).

Registered as ``"iresnet"`` (and ``"iresnet@lorentz"``), with the exact-trace series (the default), whose
truncation error is below :data:`~flows.constants.IRESNET_LOGDET_TOLERANCE`.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from .constants import (DEFAULT_HIDDEN, DEFAULT_HIDDEN_LAYERS, IRESNET_INVERSE_TOLERANCE, IRESNET_LIPSCHITZ,
                        IRESNET_LOGDET_TOLERANCE, IRESNET_MAX_ITER, IRESNET_ROULETTE_EXACT_TERMS,
                        IRESNET_ROULETTE_P, OUTPUT_INIT_SCALE)
from .linear_lu import _no_conditioner, check_dim
from .registry import on_rn, register
from .transform import Compose, Transform

Tensor = torch.Tensor

LOGDET_METHODS = ("exact", "hutchinson", "roulette")


class SpectralCap(nn.Module):
    r"""Parametrisation ``W ↦ W·min(1, c/σ_max(W))``: the layer's Lipschitz constant (spectral norm) is at most
    ``c`` (i-ResNet's spectral normalisation, their Eq. 7).

    ``σ_max`` is computed exactly (``torch.linalg.matrix_norm(W, 2)``) on every call rather than by
    ``torch.nn.utils.parametrizations.spectral_norm``'s power iteration: power iteration underestimates ``σ_max``
    (so the bound ``Lip < 1`` that the inverse and the series rely on would not be guaranteed), and it updates
    its state on every training-mode call, so two calls of the flow would differ (the transform contract asks
    for deterministic, cache-free maps). For the conditioner sizes used here the SVD is cheap.

    Example:
        >>> layer = nn.Linear(4, 4)
        >>> _ = parametrize.register_parametrization(layer, "weight", SpectralCap(0.9))
        >>> bool(torch.linalg.matrix_norm(layer.weight, 2) <= 0.9 + 1e-6)
        True
    """

    def __init__(self, coeff: float = IRESNET_LIPSCHITZ) -> None:
        super().__init__()
        self.coeff = coeff

    def forward(self, weight: Tensor) -> Tensor:
        sigma = torch.linalg.matrix_norm(weight, ord=2)
        return weight * torch.clamp(self.coeff / sigma, max=1.0)


def lipschitz_mlp(dim: int, hidden: int = DEFAULT_HIDDEN, hidden_layers: int = DEFAULT_HIDDEN_LAYERS,
                  coeff: float = IRESNET_LIPSCHITZ) -> nn.Sequential:
    """``Linear → tanh → … → Linear`` with every weight capped at spectral norm ``coeff`` (:class:`SpectralCap`);
    ``Lip ≤ coeff^(hidden_layers + 1)``. The last layer starts small, so the block starts near the identity."""
    sizes = [dim] + [hidden] * hidden_layers + [dim]
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = nn.Linear(a, b)
        if i == len(sizes) - 2:
            with torch.no_grad():
                layer.weight.mul_(OUTPUT_INIT_SCALE)
                layer.bias.mul_(OUTPUT_INIT_SCALE)
        parametrize.register_parametrization(layer, "weight", SpectralCap(coeff))
        mods += [layer, nn.Tanh()]
    return nn.Sequential(*mods[:-1])


def series_terms(lipschitz: float, dim: int, tol: float = IRESNET_LOGDET_TOLERANCE) -> int:
    r"""Smallest ``N`` with ``n·L^{N+1}/((N+1)(1 − L)) ≤ tol``: the truncation error of
    ``log det(I + J) = Σ_{k≤N} (−1)^{k+1} tr(J^k)/k`` when ``‖J‖₂ ≤ L`` (``|tr J^k| ≤ n·L^k``).

    Example:
        >>> series_terms(0.9 ** 3, 5)
        54
    """
    if not 0 <= lipschitz < 1:
        raise ValueError(f"the power series needs a Lipschitz bound in [0, 1); got {lipschitz}")
    n = 1
    while dim * lipschitz ** (n + 1) / ((n + 1) * (1 - lipschitz)) > tol:
        n += 1
    return n


def _probe(like: Tensor, kind: str) -> Tensor:
    if kind == "gaussian":
        return torch.randn_like(like)
    if kind == "rademacher":
        return torch.randint_like(like, 2) * 2 - 1
    raise ValueError(f"probe must be 'gaussian' or 'rademacher'; got {kind!r}")


def logdet_power_series(jvp_t: Callable[[Tensor], Tensor], x: Tensor, terms: int, method: str = "exact",
                        probe: str = "gaussian", n_probes: int = 1) -> Tensor:
    r"""``log det(I + J) = Σ_{k≥1} (−1)^{k+1} tr(J^k)/k`` (valid for ``‖J‖₂ < 1``), per batch element.

    ``jvp_t(v)`` returns ``vᵀJ`` (a vector-Jacobian product, row vectors ``(..., n)``). Methods:

    * ``"exact"``: the full Jacobian from ``n`` products, ``tr(J^k)`` from its powers; ``terms`` terms.
    * ``"hutchinson"``: ``tr(J^k) ≈ vᵀJ^k v`` with ``v`` Gaussian or Rademacher (``E[vvᵀ] = I``, unbiased for
      each term), averaged over ``n_probes``; ``terms`` terms (biased only by truncation).
    * ``"roulette"``: Residual Flows' unbiased estimator: :data:`~flows.constants.IRESNET_ROULETTE_EXACT_TERMS`
      terms, then ``K ~ Geometric(p)`` more with term ``k`` divided by ``P(K ≥ k − n₀)``; Hutchinson traces.
    """
    n = x.size(-1)
    if method == "exact":
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        rows = [jvp_t(eye[i].expand_as(x)) for i in range(n)]
        jac = torch.stack(rows, dim=-2)  # J[..., i, :] = ∂F_i/∂x
        power, total = jac, x.new_zeros(x.shape[:-1])
        for k in range(1, terms + 1):
            total = total + (-1) ** (k + 1) * torch.diagonal(power, dim1=-2, dim2=-1).sum(-1) / k
            if k < terms:
                power = power @ jac
        return total
    if method not in ("hutchinson", "roulette"):
        raise ValueError(f"logdet method must be one of {LOGDET_METHODS}; got {method!r}")
    weights = [1.0] * terms
    if method == "roulette":
        p = IRESNET_ROULETTE_P
        extra = int(torch.distributions.Geometric(probs=torch.tensor(p)).sample())  # P(K ≥ j) = (1 − p)^j
        weights = [1.0] * IRESNET_ROULETTE_EXACT_TERMS + [(1 - p) ** -j for j in range(1, extra + 1)]
    total = x.new_zeros(x.shape[:-1])
    for _ in range(n_probes):
        v = _probe(x, probe)
        w = v
        for k, weight in enumerate(weights, start=1):
            w = jvp_t(w)
            total = total + (-1) ** (k + 1) * weight * (w * v).sum(-1) / k
    return total / n_probes


class InvertibleResidual(Transform):
    r"""i-ResNet block (Behrmann et al. 2019): ``y = x + F(x)``, ``F`` an MLP (tanh) whose linear layers have
    spectral norm ``≤ c`` (:class:`SpectralCap`), so ``Lip(F) ≤ L = c^{#layers} < 1`` and the map is a
    bi-Lipschitz bijection of ℝⁿ.

    * ``log|det ∂y/∂x| = log det(I + J_F) = Σ_{k≥1} (−1)^{k+1} tr(J_F^k)/k`` (their Eq. 8; :func:`logdet_power_series`):
      ``logdet="exact"`` (default) takes the full Jacobian and ``N`` terms with
      ``n·L^{N+1}/((N+1)(1 − L)) ≤ 1e-8`` (:func:`series_terms`; ``N = 54`` for ``n = 5``, ``L = 0.729``);
      ``"hutchinson"`` uses vector-Jacobian products and a Gaussian or Rademacher probe (unbiased per term,
      for large ``n``; ``terms`` default 10); ``"roulette"`` is Residual Flows' unbiased Russian-roulette estimator
      (Chen et al. 2019). The stochastic estimators are for training; they make the two directions disagree.
    * Inverse: ``x ← y − F(x)`` from ``x = y`` until ``‖Δx‖∞ ≤ tol·(1 − L)/L``, so ``‖x − x*‖ ≤ tol``
      (:attr:`inverse_tolerance`, Banach's fixed-point theorem). It is differentiable: one step
      ``x = y − F(x*)`` is taken with autograd, and a hook replaces its incoming gradient ``g`` by
      ``(I + J_F)^{-T} g`` (solved by the same contraction), which makes first derivatives in ``y`` and the
      parameters exact (implicit-function theorem; second derivatives through the inverse are not supported).

    ``explicit="forward"`` (default) makes ``forward`` (base → data) the explicit map ``x + F(x)``, as in the
    issue; ``explicit="inverse"`` makes the density direction explicit (data → base ``x = y + F(y)``, as i-ResNet
    uses it for density estimation: one pass per ``log_prob``) and sampling the fixed point.

    Args:
        dim: dimension ``n``.
        hidden: width of ``F``; ``hidden_layers``: its number of hidden layers.
        lipschitz: the cap ``c`` per linear layer.
        logdet: ``"exact"``, ``"hutchinson"`` or ``"roulette"``.
        terms: number of series terms (default: from the truncation bound for ``"exact"``, 10 otherwise).
        probe, n_probes: the Hutchinson probe distribution and count.
        explicit: which direction is the explicit map.

    Example:
        >>> f = InvertibleResidual(3, hidden=16).double()
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> y, ladj = f(x)
        >>> x2, ladj_inv = f.inverse(y)
        >>> bool(torch.allclose(x2, x, atol=1e-9)), bool(torch.allclose(ladj_inv, -ladj))
        (True, True)
    """

    def __init__(self, dim: int, hidden: int = DEFAULT_HIDDEN, hidden_layers: int = DEFAULT_HIDDEN_LAYERS,
                 lipschitz: float = IRESNET_LIPSCHITZ, logdet: str = "exact", terms: Optional[int] = None,
                 probe: str = "gaussian", n_probes: int = 1, explicit: str = "forward") -> None:
        super().__init__()
        if not 0 < lipschitz < 1:
            raise ValueError(f"lipschitz must be in (0, 1) for the map to be invertible; got {lipschitz}")
        if logdet not in LOGDET_METHODS:
            raise ValueError(f"logdet must be one of {LOGDET_METHODS}; got {logdet!r}")
        if explicit not in ("forward", "inverse"):
            raise ValueError(f"explicit must be 'forward' or 'inverse'; got {explicit!r}")
        self.dim = dim
        self.net = lipschitz_mlp(dim, hidden, hidden_layers, lipschitz)
        self.lipschitz_bound = lipschitz ** (hidden_layers + 1)
        self.logdet, self.probe, self.n_probes, self.explicit = logdet, probe, n_probes, explicit
        self.terms = terms if terms is not None else (
            series_terms(self.lipschitz_bound, dim) if logdet == "exact" else 10)
        self.inverse_tolerance = IRESNET_INVERSE_TOLERANCE

    def _explicit(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(x + F(x), log det(I + J_F(x)))``."""
        grad_on = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x.view_as(x) if x.requires_grad else x.detach().requires_grad_()
            fx = self.net(xg)

            def vjp(v: Tensor) -> Tensor:
                return torch.autograd.grad(fx, xg, v, create_graph=grad_on, retain_graph=True)[0]

            ladj = logdet_power_series(vjp, xg, self.terms, self.logdet, self.probe, self.n_probes)
        y = xg + fx
        if not grad_on:
            y, ladj = y.detach(), ladj.detach()
        return y, ladj

    def _tolerance(self, z: Tensor, relative: bool = False) -> float:
        """Stopping threshold on ``‖Δ‖∞`` of the contractions: ``tol·(1 − L)/L`` bounds the distance to the fixed
        point by ``tol`` (absolute for the inverse; relative to ``‖g‖∞`` for the implicit backward), with a floor of
        a few ulps of ``‖z‖∞`` so that low precision still terminates."""
        scale = float(z.detach().abs().max()) if z.numel() else 1.0
        lip = self.lipschitz_bound
        tol = self.inverse_tolerance * (1 - lip) / lip * (scale if relative else 1.0)
        return max(tol, 8 * torch.finfo(z.dtype).eps * (1 + scale))

    def _contract(self, step: Callable[[Tensor], Tensor], start: Tensor, tol: float) -> Tensor:
        z = start
        for _ in range(IRESNET_MAX_ITER):
            new = step(z)
            if not z.numel() or float((new - z).abs().max()) <= tol:
                return new
            z = new
        raise RuntimeError(f"i-ResNet fixed-point iteration did not reach {tol:.1e} in {IRESNET_MAX_ITER} steps")

    def _implicit(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` with ``x + F(x) = y`` and ``−log det(I + J_F(x))``."""
        with torch.no_grad():
            x_star = self._contract(lambda z: y - self.net(z), y, self._tolerance(y))
        needs_graph = torch.is_grad_enabled() and (y.requires_grad or any(p.requires_grad for p in self.parameters()))
        if not needs_graph:
            return x_star, -self._explicit(x_star)[1]
        x0 = x_star.detach().requires_grad_()
        fx0 = self.net(x0)
        x = y - fx0  # value x* (to the tolerance); its gradient is corrected by the hook

        def implicit_grad(g: Tensor) -> Tensor:
            def step(v: Tensor) -> Tensor:
                return g - torch.autograd.grad(fx0, x0, v, retain_graph=True)[0]

            with torch.enable_grad():
                return self._contract(step, g, self._tolerance(g, relative=True))

        x.register_hook(implicit_grad)
        return x, -self._explicit(x)[1]

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_dim(x, self.dim, type(self).__name__)
        if self.explicit == "forward":
            return self._explicit(x)
        return self._implicit(x)

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_dim(y, self.dim, type(self).__name__)
        if self.explicit == "forward":
            return self._implicit(y)
        return self._explicit(y)


@register("iresnet", on_rn, "invertible residual blocks x + F(x), Lip(F) < 1 (i-ResNet, Behrmann et al. "
          "2019)", lift=True)
def _iresnet(manifold, dim, layers, hidden, conditioner, **kw) -> Transform:
    _no_conditioner("iresnet", conditioner)
    return Compose([InvertibleResidual(dim, hidden=hidden, **kw) for _ in range(layers)])
