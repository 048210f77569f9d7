"""Shared helpers of the manifold tests (exposed through the session fixture ``geo``).

Error model used by every tolerance in ``tests/manifolds`` (``shared/docs/MATH.md`` §7):

* ``EPS[dtype]`` is the unit roundoff (2^-24 for float32, 2^-53 for float64).
* A point at distance ``s`` from the origin of H^n_k has ambient coordinates of size ``~sqrt(k)·cosh(s/sqrt(k))``.
  Rounding them moves the point by at most ``EPS·||x̂||`` in Riemannian distance (the metric pulled back to the
  spatial coordinates is ``I - x̂x̂ᵀ/(k+|x̂|²) <= I``, and ``projx`` recomputes ``x₀``): an *absolute* floor.
* A tangent vector at such a point has ambient coordinates up to ``e^{s/sqrt(k)}`` times its norm; rounding them
  and projecting back onto the tangent space (``proju``) amplifies the error by another ``cosh``: relative
  error ``~EPS·cosh²(s/sqrt(k))`` (``cond``). The hyperboloid H_k is ``sqrt(k)·H_1``, so the conditioning depends on
  ``s/sqrt(k)``; requirements stated for k = 1 ("distance 5") are applied at ``5·sqrt(k)``.

Tangent-vector errors are measured as a Riemannian norm: the Minkowski norm of ``proju(x, û - u)`` computed in
float64 at the projected base point, relative to ``||u||_L`` (``tangent_error``).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from manifolds import Euclidean, Lorentz
from manifolds import lorentz_math as lm

EPS = {torch.float32: 2.0**-24, torch.float64: 2.0**-53}
KS = (0.25, 1.0, 4.0)


def make_manifold(name: str):
    """``"euclidean"`` or ``"lorentz-<k>"`` -> a fresh manifold instance."""
    if name == "euclidean":
        return Euclidean()
    return Lorentz(k=float(name.split("-", 1)[1]))


def is_lorentz(M) -> bool:
    return M.name == "Lorentz"


def kval(M) -> float:
    return float(M.k) if is_lorentz(M) else 1.0


def directions(gen: torch.Generator, batch: int, n: int) -> torch.Tensor:
    d = torch.randn(batch, n, generator=gen, dtype=torch.float64)
    return d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)


def point(M, s: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Float64 point at distance ``s`` (batch) from the origin in the given unit spatial direction."""
    v = direction * s.unsqueeze(-1)
    return lm.expmap0_spatial(v, kval(M)) if is_lorentz(M) else v


def tangent(M, x64: torch.Tensor, r: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Float64 tangent vector of norm ``r`` at ``x64``: origin coordinates ``r·direction`` transported to ``x``."""
    v = direction * r.unsqueeze(-1)
    if not is_lorentz(M):
        return v
    v = torch.cat([torch.zeros_like(v[..., :1]), v], dim=-1)
    return lm.transp0(x64, v, kval(M))


def eff_tangent(M, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The tangent vector the library actually receives: ``proju(projx(x), u)`` in float64."""
    if not is_lorentz(M):
        return u.double()
    k = kval(M)
    return lm.proju(lm.projx(x.double(), k), u.double(), k)


def riem_norm(M, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Riemannian norm (float64) of ``u`` projected onto the tangent space at ``projx(x)``."""
    if not is_lorentz(M):
        return torch.linalg.vector_norm(u.double(), dim=-1)
    k = kval(M)
    x64 = lm.projx(x.double(), k)
    w = lm.proju(x64, u.double(), k)
    return lm.inner(w, w).clamp_min(0).sqrt()


def tangent_error(M, x: torch.Tensor, u_hat: torch.Tensor, u_ref: torch.Tensor) -> torch.Tensor:
    """``||proju(x, û - u_ref)||_L / ||u_ref||_L`` in float64 (batch)."""
    ref = eff_tangent(M, x, u_ref)
    return riem_norm(M, x, u_hat.double() - ref) / riem_norm(M, x, ref)


def dist0(M, x: torch.Tensor) -> torch.Tensor:
    """Float64 distance from the origin of (the projection of) ``x``."""
    if not is_lorentz(M):
        return torch.linalg.vector_norm(x.double(), dim=-1)
    return lm.dist0(x.double(), kval(M))


def spatial_size(M, x: torch.Tensor) -> torch.Tensor:
    """``||x̂||`` (float64): the absolute Riemannian displacement caused by rounding ``x`` is ``<= EPS·||x̂||``."""
    xs = x[..., 1:] if is_lorentz(M) else x
    return torch.linalg.vector_norm(xs.double(), dim=-1)


def cond(M, s: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``EPS·cosh²(s/sqrt(k))``: relative precision of tangent vectors at distance ``s`` (1·EPS on ℝⁿ)."""
    if not is_lorentz(M):
        return torch.full_like(s.double(), EPS[dtype])
    return EPS[dtype] * torch.cosh(s.double() / math.sqrt(kval(M))) ** 2


def point_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Coordinate error of two representations of a point, relative to its size (max over the batch)."""
    a, b = a.double(), b.double()
    m = b.abs().amax(dim=-1, keepdim=True).clamp_min(1.0)  # scaled: coordinates reach 1e303 in float64
    return (torch.linalg.vector_norm((a - b) / m, dim=-1) / torch.linalg.vector_norm(b / m, dim=-1).clamp_min(
        1.0 / m.squeeze(-1))).max()


@pytest.fixture(scope="session")
def geo() -> SimpleNamespace:
    """The helpers above, for the test modules (which cannot import each other under importlib mode)."""
    return SimpleNamespace(
        EPS=EPS, KS=KS, make_manifold=make_manifold, is_lorentz=is_lorentz, kval=kval, directions=directions,
        point=point, tangent=tangent, eff_tangent=eff_tangent, riem_norm=riem_norm, tangent_error=tangent_error,
        dist0=dist0, spatial_size=spatial_size, cond=cond, point_error=point_error,
    )
