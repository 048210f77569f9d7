"""``python -m experiments earth``: density estimation on S² on the four earth-event catalogues.

Data (:func:`experiments.datasets.load_earth`): volcanic eruptions (827 events), earthquakes (6 120), floods
(4 875) and wild fires (12 809), each split 80/10/10 at random per seed (:func:`experiments.datasets.split_earth`,
seeds ``--seed`` … ``--seed + --seeds - 1``). Models: ``sphere-spline`` (cylindrical spline couplings on S²,
:mod:`flows.sphere`, trained by maximum likelihood on minibatches, full batch on volcano) and ``rfm`` (Riemannian
flow matching, :class:`flows.RiemannianFlow`, minibatch-OT pairing; its log-likelihood needs ``Sphere.divergence``).
Both start from the uniform distribution on S².

Protocol: Adam with a cosine schedule; every ``--eval-every`` steps the validation NLL is measured and the best
parameters so far are kept (with ``--ema``, or the per-dataset :data:`EMA`, the parameters measured and kept are an
exponential moving average of the trained ones); training stops early after ``--patience`` evaluations without
improvement. The kept (best-on-validation) model is scored once on the test split; the test split is never looked
at before that. With ``--restarts K`` (or :data:`RESTARTS`: 3 for sphere-spline on flood) each split is trained K
times from different initialisations; the run of the best validation NLL is the one reported, and the equal-weight
mixture of the K kept models (:func:`mixture_nll`) is scored on validation and test as its own row.
Reported: test NLL in nats w.r.t. the area measure of the unit sphere (uniform: ``log 4π ≈ 2.531``), mean ± sample
std over the seeds, beside the published rows (:data:`PUBLISHED`). Writes ``<out>/earth.json``, ``<out>/earth.md``
and ``<out>/earth.png`` (the learned log-density of the first seed on an equirectangular latitude/longitude map,
that seed's test events over it).
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import trange

import flows
from experiments import datasets as ds
from experiments.plots import pyplot, save_figure
from experiments.run.errors import RunError
from experiments.run.files import atomic_write_text, check_output, read_json
from experiments.run.options import common, option
from experiments.run.result import mean_std
from experiments.run.steps import TrainStep
from manifolds import Sphere

MODELS = ("sphere-spline", "rfm")
#: per model and dataset: training steps and batch (0: full batch, all training events every step); ``--steps`` and
#: ``--batch`` override them. Sized for the CPU budget of the benchmark (one thread, float64: sphere-spline with 8
#: layers and 8 harmonics ~0.1-0.17 s per step of 512 events or of volcano's 662; rfm ~0.04 s per flow-matching step
#: of 512, and a validation NLL is an ODE solve, ~1.6 s per 1 000 events at initialisation). Volcano trains full
#: batch. sphere-spline's steps come from seed 0 (validation NLL, 8 harmonics, cosine schedule from 1e-3): volcano
#: reached -4.15 in 600 steps and -4.09 in 1500 (no gain from more), earthquake -0.19 in 1500 steps of 512 and flood
#: 0.56 in 1500 steps of 512 (both still improving at the end, so they get more here), fire -1.19 in 2500 steps of
#: 512 (still improving: 5000 here); 32 bins with 16 harmonics over-fitted volcano (validation +0.54 at step 400, then
#: up to +17). rfm improves steadily with steps (volcano, seed 0, batch 256: test NLL -0.57 after 3 000 steps, -1.76
#: after 15 000 (validation -0.07, -0.74, -1.17, -1.84, -2.18 at 1k, 3k, 5k, 10k, 15k, still improving), ~0.018 s
#: per step); 5 000 steps is what the CPU budget of five seeds on four catalogues allows. Volcano's sphere-spline is
#: deeper (:data:`SPLINE_LAYERS`) and slower (:data:`LR`) than the others, and longer than its first 800 steps: at
#: 800 full-batch steps of 1e-3, 16 layers gave test -4.17 / -3.63 / -3.88 on seeds 0 / 3 / 4 (8 layers: -3.24 /
#: -3.38 / -3.09) but seed 1 collapsed onto training sites (validation 0.33 at step 50, then up to +40; 12 layers of
#: width 256 did the same on seed 0); at 5e-4 for 1 600 steps seed 1 trained smoothly to validation -5.16 (test
#: -4.75; 8 layers at 1e-3, 800 steps: -4.15, test -3.61), still falling at the end; at 2 400 steps all five seeds
#: were still falling at the end (test -5.24 ± 0.45), and seed 0 at 4 800 reached validation -6.13 against -5.66 (test
#: -5.77 against -5.15), so 4 800; at 9 600 (``--compile``) every seed's validation improved again (seeds 0, 1, 3, 4:
#: -6.72, -6.65, -6.31, -6.11 against -6.13, -5.97, -5.98, -4.94 at 4 800), so 9 600 here (a step on one thread:
#: 0.205 s eager, 0.111 s compiled; those runs, compiled beside three other processes, took ~2 000 s a seed).
#: Earthquake and fire later got twice the steps of the first five-seed table (2 000 -> 4 000, 5 000 -> 10 000): there
#: the validation NLL of every one of their ten runs was still falling at the last evaluation. Earthquake then twice
#: again (8 000, ``--compile``): validation -0.278, -0.249, -0.364, -0.193, -0.210 on seeds 0-4 against -0.244,
#: -0.252, -0.293, -0.181, -0.144 at 4 000 (best steps 5 100-7 450).
SCHEDULE: dict[str, dict[str, tuple[int, int]]] = {
    "sphere-spline": {"volcano": (9600, 0), "earthquake": (8000, 512), "flood": (2500, 512), "fire": (10000, 512)},
    "rfm": {n: (5000, 256) for n in ds.EARTH_DATASETS},
}
#: per model and dataset: Adam's learning rate (cosine-annealed to 0), unless ``--lr`` is given (sphere-spline with
#: 8 layers on volcano, seed 0, full batch: 2e-3 peaked at step 200 (val -0.95) and got worse, 5e-3 never improved on
#: the uniform start, 1e-3 reached val -3.10 at step 600, still improving; with 16 layers 5e-4, above)
LR: dict[str, dict[str, float]] = {"sphere-spline": {"volcano": 5e-4, "earthquake": 1e-3, "flood": 1e-3, "fire": 1e-3},
                                   "rfm": {n: 5e-3 for n in ds.EARTH_DATASETS}}
#: sphere-spline's coupling layers per dataset, unless ``--layers`` is given (volcano's 267 distinct sites, above)
SPLINE_LAYERS = {"volcano": 16, "earthquake": 8, "flood": 8, "fire": 8}
#: per model: the steps between validation NLLs, unless given
EVAL_EVERY = {"sphere-spline": 50, "rfm": 500}
#: per model and dataset: the decay of the exponential moving average of the parameters that is validated, kept
#: and scored (0: the raw parameters); ``--ema`` overrides it. Its step ``t`` uses ``min(decay, t / (t + 9))``, so
#: 0.999 is reached only at step 8 991: flood's 2 500 steps end at 0.9964, and ``--ema 0.9995`` trained flood seed 2
#: exactly as 0.999 did (validation 0.481, test 0.523 both). It
#: averages out minibatch noise: sphere-spline on flood, seed 3, 2 500 steps of 512: best validation 0.486 with 0.999
#: against 0.516 without (test 0.524 against 0.557); earthquake, seed 3: -0.169 against -0.172 (no change). Volcano
#: trains full batch (no noise to average) and is still improving at its last step, where an average lags: seed 0
#: with 0.99 reached -3.54 against -3.75 without, so none there.
EMA: dict[str, dict[str, float]] = {"sphere-spline": {"volcano": 0.0, "earthquake": 0.999, "flood": 0.999,
                                                      "fire": 0.999},
                                    "rfm": {n: 0.0 for n in ds.EARTH_DATASETS}}
#: per model: the dtype of parameters and events. sphere-spline trains in float64: its cylindrical chart resolves
#: heights near a layer's poles to float32's 6e-8 (an angle of 3.5e-4 rad), and a sharp fit (volcano, 8 harmonics,
#: seed 0, step 135) put a training event there: the height rounded past 1 and the gradient of ``√(1 - z²)`` was NaN.
#: In float64 that radius is 1.5e-8 rad, and a step costs about the same on the CPU (0.1 s full batch on volcano).
DTYPE = {"sphere-spline": torch.float64, "rfm": torch.float32}
#: torch.compile's backend for ``--compile`` (None: inductor; the tests use ``"aot_eager"``, no code generation)
COMPILE_BACKEND: str | None = None
#: ``--restarts``: restart ``r`` of seed ``s`` initialises and draws its batches from seed ``s + RESTART_STRIDE·r``
#: (restart 0 is the run of ``--restarts 1``)
RESTART_STRIDE = 1000
#: per model and dataset: training runs per split (the best on validation reported, their equal-weight mixture
#: scored as its own row), unless ``--restarts`` is given. Flood, the one catalogue where a single sphere-spline flow
#: stayed above the best published number (0.50 ± 0.04 against 0.48 ± 0.09; seven probes of width, steps,
#: harmonics, bins, depth, dropout and averaging, and this session's jitter, weight decay, rates 5e-4 / 2e-3 / 3e-3,
#: batch 1 024 and 4 000 steps did not move its validation mean): three restarts of seeds 0-4 had validation NLLs
#: spread by 0.01-0.05 within a split, the best of them on validation did not score better on test (0.50 ± 0.03),
#: and their mixture scored validation 0.44 (against 0.47 for the best single run) and test 0.45 ± 0.04.
RESTARTS: dict[str, dict[str, int]] = {"sphere-spline": {"volcano": 1, "earthquake": 1, "flood": 3, "fire": 1},
                                       "rfm": {n: 1 for n in ds.EARTH_DATASETS}}
#: ``--quick``: this many steps (a smoke run)
QUICK_STEPS = 20
#: rfm's vector field (flows.build's ``hidden`` and ``layers``) and its ODE tolerance for the log-likelihood
RFM_HIDDEN, RFM_LAYERS, RFM_TOL = 256, 3, 1e-5
#: events per forward pass when scoring (validation and test)
EVAL_BATCH = 4096
#: the map of the picture: latitude rows, longitude columns
MAP_SHAPE = (72, 144)
#: ``log(4π)``: the NLL of the uniform distribution on the unit sphere (the baseline every model starts from)
UNIFORM_NLL = math.log(4 * math.pi)
#: published test NLL (nats; mean, std over 5 runs) per method and dataset, as listed in the README of
#: oxcsml/riemannian-score-sde (shared/data/README.md, earth section)
PUBLISHED: dict[str, dict[str, tuple[float, float]]] = {
    "Mixture of Kent": {"volcano": (-0.80, 0.47), "earthquake": (0.33, 0.05), "flood": (0.73, 0.07),
                        "fire": (1.18, 0.06)},
    "Riemannian CNF (Mathieu & Nickel 2020)": {"volcano": (-6.05, 0.61), "earthquake": (0.14, 0.23),
                                               "flood": (1.11, 0.19), "fire": (-0.80, 0.54)},
    "Moser flow (Rozen et al. 2021)": {"volcano": (-4.21, 0.17), "earthquake": (-0.16, 0.06),
                                       "flood": (0.57, 0.10), "fire": (-1.28, 0.05)},
    "Stereographic score-based": {"volcano": (-3.80, 0.27), "earthquake": (-0.19, 0.05), "flood": (0.59, 0.07),
                                  "fire": (-1.28, 0.12)},
    "Riemannian score-based (De Bortoli et al. 2022)": {"volcano": (-4.92, 0.25), "earthquake": (-0.19, 0.07),
                                                        "flood": (0.48, 0.09), "fire": (-1.33, 0.06)},
}
#: Chen & Lipman (ICLR 2024, Riemannian flow matching), as recalled: NOT verified against the paper offline
CHEN_LIPMAN_RECALLED: dict[str, tuple[float, float]] = {"volcano": (-7.93, 1.67), "earthquake": (-0.28, 0.08),
                                                        "flood": (0.42, 0.05), "fire": (-1.86, 0.11)}


@dataclass(frozen=True)
class EarthConfig:
    """The settings of ``python -m experiments earth`` (its flags)."""

    datasets: str = option(",".join(ds.EARTH_DATASETS), f"comma-separated, of {', '.join(ds.EARTH_DATASETS)}")
    models: str = option(",".join(MODELS), f"comma-separated, of {', '.join(MODELS)} (rfm needs Sphere.divergence)")
    seeds: int = option(5, "seeded splits and runs per dataset and model (seeds --seed, --seed+1, ...)", type=int)
    steps: int = option(0, "training steps (0: per model and dataset, SCHEDULE in experiments/tasks/earth.py)",
                        type=int)
    batch: int = option(-1, "events per step (0: full batch; -1: per model and dataset, SCHEDULE)", type=int)
    lr: float = option(0.0, "Adam learning rate, cosine-annealed to 0 (0: per model and dataset, LR)", type=float)
    layers: int = option(0, "sphere-spline coupling layers (0: per dataset, SPLINE_LAYERS: 16 on volcano, 8 "
                         "elsewhere)", type=int)
    bins: int = option(16, "sphere-spline bins per spline", type=int)
    hidden: int = option(128, "width of the sphere-spline conditioners", type=int)
    harmonics: int = option(8, "sphere-spline conditioners see the harmonics 1..H of each coordinate (cos kφ, sin kφ; "
                            "Chebyshev T_k(z)); 1: cos φ, sin φ or z", type=int)
    eval_every: int = option(0, "steps between validation NLLs, for model selection and early stopping (0: per "
                             "model, EVAL_EVERY)", type=int)
    patience: int = option(0, "stop after this many validation NLLs without improvement (0, the default: never; the "
                           "best-on-validation parameters are kept either way, and a stop in the middle of the cosine "
                           "schedule loses its most productive end: fire seed 1 stopped at step 1650 of 5000 with "
                           "--patience 8, validation -1.01 against seed 0's -1.28 at the end)", type=int)
    ema: float = option(-1.0, "decay of the moving average of the parameters that is validated, kept and scored "
                        "(0: the raw parameters; -1: per model and dataset, EMA in experiments/tasks/earth.py)",
                        type=float)
    restarts: int = option(0, "training runs per split, from different initialisations (restart r of seed s uses seed "
                           "s + 1000 r): the run of the best validation NLL is the one scored and reported, and with "
                           "more than one the equal-weight mixture of all of them is scored too (its own row of the "
                           "table); 0: per model and dataset, RESTARTS (3 on flood, 1 elsewhere)", type=int)
    compile: bool = option(False, "sphere-spline's training step through torch.compile (fixed shapes: one graph per "
                           "run; on the CPU ~1.85x faster per step on volcano, 0.111 s against 0.205, after a "
                           "compile of a few minutes that is counted in train_s; rfm trains eagerly either way)")
    quick: bool = option(False, f"{QUICK_STEPS} steps per run (a smoke run)")
    merge: str = option("", "comma-separated --out folders of earlier earth runs (e.g. datasets or models run in "
                        "separate processes): write their combined earth.json and earth.md to --out, train nothing")
    no_verify_data: bool = option(False, "skip the sha256 and event-count check of the catalogues (for a copy you "
                                  "changed on purpose)")
    data_root: Path | None = common("data_root", None)
    seed: int = common("seed", 0)
    threads: int = common("threads", 1)
    out: Path = common("out", Path("runs/earth"))
    no_progress: bool = common("no_progress", False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.layers < 0:
            raise ValueError(f"--layers must be positive (or 0: per dataset), got {self.layers}")
        for name in ("seeds", "bins", "hidden", "harmonics"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("steps", "batch", "patience", "eval_every", "restarts"):
            if getattr(self, name) < (-1 if name == "batch" else 0):
                raise ValueError(f"--{name.replace('_', '-')} is negative ({getattr(self, name)})")
        if not self.lr >= 0:
            raise ValueError(f"--lr must be positive (or 0: per model and dataset), got {self.lr}")
        if not (self.ema == -1 or 0 <= self.ema < 1):
            raise ValueError(f"--ema must be in [0, 1) (0: no average) or -1 (per model and dataset), got {self.ema}")


def make_model(name: str, M: Sphere, args: EarthConfig, dataset: str) -> flows.Flow:
    """The flow ``name`` on ``M`` from the uniform distribution (``forward`` = base -> data), sized for ``dataset``
    (sphere-spline's layers: ``--layers``, else :data:`SPLINE_LAYERS`)."""
    if name == "sphere-spline":
        f = flows.build("sphere-spline", M, 2, layers=args.layers or SPLINE_LAYERS[dataset], bins=args.bins,
                        hidden=args.hidden, harmonics=args.harmonics)
    elif name == "rfm":
        f = flows.build("rfm", M, 2, hidden=RFM_HIDDEN, layers=RFM_LAYERS, rtol=RFM_TOL, atol=RFM_TOL)
    else:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}")
    return flows.Flow(M.uniform(), f)


def nll(q: flows.Flow, x: torch.Tensor) -> float:
    """Mean ``-log q(x)`` in nats (w.r.t. the area measure), in batches of :data:`EVAL_BATCH`, float64 sum: the
    mixture of one model (:func:`mixture_nll`)."""
    return mixture_nll([q], x)


def schedule(model: str, dataset: str, args: EarthConfig) -> tuple[int, int, float, int]:
    """``(steps, batch, lr, eval_every)`` of a run of ``model`` on ``dataset`` (batch 0: full batch): the flags,
    else :data:`SCHEDULE`, :data:`LR` and :data:`EVAL_EVERY`."""
    steps, batch = SCHEDULE[model][dataset]
    steps = QUICK_STEPS if args.quick else (args.steps or steps)
    return (steps, batch if args.batch < 0 else args.batch, args.lr or LR[model][dataset],
            min(steps, args.eval_every or EVAL_EVERY[model]))


def train(model: str, dataset: str, split: ds.EarthSplit, seed: int, args: EarthConfig, M: Sphere,
          restart: int = 0) -> tuple[dict[str, Any], flows.Flow]:
    """Train ``model`` on ``split.train`` and keep the parameters of the best validation NLL; score them on the
    test split. Returns the record (test / best validation NLL, step of the best, steps run, seconds) and the
    model. ``restart`` ``r`` initialises and draws batches from seed ``seed + RESTART_STRIDE·r``."""
    torch.manual_seed(seed + RESTART_STRIDE * restart)
    g = torch.Generator().manual_seed(seed + RESTART_STRIDE * restart + 1)
    q = make_model(model, M, args, dataset).to(DTYPE[model])
    train_x, val_x, test_x = (t.to(DTYPE[model]) for t in (split.train, split.val, split.test))
    steps, batch, lr, eval_every = schedule(model, dataset, args)
    batch = len(train_x) if batch == 0 or batch > len(train_x) else batch
    opt = torch.optim.Adam(q.transform.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    decay = EMA[model][dataset] if args.ema < 0 else args.ema
    avg = copy.deepcopy(q) if decay else q  # the parameters that are validated, kept and scored
    raw, averaged = list(q.transform.parameters()), list(avg.transform.parameters())
    best = (nll(avg, val_x), 0, copy.deepcopy(avg.transform.state_dict()))

    def loss_fn(x: torch.Tensor) -> torch.Tensor:  # TrainStep's 1-D terms: the loss alone
        return (flows.flow_matching_loss(q.transform, x, q.base, coupling="ot") if model == "rfm"
                else -q.log_prob(x).mean()).reshape(1)

    compiled = args.compile and model == "sphere-spline"
    if compiled:
        torch.compiler.reset()  # a new model each run: seed after seed would otherwise hit dynamo's recompile limit
    step = TrainStep(opt, loss_fn, compile=compiled, backend=COMPILE_BACKEND)
    since, train_s, ran, curve, stopped = 0, 0.0, 0, [(0, best[0])], None
    bar = trange(steps, desc=f"{dataset} {model} seed {seed}", leave=False, disable=args.no_progress)
    for i in bar:
        t0 = time.perf_counter()
        x = train_x if batch == len(train_x) else train_x[torch.randint(len(train_x), (batch,), generator=g)]
        step(x)
        sched.step()
        ran = i + 1
        if decay:
            with torch.no_grad():
                w = 1 - min(decay, ran / (ran + 9))
                for a, p in zip(averaged, raw):
                    a.lerp_(p, w)
        train_s += time.perf_counter() - t0
        if ran % eval_every == 0 or ran == steps:
            v = nll(avg, val_x)
            curve.append((ran, v))
            if v < best[0]:  # NaN never improves
                best, since = (v, ran, copy.deepcopy(avg.transform.state_dict())), 0
            else:
                since += 1
            bar.set_postfix(val=f"{v:.3f}", best=f"{best[0]:.3f}")
            if not math.isfinite(v):  # the parameters are no longer usable: keep the best and say so
                stopped = f"non-finite validation NLL at step {ran}; the best parameters (step {best[1]}) are kept"
                print(f"earth: {dataset} {model} seed {seed}: {stopped}", file=sys.stderr, flush=True)
                break
            if args.patience and since >= args.patience:
                break
    q.transform.load_state_dict(best[2])
    t0 = time.perf_counter()
    test = nll(q, test_x)
    return {"seed": seed, "restart": restart, "test_nll": test, "val_nll": best[0], "best_step": best[1],
            "steps_run": ran, "steps": steps, "batch": batch, "lr": lr, "train_s": train_s,
            "eval_s": time.perf_counter() - t0,
            "ema": decay, "compiled": compiled,
            "params": sum(p.numel() for p in q.transform.parameters()), "stopped": stopped, "val_curve": curve}, q


def mixture_nll(models: list[flows.Flow], x: torch.Tensor) -> float:
    """Mean ``-log q(x)`` of the equal-weight mixture ``q = (1/K) Σ_k q_k`` (a normalised density on S² when each
    ``q_k`` is): ``log q = logsumexp_k log q_k - log K``, in batches of :data:`EVAL_BATCH`, float64 (for ``K = 1``
    exactly ``-log q_1``: the logsumexp of one term is that term)."""
    with torch.no_grad():
        lp = torch.cat([torch.stack([q.log_prob(x[i:i + EVAL_BATCH]).double() for q in models]).logsumexp(0)
                        for i in range(0, len(x), EVAL_BATCH)]) - math.log(len(models))
    return float(-lp.mean())


def train_restarts(model: str, dataset: str, split: ds.EarthSplit, seed: int, args: EarthConfig, M: Sphere
                   ) -> tuple[dict[str, Any], flows.Flow]:
    """``args.restarts`` (else :data:`RESTARTS`) runs of :func:`train` on one split; returns the record and model of
    the run with the best validation NLL (chosen on validation alone), with every restart's figures under
    ``restarts``, the seconds of all of them in ``train_s``, and (``K > 1``) the validation and test NLL of the
    equal-weight mixture of the K kept models under ``mixture``."""
    runs = [train(model, dataset, split, seed, args, M, r) for r in range(args.restarts or RESTARTS[model][dataset])]
    if len(runs) == 1:
        return runs[0]
    # chosen on validation alone; a NaN validation NLL is never chosen over a finite one
    best = min(range(len(runs)), key=lambda r: (not math.isfinite(runs[r][0]["val_nll"]), runs[r][0]["val_nll"]))
    rec = dict(runs[best][0])
    rec["train_s"] = sum(r[0]["train_s"] for r in runs)
    rec["restarts"] = [{k: r[0][k] for k in ("restart", "val_nll", "test_nll", "best_step", "train_s")}
                       for r in runs]
    qs = [r[1] for r in runs]
    rec["mixture"] = {"k": len(qs), **{f"{part}_nll": mixture_nll(qs, getattr(split, part).to(DTYPE[model]))
                                       for part in ("val", "test")}}
    return rec, runs[best][1]


def density_map(q: flows.Flow, shape: tuple[int, int] = MAP_SHAPE) -> np.ndarray:
    """``log q`` on an equirectangular grid (cell centres; rows from north to south, columns from -180° east)."""
    rows, cols = shape
    lat = 90 - (torch.arange(rows) + 0.5) * 180 / rows
    lon = -180 + (torch.arange(cols) + 0.5) * 360 / cols
    grid = torch.cartesian_prod(lat, lon)
    with torch.no_grad():
        dtype = next(q.transform.parameters()).dtype
        return q.log_prob(ds.latlon_to_xyz(grid).to(dtype)).reshape(rows, cols).double().numpy()


def plot_maps(panels: list[tuple[str, str, np.ndarray, torch.Tensor]], path: Path) -> None:
    """One equirectangular map per (dataset, model): the learned log-density, the test events as dots."""
    plt = pyplot()
    datasets = list(dict.fromkeys(p[0] for p in panels))
    models = list(dict.fromkeys(p[1] for p in panels))
    fig, axes = plt.subplots(len(datasets), len(models), figsize=(6.4 * len(models), 3.4 * len(datasets)),
                             squeeze=False)
    for dataset, model, logq, test in panels:
        ax = axes[datasets.index(dataset)][models.index(model)]
        top = float(np.nanmax(logq))
        im = ax.imshow(logq, extent=(-180, 180, -90, 90), origin="upper", cmap="viridis", aspect="auto",
                       vmin=max(float(np.nanmin(logq)), top - 12), vmax=top)
        ll = ds.xyz_to_latlon(test).numpy()
        ax.scatter(ll[:, 1], ll[:, 0], s=2, c="red", linewidths=0)
        ax.set_title(f"{dataset}: {model} (log density, test events in red)", fontsize=9)
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def _pm(m: float, s: float) -> str:
    return f"{m:.2f} ± {s:.2f}"


def _our_rows(results: dict[str, Any]) -> list[tuple[str, str, dict[str, dict[str, float]]]]:
    """Our rows of the tables: ``(label, short name, {dataset: mean_std of test NLL})``, one per model, then one per
    model trained with ``--restarts K > 1`` somewhere: the equal-weight mixtures of its K kept runs."""
    rows = [(f"**ours: {m}**", m, {d["name"]: d["summary"][m] for d in results["datasets"] if m in d["summary"]})
            for m in results["models"]]
    for m in results["models"]:
        mix = {d["name"]: [r["mixture"]["test_nll"] for r in d["runs"] if r["model"] == m and "mixture" in r]
               for d in results["datasets"]}
        ks = {r["mixture"]["k"] for d in results["datasets"] for r in d["runs"] if r["model"] == m and "mixture" in r}
        if ks:
            k = "/".join(str(k) for k in sorted(ks))
            rows.append((f"ours: {m}, mixture of its {k} restarts", f"{m} ×{k} mixture",
                         {n: mean_std(v) for n, v in mix.items() if v}))
    return rows


def report(results: dict[str, Any]) -> str:
    """The markdown table: our rows per model (mean ± std over seeds; mixtures of restarts where run), then the
    published rows; where we stand against the best published and Chen & Lipman; the runs' budgets."""
    names = [d["name"] for d in results["datasets"]]
    done = min((len([r for r in d["runs"] if r["model"] == m]) for d in results["datasets"]
                for m in results["models"]), default=0)
    ours = _our_rows(results)
    lines = [f"Earth benchmark on S² ({results['date']}, cpu, {results['threads']} thread(s)): test NLL in nats "
             f"w.r.t. the area measure of the unit sphere (uniform: log 4π = {UNIFORM_NLL:.3f}), mean ± sample std "
             f"over {done} of {results['seeds']} seeds (80/10/10 random split per seed; the model of the best "
             "validation NLL scored once on the test split). Lower is better.", "",
             "| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, _, summary in ours:
        lines.append(f"| {label} | " + " | ".join(_pm(summary[n]["mean"], summary[n]["std"]) if n in summary
                                                   else "—" for n in names) + " |")
    for method, row in PUBLISHED.items():
        lines.append(f"| {method} | " + " | ".join(_pm(*row[n]) for n in names) + " |")
    lines.append("| Chen & Lipman 2024, RFM (recalled, not verified) | "
                 + " | ".join(_pm(*CHEN_LIPMAN_RECALLED[n]) for n in names) + " |")
    lines += ["", "Where we stand (difference of means in nats, negative = ours lower/better):", "",
              "| dataset | best published | " + " | ".join(f"{m} − best | {m} − Chen & Lipman (recalled)"
                                                   for _, m, _ in ours) + " |",
              "|---|---|" + "---|---|" * len(ours)]
    for n in names:
        best = min(v[n][0] for v in PUBLISHED.values())
        method = " = ".join(k.split(" (")[0] for k, v in PUBLISHED.items() if v[n][0] == best)
        cells = []
        for _, _, summary in ours:
            s = summary.get(n)
            cells += ([f"{s['mean'] - best:+.2f}", f"{s['mean'] - CHEN_LIPMAN_RECALLED[n][0]:+.2f}"]
                      if s else ["—", "—"])
        lines.append(f"| {n} | {best:.2f} ({method}) | " + " | ".join(cells) + " |")
    lines += ["", "| dataset | model | steps × batch (run / scheduled) | best step (mean) | train s / seed | params |",
              "|---|---|---|---|---|---|"]
    for d in results["datasets"]:
        for m in results["models"]:
            runs = [r for r in d["runs"] if r["model"] == m]
            if runs:
                k = max(len(r.get("restarts", [0])) for r in runs)
                lines.append(f"| {d['name']} | {m} | {np.mean([r['steps_run'] for r in runs]):.0f} / "
                             f"{runs[0]['steps']} × {runs[0]['batch']} | "
                             f"{np.mean([r['best_step'] for r in runs]):.0f} | "
                             f"{np.mean([r['train_s'] for r in runs]):.1f}" + (f" ({k} restarts)" if k > 1 else "")
                             + f" | {runs[0]['params'] / 1000:.0f}k" + (" each" if k > 1 else "") + " |")
    return "\n".join(lines) + "\n"


def _names(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ValueError(f"unknown {what} {', '.join(bad) or '(none given)'}; choose from {', '.join(allowed)}")
    return names


def _check_models(models: list[str], M: Sphere, args: EarthConfig) -> None:
    """Refuse, before any training, a model whose log-likelihood cannot be computed on S²."""
    for m in models:
        try:
            make_model(m, M, args, ds.EARTH_DATASETS[0]).log_prob(M.uniform().sample((2,)))
        except NotImplementedError as err:
            raise ValueError(f"model {m} cannot score on S² here ({str(err).split(';')[0]}); leave it out of "
                             f"--models") from None


def merge_results(parts: list[dict[str, Any]], sources: list[str]) -> dict[str, Any]:
    """One results record from the ``earth.json`` records of several runs (``sources`` name them in errors): their
    runs per dataset, the summaries recomputed over all of them, datasets and models in their canonical order. Two
    records with a run of the same (dataset, model, seed) are refused (which one to keep is the user's choice)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    events: dict[str, int] = {}
    seen: dict[tuple[str, str, int], str] = {}
    for part, source in zip(parts, sources):
        for d in part["datasets"]:
            events[d["name"]] = d["events"]
            for r in d["runs"]:
                key = (d["name"], r["model"], r["seed"])
                if key in seen:
                    raise RunError(f"{source} and {seen[key]} both have {key[0]} {key[1]} seed {key[2]}; merge runs "
                                   "of different datasets, models or seeds (leave one folder out)")
                seen[key] = source
                runs.setdefault(d["name"], []).append(r)
    models = [m for m in MODELS if any(r["model"] == m for rs in runs.values() for r in rs)]
    datasets = []
    for name in (n for n in ds.EARTH_DATASETS if n in runs):
        rs = sorted(runs[name], key=lambda r: (MODELS.index(r["model"]), r["seed"]))
        summary = {m: mean_std([r["test_nll"] for r in rs if r["model"] == m]) for m in models
                   if any(r["model"] == m for r in rs)}
        datasets.append({"name": name, "events": events[name], "runs": rs, "summary": summary})
    return {"date": max(p["date"] for p in parts), "threads": max(p["threads"] for p in parts),
            "seeds": max(max(p["seeds"] for p in parts), len({k[2] for k in seen})), "models": models, "quick": any(p["quick"] for p in parts),
            "config": [p["config"] for p in parts], "merged_from": sources, "uniform_nll": UNIFORM_NLL,
            "datasets": datasets}


def _merge(args: EarthConfig) -> int:
    """``--merge``: combine earlier runs' ``earth.json`` into ``<out>/earth.json`` and ``earth.md``."""
    folders = [Path(f.strip()) for f in args.merge.split(",") if f.strip()]
    parts = [read_json(f / "earth.json", keys=("datasets", "models", "seeds"),
                       fix="give --merge the --out folders of finished earth runs") for f in folders]
    merged = merge_results(parts, [str(f) for f in folders])
    for name in ("earth.json", "earth.md"):
        check_output(args.out / name, "--out")
    atomic_write_text(json.dumps(merged, indent=2), args.out / "earth.json")
    atomic_write_text(report(merged), args.out / "earth.md")
    print(report(merged))
    print(f"earth: merged {len(folders)} runs into {args.out / 'earth.json'} and {args.out / 'earth.md'}")
    return 0


def run_earth(args: EarthConfig) -> int:
    """Train and score every model on every dataset over the seeds; write ``earth.json``, ``earth.md`` and
    ``earth.png`` to ``args.out``. Returns 0, or 2 after a one-line error (bad names, missing or damaged data)."""
    torch.set_num_threads(args.threads)
    M = Sphere(2)
    try:
        if args.merge:
            return _merge(args)
        for name in ("earth.json", "earth.md", "earth.png"):
            check_output(args.out / name, "--out")
        datasets = _names(args.datasets, ds.EARTH_DATASETS, "dataset")
        models = _names(args.models, MODELS, "model")
        _check_models(models, M, args)
        data = {n: ds.load_earth(n, args.data_root, verify=not args.no_verify_data) for n in datasets}
    except (ValueError, ds.MissingDataError) as err:  # RunError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"date": datetime.date.today().isoformat(), "threads": args.threads,
                               "seeds": args.seeds, "models": models, "quick": args.quick,
                               "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                               "uniform_nll": UNIFORM_NLL,
                               "datasets": [{"name": n, "events": len(data[n]), "runs": [], "summary": {}}
                                            for n in datasets]}
    panels = []
    # seeds outermost, and the files rewritten after every run: a run cut short keeps whole seeds of every dataset
    for seed in range(args.seed, args.seed + args.seeds):
        for entry in results["datasets"]:
            name = entry["name"]
            split = ds.split_earth(data[name], seed)
            for m in models:
                rec, q = train_restarts(m, name, split, seed, args, M)
                entry["runs"].append({"model": m, **rec})
                entry["summary"][m] = mean_std([r["test_nll"] for r in entry["runs"] if r["model"] == m])
                print(f"earth: {name} {m} seed {seed}: test NLL {rec['test_nll']:.3f} (val {rec['val_nll']:.3f} at "
                      f"step {rec['best_step']} of {rec['steps_run']}), train {rec['train_s']:.1f} s"
                      + (f"; restart {rec['restart']} of {len(rec['restarts'])} (validation "
                         f"{', '.join(format(r['val_nll'], '.3f') for r in rec['restarts'])}), their mixture: test "
                         f"{rec['mixture']['test_nll']:.3f} (val {rec['mixture']['val_nll']:.3f})"
                         if "mixture" in rec else ""), flush=True)
                atomic_write_text(json.dumps(results, indent=2), args.out / "earth.json")
                atomic_write_text(report(results), args.out / "earth.md")
                if seed == args.seed:
                    panels.append((name, m, density_map(q), split.test))
                    plot_maps(panels, args.out / "earth.png")
    print(report(results))
    print(f"earth: wrote {args.out / 'earth.json'}, {args.out / 'earth.md'}, {args.out / 'earth.png'}")
    return 0
