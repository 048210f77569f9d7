"""``flows.build``: the factory used by users and the command line, and the registry behind it."""

from __future__ import annotations

import copy
from typing import Callable, Optional

from manifolds import Euclidean
from manifolds.base import ManifoldOps

from .constants import DEFAULT_HIDDEN
from .coupling import AdditiveCoupling, AffineCoupling, TangentCoupling, WrappedHyperboloidCoupling
from .linear import ActNorm
from .transform import Compose, TangentSpaceTransform, Transform

Factory = Callable[..., Transform]

#: Where a flow exists: a tuple of manifold names (the original entries), or a support predicate
#: ``manifold -> None | reason`` asked of what the manifold declares (:class:`~manifolds.base.ManifoldOps`
#: properties), never its name: ``None`` where the flow exists, else why not (one clause).
Applies = tuple[str, ...] | Callable[[ManifoldOps], Optional[str]]


def _refusal(manifolds: Applies, manifold: ManifoldOps) -> Optional[str]:
    if callable(manifolds):
        return manifolds(manifold)
    return None if manifold.name in manifolds else f"it applies to {', '.join(manifolds)}"


_REGISTRY: dict[str, tuple[Factory, Applies, str]] = {}


#: suffix of the name under which a Euclidean flow lifted to the hyperboloid is registered
LIFT_SUFFIX = "@lorentz"


def register(name: str, manifolds: Applies, summary: str, *, lift: bool = False) -> Callable[[Factory], Factory]:
    """Register ``factory(manifold, dim, layers, hidden, conditioner, **kw) -> Transform`` under ``name``.

    ``manifolds`` lists the manifold names (``"Euclidean"``, ``"Lorentz"``) the flow applies to, or is a support
    predicate ``manifold -> None | reason`` on what a manifold declares (:func:`flows.circular.on_torus`,
    :func:`flows.sphere.on_sphere`). With
    ``lift=True`` (a flow of ℝⁿ), the same flow lifted to Hⁿ as ``exp_o ∘ f ∘ log_o`` (:func:`lift`) is registered
    too, as ``name + "@lorentz"``.
    """

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY and not _same_factory(_REGISTRY[name][0], factory):
            raise ValueError(f"a flow named {name!r} is already registered")
        _REGISTRY[name] = (factory, manifolds, summary)
        if lift:
            if manifolds != ("Euclidean",):
                raise ValueError(f"only flows of ℝⁿ can be lifted; {name!r} applies to {manifolds}")

            def lifted(manifold, dim, **kw) -> Transform:
                return lift_to(manifold, factory(Euclidean(), dim, **kw))

            _REGISTRY[name + LIFT_SUFFIX] = (lifted, ("Lorentz",), f"{summary}, lifted to Hⁿ as exp_o ∘ f ∘ log_o")
        return factory

    return deco


def _same_factory(a: Factory, b: Factory) -> bool:
    """The same definition executed again (a module re-imported, e.g. by ``pytest --doctest-modules`` under
    ``--import-mode=importlib``): registering it again replaces the entry instead of raising."""
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def lift_to(manifold: ManifoldOps, transform: Transform) -> Transform:
    r"""Lift a flow ``f`` of ℝⁿ to the manifold as ``exp_o ∘ f ∘ log_o`` (tangent coordinates at the origin).

    ``log|det| = log|det ∂f(w)| + (n-1)·ℓ(||f(w)||) - (n-1)·ℓ(||w||)`` (``MATH.md`` §2, §4): this is how the
    autoregressive, spline, residual and other Euclidean families become flows on Hⁿ.

    Example:
        >>> from manifolds import Lorentz
        >>> from flows import AffineCoupling
        >>> f = lift_to(Lorentz(), AffineCoupling(2))
        >>> f(Lorentz().origin(4, 3))[0].shape
        torch.Size([4, 3])
    """
    if transform.manifold.name != "Euclidean":
        raise ValueError(f"lift_to expects a flow of ℝⁿ; got one on {transform.manifold.name}")
    return TangentSpaceTransform(manifold, transform)


def available(manifold: ManifoldOps | None = None) -> list[str]:
    """Names :func:`build` knows (those applying to ``manifold`` if given).

    Example:
        >>> from flows import available
        >>> {"nc", "tc", "whc"} <= set(available())
        True
    """
    return sorted(n for n, (_, ms, _) in _REGISTRY.items() if manifold is None or _refusal(ms, manifold) is None)


def describe() -> dict[str, str]:
    """One-line summary of each registered flow (used by ``--help``)."""
    return {n: s for n, (_, _, s) in sorted(_REGISTRY.items())}


def build(name: str, manifold: ManifoldOps, dim: int, layers: int = 2, hidden: int = DEFAULT_HIDDEN,
          conditioner: str = "mlp", *, share_manifold: bool | None = None, **kwargs) -> Transform:
    """Build the flow ``name`` on ``manifold`` of intrinsic dimension ``dim`` (points of Hⁿ have ``dim + 1``
    ambient coordinates).

    Args:
        name: one of :func:`available` (``"nc"``, ``"tc"``, ``"whc"``, …).
        manifold: a :class:`~manifolds.Euclidean` or :class:`~manifolds.Lorentz`.
        dim: intrinsic dimension ``n``.
        layers: number of layers (coupling layers alternate which half they transform).
        hidden: conditioner width.
        conditioner: ``"mlp"``, or ``"gcn"`` / ``"gat"`` for graph flows (pass ``context=edge_index``).
        share_manifold: whether the flow uses ``manifold`` itself or its own copy (see *Manifold sharing*).
            ``None`` (default): a copy for a fixed curvature; for a learnable one you must choose.
        **kwargs: passed to the factory (e.g. ``context_features`` for conditional MLP couplings).

    **Manifold sharing.** A manifold is an ``nn.Module`` (a ``Lorentz`` holds its curvature parameter).

    * ``share_manifold=False`` (the default for a fixed curvature): the flow gets its own copy of ``manifold``,
      registered as its submodule. The flow is then independent of every other model: ``flow.to(...)``,
      ``flow.double()`` and ``flow.load_state_dict(...)`` act on the flow's copy only, never on ``manifold`` or
      on other flows built from it.
    * ``share_manifold=True``: the flow uses ``manifold`` itself (a tied submodule, like tied weights): one
      curvature for every holder, trained together, and moving, casting or loading any holder acts on it for all.
      The VAEs and the graph generator build their flows this way, so that the prior, the posterior flow and the
      decoder see one (possibly learnable or scheduled) ``k``.
    * A learnable ``manifold`` with ``share_manifold=None`` is an error: a copy would silently train a second
      curvature, so say which you mean.

    Layer constructors (``WrappedHyperboloidCoupling(dim, manifold=M)`` …) always use the manifold they are given.

    Raises:
        ValueError: unknown name, a flow that does not apply to this manifold, or a learnable manifold without
            ``share_manifold``.

    Example:
        >>> import torch
        >>> from manifolds import Lorentz
        >>> f = build("whc", Lorentz(), dim=2, layers=4)
        >>> y, ladj = f(Lorentz().origin(5, 3))
        >>> y.shape, ladj.shape
        (torch.Size([5, 3]), torch.Size([5]))
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown flow {name!r}; available: {', '.join(available())}")
    factory, manifolds, _ = _REGISTRY[name]
    reason = _refusal(manifolds, manifold)
    if reason is not None:
        raise ValueError(
            f"flow {name!r} does not apply to the {manifold.name} manifold ({reason}); "
            f"flows for {manifold.name}: {', '.join(available(manifold))}"
        )
    if int(layers) != layers or layers < 1:
        raise ValueError(f"layers must be a positive integer; got {layers}")
    if int(dim) != dim or dim < 1:
        raise ValueError(f"dim must be a positive integer (the intrinsic dimension n); got {dim}")
    if int(hidden) != hidden or hidden < 1:
        raise ValueError(f"hidden (the conditioners' width) must be a positive integer; got {hidden}")
    if share_manifold is None:
        if getattr(manifold, "learnable", False):
            raise ValueError(
                f"build({name!r}, …): the manifold's curvature is learnable; pass share_manifold=True for a flow that "
                f"trains the same k as the rest of your model, or share_manifold=False for a flow with its own copy"
            )
        share_manifold = False
    if not share_manifold:
        manifold = copy.deepcopy(manifold)
    return factory(manifold, dim, layers=layers, hidden=hidden, conditioner=conditioner, **kwargs)


def _couplings(cls, manifold, dim, layers, hidden, conditioner, **kw) -> Transform:
    # a coupling of ℝⁿ keeps the manifold passed in (its validate / dim settings) as a keyword; TC / WHC take it first
    args, where = ((), {"manifold": manifold}) if cls is AffineCoupling else ((manifold,), {})
    return Compose([cls(*args, dim, parity=i % 2, conditioner=conditioner, hidden=hidden, **where, **kw)
                    for i in range(layers)])


@register("nc", ("Euclidean",), "affine coupling on ℝⁿ (RealNVP; the paper's NC)")
def _nc(manifold, dim, **kw) -> Transform:
    return _couplings(AffineCoupling, manifold, dim, **kw)


@register("tc", ("Lorentz",), "tangent coupling on Hⁿ: exp_o ∘ affine coupling ∘ log_o (the paper's TC)")
def _tc(manifold, dim, **kw) -> Transform:
    return _couplings(TangentCoupling, manifold, dim, **kw)


@register("whc", ("Lorentz",), "wrapped hyperboloid coupling on Hⁿ (the paper's WHC)")
def _whc(manifold, dim, **kw) -> Transform:
    return _couplings(WrappedHyperboloidCoupling, manifold, dim, **kw)


@register("additive", ("Euclidean",), "additive coupling on ℝⁿ with a final diagonal scaling (NICE)", lift=True)
def _additive(manifold, dim, layers, hidden, conditioner, scaling: bool = True, **kw) -> Transform:
    """NICE (Dinh et al. 2015): additive couplings with alternating halves, then (``scaling=True``, as in the
    paper) a learned diagonal scaling ``y = x ⊙ exp(s) + b`` as the top layer, so that the flow can change volume:
    an :class:`~flows.linear.ActNorm` with its data-dependent initialisation switched off (``s = b = 0``)."""
    ts: list[Transform] = [AdditiveCoupling(dim, parity=i % 2, conditioner=conditioner, hidden=hidden, manifold=manifold,
                                           **kw)
                           for i in range(layers)]
    if scaling:
        top = ActNorm(dim)
        top.initialized.fill_(True)
        ts.append(top)
    return Compose(ts)
