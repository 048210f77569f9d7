"""The Distribution-API probe of issue 24: what a zuko / torch.distributions user tries on a flow without reading our
docs (repr, module methods, dtype and device moves, state_dict round trips, deepcopy, torch.save/load, batch shapes
with a context, broadcasting, sample / rsample / log_prob shapes), 48 checks, each a test case."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from flows import Flow, FlowDistribution, build
from manifolds import Euclidean, Lorentz, WrappedNormal

F64 = torch.float64


def _lorentz(context_features: int = 0) -> Flow:
    M = Lorentz()
    return Flow(WrappedNormal.at_origin(torch.ones(2), M), build("whc", M, 2, layers=2, hidden=16,
                                                                  context_features=context_features))


def _euclidean(context_features: int = 0) -> Flow:
    return Flow(Independent(Normal(torch.zeros(2), torch.ones(2)), 1),
                build("nc", Euclidean(), 2, layers=2, hidden=16, context_features=context_features))


def _roundtrip(flow: Flow) -> Flow:
    buf = io.BytesIO()
    torch.save(flow, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def _same_log_prob(a: Flow, b: Flow, y: torch.Tensor, context=None) -> bool:
    return torch.allclose(a(context).log_prob(y), b(context).log_prob(y))


def _loaded(make, flow: Flow) -> Flow:
    other = make()
    other.load_state_dict(flow.state_dict())
    return other


def _perturbed(flow: Flow) -> Flow:
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return flow


CHECKS = {
    # repr and module protocol
    "repr of the module": lambda mk: "Flow(" in repr(mk()),
    "repr of the distribution": lambda mk: repr(mk()()).startswith("FlowDistribution(base="),
    "print() of the distribution": lambda mk: bool(str(mk()())),
    "is an nn.Module": lambda mk: isinstance(mk(), nn.Module),
    "calling it returns a Distribution": lambda mk: isinstance(mk()(), Distribution),
    "parameters() is not empty": lambda mk: len(list(mk().parameters())) > 0,
    "named_parameters() reach the transform": lambda mk: any(n.startswith("transform.")
                                                             for n, _ in mk().named_parameters()),
    "state_dict holds the base": lambda mk: any(k.startswith("base_module.") for k in mk().state_dict()),
    "train()/eval() return the module": lambda mk: isinstance(mk().eval().train(), Flow),
    "zero_grad() works": lambda mk: mk().zero_grad() is None,
    # dtype and device moves
    ".double() casts samples": lambda mk: mk().double()().sample().dtype == F64,
    ".double() casts the base": lambda mk: mk().double().base.sample().dtype == F64,
    ".to(float64) casts log_prob": lambda mk: mk().to(F64)().log_prob(mk().to(F64)().sample((3,))).dtype == F64,
    ".float() after .double() goes back": lambda mk: mk().double().float()().sample().dtype == torch.float32,
    ".to('cpu') keeps working": lambda mk: mk().to("cpu")().sample((2,)).device.type == "cpu",
    ".double() gradients reach the parameters": lambda mk: _grads_reach(mk().double()),
    # state_dict, deepcopy, save/load
    "state_dict round trip gives the same log_prob": lambda mk: _state_roundtrip(mk),
    "state_dict of a double flow loads into a float one": lambda mk: _loaded(mk, _perturbed(mk().double())) is not None,
    "load_state_dict restores a perturbed flow": lambda mk: _restores(mk),
    "deepcopy has the same log_prob": lambda mk: _deepcopy_same(mk),
    "deepcopy is independent": lambda mk: _deepcopy_independent(mk),
    "torch.save/load (weights_only=False) round trip": lambda mk: _save_same(mk),
    "torch.save/load keeps it a Flow": lambda mk: isinstance(_roundtrip(mk()), Flow),
    "state_dict keys are stable across calls": lambda mk: list(mk().state_dict()) == list(mk().state_dict()),
    # shapes without a context
    "batch_shape is the base's": lambda mk: mk()().batch_shape == torch.Size(),
    "event_shape is the manifold's coordinates": lambda mk: len(mk()().event_shape) == 1,
    "sample() shape": lambda mk: mk()().sample().shape == mk()().event_shape,
    "sample((5,)) shape": lambda mk: mk()().sample((5,)).shape[0] == 5,
    "sample((2, 3)) shape": lambda mk: mk()().sample((2, 3)).shape[:2] == (2, 3),
    "rsample is differentiable": lambda mk: mk()().rsample((4,)).requires_grad,
    "sample has no gradient": lambda mk: not mk()().sample((4,)).requires_grad,
    "log_prob of (5, d) has shape (5,)": lambda mk: _lp_shape(mk, (5,)) == (5,),
    "log_prob of (2, 3, d) has shape (2, 3)": lambda mk: _lp_shape(mk, (2, 3)) == (2, 3),
    "rsample_and_log_prob agrees with log_prob": lambda mk: _rsample_and_log_prob_agree(mk),
    "has_rsample": lambda mk: mk()().has_rsample,
    "the old Flow API: flow.log_prob / flow.sample": lambda mk: mk().log_prob(mk().sample((3,))).shape == (3,),
    "log_prob is finite": lambda mk: bool(torch.isfinite(mk()().log_prob(mk()().sample((8,)))).all()),
    "support is the base's": lambda mk: mk()().support is not None,
    # broadcasting against a batched base
    "log_prob broadcasts (3, 1, d) against a base of batch (4,)": lambda mk: _broadcast(mk),
    "sample of a batched base has the batch": lambda mk: _batched(mk)().sample((2,)).shape[:2] == (2, 4),
    # context
    "a context sets the batch shape": lambda mk: _ctx(mk)(torch.randn(6, 3)).batch_shape == (6,),
    "a context of shape (2, 6, c) sets batch (2, 6)": lambda mk: _ctx(mk)(torch.randn(2, 6, 3)).batch_shape == (2, 6),
    "conditional sample shape": lambda mk: _ctx(mk)(torch.randn(6, 3)).sample((5,)).shape[:2] == (5, 6),
    "conditional log_prob shape": lambda mk: _ctx_log_prob_shape(mk) == (5, 6),
    "a context changes the density": lambda mk: _context_matters(mk),
    "conditional distribution after .double()": lambda mk: _ctx(mk).double()(torch.randn(6, 3, dtype=F64))
    .sample().dtype == F64,
    "a construction-time context is the default": lambda mk: _default_context(mk),
    "repr shows the context": lambda mk: "context=" in repr(_ctx(mk)(torch.randn(6, 3))),
}
assert len(CHECKS) == 48, len(CHECKS)


def _grads_reach(flow: Flow) -> bool:
    flow().log_prob(flow().sample((8,))).mean().backward()
    return all(p.grad is not None for p in flow.transform.parameters() if p.requires_grad)


def _state_roundtrip(mk) -> bool:
    a = _perturbed(mk())
    b = _loaded(mk, a)
    return _same_log_prob(a, b, a().sample((6,)))


def _restores(mk) -> bool:
    a = mk()
    sd = copy.deepcopy(a.state_dict())
    y = a().sample((6,))
    before = a().log_prob(y)
    _perturbed(a)
    a.load_state_dict(sd)
    return torch.allclose(a().log_prob(y), before)


def _deepcopy_same(mk) -> bool:
    a = _perturbed(mk())
    return _same_log_prob(a, copy.deepcopy(a), a().sample((6,)))


def _deepcopy_independent(mk) -> bool:
    a = mk()
    b = copy.deepcopy(a)
    y = a().sample((6,))
    before = a().log_prob(y)
    _perturbed(b)
    return torch.allclose(a().log_prob(y), before) and not torch.allclose(b().log_prob(y), before)


def _save_same(mk) -> bool:
    a = _perturbed(mk())
    return _same_log_prob(a, _roundtrip(a), a().sample((6,)))


def _lp_shape(mk, shape) -> tuple:
    q = mk()()
    return tuple(q.log_prob(q.sample(shape)).shape)


def _rsample_and_log_prob_agree(mk) -> bool:
    q = mk().double()()
    y, lp = q.rsample_and_log_prob((6,))
    return torch.allclose(q.log_prob(y), lp, atol=1e-8)


def _batched(mk) -> Flow:
    flow = mk()
    base = flow.base.expand(torch.Size([4]))
    return Flow(base, flow.transform)


def _broadcast(mk) -> bool:
    q = _batched(mk)()
    y = q.sample((3,))[:, :1]  # (3, 1, d)
    lp = q.log_prob(y)
    return lp.shape == (3, 4) and torch.allclose(lp, q.log_prob(y.expand(3, 4, -1)))


def _ctx(mk) -> Flow:
    return mk(context_features=3)


def _ctx_log_prob_shape(mk) -> tuple:
    q = _ctx(mk)(torch.randn(6, 3))
    return tuple(q.log_prob(q.sample((5,))).shape)


def _context_matters(mk) -> bool:
    flow = _perturbed(_ctx(mk))
    y = flow(torch.zeros(1, 3)).sample((4,))
    return not torch.allclose(flow(torch.zeros(4, 3)).log_prob(y[:, 0]), flow(torch.ones(4, 3) * 3).log_prob(y[:, 0]))


def _default_context(mk) -> bool:
    flow = _ctx(mk)
    c = torch.randn(6, 3)
    fixed = Flow(flow.base, flow.transform, context=c)
    y = fixed.sample((2,))
    return fixed.batch_shape == (6,) and torch.allclose(fixed.log_prob(y), flow(c).log_prob(y))


@pytest.mark.parametrize("make", [_lorentz, _euclidean], ids=["lorentz-whc", "euclidean-nc"])
@pytest.mark.parametrize("check", list(CHECKS))
def test_distribution_api_probe(check, make):
    torch.manual_seed(0)
    assert CHECKS[check](make), check


def test_flow_distribution_is_a_torch_distribution_with_a_repr():
    M = Lorentz()
    q = FlowDistribution(WrappedNormal.at_origin(torch.ones(2), M), build("whc", M, 2))
    assert isinstance(q, Distribution) and "WrappedNormal" in repr(q)
