"""Volume-preserving and elementwise linear layers of ℝⁿ (usable in tangent coordinates of any manifold)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .transform import Transform

Tensor = torch.Tensor


class Permutation(Transform):
    r"""``y = x[..., π]`` for a fixed permutation ``π`` (reversal by default); ``log|det| = 0``.

    Example:
        >>> f = Permutation(3)
        >>> f(torch.tensor([[1.0, 2.0, 3.0]]))[0]
        tensor([[3., 2., 1.]])
    """

    def __init__(self, dim: int, permutation: Optional[Tensor] = None) -> None:
        super().__init__()
        perm = torch.arange(dim - 1, -1, -1) if permutation is None else torch.as_tensor(permutation)
        if sorted(perm.tolist()) != list(range(dim)):
            raise ValueError(f"permutation must be a permutation of range({dim}); got {perm.tolist()}")
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return x.index_select(-1, self.perm), x.new_zeros(x.shape[:-1])

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return y.index_select(-1, self.inv_perm), y.new_zeros(y.shape[:-1])


class ActNorm(Transform):
    r"""Activation normalisation (Kingma & Dhariwal 2018): ``y = x ⊙ exp(s) + b``, ``log|det| = Σ s``.

    Data-dependent initialisation on the first call in training mode: in the density direction (``inverse``)
    the data are standardised; in the sampling direction (``forward``) the outputs are.

    Example:
        >>> f = ActNorm(2)
        >>> x, _ = f.inverse(torch.randn(100, 2) * 3 + 1)
        >>> bool(x.mean(0).abs().max() < 1e-5)
        True
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.shift = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _init(self, z: Tensor, density_direction: bool) -> None:
        flat = z.reshape(-1, z.size(-1))
        if flat.size(0) < 2:
            return
        mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)
        if density_direction:  # x = (y - b) e^{-s} standardised: b = mean, s = log std
            self.shift.copy_(mean)
            self.log_scale.copy_(std.log())
        else:  # y = x e^{s} + b standardised
            self.log_scale.copy_(-std.log())
            self.shift.copy_(-mean / std)
        self.initialized.fill_(True)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self._init(x, density_direction=False)
        return x * self.log_scale.exp() + self.shift, self.log_scale.sum().expand(x.shape[:-1])

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self._init(y, density_direction=True)
        return (y - self.shift) * (-self.log_scale).exp(), (-self.log_scale.sum()).expand(y.shape[:-1])
