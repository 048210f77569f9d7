r"""Reference lines for training curves (no flows are built here)."""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

_LOG_2PI_E = math.log(2 * math.pi) + 1.0


def gaussian_optimum_nll(x: Tensor, bias: bool = True) -> Tensor:
    r"""The best mean negative log-likelihood (nats per sample) any affine flow with a standard normal base can
    reach on the data ``x`` (Liao & He, "Jacobian determinant of normalizing flows", arXiv 2102.06539).

    An affine flow ``y = Az + b``, ``z ~ N(0, I)``, is the Gaussian ``N(b, AAᵀ)``; its mean NLL on ``x`` is
    minimised at ``b = x̄``, ``AAᵀ = Σ`` (the maximum-likelihood covariance, normalised by ``N``), where it equals

    ``½ log det(2πe Σ) = ½ Σ_i log(2πe λ_i(Σ))``;

    without a bias (``b = 0``) it is ``½ Σ_i log(2πe λ_i(E[xxᵀ]))`` with the second moment ``E[xxᵀ] = XᵀX / N``.
    No affine flow does better on these data (a trained one approaches it from above), and a deeper non-linear
    flow beats it only by modelling non-Gaussian structure: plot it as a reference line for training curves.

    Args:
        x: data of shape ``(N, D)`` (points of ℝᴰ, or tangent coordinates), ``N > D``.
        bias: whether the affine flow has a translation ``b``.

    Returns:
        A 0-d tensor (in ``x``'s dtype; computed in float64).

    Raises:
        ValueError: ``x`` is not ``(N, D)``, or its (second-moment) covariance is singular (e.g. ``N ≤ D``, or a
            constant coordinate): then an affine flow's NLL is unbounded below.

    Example:
        >>> x = torch.randn(10000, 2, dtype=torch.float64) * torch.tensor([1.0, 3.0], dtype=torch.float64)
        >>> nll = gaussian_optimum_nll(x)   # ≈ ½ log det(2πe diag(1, 9)) = log(2πe) + log 3 ≈ 3.94
        >>> abs(float(nll) - (math.log(2 * math.pi * math.e) + math.log(3.0))) < 0.02
        True
    """
    if x.dim() != 2:
        raise ValueError(f"gaussian_optimum_nll expects data of shape (N, D); got shape {tuple(x.shape)}")
    n, d = x.shape
    xd = x.detach().to(torch.float64)
    if bias:
        xd = xd - xd.mean(0)
    moment = xd.T @ xd / n
    sign, logdet = torch.linalg.slogdet(moment)
    if n <= d or sign <= 0 or not torch.isfinite(logdet):
        raise ValueError(
            f"the {'covariance' if bias else 'second moment'} of x ({n} samples in {d} dims) is singular, so an "
            "affine flow's NLL is unbounded below; use more samples than dimensions and drop constant coordinates"
        )
    return (0.5 * (d * _LOG_2PI_E + logdet)).to(x.dtype)
