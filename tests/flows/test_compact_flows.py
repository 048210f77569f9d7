"""Flows on the circle, the torus and the sphere (``circular-spline``, ``mobius``, ``sphere-spline``): exact inverses,
log-dets against an autograd Jacobian in a chart whose volume element is the Riemannian one (angles on Tⁿ; the
cylindrical ``(z, φ)`` chart on S², where ``dA = dz dφ``), periodicity across ``±π``, outputs inside the chart at its
edges, densities of a uniform base that integrate to 1, and the registry's choice from what a manifold declares.

Tolerances (float64): a layer is a few dozen operations on O(π) numbers, so round trips are exact to ~1e-14·π
amplified by the layers' conditioning (slopes down to ~1e-2 with randomised parameters); we allow 1e-9 (the shared
suite's ``ROUNDTRIP_RTOL``). Log-dets are sums of O(1) logs: 1e-8. Quadrature: the densities are C¹ and piecewise
smooth (rational-quadratic bins), so the midpoint rule's error is O(h²·max|p''|); the grids below make it < 1e-4
(measured: 1e-9 on S¹ with 20 000 nodes, ~1e-6 on T² and S² with 600² nodes), and we allow 1e-3 while requiring
the density to be far from uniform (max/min > 2), so the test cannot pass with a wrong log-det.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

import flows
from flows.sphere import cylindrical, from_cylindrical
from manifolds import Euclidean, Lorentz, Sphere, Torus
from manifolds.torus import wrap

F64 = torch.float64
ROUNDTRIP = 1e-9
LOGDET = 1e-8
TORUS_FLOWS = ("circular-spline", "mobius")


def _flow(fh, name, M, dim, layers=3, hidden=16, gain=1.5, **kw):
    f = flows.build(name, M, dim, layers=layers, hidden=hidden, **kw).double()
    return fh.randomize_(f, gain=gain)


def _angle_err(a, b):
    """Largest distance on the circle between the angles ``a`` and ``b``."""
    return float(wrap(a - b).detach().abs().max())


def _angles(n, count=64, seed=0):
    """Random angles in ``[-π, π)ⁿ`` plus the chart's edges: ``-π``, the largest float below ``π``, and 0."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(count, n, generator=g, dtype=F64) * 2 - 1) * math.pi
    edge = torch.tensor([-math.pi, math.nextafter(math.pi, 0.0), 0.0], dtype=F64)
    return torch.cat([x, edge.unsqueeze(-1).expand(3, n)])


def _jacobian_logdet(fn, x):
    """``log|det ∂fn/∂x|`` per row of ``x`` (an autograd Jacobian of each point separately)."""
    out = []
    for row in x:
        J = torch.autograd.functional.jacobian(lambda r: fn(r.unsqueeze(0))[0].squeeze(0), row)
        out.append(torch.linalg.slogdet(J)[1])
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------------------------
# the circle and the torus
# ------------------------------------------------------------------------------------------------------------------

TORUS_CASES = [pytest.param(name, n, id=f"{name}-T{n}") for name in TORUS_FLOWS for n in (1, 2, 3)]


@pytest.mark.parametrize("name,n", TORUS_CASES)
def test_torus_round_trip_both_ways(fh, name, n):
    f = _flow(fh, name, Torus(n), n)
    x = _angles(n)
    y, _ = f(x)
    assert _angle_err(f.inverse(y)[0], x) < ROUNDTRIP
    y0 = _angles(n, seed=1)  # fresh data points: nothing from a forward pass
    assert _angle_err(f(f.inverse(y0)[0])[0], y0) < ROUNDTRIP


@pytest.mark.parametrize("name,n", TORUS_CASES)
def test_torus_logdet_matches_autograd_jacobian(fh, name, n):
    """The flat torus' volume is dθ₁…dθₙ: the log-det is that of the Jacobian of the angles, both directions."""
    f = _flow(fh, name, Torus(n), n)
    x = _angles(n, count=12)
    for fn in (f, f.inverse):
        _, ladj = fn(x)
        brute = _jacobian_logdet(fn, x)
        torch.testing.assert_close(ladj, brute, atol=LOGDET, rtol=0)
        assert float(brute.abs().max()) > 0.1  # randomised: far from volume-preserving
    torch.testing.assert_close(f.inverse(f(x)[0])[1], -f(x)[1], atol=LOGDET, rtol=0)


@pytest.mark.parametrize("name,n", TORUS_CASES)
def test_torus_outputs_stay_in_the_chart(fh, name, n):
    """Angles at the chart's edges (and rotations that push images across ±π) come back in [-π, π)."""
    f = _flow(fh, name, Torus(n), n, gain=3.0)
    x = torch.cat([_angles(n, count=2000), torch.full((1, n), -math.pi, dtype=F64)])
    for out in (f(x)[0], f.inverse(x)[0]):
        assert bool(((out >= -math.pi) & (out < math.pi)).all()), (out.min(), out.max())
    T = Torus(n, validate=True)
    g = flows.build(name, T, n, hidden=8).double()
    with pytest.raises(ValueError, match="chart"):
        g(torch.full((2, n), math.pi, dtype=F64))  # π is outside [-π, π): the manifold's validation says so


@pytest.mark.parametrize("name,n", TORUS_CASES)
def test_torus_flow_is_periodic(fh, name, n):
    """f(-π) = f(π) (the same point of the circle), in every angle, with the same log-det; and the log-derivative is
    continuous across ±π (C¹), also in the conditioning angles of a coupling."""
    f = _flow(fh, name, Torus(n), n)
    g = torch.Generator().manual_seed(3)
    base = (torch.rand(8, n, generator=g, dtype=F64) * 2 - 1) * math.pi
    for i in range(n):
        lo, hi, lo_in, hi_in = (base.clone() for _ in range(4))
        lo[:, i], hi[:, i] = -math.pi, math.pi
        lo_in[:, i], hi_in[:, i] = -math.pi + 1e-10, math.pi - 1e-10
        for fn in (f, f.inverse):
            (ylo, llo), (yhi, lhi) = fn(lo), fn(hi)
            assert _angle_err(ylo, yhi) < 1e-12
            torch.testing.assert_close(llo, lhi, atol=1e-12, rtol=0)
            # 2e-10 apart: a C¹ log-derivative moves by 2e-10·|(log h')'| ≲ 1e-7 (slopes of log h' ≲ 5e2 here)
            torch.testing.assert_close(fn(lo_in)[1], fn(hi_in)[1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", TORUS_FLOWS)
def test_density_integrates_to_one_on_the_circle(fh, name):
    """Uniform base on S¹: p(y) = exp(log|det ∂f⁻¹(y)|)/(2π) integrates to 1 (midpoint rule, 100 000 nodes)."""
    f = _flow(fh, name, Torus(1), 1, layers=4)
    N = 100000
    y = (-math.pi + (torch.arange(N, dtype=F64) + 0.5) * (2 * math.pi / N)).unsqueeze(-1)
    with torch.no_grad():
        p = f.inverse(y)[1].exp() / (2 * math.pi)
    assert float(p.max() / p.min()) > 2
    assert abs(float(p.sum() * (2 * math.pi / N)) - 1) < 1e-6


@pytest.mark.parametrize("name", TORUS_FLOWS)
def test_density_integrates_to_one_on_the_torus(fh, name):
    """Uniform base on T²: ∫∫ exp(log|det ∂f⁻¹|)/(2π)² = 1 (midpoint rule, 400² nodes)."""
    f = _flow(fh, name, Torus(2), 2, layers=2, gain=0.5)
    N = 400
    t = -math.pi + (torch.arange(N, dtype=F64) + 0.5) * (2 * math.pi / N)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        p = f.inverse(grid)[1].exp() / (2 * math.pi) ** 2
    assert float(p.max() / p.min()) > 2
    assert abs(float(p.sum() * (2 * math.pi / N) ** 2) - 1) < 1e-3


def test_mobius_is_the_disc_automorphism(fh):
    """One Möbius layer on S¹ is z ↦ e^{ic}(z - ω)/(1 - ω̄z) on z = e^{iθ} (complex arithmetic as the reference),
    with derivative (1 - |ω|²)/|z - ω|²."""
    half = flows.MobiusHalf()
    theta = torch.linspace(-math.pi, math.pi, 41, dtype=F64)[:-1].unsqueeze(-1)
    u1, u2, c = 0.7, -1.9, 2.5
    params = torch.tensor([[u1, u2, c]], dtype=F64).expand(40, -1)
    y, ladj = half(theta, params)
    w = complex(u1, u2) * 0.99 / math.sqrt(1 + u1 * u1 + u2 * u2)
    z = torch.exp(1j * theta.squeeze(-1).to(torch.complex128))
    ref = torch.exp(torch.tensor(1j * c, dtype=torch.complex128)) * (z - w) / (1 - w.conjugate() * z)
    assert _angle_err(y.squeeze(-1), torch.angle(ref)) < 1e-13
    torch.testing.assert_close(ladj, torch.log((1 - abs(w) ** 2) / (z - w).abs() ** 2), atol=1e-13, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# the sphere
# ------------------------------------------------------------------------------------------------------------------

def _sphere_points(count=64, seed=0, radius=1.0):
    """Random points of S²_r plus the poles of the first layer and points within 1e-6 of them and of the seam φ = ±π."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(count, 3, generator=g, dtype=F64), dim=-1)
    z = torch.tensor([1 - 1e-6, -1 + 1e-6, 0.3, -0.6], dtype=F64).unsqueeze(-1)
    phi = torch.tensor([0.2, -2.0, math.pi, -math.pi], dtype=F64).unsqueeze(-1)
    return torch.cat([x, from_cylindrical(z, phi)]) * radius


def _chart(fn):
    """``(z, φ) ↦ (z', φ')``: ``fn`` read in the cylindrical chart, whose area element is ``dz dφ`` on both sides."""
    def mapped(zp):
        y = fn(from_cylindrical(zp[..., :1], zp[..., 1:]))[0]
        return torch.cat(cylindrical(y), dim=-1)
    return mapped


@pytest.fixture(params=[1, 6], ids=["harmonics1", "harmonics6"])
def sphere_flow(fh, request):
    """Four layers; conditioners on the first harmonic (``cos φ, sin φ`` / ``z``) or on six (Fourier / Chebyshev
    features, ``harmonics=6``). With six harmonics, weights of gain 1.5 make a map with log-dets up to ±18 nats whose
    four-layer inverse amplifies float64 rounding to ~2e-7 (each layer alone round-trips to 1e-10: conditioning of
    the map, not of the code); gain 1.0 keeps the log-dets at the first harmonic's size (±11 nats)."""
    harmonics = request.param
    return _flow(fh, "sphere-spline", Sphere(2), 2, layers=4, harmonics=harmonics, gain=1.5 if harmonics == 1 else 1.0)


def test_sphere_round_trip_both_ways(fh, sphere_flow):
    f = sphere_flow
    x = _sphere_points()
    y, _ = f(x)
    torch.testing.assert_close(f.inverse(y)[0], x, atol=ROUNDTRIP, rtol=0)
    y0 = _sphere_points(seed=1)
    torch.testing.assert_close(f(f.inverse(y0)[0])[0], y0, atol=ROUNDTRIP, rtol=0)


def test_sphere_logdet_matches_the_cylindrical_chart_jacobian(fh, sphere_flow):
    """log|det| w.r.t. the area measure = log|det ∂(z', φ')/∂(z, φ)| (Archimedes: dA = dz dφ), both directions."""
    f = sphere_flow
    g = torch.Generator().manual_seed(5)
    zp = torch.stack([torch.rand(16, generator=g, dtype=F64) * 1.9 - 0.95,
                      (torch.rand(16, generator=g, dtype=F64) * 2 - 1) * math.pi], dim=-1)
    x = from_cylindrical(zp[:, :1], zp[:, 1:])
    for fn in (f, f.inverse):
        _, ladj = fn(x)
        brute = _jacobian_logdet(lambda p: (_chart(fn)(p),), zp)
        torch.testing.assert_close(ladj, brute, atol=LOGDET, rtol=0)
        assert float(brute.abs().max()) > 0.1
    torch.testing.assert_close(f.inverse(f(x)[0])[1], -f(x)[1], atol=LOGDET, rtol=0)


def test_sphere_logdet_matches_the_tangent_frame_jacobian(fh, sphere_flow):
    """The same log-det from the ambient Jacobian J: log|det Fᵀ J E| with E, F orthonormal tangent frames at x and
    f(x) (independent of the chart, so it also checks the rotations between layers)."""
    f = sphere_flow
    x = _sphere_points(count=10, seed=7)[:10]

    def frame(p):
        a = torch.where(p[..., :1].abs() < 0.9, torch.tensor([1.0, 0.0, 0.0], dtype=F64),
                        torch.tensor([0.0, 1.0, 0.0], dtype=F64))
        e1 = torch.nn.functional.normalize(a - (a * p).sum(-1, keepdim=True) * p, dim=-1)
        return torch.stack([e1, torch.cross(p, e1, dim=-1)], dim=-1)  # 3×2

    for fn in (f, f.inverse):
        y, ladj = fn(x)
        for i in range(x.size(0)):
            J = torch.autograd.functional.jacobian(lambda r: fn(r.unsqueeze(0))[0].squeeze(0), x[i])
            M = frame(y[i].detach()).T @ J @ frame(x[i])
            torch.testing.assert_close(ladj[i], torch.linalg.slogdet(M)[1], atol=LOGDET, rtol=0)


def test_sphere_outputs_stay_on_the_sphere(fh):
    """Images stay on the sphere (radius 1 and 2) to rounding, and the poles of every layer are finite images."""
    for r in (1.0, 2.0):
        f = _flow(fh, "sphere-spline", Sphere(2, radius=r), 2, layers=4)
        poles = torch.tensor([[0.0, 0.0, r], [0.0, 0.0, -r]], dtype=F64)
        x = torch.cat([_sphere_points(radius=r), poles])
        for out, _ in (f(x), f.inverse(x)):
            assert bool(torch.isfinite(out).all())
            torch.testing.assert_close(out.norm(dim=-1), torch.full((x.size(0),), r, dtype=F64), atol=1e-14 * r,
                                       rtol=0)


def test_sphere_logdet_does_not_depend_on_the_radius(fh):
    """On S²_r the flow is the unit sphere's flow of x/r, scaled by r; the log-det (area ratio) is the same."""
    f1 = _flow(fh, "sphere-spline", Sphere(2), 2)
    f2 = _flow(fh, "sphere-spline", Sphere(2, radius=2.0), 2)
    x = _sphere_points()
    (y1, l1), (y2, l2) = f1(x), f2(2 * x)
    torch.testing.assert_close(y2, 2 * y1, atol=1e-13, rtol=0)
    torch.testing.assert_close(l2, l1, atol=1e-13, rtol=0)


@pytest.mark.parametrize("harmonics", [1, 3])
@pytest.mark.parametrize("layer", [0, 1], ids=["z-then-phi", "rotated-phi-then-z"])
def test_density_integrates_to_one_on_the_sphere(fh, layer, harmonics):
    """Uniform base on S²: ∫ exp(log|det ∂f⁻¹|)/(4π) dA = 1, by the midpoint rule in (z, φ) (dA = dz dφ), 400², for
    each kind of layer: parity 0 in the quadrature's own chart, and parity 1 conjugated by a rotation (its poles and
    seam are ordinary points of the grid). A composition of such bijections is one too (its log-dets are checked
    above); its density, a product of peaks (max/min ~1e4 already for two randomised layers), needs a grid of
    1600² to reach 1e-5, too slow for the suite."""
    f = _flow(fh, "sphere-spline", Sphere(2), 2, layers=2, gain=0.5, harmonics=harmonics).transforms[layer]
    N = 400
    z = -1 + (torch.arange(N, dtype=F64) + 0.5) * (2 / N)
    phi = -math.pi + (torch.arange(N, dtype=F64) + 0.5) * (2 * math.pi / N)
    Z, P = torch.meshgrid(z, phi, indexing="ij")
    with torch.no_grad():
        p = f.inverse(from_cylindrical(Z.reshape(-1, 1), P.reshape(-1, 1)))[1].exp() / (4 * math.pi)
    assert float(p.max() / p.min()) > 2
    assert abs(float(p.sum() * (2 / N) * (2 * math.pi / N)) - 1) < 1e-3


# ------------------------------------------------------------------------------------------------------------------
# the registry, parameters, saving
# ------------------------------------------------------------------------------------------------------------------

def test_registry_decides_from_what_the_manifold_declares(fh):
    torus, sphere = set(flows.available(Torus(2))), set(flows.available(Sphere(2)))
    assert set(TORUS_FLOWS) <= torus and "sphere-spline" not in torus
    assert "sphere-spline" in sphere and not set(TORUS_FLOWS) & sphere
    for M in (Euclidean(), Lorentz()):
        assert not {"sphere-spline", *TORUS_FLOWS} & set(flows.available(M))

    class Ring(Torus):  # another name, the same declarations: the same flows
        name = "Ring"

    assert set(flows.available(Ring(1))) == set(flows.available(Torus(1)))


@pytest.mark.parametrize("name", ["sphere-spline", *TORUS_FLOWS])
def test_build_refuses_other_manifolds_with_a_message(fh, name):
    for M in (Euclidean(), Lorentz()):
        with pytest.raises(ValueError, match=f"{name}.*cannot act on the {M.name}"):
            flows.build(name, M, 2)
    other, where = (Sphere(2), "torus") if name in TORUS_FLOWS else (Torus(2), "sphere")
    with pytest.raises(ValueError, match=f"acts on the {where}"):
        flows.build(name, other, 2)


def test_build_refuses_unsupported_dimensions(fh):
    with pytest.raises(ValueError, match="S² only.*rfm"):
        flows.build("sphere-spline", Sphere(3), 3)
    with pytest.raises(ValueError, match="Torus"):
        flows.build("sphere-spline", Sphere(1), 1)
    with pytest.raises(ValueError, match="dimension 3"):
        flows.build("circular-spline", Torus(3), 2)
    with pytest.raises(ValueError, match="context"):
        flows.build("mobius", Torus(1), 1, context_features=2)


@pytest.mark.parametrize("name,n", [("sphere-spline", 2), *[(t, n) for t in TORUS_FLOWS for n in (1, 2)]])
def test_gradients_reach_every_parameter(fh, name, n):
    """At the near-identity initialisation, a uniform-base log-likelihood gives every parameter a gradient."""
    M = Sphere(2) if name == "sphere-spline" else Torus(n)
    f = flows.build(name, M, n, layers=2, hidden=8).double()
    data = _sphere_points(count=32)[:32] if name == "sphere-spline" else _angles(n)
    f.inverse(data)[1].sum().backward()
    for pname, p in f.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and bool((p.grad != 0).any()), pname


@pytest.mark.parametrize("name,n", [("sphere-spline", 2), ("circular-spline", 3), ("mobius", 1)])
def test_state_dict_round_trip(fh, name, n):
    M = Sphere(2) if name == "sphere-spline" else Torus(n)
    f = _flow(fh, name, M, n)
    buf = io.BytesIO()
    torch.save(f.state_dict(), buf)
    buf.seek(0)
    g = flows.build(name, M, n, layers=3, hidden=16).double()
    x = _sphere_points() if name == "sphere-spline" else _angles(n)
    assert not torch.allclose(g(x)[0], f(x)[0])
    g.load_state_dict(torch.load(buf))
    for a, b in zip(f(x), g(x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name,n", [("sphere-spline", 2), ("circular-spline", 2), ("mobius", 2)])
def test_float32_round_trip(fh, name, n):
    """float32 (the training dtype): round trips to 1e-4 (float32 rounding, 3e-7·π, times the inverse slopes of two
    layers with these parameters, ≲ 1e2)."""
    M = Sphere(2) if name == "sphere-spline" else Torus(n)
    f = fh.randomize_(flows.build(name, M, n, layers=2, hidden=16), gain=1.0).float()
    x = (_sphere_points() if name == "sphere-spline" else _angles(n)).float()
    back = f.inverse(f(x)[0])[0].detach()
    err = float((back - x).abs().max()) if name == "sphere-spline" else _angle_err(back, x)
    assert err < 1e-4


def test_layers_refuse_other_manifolds():
    """The layer constructors ask the same support predicates as the registry."""
    with pytest.raises(ValueError, match="TorusCoupling cannot act on the Sphere manifold.*sphere-spline"):
        flows.TorusCoupling(Sphere(2), 2, flows.MobiusHalf())
    with pytest.raises(ValueError, match="CircleTransform cannot act on the Euclidean manifold"):
        flows.CircleTransform(Euclidean(), 1, flows.CircularSplineHalf())
    with pytest.raises(ValueError, match="SphereSplineCoupling cannot act on the Torus manifold.*circular-spline"):
        flows.SphereSplineCoupling(Torus(2))
