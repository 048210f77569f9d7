"""Graph VAE epoch benchmark (issue 12): ``python -m experiments.bench graph``.

Times the training epochs of the graph VAE of ``graph-recon`` (:class:`experiments.tasks.graph_recon.GraphReconJob`,
configured exactly as the command line configures it: hyperbolic latents, GCN width 16, 2 coupling layers of
width 128 with MLP conditioners, Adam at 1e-3) on Dis-II and on random graphs of 10k to 1M nodes, for the
posteriors without a flow, with TC and with WHC, and measures per training epoch:

* the median wall time over ``--epochs`` epochs after ``--warmup`` untimed ones (the flows of one graph
  timed round-robin, one epoch of each per repeat, so drift in the machine's speed affects all alike; CUDA is
  synchronised before every clock reading);
* the peak memory of one epoch with that model alone in the process (:func:`experiments.run.profiling.peak_memory`:
  everything resident on CUDA, a process-level upper bound on CPU) and that per node;
* the kernel launches of one epoch (:func:`experiments.run.profiling.count_kernel_launches`: CUDA launch calls; on
  CPU the top-level ATen operator calls);
* the host reads of one epoch (:class:`experiments.run.profiling.HostReadCounter`: ``.item()``, ``bool(t)``,
  copies to the CPU, ...: the device→host syncs on CUDA, counted the same way on CPU), with their locations.

Measured epochs are training epochs only: the job's periodic validation (every 1/30 of a run's epochs) is
switched off (``job.eval_every`` beyond the run). Random graphs (``--graphs 10k``, ``1m``, ``500``: any
integer with an optional k/m suffix) have ``5·N`` undirected edges drawn uniformly (self-loops dropped,
duplicates merged), 16 random features per node and a 16-dimensional latent space.

Run ``python -m experiments.bench graph --help`` for the options.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import itertools
import json
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

import flows
from experiments import datasets as ds
from experiments.run.allocator import keep_freed_memory
from experiments.run.config import RunConfig
from experiments.run.files import atomic_write_text, check_output
from experiments.run.options import common, option, positive
from experiments.run.profiling import (HostReadCounter, count_cuda_syncs, count_kernel_launches, high_water_growth,
                                       peak_memory)
from experiments.run.seeding import seed_everything
from experiments.run.timing import Case, device_name, quartiles, time_cases
from experiments.tasks.graph_recon import GraphReconJob
from manifolds import Lorentz
from vae import split_edges

# ----------------------------------------------------------------------------------------------------------
# targets of issue 12
# ----------------------------------------------------------------------------------------------------------

#: kernel launches per Dis-II training epoch (a single CUDA-graph replay counts as 1 and passes)
DIS_II_MAX_LAUNCHES = 150
#: host reads (device→host syncs) per training epoch, every graph and flow
MAX_HOST_READS = 0
#: the large graph of the CUDA targets, and its WHC epoch time and peak memory on CUDA
LARGE_GRAPH_NODES = 1_000_000
LARGE_WHC_MAX_MS_CUDA = 100.0
LARGE_WHC_MAX_PEAK_BYTES_CUDA = 6 * 2**30
#: graph-recon's final evaluation (AUC/AP and the hierarchy metrics) above the training peak, on the CPU (issue 25)
EVAL_MAX_ABOVE_TRAINING_BYTES_CPU = 2 * 2**30
#: a Dis-II WHC run of this many epochs must take at most these seconds (per device type)
DIS_II_RUN_EPOCHS = 3000
DIS_II_WHC_RUN_MAX_S = {"cuda": 5.0, "cpu": 60.0}

# ----------------------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------------------

FLOWS = ("none", "tc", "whc")
DEFAULT_GRAPHS = {"cpu": ("dis-ii", "10k", "100k"), "cuda": ("dis-ii", "10k", "100k", "1m")}
#: random graphs: undirected edges drawn per node, feature and latent dimensions
RANDOM_EDGES_PER_NODE = 5
RANDOM_FEATURES = 16
RANDOM_LATENT_DIM = 16
#: ``job.eval_every`` while measuring: no evaluation epoch in any run of fewer epochs
NO_EVALUATION = 2**62

_SIZE = re.compile(r"^(\d+)([km]?)$", re.IGNORECASE)
_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000}


def parse_size(text: str) -> int | None:
    """The node count of a random-graph spec (``"500"``, ``"10k"``, ``"1M"``), or ``None`` if ``text`` is not one.

    Example:
        >>> parse_size("10k"), parse_size("1m"), parse_size("500"), parse_size("dis-ii")
        (10000, 1000000, 500, None)
    """
    match = _SIZE.match(text.strip())
    return None if match is None else int(match.group(1)) * _SUFFIX[match.group(2).lower()]


def _graph_list(text: str) -> list[str]:
    """``--graphs``: comma-separated graph-recon dataset names and random-graph sizes."""
    specs = [s.strip().lower() for s in text.split(",") if s.strip()]
    for s in specs:
        if s not in ds.GRAPH_DATASETS and (parse_size(s) or 0) < 2:
            raise argparse.ArgumentTypeError(
                f"unknown graph {s!r}: give a dataset ({', '.join(ds.GRAPH_DATASETS)}) or a random-graph size "
                "such as 500, 10k, 1m")
    if not specs:
        raise argparse.ArgumentTypeError("no graph given")
    return specs


def _flow_list(text: str) -> list[str]:
    """``--flows``: comma-separated flows of the hyperbolic graph VAE (``none``, ``tc``, ``whc``, ...)."""

    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    allowed = ["none", *flows.available(Lorentz())]
    for n in names:
        if n not in allowed:
            raise argparse.ArgumentTypeError(f"unknown flow {n!r}; choose from {', '.join(allowed)}")
    if not names:
        raise argparse.ArgumentTypeError("no flow given")
    return names


@dataclass(frozen=True)
class BenchGraphConfig:
    """The settings of ``python -m experiments.bench graph`` (its flags)."""

    device: str = common("device", "cpu", choices=["cpu", "cuda"])
    flows: list[str] = option(list(FLOWS), "comma-separated posterior flows (default: none,tc,whc)", type=_flow_list)
    graphs: Optional[list[str]] = option(
        None, "comma-separated graphs: graph-recon datasets (dis-ii, ...) and random graphs given by their node count, "
        f"an integer with an optional k/m suffix (500, 10k, 1m) (default: {','.join(DEFAULT_GRAPHS['cpu'])} on cpu, "
        f"{','.join(DEFAULT_GRAPHS['cuda'])} on cuda)", type=_graph_list)
    epochs: int = option(20, "timed epochs per model (median)", type=positive())
    warmup: int = option(5, "untimed epochs per model first", type=positive())
    compile: bool = option(False, "compile the training step (graph-recon's --compile)")
    cuda_graph: str = option("auto", "graph-recon's --cuda-graph: on CUDA, replay the training step as a CUDA graph "
                             "(auto: with --compile)", choices=("auto", "on", "off"))
    data_root: Optional[Path] = common("data_root", None)
    threads: int = common("threads", 1, help="torch intra-op threads on CPU (1, as the graph-recon command's default)")
    json: Optional[Path] = option(None, "also write the results to this JSON file", type=Path)
    eval_memory: bool = option(False, "also run graph-recon's final evaluation (test/validation AUC and AP, then "
                               "the hierarchy metrics) after each model's epochs and measure its time and how far "
                               "it raises the process's peak memory above the training peak (CPU)")
    hierarchy_sources: Optional[int] = option(None, "graph-recon's --hierarchy-sources for --eval-memory (default: "
                                              "the command's)", type=positive())


# ----------------------------------------------------------------------------------------------------------
# graphs and jobs
# ----------------------------------------------------------------------------------------------------------


def random_graph(num_nodes: int, edges_per_node: int = RANDOM_EDGES_PER_NODE, features: int = RANDOM_FEATURES,
                 seed: int = 0, name: str | None = None) -> ds.GraphData:
    """An Erdős–Rényi-like graph: ``edges_per_node · num_nodes`` uniformly drawn node pairs, self-loops dropped
    and duplicates merged, both directions in ``edge_index``; standard normal features (float32), latent
    dimension :data:`RANDOM_LATENT_DIM`. Vectorised on CPU (1M nodes and 5M edges take about a second).

    Example:
        >>> g = random_graph(100)
        >>> g.num_nodes, g.x.shape, bool((g.edge_index[0] != g.edge_index[1]).all())
        (100, torch.Size([100, 16]), True)
    """
    gen = torch.Generator().manual_seed(seed)
    pairs = torch.randint(num_nodes, (2, edges_per_node * num_nodes), generator=gen)
    u, v = pairs.min(0).values, pairs.max(0).values
    keys = torch.unique((u * num_nodes + v)[u != v])
    u, v = keys // num_nodes, keys % num_nodes
    edge_index = torch.cat([torch.stack([u, v]), torch.stack([v, u])], 1)
    x = torch.randn(num_nodes, features, generator=gen)
    return ds.GraphData(name or f"random-{num_nodes}", edge_index, num_nodes, x, latent_dim=RANDOM_LATENT_DIM)


def load_graph(spec: str, root: Path | None = None) -> ds.GraphData:
    """A graph of ``--graphs``: a graph-recon dataset by name, else a :func:`random_graph` of that size."""
    if spec in ds.GRAPH_DATASETS:
        return ds.load_graph(spec, root)
    size = parse_size(spec)
    if size is None:
        raise ValueError(f"unknown graph {spec!r}")
    return random_graph(size, name=f"random-{spec}")


def job_config(device: str, flow: str, latent_dim: int, epochs: int, threads: int, compile: bool = False,
               cuda_graph: str = "auto") -> RunConfig:
    """The config of a ``graph-recon`` run with these settings and the command's defaults for the rest.

    Example:
        >>> cfg = job_config("cpu", "whc", 2, 10, 1)
        >>> cfg.model, cfg.flow, cfg.hidden, cfg.flow_layers, cfg.compile, cfg.uses_cuda_graph
        ('hyperbolic', 'whc', 16, 2, False, False)
    """
    return RunConfig.for_command("graph-recon", flow=flow, latent_dim=latent_dim, epochs=epochs, device=device,
                                 threads=threads, compile=compile, cuda_graph=cuda_graph, no_progress=True)


def _epoch_step(job: Any) -> Callable[[], None]:
    """One training epoch of ``job`` per call, numbering the epochs 0, 1, 2, ..."""
    epochs = itertools.count()

    def step() -> None:
        job.train_epoch(next(epochs))

    return step


# ----------------------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------------------


def _check(value: float, target: float, label: str) -> dict[str, Any]:
    return {"value": value, "target": target, "label": label, "pass": value <= target}


def targets(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue-12 checks that apply to one result row, by the row's field they judge."""
    device = row["device_type"]
    checks = {"host_reads": _check(row["host_reads"], MAX_HOST_READS, f"= {MAX_HOST_READS}")}
    if row.get("cuda_syncs") is not None:
        checks["cuda_syncs"] = _check(row["cuda_syncs"], MAX_HOST_READS, f"= {MAX_HOST_READS}")
    if row["graph"] == "dis-ii":
        checks["launches"] = _check(row["launches"], DIS_II_MAX_LAUNCHES, f"<= {DIS_II_MAX_LAUNCHES}")
        if row["flow"] == "whc" and device in DIS_II_WHC_RUN_MAX_S:
            limit_ms = DIS_II_WHC_RUN_MAX_S[device] * 1e3 / DIS_II_RUN_EPOCHS
            checks["ms"] = _check(row["ms"], limit_ms, f"<= {limit_ms:.3g} ({DIS_II_RUN_EPOCHS} epochs <= "
                                                       f"{DIS_II_WHC_RUN_MAX_S[device]:g} s)")
    if "eval_above_peak_bytes" in row and device == "cpu":
        checks["eval_above_peak_bytes"] = _check(row["eval_above_peak_bytes"], EVAL_MAX_ABOVE_TRAINING_BYTES_CPU,
                                                 f"<= {EVAL_MAX_ABOVE_TRAINING_BYTES_CPU / 2**30:g} GiB")
    if row["nodes"] == LARGE_GRAPH_NODES and row["flow"] == "whc" and device == "cuda":
        checks["ms"] = _check(row["ms"], LARGE_WHC_MAX_MS_CUDA, f"<= {LARGE_WHC_MAX_MS_CUDA:g}")
        checks["peak_bytes"] = _check(row["peak_bytes"], LARGE_WHC_MAX_PEAK_BYTES_CUDA,
                                      f"<= {LARGE_WHC_MAX_PEAK_BYTES_CUDA / 2**30:g} GiB")
    return checks


def _measure_alone(case: Case, device: torch.device) -> dict[str, Any]:
    """One epoch each for launches, peak memory (this model alone in the process), host reads and CUDA syncs."""
    launches = count_kernel_launches(case.step, device)
    peak = peak_memory(case.step, device)
    with HostReadCounter() as reads:
        case.step()
    sync_sites: list[str] = []
    syncs = count_cuda_syncs(case.step, sync_sites) if device.type == "cuda" else None
    return {"launches": launches, "peak": peak, "reads": reads, "syncs": syncs, "sync_sites": sync_sites}


def _measure_evaluation(job: GraphReconJob, device: torch.device) -> dict[str, Any]:
    """graph-recon's final evaluation of ``job`` (:meth:`GraphReconJob.evaluate`, then its optional hierarchy
    metrics), after its training epochs: seconds, and the growth of the process's peak memory above the training
    peak (:func:`~experiments.run.profiling.high_water_growth`; CPU: resident size; CUDA: allocator peak)."""
    out: dict[str, Any] = {}

    def evaluate() -> None:
        t0 = time.perf_counter()
        metrics = {**job.evaluate(), **job.optional_metrics()}
        out["eval_s"] = time.perf_counter() - t0
        out["eval_sources"] = metrics.get("hierarchy_sources", float(job.data.num_nodes))

    if device.type == "cuda":
        train_peak = torch.cuda.max_memory_allocated(device)
        evaluate()
        out["eval_above_peak_bytes"] = max(0, torch.cuda.max_memory_allocated(device) - train_peak)
    else:
        out["eval_above_peak_bytes"] = high_water_growth(evaluate)
    return out


def _row(case: Case, data: ds.GraphData, device: torch.device, setup_s: float, m: dict[str, Any]) -> dict[str, Any]:
    """One result row: the timings in ``case`` and the measurements of :func:`_measure_alone`."""
    launches, peak, reads, syncs, sync_sites = m["launches"], m["peak"], m["reads"], m["syncs"], m["sync_sites"]
    q1, med, q3 = quartiles(case.times)
    ei = data.edge_index
    row = {
        "graph": data.name, "nodes": data.num_nodes, "edges": int((ei[0] < ei[1]).sum()), "flow": case.name,
        "device": str(device), "device_type": device.type, "setup_s": setup_s, "ms": med, "q1_ms": q1, "q3_ms": q3,
        "peak_bytes": peak, "bytes_per_node": peak / data.num_nodes, "launches": launches,
        "host_reads": reads.count, "host_read_sites": dict(reads.where.most_common()), "cuda_syncs": syncs,
        "cuda_sync_sites": sync_sites,
        **{k: m[k] for k in ("eval_s", "eval_above_peak_bytes", "eval_sources") if k in m},
    }
    row["targets"] = targets(row)
    return row


def bench_graph(args: BenchGraphConfig) -> dict[str, Any]:
    """Run the benchmark of ``python -m experiments.bench graph`` (options: :func:`add_arguments`); returns the
    settings and one row per (graph, flow), with the issue-12 checks that apply (:func:`targets`)."""


    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    graphs = args.graphs or list(DEFAULT_GRAPHS[device.type])
    results: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
        "device_name": device_name(device), "threads": torch.get_num_threads(), "epochs": args.epochs,
        "warmup": args.warmup, "compile": bool(args.compile), "cuda_graph": None, "flows": list(args.flows),
        "graphs": graphs,
        "evaluation": "off in measured epochs (job.eval_every set beyond the run): training epochs only",
        "rows": [],
    }
    for spec in graphs:
        data = load_graph(spec, args.data_root)
        cases, setup = [], {}
        t0 = time.perf_counter()
        split = split_edges(data.edge_index, data.num_nodes, seed=0)  # one split for the flows of this graph
        split_s = time.perf_counter() - t0
        def make_case(flow: str) -> Case:
            cfg = job_config(args.device, flow, data.latent_dim, 2 * args.warmup + args.epochs + 10, args.threads,
                             args.compile, args.cuda_graph)
            cfg = cfg.replace(dataset=data.name, hierarchy_sources=args.hierarchy_sources)
            results["cuda_graph"] = cfg.uses_cuda_graph
            seed_everything(0)
            t0 = time.perf_counter()
            job = GraphReconJob(cfg, data, seed=0, split=split)
            setup[flow] = split_s + time.perf_counter() - t0
            job.eval_every = NO_EVALUATION
            case = Case(flow, "graph", _epoch_step(job))
            case.job = job  # for --eval-memory
            return case

        # memory, launches, reads and syncs of each model alone in the process (the others not built yet)
        measured = {}
        for flow in args.flows:
            case = make_case(flow)
            for _ in range(args.warmup):
                case.step()
            measured[flow] = _measure_alone(case, device)
            if args.eval_memory:
                measured[flow].update(_measure_evaluation(case.job, device))
            del case
            _release(device)
        # times: every model of the graph alive, timed round-robin
        cases = [make_case(flow) for flow in args.flows]
        time_cases(cases, args.epochs, args.warmup, device)
        for case in cases:
            results["rows"].append(_row(case, data, device, setup[case.name], measured[case.name]))
        del cases
        _release(device)
    return results


def _release(device: torch.device) -> None:
    """Free what deleted jobs held, so the next measurement sees one model's memory only."""

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------


def _cell(row: dict[str, Any], key: str, text: str) -> str:
    check = row["targets"].get(key)
    if check is None:
        return text
    return f"{text} {'PASS' if check['pass'] else 'MISS'} ({check['label']})"


def render(results: dict[str, Any]) -> str:
    """A Markdown report of :func:`bench_graph`'s results: settings, notes, where the host reads are, and the
    table last (each figure with a target followed by PASS or MISS and the target)."""
    cuda = results["device"].startswith("cuda")
    lines = [
        "# Graph VAE training-epoch benchmark (issue 12)",
        "",
        f"{results['date']}; torch {results['torch']}, python {results['python']}, device {results['device']} "
        f"({results['device_name']}), threads {results['threads']}, compile {results['compile']}, "
        f"CUDA graph {results['cuda_graph']}",
        f"graph-recon job (hyperbolic, GCN 16, flow 2 x 128 MLP couplings, Adam 1e-3); median of "
        f"{results['epochs']} epochs after {results['warmup']} warm-up epochs per model, flows round-robin; "
        f"evaluation {results['evaluation']}",
        "",
        "- ms/epoch: wall time of `job.train_epoch` (CUDA synchronised before each clock reading)",
        "- peak MiB: " + ("the peak of torch.cuda.max_memory_allocated / max_memory_reserved during the epoch, "
                          "everything resident included (model, data, optimizer state, a CUDA graph's pool)" if cuda
                          else "process max RSS after the epoch minus RSS before it (CPU: a process-level upper "
                               "bound; freed memory kept by the allocator is reused unseen, so often ~0)"),
        "- launches/epoch: " + ("CUDA launch calls (cudaLaunchKernel, cuLaunchKernel(Ex), cudaMemcpyAsync, "
                                "cudaMemsetAsync; a CUDA-graph replay is 1)" if cuda
                                else "top-level ATen operator calls (CPU analogue of kernel launches: an upper "
                                     "bound, views launch nothing on CUDA)"),
        "- host reads/epoch: `.item()`, `bool(t)`, `.tolist()`, `.numpy()`, copies to the CPU, ... (syncs on "
        "CUDA; counted alike on CPU); CUDA syncs/epoch: what torch.cuda.set_sync_debug_mode('warn') reports (also "
        "nonzero, masks, unique, blocking copies)",
        f"- targets: Dis-II launches <= {DIS_II_MAX_LAUNCHES}; host reads = {MAX_HOST_READS}; Dis-II WHC "
        f"{DIS_II_RUN_EPOCHS} epochs <= {DIS_II_WHC_RUN_MAX_S['cuda']:g} s on cuda, "
        f"<= {DIS_II_WHC_RUN_MAX_S['cpu']:g} s on cpu; cuda 1M-node WHC <= {LARGE_WHC_MAX_MS_CUDA:g} ms/epoch and "
        f"<= {LARGE_WHC_MAX_PEAK_BYTES_CUDA / 2**30:g} GiB",
        "",
    ]
    setup = [f"{r['graph']}/{r['flow']} {r['setup_s']:.2f} s" for r in results["rows"]]
    lines += ["Job construction (edge split, negatives index, model): " + ", ".join(setup), ""]
    for r in results["rows"]:
        for text in r.get("cuda_sync_sites") or []:
            lines.append(f"- CUDA sync in {r['graph']}/{r['flow']}: {text.splitlines()[0][:300]}")
    sites = [r for r in results["rows"] if r["host_read_sites"]]
    if sites:
        lines.append("Host reads found (per epoch):")
        for r in sites:
            where = "; ".join(f"{k} x{n}" for k, n in r["host_read_sites"].items())
            lines.append(f"- {r['graph']}/{r['flow']}: {r['host_reads']}: {where}")
        lines.append("")
    lines += [
        "| graph | nodes | edges | flow | device | ms/epoch | peak MiB | bytes/node | launches/epoch | "
        "host reads/epoch | CUDA syncs/epoch | targets |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results["rows"]:
        overall = "PASS" if all(c["pass"] for c in r["targets"].values()) else "MISS"
        ms = _cell(r, "ms", f"{r['ms']:.2f}")
        peak = _cell(r, "peak_bytes", f"{r['peak_bytes'] / 2**20:.1f}")
        launches = _cell(r, "launches", str(r["launches"]))
        reads = _cell(r, "host_reads", str(r["host_reads"]))
        syncs = _cell(r, "cuda_syncs", str(r["cuda_syncs"])) if r.get("cuda_syncs") is not None else "n/a"
        lines.append(f"| {r['graph']} | {r['nodes']:,} | {r['edges']:,} | {r['flow']} | {r['device']} | {ms} | "
                     f"{peak} | {r['bytes_per_node']:.0f} | {launches} | {reads} | {syncs} | {overall} |")
    evaluated = [r for r in results["rows"] if "eval_s" in r]
    if evaluated:
        lines += ["", "graph-recon's final evaluation (AUC/AP, then the hierarchy metrics) after the epochs above:"]
        for r in evaluated:
            above = _cell(r, "eval_above_peak_bytes", f"{r['eval_above_peak_bytes'] / 2**20:.0f} MiB")
            lines.append(f"- {r['graph']}/{r['flow']} ({r['nodes']:,} nodes, {r['edges']:,} edges): "
                         f"{r['eval_s']:.1f} s over {r['eval_sources']:.0f} source nodes; peak memory above the "
                         f"training peak {above}")
    return "\n".join(lines)


def run(args: BenchGraphConfig) -> dict[str, Any]:
    """``python -m experiments.bench graph``: run, write ``--json``, print the report (the table last)."""

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch.cuda.is_available() is False")
    keep_freed_memory()  # the conditions of the graph-recon command (see experiments.run.allocator)
    if args.json is not None:
        check_output(args.json, "--json")
    try:
        results = bench_graph(args)
    except ds.MissingDataError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    if args.json is not None:
        atomic_write_text(json.dumps(results, indent=2), args.json)
    print(render(results))
    return results
