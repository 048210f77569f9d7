"""``flows.build``: the factory used by users and the command line, and the registry behind it."""

from __future__ import annotations

import copy
from typing import Callable, Optional

import torch

import manifolds as _manifolds
from manifolds import Euclidean, Lorentz
from manifolds.base import ManifoldOps

from .constants import DEFAULT_HIDDEN
from .coupling import AdditiveCoupling, AffineCoupling, TangentCoupling, WrappedHyperboloidCoupling
from .linear import ActNorm
from .transform import Compose, IsometricTransform, TangentSpaceTransform, Transform

Factory = Callable[..., Transform]
#: whether a flow exists on a manifold: ``None`` if it does, else why not (one clause; :func:`build` adds what to
#: use instead). Asked of the manifold's declared properties (:class:`~manifolds.base.ManifoldOps`), never its name.
Support = Callable[[ManifoldOps], Optional[str]]

_REGISTRY: dict[str, tuple[Factory, Support, str]] = {}


#: suffix of the name under which a Euclidean flow lifted to the hyperboloid is registered
LIFT_SUFFIX = "@lorentz"


def on_rn(manifold: ManifoldOps) -> Optional[str]:
    """Flows of ℝⁿ: the manifold's points are their own coordinates (``coords_are_points``)."""
    if manifold.coords_are_points:
        return None
    return "it is a flow of ℝⁿ (points that are their own coordinates)"


def on_global_chart(manifold: ManifoldOps) -> Optional[str]:
    """Lifted (tangent-space) flows ``exp_o ∘ f ∘ log_o``: ``exp_o`` must be a diffeomorphism of ℝⁿ onto the
    manifold (``exp0_is_diffeomorphism``: infinite injectivity radius, not compact); on ℝⁿ itself the lift is the
    identity, so the flow of ℝⁿ is used directly."""
    if manifold.coords_are_points:
        return "on ℝⁿ exp_o is the identity, so the lift is the flow of ℝⁿ itself"
    if not manifold.exp0_is_diffeomorphism:
        return (f"it lifts a flow of ℝⁿ through exp_o, which is a diffeomorphism of ℝⁿ onto the manifold only when "
                f"the injectivity radius is infinite and the manifold is not compact (here {manifold.injectivity_radius:g}"
                f"{', compact' if manifold.is_compact else ''})")
    return None


def on_class(*classes: type) -> Support:
    """Flows written for given manifold classes only (e.g. WHC acts on hyperboloid coordinates): ``isinstance``."""
    names = " or ".join(c.__name__ for c in classes)

    def supports(manifold: ManifoldOps) -> Optional[str]:
        return None if isinstance(manifold, classes) else f"it acts on {names} coordinates only"

    supports.__qualname__ = f"on_class({names})"
    return supports


def on_any(manifold: ManifoldOps) -> Optional[str]:
    """Flows written against the whole interface (``rfm``)."""
    return None


def _support(manifolds: Support | tuple) -> Support:
    """A predicate as given, or (the older form) a tuple of manifold classes or of their names in :mod:`manifolds`
    (resolved to the classes once, at registration; the flow then applies to their instances)."""
    if callable(manifolds):
        return manifolds
    classes = []
    for m in manifolds:
        cls = getattr(_manifolds, m, None) if isinstance(m, str) else m
        if not isinstance(cls, type):
            raise ValueError(f"register: {m!r} is not a manifold class of the manifolds package; pass the class or a "
                             f"support predicate (flows.registry.on_rn, on_global_chart, on_class(cls), on_any)")
        classes.append(cls)
    return on_rn if classes == [Euclidean] else on_class(*classes)


def register(name: str, manifolds: Support | tuple, summary: str, *, lift: bool = False) -> Callable[[Factory], Factory]:
    """Register ``factory(manifold, dim, layers, hidden, conditioner, **kw) -> Transform`` under ``name``.

    ``manifolds`` says where the flow exists: a support predicate (:func:`on_rn`, :func:`on_global_chart`,
    :func:`on_class`, :func:`on_any`, or your own ``manifold -> None | reason``), or a tuple of manifold classes
    (or their names in :mod:`manifolds`). With ``lift=True`` (a flow of ℝⁿ), the same flow lifted as
    ``exp_o ∘ f ∘ log_o`` (:func:`lift_to`) is registered too, as ``name + "@lorentz"``, on every manifold whose
    ``exp_o`` is a diffeomorphism of ℝⁿ onto it (:func:`on_global_chart`: Hⁿ, and the ball through its isometry).
    """
    supports = _support(manifolds)

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY and not _same_factory(_REGISTRY[name][0], factory):
            raise ValueError(f"a flow named {name!r} is already registered")
        _REGISTRY[name] = (factory, supports, summary)
        if lift:
            if supports is not on_rn:
                raise ValueError(f"only flows of ℝⁿ (registered with on_rn) can be lifted; {name!r} is not one")

            def lifted(manifold, dim, **kw) -> Transform:
                return lift_to(manifold, factory(Euclidean(), dim, **kw))

            _REGISTRY[name + LIFT_SUFFIX] = (lifted, on_global_chart, f"{summary}, lifted to Hⁿ as exp_o ∘ f ∘ log_o")
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
    if not transform.manifold.coords_are_points:
        raise ValueError(f"lift_to expects a flow of ℝⁿ; got one on {transform.manifold.name}")
    return TangentSpaceTransform(manifold, transform)


def available(manifold: ManifoldOps | None = None) -> list[str]:
    """Names :func:`build` knows (those applying to ``manifold`` if given).

    Example:
        >>> from flows import available
        >>> {"nc", "tc", "whc"} <= set(available())
        True
    """
    if manifold is None:
        return sorted(_REGISTRY)
    target = _model_of(manifold)
    return sorted(n for n, (_, supports, _) in _REGISTRY.items() if supports(target) is None)


def _model_of(manifold: ManifoldOps) -> ManifoldOps:
    """The manifold whose flows act on ``manifold``: its isometric model if it declares one, else itself."""
    model = manifold.isometric_model()
    return manifold if model is None else model[0]


def why_not(name: str, manifold: ManifoldOps) -> Optional[str]:
    """``None`` if :func:`build` makes ``name`` on ``manifold``, else the one-line reason it refuses, with what to
    use instead.

    Example:
        >>> from manifolds import Euclidean
        >>> why_not("whc", Euclidean()).split(":")[0]
        "flow 'whc' cannot act on the Euclidean manifold"
    """
    if name not in _REGISTRY:
        return f"unknown flow {name!r}; available: {', '.join(available())}"
    reason = _REGISTRY[name][1](_model_of(manifold))
    if reason is None:
        return None
    options = available(manifold)
    twin = next((t for t in (name + LIFT_SUFFIX, name.removesuffix(LIFT_SUFFIX)) if t != name and t in options), None)
    hint = "use one of" if twin is None else f"use {twin!r}, or one of"
    return (f"flow {name!r} cannot act on the {manifold.name} manifold: {reason}; {hint} "
            f"{', '.join(options) or 'none (no flow is registered for it)'}")


def describe() -> dict[str, str]:
    """One-line summary of each registered flow (used by ``--help``)."""
    return {n: s for n, (_, _, s) in sorted(_REGISTRY.items())}


def build(name: str, manifold: ManifoldOps, dim: int, layers: int = 2, hidden: int = DEFAULT_HIDDEN,
          conditioner: str = "mlp", *, share_manifold: bool | None = None, **kwargs) -> Transform:
    """Build the flow ``name`` on ``manifold`` of intrinsic dimension ``dim`` (points of Hⁿ have ``dim + 1``
    ambient coordinates).

    Args:
        name: one of :func:`available` (``"nc"``, ``"tc"``, ``"whc"``, …).
        manifold: any manifold of the interface (:class:`~manifolds.base.ManifoldOps`); the flow must exist on it
            (:func:`why_not`); where ``manifold.isometric_model()`` is ``(N, φ, φ⁻¹)``, the flow of ``N`` is built and
            carried through ``φ`` (:class:`~flows.transform.IsometricTransform`, log-dets unchanged).
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
        ValueError: unknown name, a flow that cannot exist on this manifold (one line: why, and what to use), or a
            learnable manifold without ``share_manifold``.

    Example:
        >>> import torch
        >>> from manifolds import Lorentz
        >>> f = build("whc", Lorentz(), dim=2, layers=4)
        >>> y, ladj = f(Lorentz().origin(5, 3))
        >>> y.shape, ladj.shape
        (torch.Size([5, 3]), torch.Size([5]))
    """
    refusal = why_not(name, manifold)
    if refusal is not None:
        raise ValueError(refusal)
    factory = _REGISTRY[name][0]
    if int(layers) != layers or layers < 1:
        raise ValueError(f"layers must be a positive integer; got {layers}")
    if int(dim) != dim or dim < 1:
        raise ValueError(f"dim must be a positive integer (the intrinsic dimension n); got {dim}")
    if manifold.dim is not None and dim != manifold.dim:
        raise ValueError(f"build({name!r}, …, dim={dim}): the manifold is a {manifold.name} of dimension "
                         f"{manifold.dim}; pass dim={manifold.dim}, or build the manifold with dimension {dim}")
    if int(hidden) != hidden or hidden < 1:
        raise ValueError(f"hidden (the conditioners' width) must be a positive integer; got {hidden}")
    if share_manifold is None:
        if manifold.learnable_curvature:
            raise ValueError(
                f"build({name!r}, …): the manifold's curvature is learnable; pass share_manifold=True for a flow that "
                f"trains the same k as the rest of your model, or share_manifold=False for a flow with its own copy"
            )
        share_manifold = False
    if not share_manifold:
        manifold = copy.deepcopy(manifold)
    model = manifold.isometric_model()
    if model is not None:  # the model's flow, carried through the isometry (log-dets unchanged)
        inner = factory(model[0], dim, layers=layers, hidden=hidden, conditioner=conditioner, **kwargs)
        return _named(IsometricTransform(manifold, inner, model[1], model[2]), name)
    return _named(factory(manifold, dim, layers=layers, hidden=hidden, conditioner=conditioner, **kwargs), name)


#: state-dict entry (a buffer of the name's UTF-8 bytes) that carries the registered name of a flow made by build
FLOW_NAME_KEY = "flow_name"


class _NameCheck:
    """``load_state_dict`` pre-hook of a flow made by :func:`build`: refuse a state dict of another flow (a class,
    not a closure, so that the flow pickles: ``torch.save(flow)``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, module, state_dict, prefix, *args) -> None:
        key = prefix + FLOW_NAME_KEY
        if key not in state_dict:
            state_dict[key] = getattr(module, FLOW_NAME_KEY).clone()
            return
        stored = bytes(torch.as_tensor(state_dict[key]).tolist()).decode(errors="replace")
        if stored != self.name:
            raise ValueError(f"this state dict is of the flow {stored!r}, not {self.name!r} ({prefix or 'the model'}); "
                             f"build the same flow (flows.build({stored!r}, ...)) to load it")


def _named(flow: Transform, name: str) -> Transform:
    """Give ``flow`` its registered name as a buffer (so ``state_dict()`` carries it) and refuse, on
    ``load_state_dict``, a state dict of another flow: ``iaf`` and ``maf`` (or ``iaf-rqs`` and ``maf-rqs``) have
    parameters of the same names and shapes and would load into each other. A state dict without the entry (saved
    before it existed) loads as before."""
    flow.register_buffer(FLOW_NAME_KEY, torch.tensor(list(name.encode()), dtype=torch.uint8))
    flow.register_load_state_dict_pre_hook(_NameCheck(name))
    return flow


def _couplings(cls, manifold, dim, layers, hidden, conditioner, **kw) -> Transform:
    # a coupling of ℝⁿ keeps the manifold passed in (its validate / dim settings) as a keyword; TC / WHC take it first
    args, where = ((), {"manifold": manifold}) if cls is AffineCoupling else ((manifold,), {})
    return Compose([cls(*args, dim, parity=i % 2, conditioner=conditioner, hidden=hidden, **where, **kw)
                    for i in range(layers)])


@register("nc", on_rn, "affine coupling on ℝⁿ (RealNVP; the paper's NC)")
def _nc(manifold, dim, **kw) -> Transform:
    return _couplings(AffineCoupling, manifold, dim, **kw)


@register("tc", on_global_chart, "tangent coupling on Hⁿ: exp_o ∘ affine coupling ∘ log_o (the paper's TC)")
def _tc(manifold, dim, **kw) -> Transform:
    return _couplings(TangentCoupling, manifold, dim, **kw)


@register("whc", on_class(Lorentz), "wrapped hyperboloid coupling on Hⁿ (the paper's WHC)")
def _whc(manifold, dim, **kw) -> Transform:
    return _couplings(WrappedHyperboloidCoupling, manifold, dim, **kw)


@register("additive", on_rn, "additive coupling on ℝⁿ with a final diagonal scaling (NICE)", lift=True)
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
