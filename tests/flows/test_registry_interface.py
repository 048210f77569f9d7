"""The registry asks the manifold interface (issue 23): a flow exists where its support predicate says so, a refusal
is one line saying why and what to use, and a manifold that declares an isometric model gets every flow of the
model through one wrapper whose log-det is the inner flow's (isometries keep the Riemannian volume).

Test manifolds are built from the existing classes: ``_Flipped`` is Hⁿ_k with its spatial coordinates negated
(an isometry to ``Lorentz(k)``, declared by ``isometric_model``), ``_Shifted`` is ℝⁿ with points stored as
``x + c``, and ``_Compact`` is a stub declaring compactness (only its declarations are read)."""

from __future__ import annotations

import math

import pytest
import torch

import flows
from flows.transform import IsometricTransform
from manifolds import Euclidean, Lorentz, WrappedNormal

F64 = torch.float64


def _flip(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x[..., :1], -x[..., 1:]], dim=-1)


class _Flipped(Lorentz):
    """Hⁿ_k whose points are stored with negated spatial coordinates: ``φ(x) = (x₀, -x̂)`` is an isometry onto
    ``Lorentz(k)`` (its own inverse), and Lorentz's maps, which commute with it, serve as this manifold's."""

    def isometric_model(self):
        return Lorentz(k=self.k.detach().clone()).to(self.k.dtype), _flip, _flip


class _Shifted(Euclidean):
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=F64)

    def isometric_model(self):
        return Euclidean(), lambda x: x - self.shift.to(x), lambda y: y + self.shift.to(y)


class _Compact(Euclidean):
    coords_are_points = False
    is_compact = True
    curvature_sign = 1

    @property
    def injectivity_radius(self) -> float:
        return math.pi


def test_available_on_an_isometric_manifold_is_the_models():
    assert flows.available(_Flipped(k=0.5)) == flows.available(Lorentz(k=0.5))
    assert flows.available(_Shifted()) == flows.available(Euclidean())


@pytest.mark.parametrize("name", ["whc", "tc", "maf@lorentz"])
def test_flows_through_the_isometry_have_the_riemannian_log_det(fh, name):
    """Every Hⁿ flow built on the flipped hyperboloid is an ``IsometricTransform``; round trips are exact and its
    log-det equals the brute-force Riemannian log-det (MATH.md §4) of the composite map, near and far."""
    M = _Flipped(k=torch.tensor(0.5, dtype=F64))
    f = fh.randomize_(flows.build(name, M, 3, hidden=16).double(), gain=1.2)
    assert isinstance(f, IsometricTransform) and f.manifold.same_as(M) and isinstance(f.inner.manifold, Lorentz)
    w = torch.cat([fh.tangent_points(3, fh.NEAR_NORMS, seed=1), fh.tangent_points(3, (4.0, 8.0), seed=2)])
    x = M.expmap0_spatial(w)
    y, ladj = f(x)
    xb, lb = f.inverse(y)
    torch.testing.assert_close(xb, x, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(lb, -ladj, rtol=1e-9, atol=1e-9)
    want = fh.batched_riemannian_logdet(M, lambda z: f(z)[0], w)
    torch.testing.assert_close(ladj, want, rtol=1e-7, atol=1e-7)
    # the same numbers as the model's flow on the mapped points: the isometry adds nothing
    torch.testing.assert_close(ladj, f.inner(_flip(x))[1])


def test_rfm_through_the_isometry_trains_by_flow_matching():
    """``rfm`` on the flipped hyperboloid is the model's flow through the wrapper, and ``flow_matching_loss`` matches it
    in the model (data and base draws mapped there): the loss is finite and reaches every parameter."""
    M = _Flipped(k=1.0)
    f = flows.build("rfm", M, 2, hidden=8)
    assert isinstance(f, IsometricTransform) and isinstance(f.inner, flows.RiemannianFlow)
    base = WrappedNormal.at_origin(torch.ones(2), M)
    x1 = M.expmap0_spatial(torch.randn(32, 2) + 1)
    loss = flows.flow_matching_loss(f, x1, base, coupling="ot", ot_block=16)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and all(p.grad is not None for p in f.parameters() if p.requires_grad)


def test_flows_of_rn_through_a_translation(fh):
    M = _Shifted()
    f = fh.randomize_(flows.build("nc", M, 3, hidden=8).double(), gain=1.2)
    x = torch.randn(5, 3, dtype=F64) * 3
    y, ladj = f(x)
    torch.testing.assert_close(f.inverse(y)[0], x)
    for i in range(len(x)):
        J = torch.autograd.functional.jacobian(lambda z: f(z)[0], x[i:i + 1]).reshape(3, 3)
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(J)[1])


def test_lifted_and_class_only_flows_are_refused_with_why_and_what_to_use():
    """On a compact manifold ``exp_o`` is no diffeomorphism of ℝⁿ: lifted families (and TC) are refused, saying so
    and listing what applies (``rfm``); WHC names the class it is written for; flows of ℝⁿ on Hⁿ point to their lift.
    Every refusal is one line."""
    S = _Compact()
    assert "rfm" in flows.available(S)
    assert not [n for n in flows.available(S) if n.endswith(flows.LIFT_SUFFIX) or n in ("tc", "whc", "nc")]
    cases = [("maf@lorentz", S, r"diffeomorphism.*injectivity radius .*3\.14.*compact.*rfm"),
             ("tc", S, r"diffeomorphism.*rfm"),
             ("whc", S, r"Lorentz coordinates only.*rfm"),
             ("maf", Lorentz(), r"flow of ℝⁿ.*use 'maf@lorentz'"),
             ("maf@lorentz", Euclidean(), r"identity.*use 'maf'")]
    for name, M, pattern in cases:
        with pytest.raises(ValueError, match=pattern) as err:
            flows.build(name, M, 2, hidden=8)
        assert "\n" not in str(err.value) and name in str(err.value)


def test_register_takes_classes_names_or_predicates():
    """The older ``register(name, ("Euclidean",), …)`` form still works (names resolved to classes once); an unknown
    name is refused at registration."""
    from flows.registry import _support, on_class, on_rn

    assert _support(("Euclidean",)) is on_rn and _support((Euclidean,)) is on_rn
    assert _support(("Lorentz",))(Lorentz()) is None and _support(("Lorentz",))(Euclidean()) is not None
    assert on_class(Lorentz)(_Flipped()) is None
    with pytest.raises(ValueError, match="not a manifold class"):
        _support(("Hyperbolic",))


def test_learnable_curvature_is_asked_by_the_interface():
    M = Lorentz(k=1.0, learnable=True)
    with pytest.raises(ValueError, match="share_manifold"):
        flows.build("whc", M, 2)
    assert flows.build("whc", M, 2, share_manifold=True).manifold is M
