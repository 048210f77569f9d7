"""``python -m experiments hdensity``: density estimation on Hⁿ against targets with exact log-densities.

Targets (curvature -1, ``k = 1``): on H², a mixture of five wrapped normals (``wn-mixture``), one wrapped normal at
distance 3.2 from the origin (``far-wn``), a checkerboard (``checkerboard``) and a sine band (``band``) drawn on the
Poincaré disk; in H⁸ and H¹⁶, mixtures of four wrapped normals (``wn-mixture-8``, ``wn-mixture-16``). Every target
samples exactly and has an exact log-density (on the disk: ``log p_H = log p_disk - 2 log λ``, ``λ = 2/(1 - |p|²)``),
so each model's test NLL is reported with its **gap to the target's entropy** (the floor; entropy by Monte Carlo,
with its standard error).

Models: ``rfm`` (:class:`flows.RiemannianFlow` trained by flow matching, no ODE solve in training), ``cnf``
(``cnf@lorentz``, a CNF in tangent coordinates at the origin, trained by maximum likelihood through the solver),
``whc`` and ``tc`` (8 coupling layers, maximum likelihood). Each model's base is ``WrappedNormal(o, I)``; ``rfm``
pairs base and data draws by minibatch optimal transport (``--coupling``, :func:`flows.rfm.ot_pairing`). Reported:
test NLL, gap, training wall time, vector-field evaluations (training and one test evaluation), peak memory of a
training step, and for ``rfm`` vs ``cnf`` the training time each needed to reach the NLL both reach (the least
training time over the full run's checkpoints and over whole runs on shorter schedules, :data:`SPEED_FRACTIONS`:
a user who wants that NLL sooner trains a shorter schedule, whose learning rate anneals in time). Writes
``<out>/hdensity.json``, ``<out>/hdensity.md`` and ``<out>/densities_h2.png`` (learned densities on the Poincaré disk
beside the targets).
"""

from __future__ import annotations

import datetime
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import trange

import flows
from experiments.plots import pyplot, save_figure
from experiments.run.files import atomic_write_text, check_output
from experiments.run.options import common, option
from experiments.run.profiling import peak_memory
from flows.constants import FM_COUPLINGS
from flows.continuous import ContinuousFlow
from flows.rfm import RiemannianFlow
from manifolds import Lorentz, WrappedNormal

MODELS = ("rfm", "cnf", "whc", "tc")
H2_TARGETS = ("wn-mixture", "far-wn", "checkerboard", "band")
TARGETS = H2_TARGETS + ("wn-mixture-8", "wn-mixture-16")
#: per model: (training steps, batch, learning rate); ``--quick`` divides the steps by 10
SCHEDULE = {"rfm": (10000, 512, 5e-3), "cnf": (1000, 256, 5e-3), "whc": (2000, 512, 2e-3), "tc": (2000, 512, 2e-3)}
COUPLING_LAYERS = 8
HIDDEN = 128
#: RFM's field width: 3 hidden layers of 256 hold as many parameters as the 8 coupling layers of width 128 (133k vs
#: 136k in H², 140k vs 158k in H¹⁶); at width 128 (34k) it reached +0.16 nats in H¹⁶ against +0.085 at 256
#: (10 000 steps, 1 000 test points). ``cnf`` keeps the 2 × 128 field (17k): each of its training steps is an ODE
#: solve, and a larger field would multiply its cost
RFM_HIDDEN = 256
#: ODE tolerance of the solves (training of ``cnf`` and every evaluation of ``rfm`` / ``cnf``), float32
ODE_TOL = 1e-5
TEST_POINTS = 5000
ENTROPY_SAMPLES = 200_000
#: evaluations of the test NLL during training (for the time to reach a given NLL)
CHECKPOINTS = 6
#: for the time to reach a given NLL, ``rfm`` and ``cnf`` also train whole runs of these fractions of their steps
#: (each with its own cosine schedule), scored once at the end on the same 500 test points as the checkpoints. The
#: time found is an upper bound, as fine as this grid: with (0.1, 0.25) only, H¹⁶'s ``rfm`` reached the level in
#: its 1 000-step run (17.6 s against the CNF's 83.8 s) and no shorter run was tried
SPEED_FRACTIONS = (0.05, 0.1, 0.25)
#: the pairing of base and data draws in ``rfm``'s flow matching (:data:`flows.constants.FM_COUPLINGS`), and with it
#: ``rfm``'s learning rate 5e-3 (was 2e-3 with independent pairs). Gaps on 1 000 test points, 10 000 steps, OT in
#: blocks of 128: checkerboard +0.12 nats (OT, 5e-3), +0.18 (OT, 2e-3), +0.24 (independent, 2e-3, the previous
#: run); H¹⁶ +0.09 (OT, 5e-3). In H¹⁶ after 1 500 steps at 2e-3: +0.27 (OT) against +0.44 (independent)
RFM_COUPLING = "ot"
#: points the NLL is estimated on at a checkpoint or at the end of a speed run
CURVE_POINTS = 500


# ----------------------------------------------------------------------------------------------------------
# targets
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Target:
    name: str
    dim: int
    sample: Callable[[int, torch.Generator], torch.Tensor]
    log_prob: Callable[[torch.Tensor], torch.Tensor]
    about: str


def _wn_mixture(M, means: torch.Tensor, scales: torch.Tensor):

    comps = [WrappedNormal(m, s, M) for m, s in zip(means, scales)]
    log_w = -math.log(len(comps))

    def sample(num: int, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(comps), (num,), generator=g)
        eps = torch.randn(num, means.size(-1) - 1, generator=g)
        v = eps * scales[idx]  # the wrapped normal's tangent draw, then the boost to its mean
        return M.translate(means[idx], M.expmap0_spatial(v))

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(torch.stack([c.log_prob(x) for c in comps]) + log_w, dim=0)

    return sample, log_prob


def _disk_target(M, sample_disk: Callable, log_prob_disk: Callable):
    """A density drawn on the Poincaré disk (``k = 1``), moved to H²: ``log p_H = log p_disk - 2 log λ``."""

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        p = M.to_poincare(x)
        lam = 2 / (1 - (p * p).sum(-1))
        return log_prob_disk(p) - 2 * torch.log(lam)

    return (lambda num, g: M.from_poincare(sample_disk(num, g))), log_prob


def make_target(name: str, M) -> Target:
    """The target ``name`` (see the module) on ``M = Lorentz(k=1)``."""
    if name == "wn-mixture":
        ang = torch.arange(5) * 2 * math.pi / 5
        means = M.expmap0_spatial(1.5 * torch.stack([ang.cos(), ang.sin()], -1))
        s, lp = _wn_mixture(M, means, torch.tensor([[0.25, 0.45]]).expand(5, 2))
        return Target(name, 2, s, lp, "5 wrapped normals, means at distance 1.5, scales 0.25 × 0.45")
    if name == "far-wn":
        s, lp = _wn_mixture(M, M.expmap0_spatial(torch.tensor([[3.2, 0.0]])), torch.tensor([[0.4, 0.7]]))
        return Target(name, 2, s, lp, "one wrapped normal at distance 3.2 from the origin, scales 0.4 × 0.7")
    if name == "checkerboard":
        side, cells = 0.3, 4  # 4 × 4 squares of side 0.3 on [-0.6, 0.6]², every other one

        def sample_disk(num, g):
            pick = torch.randint(cells * cells // 2, (num,), generator=g)
            row = pick // (cells // 2)
            col = 2 * (pick % (cells // 2)) + row % 2
            corner = torch.stack([col, row], -1).float() * side - side * cells / 2
            return corner + torch.rand(num, 2, generator=g) * side

        def log_prob_disk(p):
            idx = torch.floor((p + side * cells / 2) / side)
            inside = ((idx >= 0) & (idx < cells)).all(-1) & ((idx[..., 0] - idx[..., 1]) % 2 == 0)
            area = side * side * cells * cells / 2
            return torch.where(inside, torch.full_like(p[..., 0], -math.log(area)),
                               torch.full_like(p[..., 0], -math.inf))

        s, lp = _disk_target(M, sample_disk, log_prob_disk)
        return Target(name, 2, s, lp, "checkerboard on the Poincaré disk: 8 squares of side 0.3 on [-0.6, 0.6]²")
    if name == "band":
        half, amp, freq, width = 0.7, 0.3, 4.0, 0.06

        def sample_disk(num, g):
            px = (torch.rand(num, generator=g) * 2 - 1) * half
            py = amp * torch.sin(freq * px) + width * torch.randn(num, generator=g)
            return torch.stack([px, py], -1)

        def log_prob_disk(p):
            px, py = p[..., 0], p[..., 1]
            z = (py - amp * torch.sin(freq * px)) / width
            lp = -math.log(2 * half) - 0.5 * z * z - math.log(width) - 0.5 * math.log(2 * math.pi)
            return torch.where(px.abs() <= half, lp, torch.full_like(lp, -math.inf))

        s, lp = _disk_target(M, sample_disk, log_prob_disk)
        return Target(name, 2, s, lp, "a sine band on the Poincaré disk: x ~ U(-0.7, 0.7), y ~ N(0.3 sin 4x, 0.06²)")
    if name.startswith("wn-mixture-"):
        n = int(name.rsplit("-", 1)[1])
        g = torch.Generator().manual_seed(n)
        dirs = torch.linalg.qr(torch.randn(n, 4, generator=g))[0].T  # 4 orthonormal directions
        means = M.expmap0_spatial(1.5 * dirs)
        s, lp = _wn_mixture(M, means, torch.full((4, n), 0.4))
        return Target(name, n, s, lp, f"4 wrapped normals in H^{n}, means at distance 1.5 along orthogonal "
                                      "directions, scale 0.4")
    raise ValueError(f"unknown target {name!r}; one of {', '.join(TARGETS)}")


def entropy(target: Target, g: torch.Generator, num: int = ENTROPY_SAMPLES) -> tuple[float, float]:
    """Monte Carlo ``H = E[-log p]`` and its standard error."""
    with torch.no_grad():
        lp = torch.cat([target.log_prob(target.sample(20_000, g)) for _ in range(num // 20_000)]).double()
    return float(-lp.mean()), float(lp.std() / math.sqrt(lp.numel()))


# ----------------------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------------------

def make_model(name: str, M, n: int, trace: str = "auto"):
    """``trace``: the ODE models' trace in training (only ``cnf`` solves there) and scoring; ``"auto"``: exact,
    except Hutchinson for training ``cnf`` above n = 2 (FFJORD's choice)."""

    if name == "rfm":
        return flows.build("rfm", M, n, hidden=RFM_HIDDEN, layers=3, rtol=ODE_TOL, atol=ODE_TOL,
                           trace="exact" if trace == "auto" else trace)
    if name == "cnf":
        if trace == "auto":
            trace = "exact" if n <= 2 else "hutchinson"
        return flows.build("cnf@lorentz", M, n, hidden=HIDDEN, layers=2, rtol=ODE_TOL, atol=ODE_TOL, trace=trace)
    if name in ("whc", "tc"):
        return flows.build(name, M, n, layers=COUPLING_LAYERS, hidden=HIDDEN)
    raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}")


def _evaluations(transform) -> int:
    return sum(getattr(m, "last_evaluations", 0) for m in transform.modules())


def test_log_q(q, x: torch.Tensor, transform, batch: int = 1000, trace: str = "exact") -> tuple[torch.Tensor, int]:
    """``log q(x)`` per point and the vector-field evaluations of the (last) solve, with the ODE models' ``trace``
    (``"exact"``; ``"hutchinson"``: an unbiased estimate)."""

    ode = [m for m in transform.modules() if isinstance(m, (ContinuousFlow, RiemannianFlow))]
    saved = [m.trace for m in ode]
    for m in ode:
        m.trace = trace
    try:
        with torch.no_grad():
            lp = torch.cat([q.log_prob(x[i:i + batch]) for i in range(0, len(x), batch)])
    finally:
        for m, t in zip(ode, saved):
            m.trace = t
    return lp.double(), _evaluations(transform)


def train(name: str, target: Target, M, *, steps: int, batch: int, lr: float, seed: int, test: torch.Tensor,
          progress: bool, trace: str = "auto", coupling: str = RFM_COUPLING, checkpoints: int = CHECKPOINTS,
          score: bool = True) -> dict[str, Any]:
    """Train model ``name`` on samples of ``target``; its test NLL, and its gap to the floor estimated on the same
    test points, ``mean(log p - log q)`` (a KL estimate, ± its standard error: far less noisy than the difference of
    the test NLL and a separately estimated entropy). ``coupling``: ``rfm``'s pairing of draws; ``checkpoints``:
    NLL evaluations on ``CURVE_POINTS`` test points during training (the last at the end); ``score=False``: only
    those (a speed run)."""


    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    f = make_model(name, M, target.dim, trace)
    score_trace = "exact" if trace == "auto" else trace
    base = WrappedNormal.at_origin(torch.ones(target.dim), M)
    q = flows.Flow(base, f)
    opt = torch.optim.Adam(f.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    evals = 0

    def step() -> None:
        nonlocal evals
        for m in f.modules():  # count this step's solves only (none for flow matching)
            if hasattr(m, "last_evaluations"):
                m.last_evaluations = 0
        x = target.sample(batch, g)
        loss = (flows.flow_matching_loss(f, x, base, coupling=coupling) if name == "rfm"
                else -q.log_prob(x).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        evals += _evaluations(f)

    peak = peak_memory(step, "cpu")
    curve, train_s = [], 0.0
    marks = {int(round(steps * (i + 1) / checkpoints)) for i in range(checkpoints)}
    bar = trange(1, steps, desc=f"{target.name} {name} ({steps} steps)", leave=False, disable=not progress)
    for i in bar:
        t0 = time.perf_counter()
        step()
        train_s += time.perf_counter() - t0
        if i + 1 in marks:
            lq, _ = test_log_q(q, test[:CURVE_POINTS], f, trace=score_trace)
            curve.append({"step": i + 1, "train_s": train_s, "nll_500": float(-lq.mean())})
    if not score:
        return {"model": name, "steps": steps, "train_s": train_s, "curve": curve}
    t0 = time.perf_counter()
    lq, eval_evals = test_log_q(q, test, f, trace=score_trace)
    diff = target.log_prob(test).double() - lq
    return {"model": name, "nll": float(-lq.mean()), "gap": float(diff.mean()),
            "gap_se": float(diff.std() / math.sqrt(len(diff))), "train_s": train_s, "eval_s": time.perf_counter() - t0,
            "train_evaluations": evals, "test_evaluations": eval_evals, "peak_step_bytes": peak, "curve": curve,
            "params": sum(p.numel() for p in f.parameters()),
            "q": q}


def _schedule(model: str, quick: bool) -> tuple[int, int, float]:
    """``(steps, batch, lr)`` of ``model`` (:data:`SCHEDULE`); ``quick``: a tenth of the steps, at least 10."""
    steps, batch, lr = SCHEDULE[model]
    return (max(10, steps // 10) if quick else steps), batch, lr


def time_to_reach(curves: list[list[dict]], nll: float) -> float | None:
    """The least training seconds at which a checkpoint of any of ``curves`` (the full run's and the speed runs')
    has NLL ≤ ``nll`` (``None``: never)."""
    times = [c["train_s"] for curve in curves for c in curve if c["nll_500"] <= nll]
    return min(times) if times else None


# ----------------------------------------------------------------------------------------------------------
# plots and report
# ----------------------------------------------------------------------------------------------------------

def disk_density_grid(log_prob: Callable[[torch.Tensor], torch.Tensor], M, size: int = 120) -> np.ndarray:
    """The density on the Poincaré disk (``p_disk = p_H·λ²``) on a ``size²`` grid (NaN outside the disk)."""
    g = torch.linspace(-0.99, 0.99, size)
    p = torch.cartesian_prod(g, g).flip(-1)  # rows = y
    inside = (p * p).sum(-1) < 0.98
    out = torch.full((size * size,), float("nan"))
    with torch.no_grad():
        pi = p[inside]
        lam = 2 / (1 - (pi * pi).sum(-1))
        out[inside] = torch.exp(log_prob(M.from_poincare(pi)) + 2 * torch.log(lam)).float()
    return out.reshape(size, size).numpy()


def plot_h2(rows: list[tuple[str, np.ndarray, list[tuple[str, np.ndarray]]]], path: Path) -> None:

    plt = pyplot()
    ncols = 1 + max(len(r[2]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.6 * ncols, 2.6 * len(rows)), squeeze=False)
    for i, (name, truth, learned) in enumerate(rows):
        vmax = float(np.nanmax(truth))
        for j, (title, img) in enumerate([("target", truth)] + learned):
            ax = axes[i][j]
            ax.imshow(img, extent=(-1, 1, -1, 1), origin="upper", cmap="magma", vmin=0, vmax=vmax)
            ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, lw=0.6, color="grey"))
            ax.set_title(f"{name}: {title}" if j == 0 else title, fontsize=8)
            ax.set_axis_off()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def report(results: dict[str, Any]) -> str:
    lines = [f"Density estimation on H^n ({results['device']}, {results['date']}; {results['threads']} thread(s)). "
             f"NLL in nats on {results['test_points']} test samples; entropy of the target (the floor) by Monte Carlo "
             "± SE; gap = NLL minus the floor, estimated on the same test points as mean(log p - log q) ± SE. "
             f"rfm pairs draws by {results.get('coupling', 'independent')} coupling. Time to NLL (rfm vs cnf): the "
             f"least training time at which the model's NLL on {CURVE_POINTS} test points is at most the worse of the "
             "two final "
             "NLLs, over the full run's checkpoints and whole runs on "
             + " and ".join(f"{f:g}" for f in results.get("speed_fractions", [])) + " of its steps.", "",
             "| target | entropy | model | params | test NLL | gap | train s | field evals (train / test) | peak MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in results["targets"]:
        for r in t["models"]:
            params = f"{r['params'] / 1000:.0f}k" if "params" in r else "—"
            lines.append(f"| {t['name']} | {t['entropy']:.3f} ± {t['entropy_se']:.3f} | {r['model']} | {params} | "
                         f"{r['nll']:.3f} | {r['gap']:+.3f} ± {r['gap_se']:.3f} | {r['train_s']:.1f} | "
                         f"{r['train_evaluations']} / {r['test_evaluations']} | {r['peak_step_bytes'] / 2**20:.0f} |")
        if t.get("rfm_vs_cnf"):
            v = t["rfm_vs_cnf"]
            lines.append(f"| {t['name']} | | rfm vs cnf | | time to NLL {v['nll']:.3f}: rfm {v['rfm_s']} s, "
                         f"cnf {v['cnf_s']} s | | ×{v['speedup']} | | |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class HDensityConfig:
    """The settings of ``python -m experiments hdensity`` (its flags)."""

    targets: str = option(",".join(TARGETS), f"comma-separated, of {', '.join(TARGETS)}")
    models: str = option(",".join(MODELS), f"comma-separated, of {', '.join(MODELS)}")
    trace: str = option("auto", "divergence of the ODE models (rfm, cnf): exact (n + 2 vector-Jacobian products per "
                        "field evaluation) or Hutchinson's estimate (one); auto: exact for scoring, and for training "
                        "cnf exact in H^2, Hutchinson above", choices=("auto", "exact", "hutchinson"))
    coupling: str = option(RFM_COUPLING, "rfm's pairing of base and data draws in flow matching: independent, or "
                           "minibatch optimal transport (exact assignments in blocks; default)", choices=FM_COUPLINGS)
    quick: bool = option(False, "a tenth of the training steps (a smoke run)")
    seed: int = common("seed", 0)
    threads: int = common("threads", 2)
    out: Path = common("out", Path("runs/hdensity"))
    no_progress: bool = common("no_progress", False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))


def _rfm_vs_cnf(by: dict[str, dict[str, Any]], target: Any, M: Lorentz, test: torch.Tensor,
                args: HDensityConfig) -> dict[str, Any]:
    """How long RFM and the CNF take to reach the worse of their two final NLLs (from shorter runs at
    :data:`SPEED_FRACTIONS` of the steps, recorded in ``by[m]["speed_runs"]``)."""
    level = max(by["rfm"]["curve"][-1]["nll_500"], by["cnf"]["curve"][-1]["nll_500"])
    curves = {}
    for m in ("rfm", "cnf"):
        steps, batch, lr = _schedule(m, args.quick)
        short = [train(m, target, M, steps=max(2, int(steps * frac)), batch=batch, lr=lr, seed=args.seed,
                       test=test, progress=not args.no_progress, trace=args.trace, coupling=args.coupling,
                       checkpoints=1, score=False) for frac in SPEED_FRACTIONS]
        by[m]["speed_runs"] = [{"steps": r["steps"], "train_s": r["train_s"],
                                "nll_500": r["curve"][-1]["nll_500"]} for r in short]
        curves[m] = [by[m]["curve"]] + [r["curve"] for r in short]
    t_r, t_c = time_to_reach(curves["rfm"], level), time_to_reach(curves["cnf"], level)
    return {"nll": level, "rfm_s": None if t_r is None else round(t_r, 1),
            "cnf_s": None if t_c is None else round(t_c, 1),
            "speedup": None if not (t_r and t_c) else round(t_c / t_r, 1)}


def run_hdensity(args: HDensityConfig) -> int:
    """Train and score every model on every target; write ``hdensity.json``, ``hdensity.md`` and the H² plot."""
    torch.set_num_threads(args.threads)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [t for t in targets if t not in TARGETS] + [m for m in models if m not in MODELS]
    if bad:
        print(f"error: unknown target or model {', '.join(bad)}; targets: {', '.join(TARGETS)}; models: "
              f"{', '.join(MODELS)}")
        return 2
    for name in ("hdensity.json", "hdensity.md", "densities_h2.png"):
        check_output(args.out / name, "--out")
    M = Lorentz(k=1.0)
    results: dict[str, Any] = {"device": "cpu", "threads": args.threads, "quick": args.quick, "trace": args.trace,
                               "coupling": args.coupling, "speed_fractions": list(SPEED_FRACTIONS),
                               "test_points": TEST_POINTS,
                               "date": datetime.date.today().isoformat(), "targets": []}
    panels = []
    for name in targets:
        target = make_target(name, M)
        g = torch.Generator().manual_seed(args.seed + 100)
        h, se = entropy(target, g)
        test = target.sample(TEST_POINTS, g)
        entry: dict[str, Any] = {"name": name, "dim": target.dim, "about": target.about, "entropy": h,
                                 "entropy_se": se, "models": []}
        learned = []
        for m in models:
            steps, batch, lr = _schedule(m, args.quick)
            res = train(m, target, M, steps=steps, batch=batch, lr=lr, seed=args.seed, test=test,
                        progress=not args.no_progress, trace=args.trace, coupling=args.coupling)
            q = res.pop("q")
            print(f"hdensity: {name} {m}: test NLL {res['nll']:.3f} (entropy {h:.3f}, gap {res['gap']:+.3f} ± "
                  f"{res['gap_se']:.3f}), train {res['train_s']:.1f} s", flush=True)
            entry["models"].append(res)
            if target.dim == 2:
                learned.append((m, disk_density_grid(q.log_prob, M)))
        by = {r["model"]: r for r in entry["models"]}
        if "rfm" in by and "cnf" in by:
            entry["rfm_vs_cnf"] = _rfm_vs_cnf(by, target, M, test, args)
        results["targets"].append(entry)
        if target.dim == 2:
            panels.append((name, disk_density_grid(target.log_prob, M), learned))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(results, indent=2), args.out / "hdensity.json")
    text = report(results)
    atomic_write_text(text, args.out / "hdensity.md")
    if panels:
        plot_h2(panels, args.out / "densities_h2.png")
    print(text)
    print(f"hdensity: wrote {args.out / 'hdensity.json'}, {args.out / 'hdensity.md'}"
          + (f", {args.out / 'densities_h2.png'}" if panels else ""))
    return 0
