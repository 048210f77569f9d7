"""Command line of the experiments: ``python -m experiments <command>`` (or the ``riemannian-flows`` script).

Commands:
  density      VAE density estimation (Tables 1-2): test log-likelihood by IWAE
  graph-recon  graph VAE link prediction (Table 3): test ROC-AUC and average precision
  graph-gen    two-stage graph generation (Table 4, Figure 5): validity accuracy, triangles, clustering, MMDs
  main         the README's main job: graph-recon on the embedded hierarchical graph, N-VAE vs H-VAE vs WHC vs
               the classic Poincaré embedding
  reproduce    the paper's tables at the paper's settings, 5 seeds each; writes RESULTS.md
  hdensity     density estimation on H^n against exact targets: flow matching (RFM), CNF, WHC, TC
  earth        density estimation on S^2 on earth events (volcano, earthquake, flood, fire): test NLL, maps

Every run writes to --out: results.json (config, per-seed metrics, mean ± std summary, wall time, versions),
training_curves.png, seed<k>/ (history, plots, checkpoint while running) and appends a row to a CSV.
Run ``python -m experiments <command> --help`` for the options of a command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import torch

import flows
from experiments import datasets as ds
from experiments.bench.flows import BenchFlowsConfig
from experiments.bench.flows import run as run_bench_flows
from experiments.bench.graph import BenchGraphConfig
from experiments.bench.graph import __doc__ as BENCH_GRAPH_DOC
from experiments.bench.graph import run as run_bench_graph
from experiments.constants import SCHEDULES
from experiments.models import (EMBEDDING, EMBEDDING_MANIFOLDS, MODELS, check_model, make_manifold,
                                model_latent_dim)
from experiments.paper.reproduce import ReproduceConfig, run_reproduce
from experiments.run import distributed as D
from experiments.run.allocator import keep_freed_memory
from experiments.run.config import RunConfig
from experiments.run.errors import Interrupted, RunError, StopRequested
from experiments.run.options import (COMMON, add_argument, add_config_arguments, config_from_args,
                                     nonnegative_float, positive)
from experiments.run.result import RunResult
from experiments.tasks import runner  # runner.run_command, looked up per call (tests replace it)
from experiments.tasks.earth import EarthConfig, run_earth
from experiments.tasks.hdensity import HDensityConfig, run_hdensity
from experiments.tasks.main_job import MainConfig, run_main
from vae.constants import NODE_INPUTS, SAMPLERS

DATASETS = {"density": ds.DENSITY_DATASETS, "graph-recon": ds.GRAPH_DATASETS, "graph-gen": ds.GENERATION_DATASETS}


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _flow_help() -> str:

    names = ", ".join(flows.available())
    return (f"flow in the posterior (graph-gen: of the prior): 'none' or a registered flow ({names}; "
            "flows.describe() says what each is). The paper's NC is --model euclidean --flow nc (affine coupling); "
            "TC and WHC are --model hyperbolic --flow tc (tangent coupling) / whc (wrapped hyperboloid coupling)")


def _add_common(p: argparse.ArgumentParser, command: str) -> None:
    """The flags of a run command (density, graph-recon, graph-gen), their defaults from :class:`RunConfig`."""
    d = RunConfig.defaults(command)  # the defaults are written once, in experiments.run.config
    _add_model_flags(p, command, d)
    _add_run_flags(p, d)
    COMMAND_FLAGS[command](p, d)


def _add_model_flags(p: argparse.ArgumentParser, command: str, d: dict[str, Any]) -> None:
    """What is trained, on what, and how fast: data, model, flow, training, device."""
    names = DATASETS[command]
    p.add_argument("--dataset", default=d["dataset"], choices=names, metavar="NAME",
                   help="dataset: " + "; ".join(f"{n}: {ds.DESCRIPTIONS[n]}" for n in names))
    p.add_argument("--model", default=d["model"], type=_model_type, metavar="{" + ",".join(MODELS) + ",product:SPEC}",
                   help="latent space: euclidean (R^n, wrapped normal = Gaussian) or hyperbolic (Lorentz model "
                        "H^n with the paper's curvature warm-up R = 11 -> 2); poincare (the Poincare ball, the same "
                        "warm-up); spherical (S^n, von Mises-Fisher posterior, uniform prior); product:SPEC (e.g. "
                        "product:h2,s2: a product of the factors' posteriors and priors; --latent-dim is its "
                        "dimension)" + ("; embedding (graph-recon only: no VAE, one point per node on "
                                        "--embedding-manifold trained by Nickel & Kiela's ranking loss with "
                                        "RiemannianAdam, the classic baseline)" if command == "graph-recon" else ""))
    # default None here, filled in by validate: --model embedding has its own (RunConfig.defaults(command, model))
    p.add_argument("--flow", default=None, help=_flow_help() + f" (default: {d['flow']}" + (
        f"; {RunConfig.defaults(command, EMBEDDING)['flow']} with --model embedding)" if command == "graph-recon"
        else ")"))
    # default None here, filled in by validate: a product spec (--model product:h2,s2) fixes its own dimension
    p.add_argument("--latent-dim", type=positive(), default=None,
                   help="intrinsic latent dimension n (default: " + (
                       "per dataset, e.g. 6 for dis-i, 2 for dis-ii" if d["latent_dim"] is None
                       else str(d["latent_dim"])) + "; a product's own with --model product:SPEC)")
    p.add_argument("--epochs", type=positive(), default=d["epochs"],
                   help="training epochs" + (" per stage (auto-encoder, then flow prior)" if command == "graph-gen"
                                             else ""))
    p.add_argument("--seeds", type=positive(), default=d["seeds"],
                   help="number of seeded runs (seeds --seed, --seed+1, ...)")
    add_argument(p, "seed", d["seed"], COMMON["seed"])
    embedding = RunConfig.defaults(command, EMBEDDING)  # --model embedding's own defaults (graph-recon)
    p.add_argument("--lr", type=positive(float), default=None,
                   help=f"learning rate of Adam (default: {d['lr']}" + (
                       f"; of RiemannianAdam with --model embedding, default {embedding['lr']}"
                       if command == "graph-recon" else "") + ")")
    p.add_argument("--hidden", type=positive(), default=d["hidden"],
                   help="encoder/decoder width (default: 200 for bdp and digits, 600 for mnist; GCN 16 for "
                        "graph-recon; GAT 32 for graph-gen)")
    p.add_argument("--flow-layers", type=positive(), default=d["flow_layers"], help="coupling layers of the flow")
    p.add_argument("--flow-hidden", type=positive(), default=d["flow_hidden"], help="width of the coupling networks")
    add_argument(p, "data_root", d["data_root"], COMMON["data_root"])
    add_argument(p, "no_verify_data", d["no_verify_data"], COMMON["no_verify_data"])
    add_argument(p, "device", d["device"], COMMON["device"])
    p.add_argument("--compile", action="store_true",
                   help="compile the training step with torch.compile (the first steps take longer while it "
                        "compiles)" + ("; graph-gen compiles the tensor part of each loss with dynamic shapes (its "
                                       "batches are built from networkx graphs of varying size)"
                                       if command == "graph-gen" else ", whole (fullgraph=True)"))
    if command == "graph-recon":
        p.add_argument("--cuda-graph", choices=("auto", "on", "off"), default=d["cuda_graph"],
                       help="on CUDA, capture the whole training step (loss, backward, Adam) in a CUDA graph and "
                            "replay it every epoch (the same kernels as eager: same numerics, one launch); auto: on "
                            "for a CUDA device")


def _model_type(value: str) -> str:
    """``--model``'s type: a name of :data:`~experiments.models.MODELS` or ``product:<spec>`` (one-line error)."""
    try:
        return check_model(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_run_flags(p: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    """Where a run writes and how it resumes (the run protocol's flags)."""
    add_argument(p, "threads", d["threads"], COMMON["threads"])
    add_argument(p, "out", None, {**COMMON["out"], "help": "output folder (default: "
                                  "runs/<command>/<dataset>-<model>-<flow>-d<latent-dim>)"})
    p.add_argument("--csv", type=Path, default=None, help="CSV that gets one row per run (default: <out>/../results.csv)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its last checkpoint (finished seeds are kept); "
                        "refused if the run in --out was made with other settings")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run already in --out (deletes its seed<k>/ folders, results.json, config.json and "
                        "training_curves.png, nothing else); without it such an --out is refused")
    p.add_argument("--checkpoint-every", type=positive(), default=d["checkpoint_every"],
                   help="epochs between checkpoints (default: 1/20 of the epochs)")
    add_argument(p, "no_progress", False, COMMON["no_progress"])
    p.add_argument("--stop-after", type=positive(), default=None, help=argparse.SUPPRESS)  # tests: simulated kill


def _add_density_flags(p: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    p.add_argument("--batch-size", type=positive(), default=d["batch_size"],
                   help="global batch size (default: 64 bdp, 128 mnist and digits)")
    p.add_argument("--iwae-samples", type=positive(), default=d["iwae_samples"],
                   help="importance samples K of the test IWAE")
    p.add_argument("--eval-batch", type=positive(), default=d["eval_batch"], help="test examples per IWAE batch")


def _add_graph_recon_flags(p: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    p.add_argument("--kl-weight", type=nonnegative_float, default=d["kl_weight"], metavar="BETA",
                   help="β of the loss recon + β·KL/N (default 1, the paper's; reproduce selects it from "
                        "{1, 3, 10, 30, 100} on the validation edges)")
    p.add_argument("--weight-decay", type=nonnegative_float, default=d["weight_decay"], metavar="LAMBDA",
                   help="λ of Adam's decoupled weight decay (AdamW: every step θ ← θ - lr·λ·θ besides the Adam "
                        "update); default 0, plain Adam, the paper's. reproduce selects it on the validation edges at "
                        "the selected β, from {0, 0.1, 1, 3} for Table 3 and {0, 0.1, 1} for the latent table")
    p.add_argument("--final-radius", type=positive(float), default=None, metavar="R",
                   help="curvature radius after the warm-up R = 11 → R (k = R², curvature -1/R²; default "
                        f"{d['final_radius']:g}, the paper's); a smaller R gives the hyperbolic latents more room "
                        "for a deep hierarchy. --model embedding: its fixed radius (no warm-up; default "
                        f"{RunConfig.defaults('graph-recon', EMBEDDING)['final_radius']:g}, Nickel & Kiela's unit "
                        "ball)")
    p.add_argument("--decoder", default=d["decoder"], choices=("inner", "distance"),
                   help="edge decoder: inner product of tangent vectors (the paper's Table 3) or the "
                        "Fermi–Dirac distance decoder (the reference's flow scripts)")
    p.add_argument("--hierarchy-sources", type=positive(), default=d["hierarchy_sources"], metavar="S",
                   help="source nodes of the final hierarchy metrics (MAP, distortion; a BFS from each, memory "
                        "linear in nodes + edges): default every node up to vae.constants.HIERARCHY_EXACT_MAX_NODES "
                        "nodes (exact), else that many sampled, seeded, with standard errors (map_se, distortion_se)")
    p.add_argument("--flow-conditioner", default=d["flow_conditioner"], choices=("mlp", "gcn", "gat"),
                   help="coupling networks: per-node MLPs (the reference code's 'Linear' layers) or graph networks")
    p.add_argument("--embedding-manifold", default=d["embedding_manifold"], choices=tuple(EMBEDDING_MANIFOLDS),
                   help="--model embedding: the points' manifold, the Poincaré ball (Nickel & Kiela 2017) or the "
                        "hyperboloid (2018), at curvature radius --final-radius (fixed, no warm-up)")
    p.add_argument("--negatives", type=positive(), default=d["negatives"], metavar="K",
                   help="--model embedding: negatives per training edge in the ranking loss, drawn uniformly among "
                        "the other nodes on the device (a drawn neighbour is kept)")


def _add_graph_gen_flags(p: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    p.add_argument("--batch-size", type=positive(), default=d["batch_size"], help="graphs per mini-batch")
    p.add_argument("--num-generate", type=positive(), default=d["num_generate"],
                   help="graphs generated for the metrics")

    p.add_argument("--node-input", default=d["node_input"], choices=NODE_INPUTS,
                   help="encoder input per node: structural (one-hot degree + random-walk returns), adjacency "
                        "(the node's adjacency row zero-padded to the data set's largest graph, the reference "
                        "code's input) or both concatenated")
    p.add_argument("--schedule", default=d["schedule"], choices=SCHEDULES,
                   help="paper: both stages --epochs at --lr, curvature k = 1; reference (the reference code's): "
                        "auto-encoder ceil(epochs/2) at --lr, flow prior --epochs at --lr/10, k = R² = 4 (at "
                        "the defaults: 50 epochs at 1e-2, then 100 at 1e-3)")
    p.add_argument("--sampler", default=d["sampler"], choices=SAMPLERS,
                   help="how generated edges are drawn from the decoded probabilities: bernoulli (each pair "
                        "independently, the paper's), spanning-tree (a random spanning tree with P(T) ∝ Π "
                        "p/(1-p): the decoder conditioned on being a tree) or max-spanning-tree (its mode); "
                        "the spanning-tree samplers give trees on all nodes by construction")


#: per run command, its own flags
COMMAND_FLAGS: dict[str, Callable[[argparse.ArgumentParser, dict[str, Any]], None]] = {
    "density": _add_density_flags, "graph-recon": _add_graph_recon_flags, "graph-gen": _add_graph_gen_flags}


#: the commands configured by one dataclass each (their flags are its fields): name, config, help, description
CONFIG_COMMANDS: tuple[tuple[str, type, str, str], ...] = (
    ("main", MainConfig, "the README's main job (make demo)",
     "Graph reconstruction on the embedded hierarchical graph (no download): N-VAE, H-VAE and WHC compared; prints "
     "an AUC/AP table and draws the latents in the Poincaré disk."),
    ("reproduce", ReproduceConfig, "reproduce the paper's tables and write RESULTS.md",
     "Run the paper's experiments at its settings (5 seeds each; finished runs are kept) and write RESULTS.md."),
    ("hdensity", HDensityConfig, "density estimation on H^n against exact targets (RFM, CNF, WHC, TC)",
     "Density estimation on H^2, H^8 and H^16 against targets with exact log-densities: test NLL and its gap to "
     "the target's entropy for Riemannian flow matching, a CNF, WHC and TC."),
    ("earth", EarthConfig, "density estimation on S^2: volcano, earthquake, flood and fire events (test NLL)",
     "Density estimation on the sphere S^2 on the four earth-event catalogues (shared/data/earth): test NLL over "
     "seeded 80/10/10 splits beside the published numbers, and a map of each learned density."),
)
#: the benchmarks of ``python -m experiments.bench``: name, config, help, description
BENCH_COMMANDS: tuple[tuple[str, type, str, str], ...] = (
    ("flows", BenchFlowsConfig, "training step of NC vs zuko/nflows/normflows RealNVP; TC and WHC vs NC",
     "Training step of NC vs zuko/nflows/normflows RealNVP; TC and WHC vs NC."),
    ("graph", BenchGraphConfig, "graph VAE training epochs on Dis-II and random graphs (issue 12): time, peak "
     "memory, kernel launches, host syncs", BENCH_GRAPH_DOC),
)
#: what each configured command runs
RUNNERS: dict[type, Callable[[Any], Any]] = {MainConfig: run_main, ReproduceConfig: run_reproduce,
                                             HDensityConfig: run_hdensity, EarthConfig: run_earth,
                                             BenchFlowsConfig: run_bench_flows,
                                             BenchGraphConfig: run_bench_graph}


def _add_config_commands(sub: Any, commands: tuple[tuple[str, type, str, str], ...]) -> None:
    for command, cls, help, description in commands:
        add_config_arguments(sub.add_parser(command, help=help, description=description, formatter_class=_Formatter,
                                            allow_abbrev=False), cls)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m experiments``: the run commands (flags from :class:`RunConfig`'s defaults) and
    the commands of :data:`CONFIG_COMMANDS`."""
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__, formatter_class=_Formatter,
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    helps = {"density": "VAE density estimation (BDP, MNIST, digits)",
             "graph-recon": "graph VAE link prediction (Dis-I, Dis-II, Cora, ... , generated tree)",
             "graph-gen": "two-stage graph generation (random trees, lobsters)"}
    for command in ("density", "graph-recon", "graph-gen"):
        p = sub.add_parser(command, help=helps[command], description=helps[command], formatter_class=_Formatter,
                           allow_abbrev=False)
        _add_common(p, command)
    _add_config_commands(sub, CONFIG_COMMANDS)
    return parser


def build_bench_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m experiments.bench`` (:data:`BENCH_COMMANDS`)."""
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=BENCH_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    _add_config_commands(parser.add_subparsers(dest="command", required=True), BENCH_COMMANDS)
    return parser


BENCH_DOC = """Benchmarks: ``flows`` times one maximum-likelihood training step of our flows and their peers
(:mod:`experiments.bench.flows`); ``graph`` times the graph VAE's training epochs (:mod:`experiments.bench.graph`).
Run ``python -m experiments.bench <benchmark> --help`` for the options of one."""


def parse(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> Any:
    """The typed config of a command line (a :class:`RunConfig` for the run commands, else the command's config
    of :data:`CONFIG_COMMANDS` / :data:`BENCH_COMMANDS`); a wrong option or combination exits with usage."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if args.command in ("density", "graph-recon", "graph-gen"):
        return validate(args, parser)
    cls = next(c for name, c, _, _ in CONFIG_COMMANDS + BENCH_COMMANDS if name == args.command)
    try:
        return config_from_args(cls, args)
    except ValueError as err:  # a combination the config refuses
        parser.error(str(err))


def validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RunConfig:
    """Check option combinations and turn them into the run's :class:`~experiments.run.config.RunConfig`."""

    command = args.command
    defaults = RunConfig.defaults(command, args.model)
    for name in ("flow", "lr", "final_radius"):  # left out: the command's default, or the model's (embedding)
        if getattr(args, name, "") is None:
            setattr(args, name, defaults[name])
    fixed_dim = model_latent_dim(args.model)
    if args.latent_dim is None:  # a product spec fixes the dimension; else the command's default
        args.latent_dim = fixed_dim if fixed_dim is not None else defaults["latent_dim"]
    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"argument --device: {args.device} asked for, but torch sees no CUDA device (torch "
                     f"{torch.__version__}); use --device cpu")
    if args.model == EMBEDDING:  # no VAE: RunConfig refuses, in one line, the settings that do not apply
        return _config(args, parser)
    try:
        manifold = make_manifold(args.model, dim=args.latent_dim)
    except ValueError as err:
        parser.error(f"argument --model: {err}")
    if args.flow != "none":
        if args.flow not in flows.available():
            parser.error(f"argument --flow: unknown flow {args.flow!r}; choose 'none' or one of "
                         f"{', '.join(flows.available())}")
        if args.flow not in flows.available(manifold):
            parser.error(f"argument --flow: flow {args.flow!r} does not apply to --model {args.model}; flows for "
                         f"{args.model}: {', '.join(flows.available(manifold))}")
    elif command == "graph-gen":
        parser.error("argument --flow: graph-gen needs a flow prior (nc with --model euclidean, tc or whc with "
                     "--model hyperbolic)")
    if args.flow != "none" and args.latent_dim is not None:
        try:  # a flow that cannot exist in this dimension (a coupling on a 1-D latent) is a usage error
            flows.build(args.flow, manifold, args.latent_dim, layers=args.flow_layers, hidden=args.flow_hidden)
        except ValueError as err:
            parser.error(f"argument --latent-dim: {err}")
    if command == "graph-gen":
        try:  # the prior's flow is conditioned on the complete graph of the nodes (GAT networks)
            flows.build(args.flow, manifold, args.latent_dim or 2, layers=args.flow_layers, hidden=args.flow_hidden,
                        conditioner="gat")
        except ValueError as err:
            parser.error(f"argument --flow: graph-gen's prior needs a flow with graph (GAT) networks: {err}")
    on_cuda = str(args.device).startswith("cuda")
    if getattr(args, "cuda_graph", "auto") == "on" and not on_cuda:
        parser.error("argument --cuda-graph: on needs --device cuda (a CUDA graph is captured on a GPU)")
    return _config(args, parser)


def _config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RunConfig:
    """The :class:`RunConfig` of checked arguments; a combination it refuses is a usage error (one line)."""
    try:
        return RunConfig.from_args(args)
    except ValueError as err:
        parser.error(str(err))


def print_summary(result: RunResult) -> None:
    """One line: the command, model and headline metrics (mean ± std over seeds) of a finished run."""
    cfg = result.config
    parts = [f"{k} = {v['mean']:.4f} ± {v['std']:.4f}" for k, v in result.summary.items()
             if k in ("auc", "ap", "test_ll", "accuracy", "avg_triangles", "avg_clustering", "mmd_degree",
                      "edges_per_node")]
    print(f"{cfg.command} {cfg.dataset} model={cfg.model} flow={cfg.flow} d={cfg.latent_dim}: "
          f"{', '.join(parts)} over {len(result.metrics)} seed(s); {result.wall_s:.1f} s; "
          f"results in {cfg.out}/results.json")


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments``: parse, run, and turn the run's errors into one line and an exit code."""
    keep_freed_memory()  # CPU training steps without page faults on every new tensor (see experiments.run.allocator)
    cfg = parse(argv)
    if isinstance(cfg, MainConfig):
        try:
            return run_main(cfg)
        except (ds.MissingDataError, ds.DataFileError, RunError) as err:  # a damaged or unwritable file: one line
            print(f"error: {err}", file=sys.stderr)
            return 2
        except Interrupted as err:  # Ctrl-C: the main job replaces its output on every run, so nothing resumes
            print(f"main job: interrupted (Ctrl-C) after epoch {err.epoch} of {err.epochs}; it starts afresh each "
                  f"time: run it again to finish ({cfg.out} holds the models finished before)", file=sys.stderr)
            return 130
    if not isinstance(cfg, RunConfig):
        try:
            return RUNNERS[type(cfg)](cfg)
        except (ds.MissingDataError, ds.DataFileError, RunError) as err:  # a damaged or unwritable file: one line
            print(f"error: {err}", file=sys.stderr)
            return 2
    return _run(cfg)


def _run(cfg: RunConfig) -> int:
    """A run command: its summary line, or the error and exit code (2: usage or data, 130: Ctrl-C, 3: stopped)."""
    try:
        result = runner.run_command(cfg)
        if D.is_main():
            print_summary(result)
    except (ds.MissingDataError, ds.DataFileError, RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(str(err), file=sys.stderr)
        return 130  # the shell's code for a run stopped by SIGINT
    except StopRequested as err:
        print(str(err), file=sys.stderr)
        return 3
    finally:
        D.shutdown()
    return 0


def bench_main(argv: list[str] | None = None) -> None:
    """``python -m experiments.bench``: parse and run one benchmark (an unwritable output or damaged data file: one
    line, exit 2)."""
    cfg = parse(argv, build_bench_parser())
    try:
        RUNNERS[type(cfg)](cfg)
    except (ds.MissingDataError, ds.DataFileError, RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
