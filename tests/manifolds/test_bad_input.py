"""Bad input to the new manifolds (issue 23): a point off the manifold with validation on, a dimension mismatch, a
torus angle outside its chart and a product spec that does not parse are each a one-line ``ValueError`` that names
the offending value and the fix; and the fix it names works."""

from __future__ import annotations

import pytest
import torch

import flows
from manifolds import Euclidean, Product, Sphere, Torus
from manifolds.product import parse_product


def _one_line(fn, pattern: str) -> str:
    with pytest.raises(ValueError, match=pattern) as e:
        fn()
    assert "\n" not in str(e.value), str(e.value)
    return str(e.value)


@pytest.mark.parametrize("M, x, pattern", [
    (Sphere(2, validate=True), torch.tensor([1.0, 1.0, 0.0]),
     r"x: not on the sphere of radius 1: max \|\|x\| - r\| / r = 0\.414 .*project it with Sphere\.projx"),
    (Product(Sphere(2), Euclidean(dim=1), validate=True), torch.tensor([0.0, 2.0, 0.0, 5.0]),
     r"not on the sphere of radius 1: max \|\|x\| - r\| / r = 1 .*Sphere\.projx"),  # the factor's own check
])
def test_a_point_off_the_manifold(M, x, pattern):
    _one_line(lambda: M.logmap0(x), pattern)
    M.logmap0(M.projx(x))  # the fix works


@pytest.mark.parametrize("M, x, pattern", [
    (Torus(2, validate=True), torch.tensor([0.5, 4.0]), r"angle 4 at index \(1,\) is outside the chart \[-π, π\)"),
    (Product(Torus(1), Euclidean(dim=1), validate=True), torch.tensor([-3.5, 9.0]),
     r"angle -3\.5 at index \(0,\) is outside the chart"),
])
def test_a_torus_angle_outside_its_chart(M, x, pattern):
    _one_line(lambda: M.logmap0(x), pattern + r".*wrap it with Torus\.projx")
    M.logmap0(M.projx(x))


@pytest.mark.parametrize("call, pattern", [
    (lambda: Sphere(2).logmap0(torch.zeros(4)), r"x has 4 coordinates .* dimension 2 and uses 3 ambient .*; pass"),
    (lambda: Torus(2).expmap0_spatial(torch.zeros(3)), r"v has 3 tangent coordinates, .* dimension 2; pass 2 numbers"),
    (lambda: parse_product("s2,e1").logmap0(torch.zeros(5)), r"x has 5 coordinates .* points have 4 \(3 \+ 1\); "
                                                             r"concatenate one point of each factor"),
    (lambda: parse_product("s2,e1").expmap0_spatial(torch.zeros(4)), r"v has 4 tangent coordinates.* dimension 3 "
                                                                      r"\(2 \+ 1\); concatenate"),
    (lambda: flows.build("rfm", Sphere(2), 3), r"dim=3\): the manifold is a Sphere of dimension 2; pass dim=2"),
    (lambda: flows.build("rfm", Torus(2), 2)(torch.zeros(5, 3)),
     r"expects 2 ambient coordinates .* got shape \(5, 3\)"),
])
def test_a_dimension_mismatch(call, pattern):
    _one_line(call, pattern)


@pytest.mark.parametrize("spec, bad", [("s2;t1", "s2;t1"), ("s2,q1", "q1"), ("t0", "t0"), ("sphere", "sphere")])
def test_a_product_spec_that_does_not_parse(spec, bad):
    msg = _one_line(lambda: parse_product(spec), "cannot parse the product spec")
    assert repr(spec) in msg and repr(bad) in msg and "write comma-separated factors such as 'h2,s2,e2'" in msg
