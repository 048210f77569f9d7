"""The transform contract: base → data maps with exact log-determinants in both directions."""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn

from manifolds import Euclidean
from manifolds.base import ManifoldOps

Tensor = torch.Tensor


class Transform(nn.Module):
    r"""A bijection ``f`` of a manifold, base → data, with its log-determinant.

    ``forward(x, context=None) -> (y, ladj)`` returns ``y = f(x)`` and ``ladj = log|det ∂f/∂x|`` (the Riemannian
    log-det for manifold flows, ``MATH.md`` §1, §4) with the batch shape of ``x``; ``inverse(y, context=None)
    -> (x, ladj)`` returns ``x = f⁻¹(y)`` and ``log|det ∂f⁻¹/∂y|``. Both are computed in one pass, and nothing is
    cached between calls. Points are given in the manifold's ambient coordinates (last dimension).

    Subclasses implement :meth:`forward` and :meth:`inverse`; ``manifold`` says where they act.
    """

    manifold: ManifoldOps
    #: False for surjective layers (SurVAE): ``inverse`` is the deterministic inference map and ``forward`` samples
    #: one of its pre-images; their ``ladj`` terms are the exact likelihood contributions.
    bijective: bool = True
    #: ``None`` when ``inverse`` is exact (closed form); otherwise the stated accuracy of a numerical inverse
    #: (maximum absolute error in the coordinates, for inputs in the transform's documented working range).
    inverse_tolerance: Optional[float] = None

    def __init__(self, manifold: Optional[ManifoldOps] = None) -> None:
        super().__init__()
        self.manifold = manifold if manifold is not None else Euclidean()

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError


class Compose(Transform):
    r"""``f = f_K ∘ … ∘ f_1``: ``ladj = Σ_k ladj_k`` in both directions.

    Consecutive :class:`TangentSpaceTransform` layers on the same manifold are fused into one, so a stack of
    tangent-space layers computes a single ``log_o`` / ``exp_o`` pair (the inner pairs cancel exactly, and so do
    their log-det terms).

    Example:
        >>> from flows import build
        >>> f = Compose([build("nc", Euclidean(), 4), build("nc", Euclidean(), 4)])
        >>> y, ladj = f(torch.randn(8, 4))
        >>> ladj.shape
        torch.Size([8])
    """

    def __init__(self, transforms: Iterable[Transform]) -> None:
        transforms = list(transforms)
        if not transforms:
            raise ValueError("Compose needs at least one transform")
        manifold = transforms[0].manifold
        for t in transforms[1:]:
            if t.manifold is not manifold and not (t.manifold.name == manifold.name == "Euclidean"):
                raise ValueError(
                    f"Compose: all transforms must act on the same manifold object; got {manifold} and {t.manifold}"
                )
        super().__init__(manifold)
        self.transforms = nn.ModuleList(_fuse(transforms))
        self.bijective = all(t.bijective for t in transforms)
        tols = [t.inverse_tolerance for t in transforms if t.inverse_tolerance is not None]
        self.inverse_tolerance = len(tols) * max(tols) if tols else None

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[:-1])
        for t in self.transforms:
            x, ladj = t(x, context)
            total = total + ladj
        return x, total

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        total = y.new_zeros(y.shape[:-1])
        for t in reversed(self.transforms):
            y, ladj = t.inverse(y, context)
            total = total + ladj
        return y, total


class TangentSpaceTransform(Transform):
    r"""``f = exp_o ∘ g ∘ log_o``: a Euclidean transform ``g`` of the tangent coordinates at the origin.

    ``log|det ∂f| = log|det ∂g(w)| + (n-1)·ℓ(||g(w)||) - (n-1)·ℓ(||w||)``, ``w = log_o(x)`` (``MATH.md`` §4); on ℝⁿ
    the exp/log maps are the identity and the extra terms vanish. ``log_o`` and ``exp_o`` are computed from the
    spatial coordinates only, so they are exact to working precision at any distance float32 can represent.

    Args:
        manifold: the manifold the flow acts on.
        inner: a Euclidean :class:`Transform` of ℝⁿ (the tangent coordinates).
    """

    def __init__(self, manifold: ManifoldOps, inner: Transform) -> None:
        super().__init__(manifold)
        self.inner = inner
        self.bijective = inner.bijective
        self.inverse_tolerance = inner.inverse_tolerance

    def _terms(self, w: Tensor) -> Tensor:
        return self.manifold.expmap_logdet(torch.linalg.vector_norm(w, dim=-1), w.size(-1))

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self.forward_tangent(self.manifold.logmap0_spatial(x), context)

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        w, ladj = self.inverse_tangent(y, context)
        return self.manifold.expmap0_spatial(w), ladj

    def forward_tangent(self, w: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """:meth:`forward` of the point ``exp_o(w)`` given its tangent coordinates ``w`` (no ``log_o``): the same
        ``(y, ladj)``, used by :class:`~flows.Flow` when the base samples in tangent coordinates at ``o``."""
        v, ladj = self.forward_in_tangent(w, context)
        return self.manifold.expmap0_spatial(v), ladj

    def forward_in_tangent(self, w: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        r""":meth:`forward` with input and output in tangent coordinates at the origin: ``(log_o f(exp_o w),
        log|det ∂f|)`` with ``log_o f(exp_o w) = g(w)`` exactly (no ``exp_o`` / ``log_o``), used by models whose
        latents stay in tangent coordinates (:class:`vae.GraphVAE`). It evaluates ``inner`` directly: a subclass
        that overrides :meth:`forward` must override this too (GraphVAE maps points through such a subclass).

        Example:
            >>> from manifolds import Lorentz
            >>> from flows import build, tangent_space_transform
            >>> M = Lorentz()
            >>> f = build("whc", M, 2).double()
            >>> w = torch.randn(4, 2, dtype=torch.float64)
            >>> v, ladj = tangent_space_transform(f).forward_in_tangent(w)
            >>> y, ladj_y = f(M.expmap0_spatial(w))
            >>> torch.allclose(M.expmap0_spatial(v), y) and torch.allclose(ladj, ladj_y)
            True
        """
        v, ladj = self.inner(w, context)
        return v, ladj + self._terms(v) - self._terms(w)

    def inverse_tangent(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """:meth:`inverse` with the result left in tangent coordinates: ``(log_o f⁻¹(y), log|det ∂f⁻¹/∂y|)`` (no
        ``exp_o``), used by :class:`~flows.Flow` when the base scores tangent coordinates at ``o``."""
        v = self.manifold.logmap0_spatial(y)
        w, ladj = self.inner.inverse(v, context)
        return w, ladj + self._terms(w) - self._terms(v)


def tangent_space_transform(transform: Transform) -> Optional[TangentSpaceTransform]:
    """``transform`` as a single :class:`TangentSpaceTransform` (unwrapping a one-layer :class:`Compose`, which is
    what a fused stack of tangent-space layers is), or ``None``."""
    while isinstance(transform, Compose) and len(transform.transforms) == 1:
        transform = transform.transforms[0]
    return transform if isinstance(transform, TangentSpaceTransform) else None


def _fuse(transforms: list[Transform]) -> list[Transform]:
    """Merge runs of :class:`TangentSpaceTransform` on one manifold into a single one."""
    out: list[Transform] = []
    run: list[TangentSpaceTransform] = []

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            inner = []
            for t in run:
                inner.extend(t.inner.transforms if isinstance(t.inner, Compose) else [t.inner])
            out.append(TangentSpaceTransform(run[0].manifold, Compose(inner)))
        run.clear()

    for t in transforms:
        if isinstance(t, TangentSpaceTransform) and (not run or run[0].manifold is t.manifold):
            run.append(t)
        else:
            flush()
            if isinstance(t, TangentSpaceTransform):
                run.append(t)
            else:
                out.append(t)
    flush()
    return out
