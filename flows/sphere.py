r"""A coupling flow on the sphere S² with an exact log-det: Rezende et al. 2020's cylindrical construction
("Normalizing flows on tori and spheres", arXiv 2002.02428, §4).

In cylindrical coordinates ``x = (√(1 - z²) cos φ, √(1 - z²) sin φ, z)``, ``z ∈ [-1, 1]``, ``φ ∈ [-π, π)``, the
sphere's area element is ``dA = dz dφ`` (Archimedes' hat-box theorem). A map ``(z, φ) ↦ (g(z), h(φ; z))`` with ``g``
a monotone rational-quadratic spline of ``[-1, 1]`` fixing ``±1`` and ``h(·; z)`` a circular spline
(:class:`~flows.circular.CircularSplineHalf`) is a bijection of the whole sphere (the poles ``z = ±1`` are fixed),
and its log-det with respect to the area measure is ``log g'(z) + log ∂h/∂φ`` — a triangular Jacobian in a chart
whose area element is ``dz dφ`` on both sides.

:class:`SphereSplineCoupling` alternates the order (parity 0: ``z`` by a free spline, then ``φ`` conditioned on
``z``; parity 1: ``φ`` by a free circular spline, then ``z`` conditioned on ``(cos φ, sin φ)``), and conjugates
each layer ``i ≥ 1`` by a fixed rotation (``f_i = Rᵢᵀ ∘ C_i ∘ Rᵢ``, log-det 0), so that the poles of one layer are
ordinary points of the others. Registered as ``"sphere-spline"`` for every manifold that declares itself compact
with positive curvature (:func:`on_sphere`), in dimension 2 (Sⁿ for ``n > 2`` is refused).

Points within ``~1e-8`` rad (float64) or ``~3.5e-4`` rad (float32) of a layer's poles lose accuracy: ``z`` there is
``1`` to working precision, so the spline of the height sees no difference between them (the map stays a bijection
of the representable points away from the poles, and the poles map to themselves), and the gradient of
``√(1 - z²)`` with respect to the parameters is not finite there. A sharp density fitted in float32 can put training
points inside that radius (it happened on the volcano catalogue); train such models in float64 (``.double()``),
which costs about the same on a CPU.

Example:
    >>> import torch
    >>> from manifolds import Sphere
    >>> from flows import build
    >>> f = build("sphere-spline", Sphere(2), 2, layers=4).double()
    >>> x = torch.nn.functional.normalize(torch.randn(5, 3, dtype=torch.float64), dim=-1)
    >>> y, ladj = f(x)
    >>> torch.allclose(y.norm(dim=-1), torch.ones(5, dtype=torch.float64)), torch.allclose(f.inverse(y)[0], x)
    (True, True)
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from manifolds.base import ManifoldOps

from .circular import AngleConditioner, CircularSplineHalf, HarmonicConditioner, check_coords, require
from .conditioners import make_conditioner
from .constants import DEFAULT_HIDDEN, OUTPUT_INIT_SCALE, SPHERE_ROTATION_SEED, SPLINE_BINS
from .registry import register
from .splines import SplineHalf
from .transform import Compose, Transform

Tensor = torch.Tensor

__all__ = ["HeightConditioner", "SphereSplineCoupling", "cylindrical", "from_cylindrical", "on_sphere", "random_rotation",
           "rotation_matrix"]


def cylindrical(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(z, φ)`` of points ``x`` of S² (last dimension 3), each of shape ``(..., 1)``; ``φ ∈ [-π, π]``
    (``atan2``; ``±π`` are one point), ``φ = 0`` at the poles."""
    return x[..., 2:], torch.atan2(x[..., 1:2], x[..., :1])


def from_cylindrical(z: Tensor, phi: Tensor) -> Tensor:
    """The point ``(√(1 - z²) cos φ, √(1 - z²) sin φ, z)``; ``1 - z² = (1 - z)(1 + z)`` without cancellation, its
    clamp at 0 only removes a rounding below zero at ``|z| = 1``."""
    r = ((1 - z) * (1 + z)).clamp_min(0).sqrt()
    return torch.cat([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)


def random_rotation(generator: torch.Generator) -> Tensor:
    """A random rotation vector ``v`` (axis uniform on S², angle ``|v|`` uniform in ``[0, π)``), float64; the rotation
    is :func:`rotation_matrix` of it.

    Example:
        >>> Q = rotation_matrix(random_rotation(torch.Generator().manual_seed(0)))
        >>> torch.allclose(Q @ Q.T, torch.eye(3, dtype=torch.float64)), round(float(torch.det(Q)), 12)
        (True, 1.0)
    """
    axis = torch.randn(3, generator=generator, dtype=torch.float64)
    return axis / torch.linalg.vector_norm(axis) * (torch.pi * torch.rand((), generator=generator, dtype=torch.float64))


def rotation_matrix(v: Tensor) -> Tensor:
    r"""``exp([v]_×)``: the rotation by ``|v|`` about ``v/|v|``, orthogonal to the working precision of ``v``'s dtype
    (computed in it, so a flow cast with ``.double()`` has an exactly orthogonal float64 ``R``)."""
    zero = torch.zeros_like(v[0])
    skew = torch.stack([torch.stack([zero, -v[2], v[1]]), torch.stack([v[2], zero, -v[0]]),
                        torch.stack([-v[1], v[0], zero])])
    return torch.linalg.matrix_exp(skew)


def on_sphere(manifold: ManifoldOps) -> Optional[str]:
    """Support predicate of ``sphere-spline`` (:func:`flows.register`): ``None`` for a manifold that declares itself
    compact with positive curvature (the sphere, points in ℝⁿ⁺¹), else why not. (The dimension, 2, is checked by
    the factory.)"""
    if manifold.curvature_sign == 1 and manifold.is_compact:
        return None
    return "it acts on the sphere S² (a compact manifold of positive curvature, points in ℝ³, e.g. Sphere(2))"


class HeightConditioner(HarmonicConditioner):
    r"""A conditioner of the height ``z ∈ [-1, 1]``: ``z ↦ net([T_1(z), …, T_H(z)], context)`` with ``T_k`` the
    Chebyshev polynomials (``T_k(cos ϑ) = cos kϑ``: the harmonics of the polar angle ``ϑ``, as
    :class:`~flows.circular.AngleConditioner`'s are of the azimuth, and polynomials, so smooth at the poles).
    ``H = 1`` feeds ``z`` itself.

    Example:
        >>> from flows.conditioners import MLPConditioner
        >>> net = HeightConditioner(MLPConditioner(3, 2), harmonics=3)
        >>> net(torch.tensor([[0.5], [-1.0]])).shape
        torch.Size([2, 2])
    """

    def features(self, z: Tensor) -> Tensor:
        t = [torch.ones_like(z), z]  # T_0, T_1; T_{k+1} = 2 z T_k - T_{k-1}
        for _ in range(self.harmonics - 1):
            t.append(2 * z * t[-1] - t[-2])
        return torch.cat(t[1:], dim=-1)


class SphereSplineCoupling(Transform):
    r"""One cylindrical coupling layer on S² (module docstring): with ``(z, φ)`` the cylindrical coordinates of
    ``R x``,

    * parity 0: ``z' = g(z; a)``, ``φ' = h(φ; b(z))``;
    * parity 1: ``φ' = h(φ; a)``, ``z' = g(z; b(cos φ, sin φ))``;

    ``y = Rᵀ (√(1 - z'²) cos φ', √(1 - z'²) sin φ', z')``, ``log|det| = log g'(z) + log ∂h/∂φ`` (w.r.t. the area
    measure; on a sphere of radius ``r`` the layer acts on ``x/r``, with the same log-det), where ``g`` is a rational-quadratic spline of ``[-1, 1]`` fixing ``±1`` with free end slopes
    (``3K + 1`` parameters), ``h`` a circular spline with a rotation (:class:`~flows.circular.CircularSplineHalf`),
    ``a`` free parameters and ``b`` a conditioner (and ``context``). At initialisation ``a ≈ 0``, ``b ≈ 0``: the layer
    is close to the identity.

    Args:
        manifold: the sphere (:func:`on_sphere`).
        parity: 0 or 1 (above).
        conditioner, hidden, context_features: the conditioner ``b`` (:func:`~flows.conditioners.make_conditioner`).
        bins: ``K`` of both splines.
        harmonics: ``H``: the conditioner sees ``cos kφ, sin kφ`` (:class:`~flows.circular.AngleConditioner`) or
            the Chebyshev ``T_k(z)`` (:class:`HeightConditioner`), ``k = 1 … H``; 1 (default): ``cos φ, sin φ`` or
            ``z``. More harmonics resolve narrower features with the same network.
        rotation: the rotation vector of ``R`` (:func:`rotation_matrix`), a buffer saved with the state dict; zero
            (``R = I``) by default.

    Example:
        >>> from manifolds import Sphere
        >>> f = SphereSplineCoupling(Sphere(2), parity=1, bins=4)
        >>> poles = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
        >>> f(poles)[0]  # parity 1 moves only φ: the poles stay put
        tensor([[ 0.,  0.,  1.],
                [ 0.,  0., -1.]], grad_fn=<MmBackward0>)
    """

    def __init__(self, manifold: ManifoldOps, parity: int = 0, conditioner: str = "mlp",
                 hidden: int = DEFAULT_HIDDEN, context_features: int = 0, bins: int = SPLINE_BINS,
                 rotation: Optional[Tensor] = None, harmonics: int = 1) -> None:
        require(on_sphere, manifold, type(self).__name__, "On Tⁿ use 'circular-spline' or 'mobius'")
        super().__init__(manifold)
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1; got {parity}")
        self.parity = parity
        self.height = SplineHalf(bins, bound=1.0, ends="free")
        self.angle = CircularSplineHalf(bins)
        free, conditioned = (self.height, self.angle) if parity == 0 else (self.angle, self.height)
        self.free = nn.Parameter(torch.randn(free.n_params) * OUTPUT_INIT_SCALE)
        net = make_conditioner(conditioner, harmonics if parity == 0 else 2 * harmonics, conditioned.n_params, hidden,
                               context_features)
        self.net = HeightConditioner(net, harmonics) if parity == 0 else AngleConditioner(net, harmonics)
        if rotation is None:
            rotation = torch.zeros(3)
        if rotation.shape != (3,):
            raise ValueError(f"rotation must be a rotation vector of 3 numbers (axis × angle); got shape "
                             f"{tuple(rotation.shape)}")
        self.register_buffer("rotation", rotation.to(self.free.dtype))
        #: ``r``, read from the declared injectivity radius ``π·r``: the layer acts on ``x/r`` (the area element
        #: ``r² dz dφ`` has the same factor on both sides, so the log-det is the unit sphere's)
        self.radius = manifold.injectivity_radius / math.pi

    def _coords(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        check_coords(self, x, 3, self.free)
        z, phi = cylindrical(x @ (rotation_matrix(self.rotation).T / self.radius))
        return z, phi, self.free.expand(*x.shape[:-1], self.free.numel())

    def _point(self, z: Tensor, phi: Tensor) -> Tensor:
        return from_cylindrical(z, phi) @ (rotation_matrix(self.rotation) * self.radius)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        z, phi, a = self._coords(x)
        if self.parity == 0:
            z2, l1 = self.height(z, a)
            phi2, l2 = self.angle(phi, self.net(z, context))
        else:
            phi2, l1 = self.angle(phi, a)
            z2, l2 = self.height(z, self.net(phi, context))
        return self._point(z2, phi2), l1 + l2

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        z2, phi2, a = self._coords(y)
        if self.parity == 0:
            z, l1 = self.height.inverse(z2, a)
            phi, l2 = self.angle.inverse(phi2, self.net(z, context))
        else:
            phi, l1 = self.angle.inverse(phi2, a)
            z, l2 = self.height.inverse(z2, self.net(phi, context))
        return self._point(z, phi), l1 + l2

    def extra_repr(self) -> str:
        return f"parity={self.parity}"


@register("sphere-spline", on_sphere,
          "cylindrical spline coupling on S²: height spline and circular angle spline (Rezende et al. 2020)")
def _sphere_spline(manifold, dim, layers, hidden, conditioner, bins: int = SPLINE_BINS, **kw) -> Transform:
    """Alternating :class:`SphereSplineCoupling` layers; layer ``i ≥ 1`` is conjugated by the ``i``-th rotation
    drawn from :data:`~flows.constants.SPHERE_ROTATION_SEED`."""
    if dim == 1:
        raise ValueError("sphere-spline is a flow on S²; for S¹ use a Torus(1) (angle coordinates) with "
                         "'circular-spline' or 'mobius'")
    if dim != 2:
        raise ValueError(f"sphere-spline is implemented on S² only (dim=2), got dim={dim}: Rezende et al.'s recursive "
                         f"construction for Sⁿ, n > 2, is not; use 'rfm' on Sⁿ")
    if manifold.dim is not None and manifold.dim != dim:
        raise ValueError(f"dim={dim} but the sphere has dimension {manifold.dim}; pass dim={manifold.dim}")
    g = torch.Generator().manual_seed(SPHERE_ROTATION_SEED)
    rotations = [None] + [random_rotation(g) for _ in range(layers - 1)]
    return Compose([SphereSplineCoupling(manifold, parity=i % 2, conditioner=conditioner, hidden=hidden, bins=bins,
                                         rotation=rotations[i], **kw) for i in range(layers)])
