"""Masked autoregressive layers (MADE masks; MAF and IAF orientations; affine and spline transformers).

* The Jacobian of one layer is triangular in the layer's variable order (lower for the natural order, upper for
  the reversed one), in both directions, with a non-zero diagonal and a non-zero strict triangle (so the
  check is not vacuous).
* MAF's density direction is ONE conditioner call and its sampling direction n calls; IAF the reverse.
* Stacks alternate the order, so two layers make every output depend on every input.
(The shared suite checks round trips and log-dets of the registered stacks on ℝⁿ and lifted to Hⁿ.)
"""

from __future__ import annotations

import pytest
import torch

import flows
from flows import IAF, MADE, MAF
from manifolds import Euclidean, Lorentz

F64 = torch.float64

LAYERS = [pytest.param(cls, tr, id=f"{cls.__name__}-{tr}") for cls in (MAF, IAF) for tr in ("affine", "rqs")]


def _layer(fh, cls, transformer, n, reverse=False, **kw):
    return fh.randomize_(cls(n, transformer, reverse=reverse, hidden=16, bins=4, **kw).double(), gain=1.0)


def _jacobian(fn, x):
    return torch.autograd.functional.jacobian(lambda v: fn(v)[0], x).reshape(x.numel(), x.numel())


@pytest.mark.parametrize("reverse", [False, True], ids=["natural", "reversed"])
@pytest.mark.parametrize("cls,transformer", LAYERS)
def test_jacobian_is_triangular_in_the_layer_order(fh, cls, transformer, reverse):
    n = 5
    f = _layer(fh, cls, transformer, n, reverse)
    g = torch.Generator().manual_seed(0)
    for fn in (f, f.inverse):
        for _ in range(3):
            x = torch.randn(1, n, generator=g, dtype=F64)
            J = _jacobian(fn, x)  # J[i, j] = ∂out_i/∂in_j
            # in the layer's order (degree d(j) = j + 1, or n - j reversed) output i depends on inputs d(j) <= d(i)
            P = torch.argsort(f.net.order)  # coordinates sorted by degree
            Jo = J[P][:, P]
            assert torch.equal(Jo.triu(1), torch.zeros_like(Jo)), Jo
            assert bool((Jo.diagonal().abs() > 1e-6).all())
            assert float(Jo.tril(-1).abs().max()) > 1e-3  # coordinates do depend on earlier ones
            # … and in the natural coordinate order that is lower- (natural) or upper-triangular (reversed)
            tri = J.tril(-1) if reverse else J.triu(1)
            assert torch.equal(tri, torch.zeros_like(J))
            # the log-det is the log of the diagonal's product
            torch.testing.assert_close(fn(x)[1], torch.linalg.slogdet(J)[1].reshape(1), atol=1e-10, rtol=0)


def _count_calls(module):
    calls = [0]

    def hook(*_):
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("n", [1, 3, 7])
@pytest.mark.parametrize("cls,transformer", LAYERS)
def test_conditioner_passes_per_direction(fh, cls, transformer, n):
    """MAF: density (inverse) = 1 call, sampling (forward) = n calls; IAF: the reverse. Round trip exact."""
    f = _layer(fh, cls, transformer, n)
    calls = _count_calls(f.net)
    x = torch.randn(32, n, dtype=F64)
    y, ladj = f(x)
    forward_calls = calls[0]
    calls[0] = 0
    x2, ladj_inv = f.inverse(y)
    inverse_calls = calls[0]
    one_pass, sequential = (inverse_calls, forward_calls) if cls is MAF else (forward_calls, inverse_calls)
    assert one_pass == 1 and sequential == n
    torch.testing.assert_close(x2, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-10, rtol=0)


def test_maf_density_of_a_stack_is_one_call_per_layer(fh):
    f = fh.randomize_(flows.build("maf", Euclidean(), 6, layers=4, hidden=16).double())
    made = [m for m in f.modules() if isinstance(m, MADE)]
    counters = [_count_calls(m) for m in made]
    flows.Flow(fh.base_distribution(Euclidean(), 6), f).log_prob(torch.randn(8, 6, dtype=F64))
    assert [c[0] for c in counters] == [1] * 4


@pytest.mark.parametrize("name", ["maf", "iaf", "maf-rqs", "iaf-rqs"])
def test_stack_alternates_the_order_and_mixes_every_coordinate(fh, name):
    n = 4
    f = fh.randomize_(flows.build(name, Euclidean(), n, layers=2, hidden=16).double(), gain=1.0)
    layers = list(f.transforms)
    assert [m.net.reverse for m in layers] == [False, True]
    x = torch.randn(1, n, dtype=F64) * 0.5
    J = _jacobian(f, x)
    assert bool((J.abs() > 1e-8).all()), J  # every output depends on every input
    # lifted to H^n: the same layers inside one exp_o / log_o pair
    g = flows.build(name + flows.LIFT_SUFFIX, Lorentz(k=1.0), n, layers=2, hidden=16)
    assert isinstance(g, flows.TangentSpaceTransform) and len(g.inner.transforms) == 2


def test_made_masks_and_context(fh):
    """θ_{p,i} depends on x_j only for d(j) < d(i) (each hidden unit on the inputs of degree ≤ its own), and on
    the whole context vector."""
    n, c = 4, 3
    net = fh.randomize_(MADE(n, n_params=2, hidden=12, context_features=c, reverse=True).double())
    x = torch.randn(n, dtype=F64)
    ctx = torch.randn(c, dtype=F64)
    Jx = torch.autograd.functional.jacobian(lambda v: net(v, ctx), x).reshape(2, n, n)
    Jc = torch.autograd.functional.jacobian(lambda v: net(x, v), ctx)
    d = net.order
    allowed = d[None, :] < d[:, None]  # [i, j]: d(j) < d(i)
    assert torch.equal(Jx.abs().sum(0) != 0, allowed)
    assert bool((Jc.abs() > 0).all())
    with pytest.raises(ValueError, match="context"):
        net(x)


def test_conditional_maf(fh):
    n, c = 3, 2
    f = fh.randomize_(flows.build("maf-rqs", Euclidean(), n, layers=3, hidden=16, context_features=c).double())
    x = torch.randn(10, n, dtype=F64)
    ctx = torch.randn(c, dtype=F64)
    y, ladj = f(x, ctx)
    x2, ladj_inv = f.inverse(y, ctx)
    torch.testing.assert_close(x2, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-10, rtol=0)
    assert not torch.allclose(f(x, torch.zeros(c, dtype=F64))[0], f(x, torch.ones(c, dtype=F64))[0])


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="mlp"):
        flows.build("maf", Euclidean(), 3, conditioner="gcn")
    with pytest.raises(ValueError, match="transformer"):
        MAF(3, transformer="cubic")
    with pytest.raises(ValueError, match="coordinates"):
        MAF(3)(torch.randn(2, 4))
