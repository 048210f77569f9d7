"""MAF benchmark (issue 6): one maximum-likelihood training step of our MAF against zuko's and nflows' MAF of the
same size, and the time to draw samples from our MAF and IAF (and the peers' MAF).

Training step: ``optimizer.zero_grad(); (-flow.log_prob(x).mean()).backward()`` on a batch of data (the density
direction: one conditioner pass per layer for every MAF). Sampling: ``flow.sample((batch,))`` under
``no_grad`` (MAF: ``n`` conditioner passes per layer; IAF: one). Every model has ``layers`` autoregressive affine
layers whose MADE has two hidden layers of ``hidden`` units with tanh, and alternates the variable order
between layers (zuko: ``MAF(randperm=False)``; nflows: a ``ReversePermutation`` after each
``MaskedAffineAutoregressiveTransform``, ``use_residual_blocks=False``, ``num_blocks=1``).

Timing: warm-up, then round-robin repeats (one call of every case per repeat, in a rotating order, so drift in
the machine's speed affects all alike); the median of ``repeats`` calls per case and ratios of medians measured
in the same run. Run ``python -m experiments.bench.maf --help``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from experiments.run.files import atomic_write_text, check_output
from experiments.run.options import add_config_arguments, common, config_from_args, option
from experiments.run.timing import Case, time_cases
from flows import Flow, build
from manifolds import Euclidean

#: Target of issue 6: our MAF training step at most this many times the faster peer's.
MAF_VS_PEER_TARGET = 1.0


def _normal(dim: int, x: torch.Tensor) -> torch.distributions.Distribution:
    return torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(dim, dtype=x.dtype, device=x.device),
                                   torch.ones(dim, dtype=x.dtype, device=x.device)), 1)


def _train_step(model: nn.Module, log_prob: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
                ) -> Callable[[], None]:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        (-log_prob(x).mean()).backward()

    return step


def _sampler(sample: Callable[[], torch.Tensor]) -> Callable[[], None]:
    def step() -> None:
        with torch.no_grad():
            sample()

    return step


def _ours(name: str, dim: int, layers: int, hidden: int, x: torch.Tensor):

    f = build(name, Euclidean(), dim, layers=layers, hidden=hidden).to(x)
    return f, Flow(_normal(dim, x), f)


def _zuko(dim: int, layers: int, hidden: int, x: torch.Tensor):
    import zuko  # lazy: optional ([bench] extra)

    flow = zuko.flows.MAF(dim, transforms=layers, hidden_features=(hidden, hidden), activation=nn.Tanh).to(x)
    return flow, f"zuko {zuko.__version__} MAF"


def _nflows(dim: int, layers: int, hidden: int, x: torch.Tensor):
    import nflows  # lazy: optional ([bench] extra)
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow as NFlow
    from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.permutations import ReversePermutation

    ts: list[nn.Module] = []
    for _ in range(layers):
        ts += [MaskedAffineAutoregressiveTransform(dim, hidden, num_blocks=1, use_residual_blocks=False,
                                                   activation=torch.tanh), ReversePermutation(dim)]
    flow = NFlow(CompositeTransform(ts), StandardNormal([dim])).to(x)
    return flow, f"nflows {getattr(nflows, '__version__', '')} MAF".replace("  ", " ")


def _cases(dim: int, layers: int, hidden: int, batch: int, x: torch.Tensor, unavailable: dict
           ) -> dict[str, list[Case]]:
    """The cases of each task (``"train"``, ``"sample"``)."""
    train: list[Case] = []
    sample: list[Case] = []
    f, q = _ours("maf", dim, layers, hidden, x)
    train.append(Case("ours MAF", "ours", _train_step(f, q.log_prob, x)))
    sample.append(Case("ours MAF", "ours", _sampler(lambda: q.sample((batch,)))))
    _, qi = _ours("iaf", dim, layers, hidden, x)
    sample.append(Case("ours IAF", "ours", _sampler(lambda: qi.sample((batch,)))))
    try:
        zf, zname = _zuko(dim, layers, hidden, x)
        train.append(Case(zname, "peer", _train_step(zf, lambda v: zf().log_prob(v), x)))
        sample.append(Case(zname, "peer", _sampler(lambda: zf().sample((batch,)))))
    except ImportError as e:
        unavailable["zuko"] = str(e)
    try:
        nf, nname = _nflows(dim, layers, hidden, x)
        train.append(Case(nname, "peer", _train_step(nf, nf.log_prob, x)))
        sample.append(Case(nname, "peer", _sampler(lambda: nf.sample(batch))))
    except ImportError as e:
        unavailable["nflows"] = str(e)
    return {"train": train, "sample": sample}


def run_maf_benchmark(batch: int = 1024, dims: tuple[int, ...] = (16, 64), layers: int = 8, hidden: int = 128,
                      repeats: int = 15, device: str = "cpu", warmup: int = 3, threads: Optional[int] = None
                      ) -> list[dict]:
    """Time the MAF training step (ours, zuko, nflows) and sampling (ours MAF and IAF, the peers' MAF).

    Returns one row per (dim, task, model): ``dim``, ``task`` (``"train"`` or ``"sample"``), ``model``,
    ``group`` (``"ours"`` / ``"peer"``), ``median_ms``, ``q1_ms``, ``q3_ms``, ``repeats``, and for our MAF's
    training step ``vs_faster_peer`` (ratio of medians), ``faster_peer``, ``target`` and ``pass``.
    """
    if repeats < 15:
        raise ValueError(f"use at least 15 repeats for a median; got {repeats}")
    dev = torch.device(device)
    if threads:
        torch.set_num_threads(threads)
    rows: list[dict] = []
    unavailable: dict[str, str] = {}
    for dim in dims:
        g = torch.Generator().manual_seed(dim)
        x = torch.randn(batch, dim, generator=g).to(dev)
        torch.manual_seed(0)
        cases = _cases(dim, layers, hidden, batch, x, unavailable)
        for task, group in cases.items():
            time_cases(group, repeats, warmup, dev)
            task_rows = []
            for c in group:
                q = statistics.quantiles(c.times, n=4, method="inclusive")
                task_rows.append({"dim": dim, "task": task, "model": c.name, "group": c.group,
                                  "median_ms": statistics.median(c.times), "q1_ms": q[0], "q3_ms": q[2],
                                  "repeats": repeats})
            peers = [r for r in task_rows if r["group"] == "peer"]
            if task == "train" and peers:
                fastest = min(peers, key=lambda r: r["median_ms"])
                ours = next(r for r in task_rows if r["model"] == "ours MAF")
                ratio = ours["median_ms"] / fastest["median_ms"]
                ours.update(vs_faster_peer=ratio, faster_peer=fastest["model"], target=MAF_VS_PEER_TARGET,
                            **{"pass": ratio <= MAF_VS_PEER_TARGET})
            rows += task_rows
    for r in rows:
        r.update(batch=batch, layers=layers, hidden=hidden, device=str(dev), threads=torch.get_num_threads(),
                 torch=torch.__version__, unavailable=dict(unavailable))
    return rows


def render(rows: list[dict]) -> str:
    if not rows:
        return "(no results)"
    r0 = rows[0]
    lines = [f"MAF benchmark: torch {r0['torch']}, python {platform.python_version()}, device {r0['device']}, "
             f"threads {r0['threads']}; batch {r0['batch']}, {r0['layers']} layers, MADE 2x{r0['hidden']} tanh; "
             f"median of {r0['repeats']} round-robin repeats after warm-up", "",
             "| dim | task | model | median ms | IQR ms | ours / faster peer |", "|---:|---|---|---:|---:|---:|"]
    for r in rows:
        ratio = ""
        if "vs_faster_peer" in r:
            ratio = f"{r['vs_faster_peer']:.2f}x ({'PASS' if r['pass'] else 'MISS'}, target <= {r['target']:.1f}x)"
        lines.append(f"| {r['dim']} | {r['task']} | {r['model']} | {r['median_ms']:.2f} | "
                     f"{r['q1_ms']:.2f}-{r['q3_ms']:.2f} | {ratio} |")
    if r0["unavailable"]:
        lines += ["", "Peers not run: " + "; ".join(f"{k} ({v})" for k, v in r0["unavailable"].items())]
    return "\n".join(lines)


@dataclass(frozen=True)
class StepBenchConfig:
    """What the training-step benchmarks (``flows``, ``maf``) share: the step's size and how it is timed."""

    batch: int = option(1024, "examples per training step", type=int)
    dims: list[int] = option([16, 64], "data dimensions", type=int, nargs="+")
    layers: int = option(8, "flow layers", type=int)
    hidden: int = option(128, "width of the layers' networks", type=int)
    repeats: int = option(15, "timed steps per model (median; >= 15 recommended)", type=int)
    warmup: int = option(3, "untimed steps per model first", type=int)


@dataclass(frozen=True)
class BenchMafConfig(StepBenchConfig):
    """The settings of ``python -m experiments.bench.maf`` (its flags)."""

    device: str = common("device", "cpu")
    threads: Optional[int] = common("threads", None, help="torch intra-op threads (default: torch's)")
    out: Optional[Path] = common("out", None, help="also write the rows as JSON here")


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.maf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, BenchMafConfig)
    a = config_from_args(BenchMafConfig, p.parse_args(argv))
    if a.out:
        check_output(a.out, "--out")
    rows = run_maf_benchmark(a.batch, tuple(a.dims), a.layers, a.hidden, a.repeats, a.device, a.warmup, a.threads)
    print(render(rows))
    if a.out:
        atomic_write_text(json.dumps(rows, indent=2), a.out)


if __name__ == "__main__":
    main()
