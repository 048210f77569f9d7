"""What the flows and the VAEs need from a manifold, beyond geoopt's interface.

Both :class:`~manifolds.Euclidean` and :class:`~manifolds.Lorentz` implement this mixin, so code above the
geometry (wrapped normal, flows, VAEs) is written once, in *tangent coordinates at the origin*: an ``n``-vector
``v`` stands for the tangent vector ``(0, v)`` at ``o`` (Lorentz) or for ``v`` itself (Euclidean).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

Tensor = torch.Tensor


class ManifoldOps:
    """Mixin: the interface every manifold of the library implements, and its input validation.

    Code above the geometry (distributions, flows, VAEs, experiments) asks a manifold only what this class
    declares; it never compares names or probes attributes. A new manifold plugs in by implementing it:

    **Declared properties** (class attributes or properties, answered without reading tensor values):
        :attr:`curvature_sign` (``-1``, ``0``, ``+1``, or ``None`` for a product of mixed signs),
        :attr:`is_flat`, :attr:`is_compact`, :attr:`learnable_curvature`, :attr:`injectivity_radius`
        (``math.inf`` on ℝⁿ and Hⁿ, ``π·r`` on Sⁿ_r, ``π`` on Tⁿ), :attr:`coords_are_points` (points are their
        own tangent coordinates at the origin: ℝⁿ only, where flows skip ``exp``/``log``).

    **Curvature**: :meth:`curvature` gives the sectional curvature as a tensor (``-1/k``, ``0``, ``1/r²``);
        :attr:`curvature_parameter` (``None`` where the curvature is fixed by
        construction) and, where it is not ``None``, ``set_k`` (``k = R²``, set by :class:`vae.CurvatureSchedule`).

    **Tangent coordinates at the origin** (``n`` numbers in an orthonormal frame of ``T_o M``):
        :meth:`origin`, :meth:`expmap0_spatial` (coordinates → point), :meth:`logmap0_spatial` (point →
        coordinates), :meth:`expmap_logdet` (log-Jacobian of ``exp_o`` at a tangent vector of norm ``r``, in those
        coordinates), :meth:`translate` (an isometry taking ``o`` to ``mu``), :meth:`random`, and, where
        :attr:`is_compact`, :meth:`uniform` (the normalised uniform distribution of the Riemannian volume).

    **geoopt's API**: ``expmap``/``logmap``/``transp``/``dist``/``inner``/``projx``/``proju`` and their origin forms
        ``expmap0``/``logmap0``/``dist0``/``transp0``/``transp0back``, with geoopt's meanings.

    **Distributions** (added for issue 23): :attr:`wrapped_normal_class` (what ``WrappedNormal(loc, scale, M)``
        builds: ``None`` for the generic class, else the manifold's own, e.g. one that sums the preimages of ``exp``
        on a compact manifold) and :meth:`expmap0_logdet` (the log-Jacobian of ``exp_o`` from the coordinates
        themselves, which a product needs).

    **Variational family**: :attr:`posterior_family` (what a VAE's posterior is on this manifold: ``None`` for the
        wrapped normal, the von Mises–Fisher on spheres, a product of the factors' on products).

    **Isometric model**: :meth:`isometric_model` returns ``(model, to_model, from_model)`` when flows written for
        another manifold (e.g. the hyperboloid) should be carried through an isometry (e.g. the Poincaré ball),
        else ``None``. Isometries keep densities with respect to the Riemannian volume, so log-dets are unchanged.

    **For continuous flows** (``flows.rfm``, which integrates ``dx/dt = V(t, x)`` in ambient coordinates and projects
        with ``projx``): :meth:`divergence` (the exact Riemannian divergence of a tangent field given in ambient
        coordinates, or Hutchinson's estimate of it) and :meth:`features` / :meth:`feature_dim` (a smooth injective
        encoding of points for neural networks). Derived, nothing to implement: :attr:`exp0_is_diffeomorphism`
        and :meth:`expmap0_logdet` (override the latter where the log-Jacobian of ``exp_o`` is not a function of
        ``|v|``, e.g. products).
    """

    #: when True, every operation checks its inputs (finite, right size, on the manifold / tangent space)
    validate: bool = False
    #: intrinsic dimension ``n`` if fixed at construction (then sizes are checked), else ``None``
    dim: int | None = None
    #: sign of the sectional curvature: -1 hyperbolic, 0 flat, +1 spherical; ``None`` for mixed products
    curvature_sign: int | None = 0
    #: whether the manifold is compact (then :meth:`uniform` exists and flows must be bijections of all of it)
    is_compact: bool = False
    #: whether points are their own tangent coordinates at the origin (``expmap0_spatial`` is the identity)
    coords_are_points: bool = False

    @property
    def is_flat(self) -> bool:
        """Zero curvature everywhere (ℝⁿ, Tⁿ, products of flat factors)."""
        return self.curvature_sign == 0

    @property
    def learnable_curvature(self) -> bool:
        """Whether the curvature is a trainable parameter (then :attr:`curvature_parameter` is it)."""
        return False

    @property
    def injectivity_radius(self) -> float:
        """Largest ``r`` such that ``exp_x`` is a diffeomorphism on the tangent ball of radius ``r`` (every ``x``)."""
        return math.inf

    @property
    def curvature_parameter(self) -> torch.nn.Parameter | None:
        """The parameter behind the curvature (toggle its ``requires_grad`` to train it; a manifold that has one
        also implements ``set_k(value)`` for :class:`vae.CurvatureSchedule`), or ``None`` where the curvature is
        fixed by construction (ℝⁿ, Tⁿ)."""
        return None

    def curvature(self) -> Tensor:  # pragma: no cover - overridden
        """Sectional curvature as a 0-d tensor (``-1/k`` on Hⁿ_k, ``1/r²`` on Sⁿ_r, ``0`` when flat)."""
        raise NotImplementedError

    @property
    def exp0_is_diffeomorphism(self) -> bool:
        """Whether ``exp_o`` maps ℝⁿ (tangent coordinates) diffeomorphically onto the whole manifold (infinite
        injectivity radius and not compact: ℝⁿ, Hⁿ, the ball): then flows of ℝⁿ lift to it as ``exp_o ∘ f ∘ log_o``
        and ``log_o`` is a global chart. Derived from :attr:`injectivity_radius` and :attr:`is_compact`."""
        return self.injectivity_radius == math.inf and not self.is_compact

    def expmap0_logdet(self, v: Tensor) -> Tensor:
        """``log|det d exp_o(v)|`` at tangent coordinates ``v`` (``n`` numbers, last dimension), the log-Jacobian
        the lifted flows add: ``expmap_logdet(|v|, n)`` on isotropic manifolds; a product sums its factors'."""
        return self.expmap_logdet(torch.linalg.vector_norm(v, dim=-1), v.size(-1))

    def features(self, x: Tensor) -> Tensor:
        """A smooth, injective encoding of points ``x`` (ambient coordinates last) as ``feature_dim(n)`` numbers, the
        input of neural vector fields: the ambient coordinates by default; a manifold whose coordinates jump
        (the torus's angles) returns a continuous encoding (``cos θ, sin θ``)."""
        return x

    def feature_dim(self, n: int) -> int:
        """Length of :meth:`features` for intrinsic dimension ``n`` (``ambient_dim(n)`` by default)."""
        return self.ambient_dim(n)

    def chart_features(self, x: Tensor) -> Tensor:
        """What a decoder reads of latent points ``x``: the tangent coordinates ``log_o(x)`` where ``exp_o`` is a
        global chart (:attr:`exp0_is_diffeomorphism`: unbounded, so an inner product of them can be any logit), else
        :meth:`features` (``log_o`` jumps at the cut locus, and on Sⁿ its derivative is unbounded there); a product
        decides per factor (the ball's ``log_o`` beside a torus's ``cos θ, sin θ``)."""
        return self.logmap0_spatial(x) if self.exp0_is_diffeomorphism else self.features(x)

    def chart_feature_dim(self, n: int) -> int:
        """Length of :meth:`chart_features` for intrinsic dimension ``n``."""
        return n if self.exp0_is_diffeomorphism else self.feature_dim(n)

    def embedding_terms(self, x: Tensor, probe: Tensor | None = None
                        ) -> tuple[list[tuple[Tensor, Tensor]], Tensor | None, Tensor | None]:
        r"""What :meth:`divergence` needs from an embedding of the manifold in a flat (pseudo-)Euclidean ``(ℝᵐ, G)``
        (:func:`embedded_divergence`): ``(normals, ε, Gε)`` at the points ``x`` (detached, ambient coordinates last).
        ``normals`` are the pairs ``(ε_j Gν_j, ν_j)`` of the unit normals (``[]`` on a flat chart: ℝⁿ, Tⁿ;
        ``[(x/r², x)]`` on Sⁿ_r; ``[(-Gx/k, x)]`` on Hⁿ_k); with a standard normal ``probe`` shaped like ``x``, ``ε`` is
        a tangent probe with ``E[ε ε^♭] = id`` on ``T_xM`` and ``Gε`` its dual (``None, None`` without a probe).
        A product concatenates its factors' (normals padded with zeros). A manifold whose metric is not induced by
        a flat ambient one (the Poincaré ball) does not answer it: flows reach it through :meth:`isometric_model`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement divergence(v, x) (nor embedding_terms); "
                                  "continuous flows (flows.rfm) need it: see ManifoldOps.divergence, or give the "
                                  "manifold an isometric_model that has it")

    def divergence(self, v: Tensor, x: Tensor, *, probe: Tensor | None = None,
                   create_graph: bool = False) -> Tensor:
        r"""Riemannian divergence ``div_g V(x)`` of a tangent field ``v = V(x)`` given in ambient coordinates
        (``x`` must be part of ``v``'s autograd graph; rows of ``v`` depend on the same rows of ``x`` only), shape
        ``x.shape[:-1]``.

        ``probe=None``: exact. Otherwise ``probe`` is a standard normal tensor shaped like ``x``, which the
        manifold turns into a tangent probe ``ε ∈ T_xM`` with ``E[ε ε^♭] = id`` on ``T_xM`` and returns
        Hutchinson's unbiased estimate ``⟨ε, Jε⟩_g`` (one vector-Jacobian product). It is :func:`embedded_divergence`
        with the manifold's :meth:`embedding_terms`: ``tr J`` on a flat chart (ℝⁿ, Tⁿ), ``tr J - x̂ᵀJx̂`` on Sⁿ_r
        (``x̂ = x/r``), ``tr J + ⟨x, Jx⟩_L/k`` on Hⁿ_k; a product adds its factors' (the trace of ``J`` over all
        coordinates is the sum of its diagonal blocks' traces, and independent factor probes make the cross
        terms vanish in expectation). ``create_graph=True`` keeps the result differentiable (training through the
        ODE solver).

        Example:
            >>> from manifolds import Sphere
            >>> x = torch.tensor([[0.6, 0.0, 0.8]], requires_grad=True)
            >>> a = torch.tensor([1.0, 0.0, 0.0])
            >>> v = a - (x @ a)[:, None] * x  # P_x(a), the gradient of ⟨a, x⟩ on S²: its divergence is -2⟨a, x⟩
            >>> Sphere(2).divergence(v, x)
            tensor([-1.2000])
        """
        normals, eps, dual = self.embedding_terms(x.detach(), probe)
        return embedded_divergence(v, x, normals if probe is None else (), probe=eps, probe_dual=dual,
                                   create_graph=create_graph)

    def isometric_model(self):
        """``(model, to_model, from_model)`` through which flows of ``model`` act on this manifold, or ``None``."""
        return None

    @property
    def wrapped_normal_class(self) -> type | None:
        """The class that ``manifolds.WrappedNormal(loc, scale, self)`` builds: ``None`` for the generic one (exact where
        ``exp_o`` is injective on the whole tangent space: ℝⁿ, Hⁿ, the ball), a class that sums the preimages of
        ``exp`` where it is not (:class:`~manifolds.SphereWrappedNormal`, :class:`~manifolds.TorusWrappedNormal`), or
        a product of factors (:class:`~manifolds.ProductDistribution`). Added for issue 23 (new interface member)."""
        return None

    @property
    def posterior_family(self) -> type | None:
        """The family of the variational posterior a VAE puts on this manifold (``vae.posterior_head`` turns an
        encoder's outputs into one): ``None`` for the wrapped normal (``WrappedNormal(loc, scale, self)``, which
        builds :attr:`wrapped_normal_class`), :class:`~manifolds.VonMisesFisher` on spheres (Davidson et al. 2018),
        :class:`~manifolds.ProductDistribution` on products (each factor's own family). The prior follows the
        declared properties: the uniform law where :attr:`is_compact`, else ``WrappedNormal(o, I)``; a product
        takes its factors'. Added for issue 23 (item 5: VAEs on any manifold)."""
        return None

    def uniform(self, *, dtype: torch.dtype | None = None, device: torch.device | None = None):
        """The uniform distribution on a compact manifold (``log p = -log vol M``)."""
        raise ValueError(f"{self.name} is not compact: it has no uniform distribution; use a wrapped normal instead")

    # -- sizes --------------------------------------------------------------------------------------------
    def ambient_dim(self, n: int) -> int:  # pragma: no cover - overridden
        """Number of ambient coordinates of a point of intrinsic dimension ``n``."""
        raise NotImplementedError

    def intrinsic_dim(self, x: Tensor) -> int:  # pragma: no cover - overridden
        """Intrinsic dimension ``n`` of the points ``x`` (ambient coordinates last)."""
        raise NotImplementedError

    def same_as(self, other: object) -> bool:
        """Whether ``other`` is this manifold or an interchangeable copy (same kind and, where there is one, the
        same fixed curvature): flows on either can be composed. Reads values on the host (construction time only)."""
        return self is other or (type(self) is type(other) and self.coords_are_points)

    # -- validation ---------------------------------------------------------------------------------------
    def _check_size(self, x: Tensor, what: str) -> None:
        if x.dim() == 0:
            raise ValueError(f"{what} must have at least one dimension (coordinates last); got a scalar")
        expected_min = self.ambient_dim(1)
        if x.size(-1) < expected_min:
            raise ValueError(
                f"{what} has {x.size(-1)} coordinates in its last dimension; {self.name} points need at least "
                f"{expected_min} (intrinsic dimension n >= 1 has {self.ambient_dim(1)}+ coordinates)"
            )
        if self.dim is not None and x.size(-1) != self.ambient_dim(self.dim):
            raise ValueError(
                f"{what} has {x.size(-1)} coordinates in its last dimension, but this {self.name} manifold has "
                f"dimension {self.dim} and uses {self.ambient_dim(self.dim)} ambient coordinates; pass points of that "
                f"size, or build the manifold with the dimension of your data"
            )

    def _check_same_size(self, x: Tensor, y: Tensor, dim: int = -1) -> None:
        """Two points of one manifold have as many coordinates (a shape check: no values are read)."""
        if x.size(dim) != y.size(dim):
            raise ValueError(
                f"x has {x.size(dim)} coordinates and y has {y.size(dim)} in dimension {dim}: points of one "
                f"{self.name} manifold have the same number (n + 1 on the hyperboloid)"
            )

    def _check_finite(self, x: Tensor, what: str) -> None:
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(
                f"{what} contains {bad} non-finite value(s) (NaN or inf); check the upstream computation "
                f"(e.g. with torch.autograd.set_detect_anomaly) before passing it to {self.name}"
            )

    @staticmethod
    def _finite_tangent(u: Tensor) -> tuple[bool, str | None]:
        """``_check_vector_on_tangent`` of a manifold whose tangent spaces are all of ℝⁿ: only finiteness."""
        if not bool(torch.isfinite(u).all()):
            return False, "contains NaN or inf coordinates"
        return True, None

    def validate_point(self, x: Tensor, what: str = "x") -> None:
        """Raise ``ValueError`` if ``x`` has the wrong size; with validation on, also if it is not finite or
        not on the manifold (the message gives the violation and suggests ``projx``)."""
        self._check_size(x, what)
        if self.validate:
            self._check_finite(x, what)
            ok, reason = self._check_point_on_manifold(x)
            if not ok:
                raise ValueError(f"{what}: {reason}")

    def validate_tangent(self, x: Tensor, u: Tensor, what: str = "u") -> None:
        """Like :meth:`validate_point`, for a tangent vector ``u`` at ``x``."""
        self._check_size(u, what)
        if self.validate:
            self._check_finite(u, what)
            ok, reason = self._check_vector_on_tangent(x, u)
            if not ok:
                raise ValueError(f"{what}: {reason}")

    def validate_coords(self, v: Tensor, what: str = "v") -> None:
        """Check tangent coordinates at the origin (``n`` numbers, last dimension)."""
        if v.dim() == 0 or v.size(-1) < 1:
            raise ValueError(f"{what} must have tangent coordinates in its last dimension; got shape {tuple(v.shape)}")
        if self.dim is not None and v.size(-1) != self.dim:
            raise ValueError(
                f"{what} has {v.size(-1)} tangent coordinates, but this {self.name} manifold has dimension {self.dim}; "
                f"pass {self.dim} numbers (ambient points go to logmap0_spatial, not here)"
            )
        if self.validate:
            self._check_finite(v, what)


def embedded_divergence(v: Tensor, x: Tensor, normals: Sequence[tuple[Tensor, Tensor]] = (), *,
                        probe: Tensor | None = None, probe_dual: Tensor | None = None,
                        create_graph: bool = False) -> Tensor:
    r"""Riemannian divergence of a tangent field ``v = V(x)`` on a submanifold of a flat (pseudo-)Euclidean space
    ``(ℝᵐ, G)`` with the induced metric, from its ambient Jacobian ``J = ∂v/∂x``:

    .. math:: \operatorname{div}_g V = \operatorname{tr} J - \sum_j a_j^\top J\, b_j ,
        \qquad a_j = ε_j\, G ν_j,\; b_j = ν_j ,

    ``ν_j`` the unit normals (``ε_j = ⟨ν_j, ν_j⟩_G = ±1``), passed as the pairs ``normals = [(a_j, b_j), …]``
    (shaped like ``x``). The ambient connection is the ordinary derivative, so the submanifold's is its projection
    (Gauss formula) and ``div_g V = Σ_i ⟨e_i, J e_i⟩_G`` over an orthonormal tangent frame; completing the frame
    with the normals gives the formula, in which ``J``'s normal part (how ``V`` is extended off the manifold)
    cancels. No normals: ``tr J`` (a flat chart). Sⁿ_r: ``a = b = x/r``, ``tr J - x̂ᵀJx̂``. Hⁿ_k (``ν = x/√k``,
    ``ε = -1``): ``a = -Gx/k, b = x``, ``tr J + ⟨x, Jx⟩_L/k``. Exact: ``m + len(normals)`` batched
    vector-Jacobian products. With a tangent ``probe`` ``ε`` (``E[εε^♭] = P_x``) and ``probe_dual = Gε``:
    Hutchinson's unbiased ``(Gε)ᵀJε`` (one product).

    Example:
        >>> x = torch.tensor([[0.6, 0.8]], requires_grad=True)  # the unit circle in ℝ²
        >>> v = torch.stack([-x[:, 1], x[:, 0]], -1) * x[:, :1]  # V = x₀·(rotation field); div = ∂_θ x₀ = -x₁
        >>> embedded_divergence(v, x, [(x.detach(), x.detach())])
        tensor([-0.8000])
    """
    if probe is not None:
        (g,) = torch.autograd.grad(v, x, probe_dual, create_graph=create_graph, retain_graph=True, allow_unused=True)
        return v.new_zeros(v.shape[:-1]) if g is None else (g * probe).sum(-1)
    m = v.size(-1)
    rows = torch.eye(m, dtype=v.dtype, device=v.device).reshape(m, *([1] * (v.dim() - 1)), m).expand(m, *v.shape)
    rows = torch.cat([rows, *(a.unsqueeze(0) for a, _ in normals)], dim=0)  # e_A (A < m), then a_j
    (g,) = torch.autograd.grad(v, x, rows, create_graph=create_graph, retain_graph=True, allow_unused=True,
                               is_grads_batched=True)
    if g is None:
        return v.new_zeros(v.shape[:-1])
    div = torch.diagonal(g[:m], dim1=0, dim2=-1).sum(-1)  # Σ_A (e_Aᵀ J)_A
    for j, (_, b) in enumerate(normals):
        div = div - (g[m + j] * b).sum(-1)  # a_jᵀ J b_j
    return div
