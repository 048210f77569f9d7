r"""Dense invertible linear layers ``y = Ax + b`` of ℝⁿ with ``O(n)`` log-determinants: LU (``A = PLU``) and
QR (``A = QR``, ``Q`` a product of Householder reflections).

Both are exact in both directions (triangular solves); see Kobyzev, Prince & Brubaker (TPAMI 2020) §3.2 and
Kingma & Dhariwal (2018) for the LU parameterisation. Registered as ``"linear-lu"`` and ``"linear-qr"`` (and
lifted to Hⁿ as ``"linear-lu@lorentz"``, ``"linear-qr@lorentz"``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .registry import on_rn, register
from .transform import Compose, Transform

Tensor = torch.Tensor


def check_dim(z: Tensor, dim: int, who: str) -> None:
    """``ValueError`` unless the last dimension of ``z`` is ``dim``."""
    if z.dim() == 0 or z.size(-1) != dim:
        raise ValueError(f"{who} acts on vectors of dimension {dim}; got a tensor of shape {tuple(z.shape)}")


def householder(z: Tensor, vectors: Tensor, transpose: bool = False) -> Tensor:
    r"""Apply ``Q = H_1 H_2 ⋯ H_K`` (or ``Qᵀ`` with ``transpose=True``) to the rows of ``z``, where
    ``H_k = I − 2 v_k v_kᵀ / ‖v_k‖²`` is the reflection across the hyperplane orthogonal to ``vectors[k]``.

    Any orthogonal ``n×n`` matrix is a product of at most ``n`` reflections, so ``K = n`` spans all of O(n).

    Example:
        >>> v = torch.randn(3, 3, dtype=torch.float64)
        >>> z = torch.randn(5, 3, dtype=torch.float64)
        >>> bool(torch.allclose(householder(householder(z, v), v, transpose=True), z))
        True
    """
    unit = vectors / torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)
    order = range(unit.size(0)) if transpose else reversed(range(unit.size(0)))
    for k in order:
        u = unit[k]
        z = z - 2 * (z @ u).unsqueeze(-1) * u
    return z


def _flat(z: Tensor) -> tuple[Tensor, torch.Size]:
    return z.reshape(-1, z.size(-1)), z.shape


class LULinear(Transform):
    r"""``y = Ax + b`` with ``A = P L U`` (Kingma & Dhariwal 2018, "Glow", §3.2): ``P`` a fixed permutation, ``L``
    unit lower-triangular, ``U`` upper-triangular with diagonal ``U_ii = sign_i · exp(s_i)`` (fixed signs,
    learned log-magnitudes ``s``), so ``log|det A| = Σ_i log|U_ii| = Σ_i s_i`` in ``O(n)``.

    The inverse ``x = U⁻¹ L⁻¹ Pᵀ (y − b)`` is two triangular solves (exact). Initialised, as in Glow, at the LU
    decomposition of a random rotation (``log|det| = 0``, all coordinates mixed). Parameters of the strict
    triangles are stored as full matrices and masked.

    Args:
        dim: dimension ``n``.

    Example:
        >>> f = LULinear(3).double()
        >>> x = torch.randn(4, 3, dtype=torch.float64)
        >>> y, ladj = f(x)
        >>> bool(torch.allclose(ladj, f.log_diag.sum().expand(4)))
        True
        >>> bool(torch.allclose(f.inverse(y)[0], x))
        True
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        q, _ = torch.linalg.qr(torch.randn(dim, dim))
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("perm", p.argmax(dim=1))  # (P v)_i = v[perm[i]]
        self.register_buffer("inv_perm", torch.argsort(p.argmax(dim=1)))
        self.register_buffer("sign", torch.sign(diag))
        self.register_buffer("lower_mask", torch.tril(torch.ones(dim, dim), -1))
        self.register_buffer("upper_mask", torch.triu(torch.ones(dim, dim), 1))
        self.lower = nn.Parameter(torch.tril(lower, -1))
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_diag = nn.Parameter(diag.abs().log())
        self.bias = nn.Parameter(torch.zeros(dim))

    def factors(self) -> tuple[Tensor, Tensor]:
        """``(L, U)``: unit lower- and upper-triangular factors."""
        eye = torch.eye(self.dim, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.upper_mask + torch.diag(self.sign * self.log_diag.exp())
        return lower, upper

    def weight(self) -> Tensor:
        """The matrix ``A = P L U``."""
        lower, upper = self.factors()
        return (lower @ upper)[self.perm]

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_dim(x, self.dim, type(self).__name__)
        lower, upper = self.factors()
        y = ((x @ upper.T) @ lower.T).index_select(-1, self.perm) + self.bias
        return y, self.log_diag.sum().expand(x.shape[:-1])

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_dim(y, self.dim, type(self).__name__)
        lower, upper = self.factors()
        z, shape = _flat((y - self.bias).index_select(-1, self.inv_perm))
        z = torch.linalg.solve_triangular(lower.T, z, upper=True, left=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper.T, z, upper=False, left=False)
        return x.reshape(shape), (-self.log_diag.sum()).expand(y.shape[:-1])


class QRLinear(Transform):
    r"""``y = Ax + b`` with ``A = Q R``: ``Q = H_1 ⋯ H_K`` a product of ``K`` Householder reflections
    (:func:`householder`; ``K = n`` by default, which reaches every orthogonal matrix), ``R`` upper-triangular
    with a positive diagonal ``R_ii = exp(s_i)``. ``log|det A| = Σ_i s_i`` (``|det Q| = 1``); the inverse
    ``x = R⁻¹ Qᵀ (y − b)`` is exact. Kobyzev et al. (TPAMI 2020) §3.2 ("QR decomposition"); the Householder
    parameterisation of ``Q`` follows Tomczak & Welling (2016).

    Args:
        dim: dimension ``n``.
        reflections: number ``K`` of Householder reflections (default ``n``).

    Example:
        >>> f = QRLinear(3).double()
        >>> x = torch.randn(4, 3, dtype=torch.float64)
        >>> y, ladj = f(x)
        >>> bool(torch.allclose(ladj, torch.linalg.slogdet(f.weight())[1].expand(4)))
        True
        >>> bool(torch.allclose(f.inverse(y)[0], x))
        True
    """

    def __init__(self, dim: int, reflections: Optional[int] = None) -> None:
        super().__init__()
        self.dim = dim
        self.vectors = nn.Parameter(torch.randn(reflections or dim, dim))
        self.register_buffer("upper_mask", torch.triu(torch.ones(dim, dim), 1))
        self.upper = nn.Parameter(torch.zeros(dim, dim))
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def triangular(self) -> Tensor:
        """The factor ``R``."""
        return self.upper * self.upper_mask + torch.diag(self.log_diag.exp())

    def weight(self) -> Tensor:
        """The matrix ``A = Q R``."""
        return householder(self.triangular().T, self.vectors).T

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_dim(x, self.dim, type(self).__name__)
        y = householder(x @ self.triangular().T, self.vectors) + self.bias
        return y, self.log_diag.sum().expand(x.shape[:-1])

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_dim(y, self.dim, type(self).__name__)
        z, shape = _flat(householder(y - self.bias, self.vectors, transpose=True))
        x = torch.linalg.solve_triangular(self.triangular().T, z, upper=False, left=False)
        return x.reshape(shape), (-self.log_diag.sum()).expand(y.shape[:-1])


def _no_conditioner(name: str, conditioner: str) -> None:
    if conditioner != "mlp":
        raise ValueError(f"flow {name!r} has no conditioner network; got conditioner={conditioner!r} (use 'mlp')")


@register("linear-lu", on_rn, "dense linear y = PLU x + b (Glow's LU parameterisation)", lift=True)
def _linear_lu(manifold, dim, layers, hidden, conditioner, **kw) -> Transform:
    _no_conditioner("linear-lu", conditioner)
    return Compose([LULinear(dim, **kw) for _ in range(layers)])


@register("linear-qr", on_rn, "dense linear y = QR x + b (Householder Q, triangular R)", lift=True)
def _linear_qr(manifold, dim, layers, hidden, conditioner, **kw) -> Transform:
    _no_conditioner("linear-qr", conditioner)
    return Compose([QRLinear(dim, **kw) for _ in range(layers)])
