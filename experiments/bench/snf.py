"""One self-normalizing layer's training-step time against the dimension D (Keller et al. 2021, Fig. 3).

``python -m experiments.bench.snf`` times one Adam training step of a single :class:`flows.selfnorm.SelfNormLinear`
(D = 64 … 2048, doubling; batch ``--batch``) trained with the self-normalizing surrogate gradient (O(D²): matrix
products only) and with exact gradients (O(D³): ``slogdet`` and, in its backward, the inverse), and prints the
median times and the slopes of log(time) against log(D): over all sizes, over the largest half, and between
consecutive sizes (expected ≈ 2 for SNF; for exact, rising towards 3 as the O(D³) term overtakes the O(B·D²) ones).
Times are the process's CPU time (``time.process_time``, one thread by default), so that other jobs on a shared
machine inflate them less than wall-clock time. One step is ``zero_grad``, the objective
of :func:`flows.selfnorm.self_normalizing_objective` (λ = 1), ``backward`` and ``step``; the two variants are timed
alternately after a warm-up so that drift in the machine's speed affects both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.distributions import Independent, Normal

from experiments.run.files import atomic_write_text
from experiments.run.options import add_config_arguments, common, config_from_args, option
from flows import Flow
from flows.selfnorm import SelfNormLinear, self_normalizing_objective

DEFAULT_DIMS = (64, 128, 256, 512, 1024, 2048)


def make_step(dim: int, batch: int, exact: bool, seed: int = 0) -> Callable[[], None]:
    torch.manual_seed(seed)
    q = Flow(Independent(Normal(torch.zeros(dim), torch.ones(dim)), 1), SelfNormLinear(dim))
    opt = torch.optim.Adam(q.transform.parameters(), lr=1e-4)
    x = torch.randn(batch, dim)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        self_normalizing_objective(q, x, exact=exact).loss.backward()
        opt.step()

    return step


def slope(dims: list[int], times: list[float]) -> float:
    """Least-squares slope of log(time) against log(D)."""
    return float(np.polyfit(np.log(dims), np.log(times), 1)[0])


@dataclass(frozen=True)
class BenchSnfConfig:
    """The settings of ``python -m experiments.bench.snf`` (its flags)."""

    dims: list[int] = option(list(DEFAULT_DIMS), "layer sizes D", type=int, nargs="+")
    batch: int = option(100, "batch size (the paper's MNIST batch)", type=int)
    repeats: int = option(5, "timed steps per variant and size (median reported)", type=int)
    threads: int = common("threads", 1)
    out: Optional[Path] = common("out", None, help="optional JSON file for the timings")


def main(argv: Optional[list[str]] = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.snf", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_arguments(p, BenchSnfConfig)
    args = config_from_args(BenchSnfConfig, p.parse_args(argv))
    torch.set_num_threads(args.threads)

    dims = sorted(args.dims)
    med: dict[str, list[float]] = {"snf": [], "exact": []}
    print(f"one SelfNormLinear layer, batch {args.batch}, {args.threads} thread(s), median CPU time of "
          f"{args.repeats} steps")
    print(f"{'D':>6s} {'SNF (ms)':>10s} {'exact (ms)':>11s} {'exact/SNF':>10s} {'local slope SNF':>16s} "
          f"{'local slope exact':>18s}")
    for d in dims:
        steps = {"snf": make_step(d, args.batch, exact=False), "exact": make_step(d, args.batch, exact=True)}
        times: dict[str, list[float]] = {k: [] for k in steps}
        for f in steps.values():  # warm-up
            f()
        for r in range(args.repeats):
            for k in (("snf", "exact") if r % 2 == 0 else ("exact", "snf")):
                t0 = time.process_time()
                steps[k]()
                times[k].append(time.process_time() - t0)
        for k in med:
            med[k].append(statistics.median(times[k]))
        local = ["" if len(med[k]) < 2 else f"{slope(dims[len(med[k]) - 2:len(med[k])], med[k][-2:]):.2f}"
                 for k in ("snf", "exact")]
        print(f"{d:6d} {1e3 * med['snf'][-1]:10.2f} {1e3 * med['exact'][-1]:11.2f} "
              f"{med['exact'][-1] / med['snf'][-1]:10.2f} {local[0]:>16s} {local[1]:>18s}", flush=True)
    half = len(dims) // 2
    slopes = {k: {"all": slope(dims, v), "largest_half": slope(dims[half:], v[half:]) if len(dims) - half >= 2
                  else float("nan")} for k, v in med.items()}
    print(f"log-log slope of step time vs D, all sizes:     SNF {slopes['snf']['all']:.2f}   "
          f"exact {slopes['exact']['all']:.2f}")
    print(f"log-log slope of step time vs D, largest half ({dims[half]}-{dims[-1]}): SNF "
          f"{slopes['snf']['largest_half']:.2f}   exact {slopes['exact']['largest_half']:.2f}   "
          f"(expected ≈ 2 and → 3)")
    result = {"dims": dims, "batch": args.batch, "threads": args.threads, "median_seconds": med, "slopes": slopes}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(result, indent=2), args.out)
    return result


if __name__ == "__main__":
    main()
