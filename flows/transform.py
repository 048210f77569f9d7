"""The transform contract: base → data maps with exact log-determinants in both directions."""

from __future__ import annotations

from typing import Callable, Iterable, Optional

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

    **Tangent coordinates at the origin** are part of the contract: every transform also acts on them,

    * ``forward_tangent(w, context) -> (v, ladj)`` with ``v = log_o f(exp_o w)`` and the same ``ladj`` as
      ``forward(exp_o w)``;
    * ``inverse_tangent(v, context) -> (w, ladj)`` with ``w = log_o f⁻¹(exp_o v)`` and the same ``ladj`` as
      ``inverse(exp_o v)``.

    Models whose latents live in tangent coordinates (:class:`~flows.Flow` with a wrapped-normal base, the VAEs)
    call these, never ``forward`` on points, so they skip an ``exp_o`` / ``log_o`` pair per layer boundary. The
    default goes through the points (``exp_o``, ``forward``, ``log_o``; on ℝⁿ both maps are the identity);
    :class:`TangentSpaceTransform` computes them directly and says so with :attr:`acts_in_tangent`.

    Subclasses implement :meth:`forward` and :meth:`inverse`; ``manifold`` says where they act.

    Example:
        >>> from manifolds import Lorentz
        >>> from flows import build
        >>> M = Lorentz()
        >>> f = build("whc", M, 2).double()
        >>> w = torch.randn(4, 2, dtype=torch.float64)
        >>> v, ladj = f.forward_tangent(w)
        >>> y, ladj_y = f(M.expmap0_spatial(w))
        >>> torch.allclose(M.expmap0_spatial(v), y) and torch.allclose(ladj, ladj_y)
        True
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

    @property
    def acts_in_tangent(self) -> bool:
        """Whether :meth:`forward_tangent` / :meth:`inverse_tangent` are computed without forming points (so a
        model in tangent coordinates should call them): true on ℝⁿ (``manifold.coords_are_points``) and for
        :class:`TangentSpaceTransform`."""
        return self.manifold.coords_are_points

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        """``(y, log|det ∂y/∂x|)`` with ``y = f(x)`` (base → data) for points ``x``, the log-det of shape
        ``x.shape[:-1]``; ``context`` conditions the map (a vector, or a graph's ``edge_index``)."""
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        """``(x, log|det ∂x/∂y|)`` with ``x = f⁻¹(y)`` (data → base), the log-det of shape ``y.shape[:-1]``."""
        raise NotImplementedError

    def forward_tangent(self, w: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """``(log_o f(exp_o w), log|det ∂f|)`` for tangent coordinates ``w`` at the origin (see the class)."""
        if self.manifold.coords_are_points:
            return self(w, context)
        y, ladj = self(self.manifold.expmap0_spatial(w), context)
        return self.manifold.logmap0_spatial(y), ladj

    def inverse_tangent(self, v: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """``(log_o f⁻¹(exp_o v), log|det ∂f⁻¹|)`` for tangent coordinates ``v`` at the origin (see the class)."""
        if self.manifold.coords_are_points:
            return self.inverse(v, context)
        x, ladj = self.inverse(self.manifold.expmap0_spatial(v), context)
        return self.manifold.logmap0_spatial(x), ladj


class Compose(Transform):
    r"""``f = f_K ∘ … ∘ f_1``: ``ladj = Σ_k ladj_k`` in both directions.

    Consecutive :class:`TangentSpaceTransform` layers on the same manifold are fused into one, so a stack of
    tangent-space layers computes a single ``log_o`` / ``exp_o`` pair (the inner pairs cancel exactly, and so do
    their log-det terms). In tangent coordinates (:meth:`forward_tangent`) each layer is called the same way.

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
            if not manifold.same_as(t.manifold):
                raise ValueError(
                    f"Compose: all transforms must act on the same manifold (the same object, or copies with the same "
                    f"fixed curvature); got {manifold} and {t.manifold}"
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

    @property
    def acts_in_tangent(self) -> bool:
        return all(t.acts_in_tangent for t in self.transforms)

    def forward_tangent(self, w: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        total = w.new_zeros(w.shape[:-1])
        for t in self.transforms:
            w, ladj = t.forward_tangent(w, context)
            total = total + ladj
        return w, total

    def inverse_tangent(self, v: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        total = v.new_zeros(v.shape[:-1])
        for t in reversed(self.transforms):
            v, ladj = t.inverse_tangent(v, context)
            total = total + ladj
        return v, total


class TangentNativeTransform(Transform):
    r"""Base of transforms defined in tangent coordinates at the origin: a subclass implements
    :meth:`forward_tangent` / :meth:`inverse_tangent`, and :meth:`forward` / :meth:`inverse` on points wrap them
    with ``log_o`` / ``exp_o`` (computed from the spatial coordinates, exact at any representable distance).
    Overriding ``forward`` or ``inverse`` in a subclass is a ``TypeError``, so the point path and the tangent path
    can never disagree. :class:`TangentSpaceTransform` (a lifted Euclidean map) and :class:`~flows.RiemannianFlow`
    (an ODE solved in the chart ``log_o``) are the two kinds.

    Example:
        >>> from manifolds import Lorentz
        >>> from flows import AffineCoupling
        >>> M = Lorentz()
        >>> f = TangentSpaceTransform(M, AffineCoupling(2))
        >>> isinstance(f, TangentNativeTransform) and f.acts_in_tangent
        True
    """

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("forward", "inverse"):
            if name in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__} overrides {name}(); a TangentNativeTransform is defined in tangent coordinates "
                    f"at the origin: override {name}_tangent() instead (the point methods wrap it with exp_o / log_o)"
                )

    @property
    def acts_in_tangent(self) -> bool:
        return True

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        v, ladj = self.forward_tangent(self.manifold.logmap0_spatial(x), context)
        return self.manifold.expmap0_spatial(v), ladj

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        w, ladj = self.inverse_tangent(self.manifold.logmap0_spatial(y), context)
        return self.manifold.expmap0_spatial(w), ladj


class TangentSpaceTransform(TangentNativeTransform):
    r"""``f = exp_o ∘ g ∘ log_o``: a Euclidean transform ``g`` of the tangent coordinates at the origin.

    ``log|det ∂f| = log|det ∂g(w)| + (n-1)·ℓ(||g(w)||) - (n-1)·ℓ(||w||)``, ``w = log_o(x)`` (``MATH.md`` §4); on ℝⁿ
    the exp/log maps are the identity and the extra terms vanish. ``log_o`` and ``exp_o`` are computed from the
    spatial coordinates only, so they are exact to working precision at any distance float32 can represent.

    The map is defined once, in tangent coordinates (:meth:`forward_tangent`: ``v = g(w)``, no ``exp_o`` /
    ``log_o``); :meth:`forward` and :meth:`inverse` on points wrap it. A subclass changes the map by overriding
    :meth:`forward_tangent` / :meth:`inverse_tangent` (or by its ``inner`` transform); overriding ``forward`` or
    ``inverse`` is a ``TypeError``, so the point path and the tangent path can never disagree.

    Args:
        manifold: the manifold the flow acts on.
        inner: a Euclidean :class:`Transform` of ℝⁿ (the tangent coordinates).

    Example:
        >>> from manifolds import Lorentz
        >>> from flows import AffineCoupling
        >>> M = Lorentz()
        >>> f = TangentSpaceTransform(M, AffineCoupling(3))
        >>> w = torch.randn(5, 3)
        >>> v, ladj = f.forward_tangent(w)
        >>> torch.allclose(f.inverse_tangent(v)[0], w, atol=1e-5)
        True
    """

    def __init__(self, manifold: ManifoldOps, inner: Transform) -> None:
        super().__init__(manifold)
        self.inner = inner
        self.bijective = inner.bijective
        self.inverse_tolerance = inner.inverse_tolerance

    def _terms(self, w: Tensor) -> Tensor:
        return self.manifold.expmap0_logdet(w)

    def forward_tangent(self, w: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        r"""``v = g(w)`` and ``log|det ∂f| = log|det ∂g(w)| + (n-1)·ℓ(||v||) - (n-1)·ℓ(||w||)``."""
        v, ladj = self.inner(w, context)
        return v, ladj + self._terms(v) - self._terms(w)

    def inverse_tangent(self, v: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        r"""``w = g⁻¹(v)`` and ``log|det ∂f⁻¹| = log|det ∂g⁻¹(v)| + (n-1)·ℓ(||w||) - (n-1)·ℓ(||v||)``."""
        w, ladj = self.inner.inverse(v, context)
        return w, ladj + self._terms(w) - self._terms(v)


class IsometricTransform(Transform):
    r"""A flow ``g`` of an isometric model ``N`` carried to the manifold ``M`` through an isometry ``φ: M → N``:
    ``f = φ⁻¹ ∘ g ∘ φ``, with ``log|det ∂f| = log|det ∂g|`` at ``φ(x)`` (an isometry keeps the Riemannian volume,
    so its log-dets cancel exactly). :func:`~flows.build` makes every flow of ``N`` this way on a manifold whose
    :meth:`~manifolds.base.ManifoldOps.isometric_model` is ``(N, φ, φ⁻¹)`` (the Poincaré ball: every Hⁿ flow).

    Args:
        manifold: ``M``, where the points live.
        inner: the flow ``g`` on the model ``N`` (its ``manifold``).
        to_model, from_model: ``φ`` and ``φ⁻¹`` on points (ambient coordinates last).

    Example:
        >>> from manifolds import Euclidean
        >>> from flows import AffineCoupling
        >>> shift = torch.tensor([1.0, -2.0])  # x ↦ x - c, an isometry of ℝ²
        >>> f = IsometricTransform(Euclidean(), AffineCoupling(2), lambda x: x - shift, lambda y: y + shift)
        >>> x = torch.randn(4, 2)
        >>> y, ladj = f(x)
        >>> torch.allclose(f.inverse(y)[0], x, atol=1e-6) and torch.allclose(ladj, f.inner(x - shift)[1])
        True
    """

    def __init__(self, manifold: ManifoldOps, inner: Transform, to_model: Callable[[Tensor], Tensor],
                 from_model: Callable[[Tensor], Tensor]) -> None:
        super().__init__(manifold)
        self.inner = inner
        self.to_model, self.from_model = to_model, from_model
        self.bijective = inner.bijective
        self.inverse_tolerance = inner.inverse_tolerance

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        y, ladj = self.inner(self.to_model(x), context)
        return self.from_model(y), ladj

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        x, ladj = self.inner.inverse(self.to_model(y), context)
        return self.from_model(x), ladj


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
        if isinstance(t, TangentSpaceTransform) and (not run or run[0].manifold.same_as(t.manifold)):
            run.append(t)
        else:
            flush()
            if isinstance(t, TangentSpaceTransform):
                run.append(t)
            else:
                out.append(t)
    flush()
    return out
