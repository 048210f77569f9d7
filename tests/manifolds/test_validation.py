"""Bad input gives a clear ValueError (what was wrong, what to do); the checks accept far points in float32."""

from __future__ import annotations

import math
import re

import pytest
import torch

from manifolds import Euclidean, Lorentz
from manifolds import lorentz_math as lm

KS = (0.25, 1.0, 4.0)


def _points(k, n=3, count=4, dtype=torch.float32, scale=1.0):
    gen = torch.Generator().manual_seed(11)
    return lm.expmap0_spatial(scale * torch.randn(count, n, generator=gen, dtype=torch.float64), k).to(dtype)


@pytest.mark.parametrize("k", KS)
def test_off_manifold_point_rejected_with_violation_and_remedy(k):
    M = Lorentz(k, validate=True)
    x = _points(k)
    off = x.clone()
    off[1, 0] += 0.5  # time coordinate no longer matches
    u = M.proju(x, torch.randn_like(x))
    calls = {
        "dist": lambda: M.dist(off, x),
        "dist(y)": lambda: M.dist(x, off),
        "dist0": lambda: M.dist0(off),
        "logmap": lambda: M.logmap(x, off),
        "logmap0": lambda: M.logmap0(off),
        "logmap0_spatial": lambda: M.logmap0_spatial(off),
        "expmap": lambda: M.expmap(off, u),
        "transp": lambda: M.transp(off, x, u),
        "transp0back": lambda: M.transp0back(off, u),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert "not on the Lorentz manifold" in msg and "projx" in msg, (name, msg)
        assert "<x,x>_L + k" in msg and re.search(r"= \d", msg), (name, msg)  # the size of the violation
    # the projected point is accepted
    M.dist(M.projx(off), x)


def test_non_tangent_vector_rejected():
    M = Lorentz(1.0, validate=True)
    x = _points(1.0)
    u = M.proju(x, torch.randn_like(x))
    bad = u + x  # has a normal component
    with pytest.raises(ValueError, match="proju"):
        M.expmap(x, bad)
    M.expmap(x, u)  # fine


@pytest.mark.parametrize("validate", [False, True])
def test_wrong_last_dimension(validate):
    M = Lorentz(k=1.0, dim=3, validate=validate)
    x3 = torch.tensor([[1.0, 0.0, 0.0]])  # 3 coordinates, but H^3 needs 4
    for call in (lambda: M.dist0(x3), lambda: M.logmap0(x3), lambda: M.projx(x3), lambda: M.expmap0(x3),
                 lambda: M.dist(x3, x3)):
        with pytest.raises(ValueError, match="dimension 3") as info:
            call()
        assert "4 ambient coordinates" in str(info.value) and "3 coordinates" in str(info.value)
    with pytest.raises(ValueError, match="tangent coordinates"):
        M.expmap0_spatial(torch.zeros(2, 2))
    # a size-1 last dimension is never a Lorentz point (n >= 1 needs 2 coordinates)
    L = Lorentz(k=1.0, validate=validate)
    for call in (lambda: L.dist0(torch.ones(5, 1)), lambda: L.projx(torch.ones(5, 1)),
                 lambda: L.logmap0(torch.ones(5, 1))):
        with pytest.raises(ValueError, match="1 coordinates"):
            call()
    E = Euclidean(dim=3, validate=validate)
    with pytest.raises(ValueError, match="dimension 3"):
        E.dist0(torch.zeros(2, 4))


@pytest.mark.parametrize("manifold", ["lorentz", "euclidean"])
def test_nan_input_rejected(manifold):
    M = Lorentz(1.0, validate=True) if manifold == "lorentz" else Euclidean(validate=True)
    x = _points(1.0) if manifold == "lorentz" else torch.randn(4, 3)
    x[2, 1] = float("nan")
    for call in (lambda: M.dist0(x), lambda: M.logmap0(x), lambda: M.expmap0(x), lambda: M.dist(x, x),
                 lambda: M.expmap0_spatial(x[:, 1:])):
        with pytest.raises(ValueError, match="NaN"):
            call()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("k", KS)
def test_check_point_on_manifold_explain(k, dtype):
    M = Lorentz(k)
    sk = math.sqrt(k)
    near = _points(k, dtype=dtype)
    # points at distance 10·sqrt(k) (float32 coordinates ~1e4·sqrt(k)): on the manifold up to rounding
    gen = torch.Generator().manual_seed(3)
    d = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    far = lm.expmap0_spatial(10 * sk * d / d.norm(dim=-1, keepdim=True), k).to(dtype)
    for x in (near, far, M.origin(2, 4, dtype=dtype)):
        assert M.check_point_on_manifold(x, explain=True) == (True, None)
        assert M.check_point_on_manifold(x) is True
    off = near.clone()
    off[..., 0] *= 1.1
    ok, reason = M.check_point_on_manifold(off, explain=True)
    assert ok is False and "not on the Lorentz manifold" in reason and "projx" in reason
    neg = -near  # the lower sheet
    ok, reason = M.check_point_on_manifold(neg, explain=True)
    assert ok is False and "x_0 <= 0" in reason
    ok, reason = M.check_point_on_manifold(torch.full((2, 4), float("nan"), dtype=dtype), explain=True)
    assert ok is False and "NaN" in reason
    # tangent vectors
    u = M.proju(far, torch.randn(far.shape, generator=gen, dtype=torch.float64).to(dtype))
    assert M.check_vector_on_tangent(far, u, explain=True) == (True, None)
    ok, reason = M.check_vector_on_tangent(near, near, explain=True)
    assert ok is False and "proju" in reason


# ---------------------------------------------------------------------------------------------------------------
# the validation switch (manifolds.validation): host-reading checks only when asked for
# ---------------------------------------------------------------------------------------------------------------

def test_overflow_is_inf_without_validation_and_a_clear_error_with_it():
    from manifolds import validation, validation_enabled
    from manifolds.boost import boosted_logmap0

    far = torch.tensor([[100.0, 0.0]])  # cosh(100) overflows float32
    assert not validation_enabled()
    assert torch.isinf(Lorentz().expmap0_spatial(far)).any()
    with validation():
        assert validation_enabled()
        with pytest.raises(ValueError, match="overflows torch.float32"):
            Lorentz().expmap0_spatial(far)
        u = torch.tensor([[800.0, 0.0]], dtype=torch.float64)  # beyond float64's cosh range
        with pytest.raises(ValueError, match="overflow"):
            boosted_logmap0(u, torch.zeros_like(u), torch.tensor(1.0, dtype=torch.float64))
    assert not validation_enabled()  # restored after the block


def test_hot_path_reads_nothing_on_the_host_unless_validating(host_reads):
    """The ops of a training step (exp/log at the origin, the fused boost, a wrapped normal's draw and density)
    read no tensor value on the host with validation off; with it on they do (the checks run)."""
    from manifolds import WrappedNormal, validation
    from manifolds.boost import boosted_logmap0

    M = Lorentz(k=2.0)

    def step():
        w = torch.randn(16, 3, requires_grad=True)
        q = WrappedNormal(M.expmap0_spatial(w), torch.rand(16, 3) + 0.1, M)
        v, lp = q.rsample_logmap0_and_log_prob()
        y, _ = boosted_logmap0(v.double(), w.double(), M.k.double())
        prior = WrappedNormal.at_origin(torch.ones(3), M)
        (lp + prior.log_prob_logmap0(v) + y.sum(-1)).sum().backward()
        M.logmap0_spatial(M.expmap0_spatial(v))

    assert host_reads(step) == 0
    with validation():
        assert host_reads(step) > 0
