"""rfm benchmark (issue 23): one Riemannian flow-matching training step on the sphere S² against the same step on the
hyperboloid H², at the same batch and field width, and their ratio (target: S² at most 1.5× H²).

One step is ``opt.zero_grad(); flow_matching_loss(f, x, base).backward(); opt.step()`` (Adam; the step is timed
whole, optimizer included): base draws, the geodesic path and its velocity from ``expmap`` / ``logmap`` (closed forms
on S², the hyperboloid's on H²), the field and the squared Riemannian norm of the residual. Fields: on S² the
generic :class:`~flows.rfm.TangentVectorField` (an MLP of the 3 ambient coordinates and ``t``, projected on
``T_xS²``); on H² :class:`~flows.rfm.LorentzVectorField` (an MLP of ``log_o x`` and ``t``, transported from the origin):
both ``layers`` hidden layers of ``hidden`` units. Data: a wrapped normal (``σ = 0.5``) away from the origin on
S² (uniform base), ``exp_o(N(0, I))`` on H² (standard wrapped normal base). Timing as
:func:`experiments.run.timing.time_cases` (warm-up, round-robin repeats, medians). Run with
``python -m experiments.bench flows --rfm`` (with the flows table) or ``python -m experiments.bench.rfm``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from experiments.run.options import add_config_arguments, common, config_from_args, option
from experiments.run.timing import Case, device_name, quartiles, time_cases
from flows import build
from flows.constants import DEFAULT_HIDDEN_LAYERS
from flows.rfm import flow_matching_loss
from manifolds import Lorentz, Sphere, WrappedNormal

#: Target of issue 23: the S² step at most this many times the H² step (ratio of medians in the same run).
SPHERE_VS_HYPERBOLOID_TARGET = 1.5


def _fm_step(manifold, base, x: torch.Tensor, hidden: int, layers: int):
    """One timed flow-matching step (zero_grad, loss, backward, Adam step) of ``rfm`` on ``manifold``."""
    f = build("rfm", manifold, 2, hidden=hidden, layers=layers).to(x)
    opt = torch.optim.Adam(f.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        flow_matching_loss(f, x, base).backward()
        opt.step()

    return step


def rfm_cases(batch: int, hidden: int, layers: int, device: torch.device, dtype: torch.dtype) -> list[Case]:
    """The two cases, S² first."""
    g = torch.Generator().manual_seed(0)
    v = torch.tensor([1.0, -0.5]) + 0.5 * torch.randn(batch, 2, generator=g)
    kw = {"dtype": dtype, "device": device}
    S, H = Sphere(2), Lorentz(k=1.0).to(**kw)
    xs = S.expmap0_spatial(v.to(**kw))
    xh = H.expmap0_spatial(torch.randn(batch, 2, generator=g).to(**kw)).detach()
    torch.manual_seed(0)
    return [Case("rfm on S² (TangentVectorField)", "sphere", _fm_step(S, S.uniform(**kw), xs, hidden, layers),
                 "base uniform on S²; data exp_o(N((1, -0.5), 0.5²I))"),
            Case("rfm on H² (LorentzVectorField)", "hyperboloid",
                 _fm_step(H, WrappedNormal.at_origin(torch.ones(2, **kw), H), xh, hidden, layers),
                 "base WrappedNormal.at_origin(I); data exp_o(N(0, I))")]


def run_rfm_benchmark(batch: int = 512, hidden: int = 128, layers: int = DEFAULT_HIDDEN_LAYERS, repeats: int = 15,
                      warmup: int = 3, device: str = "cpu", dtype: str = "float32", threads: Optional[int] = None,
                      clock: str = "wall") -> dict:
    """Time the S² and H² flow-matching steps; returns the rows (quartiles in ms) and the check (S² / H² median
    ratio, and the median of the per-repeat ratios, robust to drift)."""
    dev = torch.device(device)
    if threads:
        torch.set_num_threads(threads)
    cases = rfm_cases(batch, hidden, layers, dev, getattr(torch, dtype))
    time_cases(cases, repeats, warmup, dev, clock)
    rows = {}
    for c in cases:
        q1, med, q3 = quartiles(c.times)
        rows[c.name] = {"group": c.group, "median_ms": med, "q1_ms": q1, "q3_ms": q3, "note": c.note}
    s, h = cases
    ratio = rows[s.name]["median_ms"] / rows[h.name]["median_ms"]
    paired = statistics.median(a / b for a, b in zip(s.times, h.times))
    return {"torch": torch.__version__, "python": platform.python_version(), "device": str(dev),
            "device_name": device_name(dev), "threads": torch.get_num_threads(), "dtype": dtype, "batch": batch,
            "hidden": hidden, "layers": layers, "repeats": repeats, "warmup": warmup, "clock": clock, "rows": rows,
            "check": {"what": "S² / H²", "ratio": ratio, "paired_ratio": paired,
                      "target": SPHERE_VS_HYPERBOLOID_TARGET, "pass": ratio <= SPHERE_VS_HYPERBOLOID_TARGET}}


def render(res: dict) -> str:
    lines = ["# rfm flow-matching step: S² vs H² (issue 23)", "",
             f"torch {res['torch']}, python {res['python']}, device {res['device']} ({res['device_name']}), threads "
             f"{res['threads']}, dtype {res['dtype']}; batch {res['batch']}, field MLP {res['layers']}x{res['hidden']}; "
             f"median of {res['repeats']} round-robin repeats after {res['warmup']} warm-up steps ({res['clock']} "
             "clock)", "step: opt.zero_grad(); flow_matching_loss(f, x, base).backward(); opt.step()  (all timed)", "",
             "| manifold | median ms | IQR ms |", "|---|---:|---:|"]
    for name, r in res["rows"].items():
        lines.append(f"| {name} | {r['median_ms']:.2f} | {r['q1_ms']:.2f}-{r['q3_ms']:.2f} |")
    c = res["check"]
    lines += ["", f"- {c['what']}: {c['ratio']:.2f}x, paired per-repeat {c['paired_ratio']:.2f}x "
                  f"{'PASS' if c['pass'] else 'MISS'} (target <= {c['target']:.1f}x)"]
    return "\n".join(lines)


@dataclass(frozen=True)
class BenchRfmConfig:
    """The settings of ``python -m experiments.bench.rfm`` (its flags)."""

    batch: int = option(512, "examples per flow-matching step", type=int)
    hidden: int = option(128, "width of the field's hidden layers (both manifolds)", type=int)
    layers: int = option(DEFAULT_HIDDEN_LAYERS, "hidden layers of the field", type=int)
    repeats: int = option(15, "timed steps per manifold (median; >= 15 recommended)", type=int)
    warmup: int = option(3, "untimed steps per manifold first", type=int)
    dtype: str = option("float32", "floating-point type", choices=["float32", "float64"])
    device: str = common("device", "cpu")
    threads: Optional[int] = common("threads", None, help="torch intra-op threads (default: torch's)")
    out: Optional[Path] = common("out", None, help="also write the results as JSON here")


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.rfm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, BenchRfmConfig)
    a = config_from_args(BenchRfmConfig, p.parse_args(argv))
    res = run_rfm_benchmark(a.batch, a.hidden, a.layers, a.repeats, a.warmup, a.device, a.dtype, a.threads)
    print(render(res))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
