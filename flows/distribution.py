"""Flows as distributions: :class:`FlowDistribution` (a ``torch.distributions.Distribution``), :class:`Flow` (the
``nn.Module`` that owns a base and a transform and returns one, as zuko's flows do), and :class:`Latent`, the one
path from a base through a transform that every model (``Flow``, the VAEs, the graph generator's prior) takes."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Union

import torch
from torch import nn
from torch.distributions import Distribution

from manifolds import WrappedNormal
from manifolds.base import ManifoldOps

from .transform import Transform

Tensor = torch.Tensor
#: what a transform takes as context: a vector per draw, a graph's ``edge_index``, or GCN's ``(edge_index, weight)``
Context = Optional[Union[Tensor, tuple[Tensor, Tensor]]]


def _vector_context(context: Context) -> bool:
    """A conditioning vector per draw (floating point, features last) broadcasts into the batch shape; a graph's
    integer ``edge_index`` (or GCN's ``(edge_index, weight)`` pair) does not."""
    return torch.is_tensor(context) and context.is_floating_point() and context.dim() >= 1


# ----------------------------------------------------------------------------------------------------------
# the one latent path
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Latent:
    r"""Draws ``z = f(z₀)`` of a base pushed through a transform, held as points **or** as tangent coordinates
    ``w = log_o(z)`` at the origin (exactly one of ``point`` / ``tangent`` is set: whichever the path produced),
    with ``log q₀(z₀)`` (``None`` for posterior means) and ``ladj = log|det ∂f/∂z₀|``.

    :meth:`points` and :meth:`tangents` form the other coordinates only when a caller asks for them, so a model
    whose decoder and prior read tangent coordinates never evaluates an ``exp_o`` / ``log_o`` pair.

    Example:
        >>> from manifolds import Lorentz
        >>> M = Lorentz()
        >>> lat = FlowDistribution(WrappedNormal.at_origin(torch.ones(2), M), None).rsample_latent((4,))
        >>> lat.point is None, lat.tangents().shape, lat.points().shape
        (True, torch.Size([4, 2]), torch.Size([4, 3]))
    """

    manifold: ManifoldOps
    point: Optional[Tensor]
    tangent: Optional[Tensor]
    log_q0: Optional[Tensor]
    ladj: Tensor

    def points(self) -> Tensor:
        """The draws as points (ambient coordinates): ``exp_o(w)`` if they are held as tangent coordinates."""
        return self.point if self.point is not None else self.manifold.expmap0_spatial(self.tangent)

    def tangents(self) -> Tensor:
        """The draws as tangent coordinates at the origin: ``log_o(z)`` if they are held as points."""
        return self.tangent if self.tangent is not None else self.manifold.logmap0_spatial(self.point)

    @property
    def log_prob(self) -> Tensor:
        """``log q(z) = log q₀(z₀) - log|det ∂f/∂z₀|`` (only for draws, not for means)."""
        if self.log_q0 is None:
            raise ValueError("this latent is a posterior mean, which has no log-density; draw one with rsample_latent")
        return self.log_q0 - self.ladj


def _flat_call(fn: Callable, x: Tensor, context: Context) -> tuple[Tensor, Tensor]:
    """``fn(x, context)`` with the batch dimensions of ``x`` flattened to one when there is no context (every
    transform takes ``(B, d)``), reshaped back; with a context, ``x`` is passed as it is (a vector context broadcasts
    against it, a graph context indexes its node dimension)."""
    if context is not None or x.dim() == 2:
        return fn(x, context)
    y, ladj = fn(x.reshape(-1, x.size(-1)), None)
    return y.reshape(*x.shape[:-1], y.size(-1)), ladj.reshape(x.shape[:-1])


# ----------------------------------------------------------------------------------------------------------
# the distribution
# ----------------------------------------------------------------------------------------------------------

class FlowDistribution(Distribution):
    r"""The distribution of ``y = f(x)``, ``x ~ base``: ``log p(y) = log p_base(f⁻¹(y)) + log|det ∂f⁻¹/∂y|``
    (``transform=None`` is the identity).

    Works on ℝⁿ (base e.g. ``Independent(Normal(0, 1), 1)`` or a :class:`~manifolds.WrappedNormal` on
    ``Euclidean``) and on the hyperboloid (base a :class:`~manifolds.WrappedNormal` on ``Lorentz``). With a
    wrapped-normal base and a transform that acts in tangent coordinates (:attr:`~flows.Transform.acts_in_tangent`)
    draws and scores stay in tangent coordinates at the origin between base and transform (``log_o ∘ exp_o`` is the
    identity): one ``exp_o`` at the end of sampling, one ``log_o`` at the start of scoring.

    **Batch shape** broadcasts the base's with a vector context's leading dimensions (as zuko's ``flow(c)``); a graph
    context (``edge_index``) leaves the base's. ``log_prob`` broadcasts its argument against the batch shape.

    Args:
        base: the base distribution (event shape = the manifold's ambient coordinates).
        transform: a :class:`~flows.Transform` (base → data), or ``None`` for the identity.
        context: optional context passed to the transform (a vector for conditional flows, ``edge_index`` for
            graph conditioners).

    Example:
        >>> from manifolds import Lorentz
        >>> from flows import build
        >>> M = Lorentz(k=1.0)
        >>> q = FlowDistribution(WrappedNormal.at_origin(torch.ones(2), M), build("whc", M, 2))
        >>> z, log_q = q.rsample_and_log_prob((4,))
        >>> torch.allclose(q.log_prob(z), log_q, atol=1e-4)
        True
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, base: Distribution, transform: Optional[Transform], context: Context = None) -> None:
        batch_shape = base.batch_shape
        if _vector_context(context):
            batch_shape = torch.broadcast_shapes(batch_shape, context.shape[:-1])
        if batch_shape != base.batch_shape:
            base = base.expand(batch_shape)
        self.base = base
        self.transform = transform
        self.context = context
        super().__init__(batch_shape, base.event_shape, validate_args=False)

    def __repr__(self) -> str:
        ctx = "" if self.context is None else f", context={_shape_text(self.context)}"
        return (f"{type(self).__name__}(base={self.base!r}, transform={type(self.transform).__name__}, "
                f"batch_shape={tuple(self.batch_shape)}, event_shape={tuple(self.event_shape)}{ctx})")

    @property
    def support(self):
        """The base's support (a bijection of the manifold keeps it)."""
        return self.base.support

    def _in_tangent(self) -> bool:
        """Whether draws and scores stay in tangent coordinates at the origin: the base draws and scores them
        (:class:`~manifolds.WrappedNormal`) and the transform computes its tangent maps without points."""
        return isinstance(self.base, WrappedNormal) and (self.transform is None or self.transform.acts_in_tangent)

    # -- the latent path ------------------------------------------------------------------------------------
    def rsample_latent(self, sample_shape: torch.Size = torch.Size()) -> Latent:
        r"""Reparameterised draws ``z = f(z₀)``, ``z₀ ~ base``, with ``log q₀(z₀)`` and ``log|det ∂f/∂z₀|``, as a
        :class:`Latent` held in tangent coordinates where the base and the transform allow it, else as points."""
        shape = torch.Size(sample_shape)
        base, f = self.base, self.transform
        if self._in_tangent():
            w0, log_q0 = base.rsample_logmap0_and_log_prob(shape)
            if f is None:
                return Latent(base.manifold, None, w0, log_q0, torch.zeros_like(log_q0))
            wk, ladj = _flat_call(f.forward_tangent, w0, self.context)
            return Latent(base.manifold, None, wk, log_q0, ladj)
        if hasattr(base, "rsample_and_log_prob"):
            z0, log_q0 = base.rsample_and_log_prob(shape)
        else:
            z0 = base.rsample(shape)
            log_q0 = base.log_prob(z0)
        zk, ladj = (z0, torch.zeros_like(log_q0)) if f is None else _flat_call(f, z0, self.context)
        return Latent(getattr(base, "manifold", None), zk, None, log_q0, ladj)

    def mean_latent(self) -> Latent:
        """The image ``f(μ)`` of the base's location (a wrapped normal's ``loc``, else its mode, else its ``mean``): what a model
        reports as the embedding of a posterior. ``log_q0`` is ``None``."""
        base, f = self.base, self.transform
        if self._in_tangent():
            w0 = base.manifold.logmap0_spatial(base.loc)
            if f is None:
                return Latent(base.manifold, None, w0, None, w0.new_zeros(w0.shape[:-1]))
            wk, ladj = _flat_call(f.forward_tangent, w0, self.context)
            return Latent(base.manifold, None, wk, None, ladj)
        z0 = base.loc if isinstance(base, WrappedNormal) else _location(base)
        zk, ladj = (z0, z0.new_zeros(z0.shape[:-1])) if f is None else _flat_call(f, z0, self.context)
        return Latent(getattr(base, "manifold", None), zk, None, None, ladj)

    # -- the Distribution API -------------------------------------------------------------------------------
    def rsample_and_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        """Reparameterised samples of shape ``sample_shape + batch_shape + event_shape`` and their log-density in
        one pass (no inverse is computed)."""
        lat = self.rsample_latent(sample_shape)
        return lat.points(), lat.log_prob

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """Reparameterised samples ``f(x)``, ``x ~ base``, of shape ``sample_shape + batch_shape + event_shape``."""
        return self.rsample_latent(sample_shape).points()

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """Samples as :meth:`rsample`, without gradients."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        r"""``log p(y) = log p_base(f⁻¹(y)) + log|det ∂f⁻¹/∂y|``, shape ``broadcast(value.shape[:-1], batch_shape)``
        (``value`` broadcasts against the batch shape as in ``torch.distributions``)."""
        event = len(self.event_shape)
        shape = torch.broadcast_shapes(value.shape[:value.dim() - event], self.batch_shape)
        if shape != value.shape[:value.dim() - event]:  # static shapes: no op where nothing broadcasts
            value = value.expand(shape + value.shape[value.dim() - event:])
        base, f = self.base, self.transform
        if self._in_tangent():
            w = base.manifold.logmap0_spatial(value)
            if f is None:
                return base.log_prob_logmap0(w)
            w0, ladj = _flat_call(f.inverse_tangent, w, self.context)
            return base.log_prob_logmap0(w0) + ladj
        if f is None:
            return base.log_prob(value)
        x, ladj = _flat_call(f.inverse, value, self.context)
        return base.log_prob(x) + ladj


def _location(base: Distribution) -> Tensor:
    """The point a base is summarised by: its mode where it declares one (a vMF's ``μ``, which its ambient ``mean``
    is not: that lies inside the ball), else its mean."""
    try:
        return base.mode
    except NotImplementedError:
        return base.mean


def _shape_text(context: Context) -> str:
    if isinstance(context, tuple):
        return "(" + ", ".join(_shape_text(c) for c in context) + ")"
    return f"tensor{tuple(context.shape)}" if torch.is_tensor(context) else type(context).__name__


# ----------------------------------------------------------------------------------------------------------
# a distribution held by a module
# ----------------------------------------------------------------------------------------------------------

def _tensors(dist: Distribution, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
    """``(path, tensor)`` for every tensor a distribution holds, nested distributions included."""
    for name, value in vars(dist).items():
        if torch.is_tensor(value):
            yield prefix + name, value
        elif isinstance(value, Distribution):
            yield from _tensors(value, f"{prefix}{name}.")


def _map_tensors(dist: Distribution, fn: Callable[[str, Tensor], Tensor], prefix: str = "") -> Distribution:
    """A shallow copy of ``dist`` (and of its nested distributions) with every tensor replaced by ``fn(path, t)``;
    modules it holds (a manifold) are kept as they are."""
    out = copy.copy(dist)
    for name, value in vars(dist).items():
        if torch.is_tensor(value):
            setattr(out, name, fn(prefix + name, value))
        elif isinstance(value, Distribution):
            setattr(out, name, _map_tensors(value, fn, f"{prefix}{name}."))
    return out


def _modules(dist: Distribution, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    for name, value in vars(dist).items():
        if isinstance(value, nn.Module):
            yield prefix + name, value
        elif isinstance(value, Distribution):
            yield from _modules(value, f"{prefix}{name}_")


class DistributionModule(nn.Module):
    """An ``nn.Module`` that holds a distribution: its tensors move and cast with the module (``.to``, ``.double``)
    and are in its ``state_dict``; modules it holds (a manifold, a transform) are submodules. Calling it returns
    the distribution.

    Example:
        >>> from torch.distributions import Independent, Normal
        >>> m = DistributionModule(Independent(Normal(torch.zeros(2), torch.ones(2)), 1)).double()
        >>> m().sample().dtype, sorted(m.state_dict())
        (torch.float64, ['base_dist.loc', 'base_dist.scale'])
    """

    def __init__(self, distribution: Distribution) -> None:
        super().__init__()
        self.distribution = distribution
        for name, module in _modules(distribution):
            self.add_module(name, module)

    def forward(self) -> Distribution:
        """The distribution."""
        return self.distribution

    def extra_repr(self) -> str:
        return repr(self.distribution)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.distribution = _map_tensors(self.distribution, lambda _, t: fn(t))
        return self

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for path, t in _tensors(self.distribution):
            destination[prefix + path] = t if keep_vars else t.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        mine = {prefix + path for path, _ in _tensors(self.distribution)}
        for key in mine:
            if key not in state_dict:
                missing_keys.append(key)

        def load(path: str, t: Tensor) -> Tensor:
            key = prefix + path
            if key not in state_dict:
                return t
            new = state_dict[key]
            if new.shape != t.shape:
                error_msgs.append(f"size mismatch for {key}: copying a tensor of shape {tuple(new.shape)}, the "
                                  f"shape in the current model is {tuple(t.shape)}")
                return t
            return new.detach().to(dtype=t.dtype, device=t.device).clone()

        self.distribution = _map_tensors(self.distribution, load)
        rest = {k: v for k, v in state_dict.items() if k not in mine}
        super()._load_from_state_dict(rest, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


# ----------------------------------------------------------------------------------------------------------
# the module
# ----------------------------------------------------------------------------------------------------------

class Flow(nn.Module):
    r"""A normalizing flow as an ``nn.Module`` that owns its base distribution and transform; called with a context
    (or nothing) it returns the :class:`FlowDistribution` ``p(y | c)``, as zuko's flows do.

    ``flow.to(...)``, ``flow.double()``, ``flow.parameters()`` and ``flow.state_dict()`` act on the whole flow, base
    included (the base's tensors are part of the module). A flow keeps today's distribution methods too
    (``flow.log_prob(y)``, ``flow.rsample_and_log_prob(shape)``, …): they are those of ``flow(context)`` with the
    context given at construction (``Flow(base, f, context=c)``).

    ``log p(y | c) = log p_base(f⁻¹(y; c)) + log|det ∂f⁻¹/∂y|``; the batch shape of ``flow(c)`` broadcasts the
    base's with ``c.shape[:-1]`` for a vector context (``build(..., context_features=C)``), and is the base's for a
    graph context (``edge_index``).

    Args:
        base: the base distribution (event shape = the manifold's ambient coordinates).
        transform: a :class:`~flows.Transform` (base → data).
        context: optional default context (used when the flow is called without one).

    Example:
        >>> from manifolds import Lorentz, WrappedNormal
        >>> from flows import build
        >>> M = Lorentz(k=1.0)
        >>> flow = Flow(WrappedNormal.at_origin(torch.ones(2), M), build("whc", M, 2)).double()
        >>> q = flow()                      # a torch.distributions.Distribution
        >>> z, log_q = q.rsample_and_log_prob((4,))
        >>> z.dtype, torch.allclose(q.log_prob(z), log_q)
        (torch.float64, True)
    """

    def __init__(self, base: Distribution, transform: Transform, context: Context = None) -> None:
        super().__init__()
        self.transform = transform
        self.base_module = DistributionModule(base)
        if torch.is_tensor(context):
            self.register_buffer("context", context, persistent=False)
        else:
            self.context = context

    @property
    def base(self) -> Distribution:
        """The base distribution (on the flow's device and dtype)."""
        return self.base_module()

    def forward(self, context: Context = None) -> FlowDistribution:
        """``p(y | context)`` as a :class:`FlowDistribution` (the construction-time context when none is given)."""
        return FlowDistribution(self.base, self.transform, self.context if context is None else context)

    # today's Distribution API, on the construction-time context
    @property
    def batch_shape(self) -> torch.Size:
        """The batch shape of ``flow()``."""
        return self().batch_shape

    @property
    def event_shape(self) -> torch.Size:
        """The event shape of ``flow()`` (the base's)."""
        return self.base.event_shape

    @property
    def support(self):
        """The base's support."""
        return self.base.support

    def _in_tangent(self) -> bool:
        return self()._in_tangent()

    def rsample_and_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        """:meth:`FlowDistribution.rsample_and_log_prob` of ``flow()``."""
        return self().rsample_and_log_prob(sample_shape)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """:meth:`FlowDistribution.rsample` of ``flow()``: reparameterised samples ``f(x)``, ``x ~ base``."""
        return self().rsample(sample_shape)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """:meth:`FlowDistribution.sample` of ``flow()``: samples without gradients."""
        return self().sample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """:meth:`FlowDistribution.log_prob` of ``flow()``: ``log p_base(f⁻¹(y)) + log|det ∂f⁻¹/∂y|``."""
        return self().log_prob(value)
