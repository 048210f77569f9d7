"""The transform contract, checked for EVERY flow ``flows.build`` knows, on every manifold it applies to, in
dims 2, 3 and 5 (``flow_case``, see ``conftest.py``): bijectivity, exact Riemannian log-dets in both
directions against an autograd Jacobian (MATH.md §4), outputs on the manifold, gradients, save/load, shapes,
repr, and ``ValueError`` on the manifolds a flow does not apply to.

The flows are float64 with randomised parameters (log-scales O(1), translations O(1)), so a wrong term in a
log-det or a broken inverse cannot hide behind a near-identity initialisation.

Two contract attributes change what is checked (``flows.Transform``):

* ``inverse_tolerance`` (a numerical inverse, e.g. planar, i-ResNet, CNF): round trips are held to that stated
  accuracy (max absolute error in the tangent coordinates) instead of :data:`ROUNDTRIP_RTOL`; log-dets are checked
  exactly as for every other flow.
* ``bijective = False`` (SurVAE surjections ``abs``, ``sort``): there is no inverse to round-trip and no Jacobian
  behind ``ladj`` (see :data:`SURJECTION_LOGDET_REASON`); the round-trip test checks the fibre structure instead,
  and ``test_flow_density.py`` checks ``ladj`` by integrating the density to 1.
"""

from __future__ import annotations

import io

import pytest
import torch

import flows
from manifolds import Euclidean, Lorentz, Sphere, Torus

F64 = torch.float64

#: float64 tolerances. The Jacobian is exact up to rounding; the log-dets are O(10) at ‖w‖ ≈ 10, so 1e-7
#: absolute is ~1e7 ulps of slack yet far below any wrong term (ℓ(10) ≈ 9.3; one wrong (l-1) vs l is O(1)).
LOGDET_ATOL = 1e-7
ROUNDTRIP_RTOL = 1e-9

#: why the Jacobian log-det checks do not apply to a surjection (``bijective = False``)
SURJECTION_LOGDET_REASON = (
    "surjection (bijective=False): its ladj is the likelihood contribution -log|fibre| (the probability of the "
    "forgotten signs / order), not a Jacobian log-det - the map is a local isometry with Jacobian log-det 0; "
    "test_flow_density.py::test_surjection_density_integrates_to_one checks it instead"
)


def _points(fh, n):
    near = fh.tangent_points(n, fh.NEAR_NORMS, seed=1)
    far = fh.tangent_points(n, fh.FAR_NORMS, seed=2)
    return {"near": near, "far": far}


def _tangent_err(M, a, b):
    """max over the batch of ‖log_o a - log_o b‖ / max(1, ‖log_o b‖)."""
    wa, wb = M.logmap0_spatial(a.detach()), M.logmap0_spatial(b.detach())
    return float((torch.linalg.vector_norm(wa - wb, dim=-1)
                  / torch.linalg.vector_norm(wb, dim=-1).clamp_min(1.0)).max())


def _assert_round_trip(M, f, got, want, what):
    """``got == want`` to :data:`ROUNDTRIP_RTOL` (relative, exact inverses) or, for a numerical inverse, to the flow's
    stated ``inverse_tolerance`` (max absolute error in the tangent coordinates, its documented meaning)."""
    if f.inverse_tolerance is None:
        err = _tangent_err(M, got, want)
        assert err < ROUNDTRIP_RTOL, f"{what}: relative error {err:.3g} >= {ROUNDTRIP_RTOL}"
    else:
        err = float((M.logmap0_spatial(got.detach()) - M.logmap0_spatial(want.detach())).abs().max())
        assert err <= f.inverse_tolerance, f"{what}: error {err:.3g} > inverse_tolerance {f.inverse_tolerance:.3g}"


def _skip_if_surjection(f, reason=SURJECTION_LOGDET_REASON):
    if not f.bijective:
        pytest.skip(reason)


@pytest.mark.parametrize("where", ["near", "far"])
def test_round_trip_both_ways(fh, flow_case, where):
    name, mid, n = flow_case
    M, f = fh.make_flow(name, mid, n)
    w = _points(fh, n)[where]
    x = M.expmap0_spatial(w)
    y, _ = f(x)
    assert torch.isfinite(y).all()
    y0 = M.expmap0_spatial(w.flip(0) * 1.01)
    x0, _ = f.inverse(y0)
    assert torch.isfinite(x0).all()
    if not f.bijective:
        # A surjection has no inverse to round-trip: ``inverse`` maps data onto canonical representatives (|y|,
        # sort(y)) and ``forward`` re-draws the forgotten choice (signs, order) at random. What its likelihood
        # relies on: forward stays in the fibre, inverse(forward(x)) = inverse(x), and forward(z) is a pre-image
        # of a canonical z, inverse(forward(z)) = z (z = inverse(y0): data points not produced by forward).
        _assert_round_trip(M, f, f.inverse(y)[0], f.inverse(x)[0], "inverse(forward(x)) vs inverse(x)")
        _assert_round_trip(M, f, f.inverse(f(x0)[0])[0], x0, "inverse(forward(z)) vs canonical z")
        return
    _assert_round_trip(M, f, f.inverse(y)[0], x, "inverse(forward(x)) vs x")
    # forward(inverse(y)) = y at data points that were NOT produced by forward (no cached pair)
    _assert_round_trip(M, f, f(x0)[0], y0, "forward(inverse(y)) vs y")


def test_every_coordinate_is_transformed(fh, flow_case):
    """Masks alternate: with the default two layers no tangent coordinate is left unchanged (odd dims too)."""
    name, mid, n = flow_case
    M, f = fh.make_flow(name, mid, n)
    _skip_if_surjection(f, "surjection (bijective=False): it is the identity on its canonical domain (|x| = x for "
                           "x >= 0, a sorted vector stays sorted) and its random forward leaves each coordinate in "
                           "place with positive probability; test_surjective.py checks that it acts")
    w = fh.tangent_points(n, [0.5] * 8, seed=3)
    v = M.logmap0_spatial(f(M.expmap0_spatial(w))[0])
    assert bool(((v - w).abs() > 1e-6).all(0).all()), (v - w)


@pytest.mark.parametrize("where", ["near", "far"])
def test_forward_logdet_matches_autograd_jacobian(fh, flow_case, where):
    name, mid, n = flow_case
    M, f = fh.make_flow(name, mid, n)
    _skip_if_surjection(f)
    w = _points(fh, n)[where]
    _, ladj = f(M.expmap0_spatial(w))
    brute = fh.batched_riemannian_logdet(M, lambda x: f(x)[0], w)
    torch.testing.assert_close(ladj, brute, atol=LOGDET_ATOL, rtol=0)
    # the flow is not volume-preserving here, so the check cannot pass vacuously
    assert float(brute.abs().max()) > 1e-2


@pytest.mark.parametrize("where", ["near", "far"])
def test_inverse_logdet_matches_autograd_jacobian(fh, flow_case, where):
    """The density direction, at data points y = exp_o(w) (fresh points, nothing cached from a forward)."""
    name, mid, n = flow_case
    M, f = fh.make_flow(name, mid, n)
    _skip_if_surjection(f)
    w = _points(fh, n)[where]
    _, ladj = f.inverse(M.expmap0_spatial(w))
    brute = fh.batched_riemannian_logdet(M, lambda y: f.inverse(y)[0], w)
    torch.testing.assert_close(ladj, brute, atol=LOGDET_ATOL, rtol=0)
    assert float(brute.abs().max()) > 1e-2


@pytest.mark.parametrize("where", ["near", "far"])
def test_inverse_logdet_is_minus_forward(fh, flow_case, where):
    name, mid, n = flow_case
    M, f = fh.make_flow(name, mid, n)
    x = M.expmap0_spatial(_points(fh, n)[where])
    y, ladj_f = f(x)
    _, ladj_i = f.inverse(y)
    torch.testing.assert_close(ladj_i, -ladj_f, atol=LOGDET_ATOL, rtol=0)


def test_outputs_on_manifold(fh, flow_case):
    name, mid, n = flow_case
    M, f = fh.make_flow(name, mid, n)
    w = torch.cat([_points(fh, n)["near"], _points(fh, n)["far"]])
    y, _ = f(M.expmap0_spatial(w))
    x, _ = f.inverse(M.expmap0_spatial(w))
    for z in (y.detach(), x.detach()):
        assert z.shape == (w.size(0), M.ambient_dim(n))
        ok, reason = M._check_point_on_manifold(z)
        assert ok, reason
        assert M.check_point_on_manifold(z)


@pytest.mark.parametrize("randomize", [False, True], ids=["init", "random"])
def test_gradients_reach_every_parameter(fh, flow_case, randomize):
    """After a ``log_prob`` backward every trainable parameter has a finite, not-all-zero gradient (also at the
    library's near-identity initialisation, where a zero-initialised last layer would starve the others)."""
    name, mid, n = flow_case
    M, f = fh.make_flow(name, mid, n, randomize=randomize)
    q = flows.Flow(fh.base_distribution(M, n), f)
    z = M.expmap0_spatial(fh.tangent_points(n, torch.linspace(0.1, 3.0, 32).tolist(), seed=4))
    params = fh.trainable(f)
    if not params and not f.bijective:
        # the SurVAE surjections have no parameters by design; what must hold is that the density's gradient
        # passes through them to the data (and on to whatever precedes them)
        z = z.detach().requires_grad_(True)
        q.log_prob(z).sum().backward()
        assert z.grad is not None and torch.isfinite(z.grad).all() and bool((z.grad != 0).any())
        return
    q.log_prob(z).sum().backward()
    assert params
    for pname, p in params:
        assert p.grad is not None, f"{pname} received no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert bool((p.grad != 0).any()), f"{pname} has an all-zero gradient"


def test_state_dict_round_trip_reproduces_outputs(fh, flow_case):
    name, mid, n = flow_case
    M, f = fh.make_flow(name, mid, n)
    buf = io.BytesIO()
    torch.save(f.state_dict(), buf)
    buf.seek(0)
    _, g = fh.make_flow(name, mid, n, randomize=False)  # a freshly built flow (own manifold object)
    x = M.expmap0_spatial(_points(fh, n)["near"])

    def fwd(t):  # a surjection's forward is random: compare the same draws
        torch.manual_seed(7)
        return t(x)

    if fh.trainable(f):  # (a parameter-free layer has nothing to differ in)
        assert not torch.allclose(fwd(g)[0], fwd(f)[0])  # it differs before loading …
    g.load_state_dict(torch.load(buf))
    for a, b in zip(fwd(f), fwd(g)):  # … and reproduces f exactly after
        assert torch.equal(a, b)
    for a, b in zip(f.inverse(x), g.inverse(x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("batch_shape", [(), (7,), (2, 3)], ids=["unbatched", "B", "B1xB2"])
def test_ladj_has_batch_shape(fh, flow_case, batch_shape):
    name, mid, n = flow_case
    M, f = fh.make_flow(name, mid, n)
    w = torch.randn(*batch_shape, n, dtype=F64)
    x = M.expmap0_spatial(w)
    y, ladj = f(x)
    assert y.shape == x.shape and ladj.shape == batch_shape
    x2, ladj2 = f.inverse(y)
    assert x2.shape == x.shape and ladj2.shape == batch_shape
    # batching does not change per-point results (a surjection's forward is random: check its inference map)
    if batch_shape:
        fn, (ref_y, ref_l) = (f, (y, ladj)) if f.bijective else (f.inverse, (x2, ladj2))
        src = x if f.bijective else y
        flat_y, flat_l = fn(src.reshape(-1, src.size(-1)))
        torch.testing.assert_close(flat_y.reshape(ref_y.shape), ref_y)
        torch.testing.assert_close(flat_l.reshape(batch_shape), ref_l)


def test_repr(fh, flow_case):
    name, mid, n = flow_case
    M, f = fh.make_flow(name, mid, n, randomize=False)
    r = repr(f)
    assert isinstance(r, str) and type(f).__name__ in r
    assert M.name in r  # the transform knows (and shows) its manifold
    assert f.manifold.name == M.name
    if M.name == "Lorentz":  # it acts on the manifold it was built on (its curvature k), or an identical copy
        assert f.manifold.same_as(M)


def test_forward_is_deterministic_and_uncached(fh, flow_case):
    """Two calls give identical results, and changing a parameter changes the next call (nothing cached)."""
    name, mid, n = flow_case
    M, f = fh.make_flow(name, mid, n)
    x = M.expmap0_spatial(_points(fh, n)["near"])
    if not f.bijective:
        # forward samples a pre-image (random by design, checked in test_round_trip_both_ways and
        # test_surjective.py); the inference map must be deterministic, and the draws reproducible under a seed
        (a1, b1), (a2, b2) = f.inverse(x), f.inverse(x)
        assert torch.equal(a1, a2) and torch.equal(b1, b2)
        torch.manual_seed(3)
        y1 = f(x)[0]
        torch.manual_seed(3)
        assert torch.equal(f(x)[0], y1)
        return
    y1, l1 = f(x)
    y2, l2 = f(x)
    assert torch.equal(y1, y2) and torch.equal(l1, l2)
    with torch.no_grad():
        for _, p in fh.trainable(f):
            p.mul_(1.1)
    y3, l3 = f(x)
    assert not torch.allclose(l3, l1)
    _, li = f.inverse(y3)
    torch.testing.assert_close(li, -l3, atol=LOGDET_ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------------------


def test_registry_lists_the_issue_flows():
    assert {"nc", "tc", "whc"} <= set(flows.available())
    assert "nc" in flows.available(Euclidean()) and "nc" not in flows.available(Lorentz())
    assert {"tc", "whc"} <= set(flows.available(Lorentz())) and "tc" not in flows.available(Euclidean())
    assert set(flows.describe()) == set(flows.available())


@pytest.mark.parametrize("name", flows.available())
def test_build_raises_value_error_on_manifolds_it_does_not_apply_to(name):
    # (manifold, a dimension it has)
    manifolds = [(Euclidean(), 3), (Lorentz(k=1.0), 3), (Lorentz(k=2.0), 3), (Torus(3), 3), (Sphere(2), 2)]
    applies = [M for M, _ in manifolds if name in flows.available(M)]
    assert applies, f"flow {name!r} applies to no manifold"
    for M, n in manifolds:
        if name in flows.available(M):
            f = flows.build(name, M, n, hidden=8)
            assert isinstance(f, flows.Transform) and f.manifold.name == M.name
        else:
            with pytest.raises(ValueError, match=name):
                flows.build(name, M, n, hidden=8)


def test_build_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown flow"):
        flows.build("no-such-flow", Euclidean(), 3)
    with pytest.raises(ValueError):
        flows.build("tc", Euclidean(), 3)
    with pytest.raises(ValueError):
        flows.build("nc", Lorentz(), 3)
    with pytest.raises(ValueError):
        flows.build("whc", Lorentz(), 3, layers=0)
    with pytest.raises(ValueError):
        flows.build("nc", Euclidean(), 1)  # a coupling needs n >= 2
    with pytest.raises(ValueError):
        flows.build("tc", Lorentz(), 3, conditioner="transformer")


def test_wrong_dimension_gives_value_error():
    M = Lorentz(k=1.0)
    f = flows.build("whc", M, 3, hidden=8)
    with pytest.raises(ValueError):
        f(M.expmap0_spatial(torch.randn(4, 4)))  # a point of H^4 into a flow on H^3
    g = flows.build("nc", Euclidean(), 3, hidden=8)
    with pytest.raises(ValueError):
        g.inverse(torch.randn(4, 2))


def test_build_keeps_the_settings_of_the_euclidean_manifold_passed_in():
    """``build("nc", M)`` acts on ``M`` (its own copy of it, ``share_manifold=False``), so ``M``'s ``validate`` and
    ``dim`` settings apply; every layer acts on that one copy."""
    M = Euclidean(validate=True, dim=3)
    f = flows.build("nc", M, 3, hidden=8)
    assert f.manifold.validate and f.manifold.dim == 3 and all(t.manifold is f.manifold for t in f.transforms)
    assert flows.build("nc", M, 3, hidden=8, share_manifold=True).manifold is M
    x = torch.randn(4, 3)
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        f(x)
    with pytest.raises(ValueError, match="finite"):
        f.inverse(x)
    y, _ = flows.build("nc", Euclidean(), 3, hidden=8)(x)  # without validation, no check (and no error)
    assert y.shape == x.shape


# ---------------------------------------------------------------------------------------------------------------
# tangent coordinates at the origin: part of every transform's contract
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["near", "far"])
def test_tangent_methods_are_the_point_maps_in_tangent_coordinates(fh, flow_case, where):
    """``forward_tangent(w) = (log_o f(exp_o w), ladj)`` and ``inverse_tangent(v) = (log_o f⁻¹(exp_o v), ladj)`` for
    every flow, near and far from the origin (float64): the path the VAEs and ``Flow`` take is the same model."""
    name, mid, n = flow_case
    M, f = fh.make_flow(name, mid, n)
    w = _points(fh, n)[where]
    v, ladj_v = f.inverse_tangent(w)
    x, ladj_x = f.inverse(M.expmap0_spatial(w))
    assert _tangent_err(M, M.expmap0_spatial(v), x) < ROUNDTRIP_RTOL
    torch.testing.assert_close(ladj_v, ladj_x, rtol=1e-9, atol=1e-9)
    if not f.bijective:  # a surjection's forward draws at random: its inverse is the deterministic map
        return
    u, ladj_u = f.forward_tangent(w)
    y, ladj_y = f(M.expmap0_spatial(w))
    assert _tangent_err(M, M.expmap0_spatial(u), y) < ROUNDTRIP_RTOL
    torch.testing.assert_close(ladj_u, ladj_y, rtol=1e-9, atol=1e-9)


def test_tangent_space_flows_declare_it_and_cannot_override_the_point_maps():
    from flows import AffineCoupling, Compose, TangentSpaceTransform, build
    from manifolds import Euclidean, Lorentz

    M = Lorentz()
    assert build("whc", M, 3).acts_in_tangent and build("tc", M, 3).acts_in_tangent
    assert build("nc", Euclidean(), 3).acts_in_tangent  # on R^n exp_o and log_o are the identity
    lifted = TangentSpaceTransform(M, AffineCoupling(3))
    assert Compose([lifted, build("whc", M, 3)]).acts_in_tangent
    with pytest.raises(TypeError, match="override forward_tangent"):
        class Scaled(TangentSpaceTransform):  # noqa: F841 - the class statement is what raises
            def forward(self, x, context=None):
                return super().forward(2 * x, context)

    class Shifted(TangentSpaceTransform):  # the way to change the map: in tangent coordinates
        def forward_tangent(self, w, context=None):
            v, ladj = super().forward_tangent(w, context)
            return v + 1.0, ladj

        def inverse_tangent(self, v, context=None):
            return super().inverse_tangent(v - 1.0, context)

    g = Shifted(M, AffineCoupling(3)).double()
    w = torch.randn(4, 3, dtype=torch.float64)
    y, _ = g(M.expmap0_spatial(w))  # the point map follows the override
    torch.testing.assert_close(M.logmap0_spatial(y), g.forward_tangent(w)[0])
    torch.testing.assert_close(g.inverse(y)[0], M.expmap0_spatial(w))
