"""Benchmarks. ``python -m experiments.bench flows`` times one maximum-likelihood training step of our coupling
flows against the RealNVP implementations of zuko, nflows and normflows (``pip install -e '.[bench]'``, or
``make bench``), and our tangent (TC) and wrapped hyperboloid (WHC) couplings against our affine coupling (NC).

One step is ``optimizer.zero_grad(); loss = -flow.log_prob(x).mean(); loss.backward()`` (density direction on
data ``x``; the optimizer's ``step`` is left out for every model). Every model is built with the same size:
``--layers`` coupling layers whose conditioner is an MLP with two hidden layers of ``--hidden`` units and tanh.
The models are timed round-robin (one step of each per repeat, in a rotating order) after a warm-up, so that
drift in the machine's speed affects all of them alike; the table gives the median and the inter-quartile
range, and ratios of medians measured in the same run. ``--compile`` compiles every model's loss (ours and the
peers') with ``torch.compile(fullgraph=True)``, as ``--compile`` trains. The column *launches / step* counts one
step's kernel launches on CUDA, and its top-level ATen calls on the CPU (a compiled graph counts once; see
:func:`experiments.run.profiling.count_kernel_launches`): eager steps on a GPU are bound by these.

Run ``python -m experiments.bench flows --help`` for options.

``--rfm`` adds one Riemannian flow-matching step on S² against H² (issue 23; :mod:`experiments.bench.rfm`).

``python -m experiments.bench graph`` times the graph VAE's training epochs on Dis-II and random graphs up to 1M
nodes (issue 12: epoch time, peak memory, kernel launches and host syncs per epoch); see
:mod:`experiments.bench.graph`.
"""

from __future__ import annotations

import json
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from experiments.bench.maf import render as render_maf
from experiments.bench.maf import StepBenchConfig, run_maf_benchmark
from experiments.bench.rfm import render as render_rfm
from experiments.bench.rfm import run_rfm_benchmark
from experiments.run.options import common, option
from experiments.run.profiling import count_kernel_launches
from experiments.run.steps import compile_loss
from experiments.run.timing import Case, device_name, quartiles, time_cases
from flows import Flow, build
from manifolds import Euclidean, Lorentz, WrappedNormal

#: Targets of issue 3 (ratios of median step times measured in the same run).
NC_VS_PEER_TARGET = 1.0
NC_VS_PEER_AIM = 0.8
WHC_VS_NC_TARGET = 1.5


class _Compiled:
    """``loss_fn`` compiled as the library compiles a training step (:func:`experiments.run.steps.compile_loss`:
    ``fullgraph=True``, backward through AOTAutograd); a model that cannot be captured whole (a graph break) is
    compiled with breaks allowed instead, and ``note`` says so."""

    #: ``torch.compile`` backend (``None``: inductor, what ``--compile`` trains with; the tests use ``"aot_eager"``)
    backend: Optional[str] = None

    def __init__(self, loss_fn: Callable[[], torch.Tensor]) -> None:

        self.loss_fn, self.note = loss_fn, "compiled whole (fullgraph)"
        self.compiled = compile_loss(loss_fn, self.backend)

    def __call__(self) -> torch.Tensor:
        try:
            return self.compiled()
        except Exception as e:  # dynamo's Unsupported and friends: fall back to a graph with breaks
            if self.note != "compiled whole (fullgraph)":
                raise

            self.note = f"graph breaks: compiled with fullgraph=False ({type(e).__name__})"
            self.compiled = compile_loss(self.loss_fn, self.backend, fullgraph=False)
            return self.compiled()


def _make_step(model: nn.Module, log_prob: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
               compile: bool = False) -> Callable[[], None]:
    """One timed step: ``zero_grad``, the loss ``-log_prob(x).mean()`` (compiled with ``compile``) and its
    backward pass."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)

    def loss_fn() -> torch.Tensor:
        return -log_prob(x).mean()

    loss = _Compiled(loss_fn) if compile else loss_fn

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss().backward()

    step.compiled = loss if compile else None  # type: ignore[attr-defined]
    return step


def _tanh_mlp(i: int, o: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, o))


class _ContextFreeMLP(nn.Module):
    """A tanh MLP with nflows' conditioner signature ``net(x, context)`` (nflows' ``nets.MLP`` takes no context)."""

    def __init__(self, i: int, o: int, hidden: int) -> None:
        super().__init__()
        self.net = _tanh_mlp(i, o, hidden)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.net(x)


# ----------------------------------------------------------------------------------------------------------
# our flows
# ----------------------------------------------------------------------------------------------------------


def ours_nc(dim: int, layers: int, hidden: int, x: torch.Tensor, compile: bool = False) -> Case:

    f = build("nc", Euclidean(), dim, layers=layers, hidden=hidden).to(x)
    base = torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(dim, dtype=x.dtype, device=x.device),
                                   torch.ones(dim, dtype=x.dtype, device=x.device)), 1)
    q = Flow(base, f)
    return Case("ours NC (affine coupling)", "ours", _make_step(f, q.log_prob, x, compile),
                "flows.build('nc', Euclidean()); base N(0, I)")


def ours_manifold(name: str, dim: int, layers: int, hidden: int, x_tangent: torch.Tensor,
                  compile: bool = False) -> Case:

    M = Lorentz(k=1.0)
    f = build(name, M, dim, layers=layers, hidden=hidden).to(x_tangent)
    base = WrappedNormal.at_origin(torch.ones(dim, dtype=x_tangent.dtype, device=x_tangent.device), M.to(x_tangent))
    q = Flow(base, f)
    x = M.expmap0_spatial(x_tangent).detach()
    label = {"tc": "ours TC (tangent coupling)", "whc": "ours WHC (wrapped hyperboloid)"}[name]
    return Case(label, "manifold", _make_step(f, q.log_prob, x, compile),
                f"flows.build('{name}', Lorentz(k=1)); base WrappedNormal.at_origin(I); data exp_o(N(0, I)) on "
                f"H^{dim}")


# ----------------------------------------------------------------------------------------------------------
# peers (each returns None with a reason when the library cannot be imported)
# ----------------------------------------------------------------------------------------------------------


def peer_zuko(dim: int, layers: int, hidden: int, x: torch.Tensor, compile: bool = False) -> Case:
    import zuko  # lazy: optional ([bench] extra)

    flow = zuko.flows.RealNVP(dim, transforms=layers, hidden_features=(hidden, hidden), activation=nn.Tanh).to(x)
    return Case(f"zuko {zuko.__version__} RealNVP", "peer",
                _make_step(flow, lambda v: flow().log_prob(v), x, compile),
                "zuko.flows.RealNVP (GeneralCouplingTransform, MonotonicAffineTransform, alternating checkered "
                "masks), hidden_features=(h, h), activation=Tanh")


def peer_nflows(dim: int, layers: int, hidden: int, x: torch.Tensor, compile: bool = False) -> Case:
    import nflows  # lazy: optional ([bench] extra)
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow as NFlow
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import AffineCouplingTransform

    # SimpleRealNVP's construction (alternating 1-D checkerboard masks, AffineCouplingTransform), with its
    # ResidualNet conditioner replaced by a plain 2-hidden-layer tanh MLP so that the size matches.
    mask = torch.ones(dim)
    mask[::2] = -1
    ts = []
    for _ in range(layers):
        ts.append(AffineCouplingTransform(
            mask=mask.clone(),
            transform_net_create_fn=lambda i, o: _ContextFreeMLP(i, o, hidden)))
        mask *= -1
    flow = NFlow(CompositeTransform(ts), StandardNormal([dim])).to(x)
    version = getattr(nflows, "__version__", "")
    return Case(f"nflows {version} RealNVP".replace("  ", " "), "peer",
                _make_step(flow, flow.log_prob, x, compile),
                "SimpleRealNVP's layout (AffineCouplingTransform, alternating checkerboard masks) with "
                "a 2-hidden-layer tanh MLP (nets.MLP's layout; it takes no context argument) instead of its "
                "ResidualNet")


def peer_nflows_simple(dim: int, layers: int, hidden: int, x: torch.Tensor, compile: bool = False) -> Case:
    from nflows.flows.realnvp import SimpleRealNVP  # lazy: optional ([bench] extra)

    flow = SimpleRealNVP(dim, hidden_features=hidden, num_layers=layers, num_blocks_per_layer=1,
                         activation=torch.tanh).to(x)
    return Case("nflows SimpleRealNVP (resnet)", "info", _make_step(flow, flow.log_prob, x, compile),
                "unmodified SimpleRealNVP, ResidualNet with 1 block (4 linear layers per conditioner, one more "
                "than the others); for information, not counted as a peer")


def peer_normflows(dim: int, layers: int, hidden: int, x: torch.Tensor, compile: bool = False) -> Case:
    import normflows as nf  # lazy: optional ([bench] extra)

    # RealNVP from AffineCouplingBlock (split / affine coupling / merge), alternating halves through the
    # 'channel' / 'channel_inv' split modes (no permutation layers needed), scale_map='exp' as in RealNVP.
    # nf.nets.MLP only offers (leaky) ReLU, so the param map is the same tanh MLP as everyone else's.
    blocks = []
    for i in range(layers):
        d1 = dim - dim // 2 if i % 2 == 0 else dim // 2  # size of the conditioning half (chunk: first is larger)
        mode = "channel" if i % 2 == 0 else "channel_inv"
        blocks.append(nf.flows.AffineCouplingBlock(_tanh_mlp(d1, 2 * (dim - d1), hidden), scale=True,
                                                   scale_map="exp", split_mode=mode))
    flow = nf.NormalizingFlow(nf.distributions.DiagGaussian(dim, trainable=False), blocks).to(x)
    return Case(f"normflows {nf.__version__} RealNVP", "peer", _make_step(flow, flow.log_prob, x, compile),
                "AffineCouplingBlock (scale_map='exp', split_mode channel/channel_inv alternating) with a "
                "2-hidden-layer tanh MLP param map (nf.nets.MLP has no tanh option)")


PEERS = {"zuko": peer_zuko, "nflows": peer_nflows, "normflows": peer_normflows}


# ----------------------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------------------


def bench_flows(args: BenchFlowsConfig) -> dict:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    peers_wanted = [p for p in args.peers if p in PEERS]
    results: dict = {
        "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(), "dtype": args.dtype, "batch": args.batch, "layers": args.layers,
        "hidden": args.hidden, "repeats": args.repeats, "warmup": args.warmup, "clock": args.clock,
        "step": "optimizer.zero_grad(); (-flow.log_prob(x).mean()).backward()  (optimizer.step() not timed)",
        "compile": bool(args.compile),
        "unavailable": {}, "notes": {}, "dims": {},
    }
    for dim in args.dims:
        if args.compile:  # every model's loss shares one code object: start each size with an empty cache, so that
            torch._dynamo.reset()  # dynamo's recompile limit counts this size's models only
        g = torch.Generator().manual_seed(dim)
        x = torch.randn(args.batch, dim, generator=g, dtype=dtype).to(device)
        torch.manual_seed(0)
        cc = bool(args.compile)
        cases: list[Case] = [ours_nc(dim, args.layers, args.hidden, x, cc)]
        for p in peers_wanted:
            try:
                cases.append(PEERS[p](dim, args.layers, args.hidden, x, cc))
            except ImportError as e:
                results["unavailable"][p] = f"not importable ({e}); install with pip install -e '.[bench]'"
        if args.nflows_resnet and "nflows" not in results["unavailable"]:
            cases.append(peer_nflows_simple(dim, args.layers, args.hidden, x, cc))
        if not args.no_manifold:
            cases += [ours_manifold("tc", dim, args.layers, args.hidden, x, cc),
                      ours_manifold("whc", dim, args.layers, args.hidden, x, cc)]
        time_cases(cases, args.repeats, args.warmup, device, args.clock)

        results["dims"][str(dim)] = _dim_entry(cases, results["notes"], device)
    return results


def _dim_entry(cases: list[Case], notes: dict[str, str], device: torch.device) -> dict:
    """One data dimension's rows (quartiles, kernel launches) and checks (NC against the fastest peer, TC and WHC
    against NC), from its timed ``cases`` (ours first); each case's note goes to ``notes``."""
    rows = {}
    for c in cases:
        q1, med, q3 = quartiles(c.times)
        compiled = getattr(c.step, "compiled", None)
        notes[c.name] = c.note + (f"; {compiled.note}" if compiled is not None else "")
        rows[c.name] = {"group": c.group, "median_ms": med, "q1_ms": q1, "q3_ms": q3, "iqr_ms": q3 - q1,
                        "launches": count_kernel_launches(c.step, device)}
    nc = rows[cases[0].name]["median_ms"]
    peers = {n: r["median_ms"] for n, r in rows.items() if r["group"] == "peer"}
    entry: dict = {"rows": rows, "checks": []}
    if peers:
        fastest = min(peers, key=peers.get)
        ratio = nc / peers[fastest]
        entry["checks"].append({
            "what": f"NC / fastest peer ({fastest})", "ratio": ratio, "target": NC_VS_PEER_TARGET,
            "aim": NC_VS_PEER_AIM, "pass": ratio <= NC_VS_PEER_TARGET})
    for c in cases:
        if c.group == "manifold":
            short = "TC" if "TC" in c.name else "WHC"
            ratio = rows[c.name]["median_ms"] / nc
            # paired per-repeat ratio: robust against drift between repeats
            paired = statistics.median(a / b for a, b in zip(c.times, cases[0].times))
            entry["checks"].append({
                "what": f"{short} / NC", "ratio": ratio, "paired_ratio": paired,
                "target": WHC_VS_NC_TARGET if short == "WHC" else None,
                "pass": (ratio <= WHC_VS_NC_TARGET) if short == "WHC" else None})
    return entry


def render(results: dict) -> str:
    lines = [
        "# Flow training-step benchmark (issue 3)",
        "",
        f"torch {results['torch']}, python {results['python']}, device {results['device']} "
        f"({results['device_name']}), threads {results['threads']}, dtype {results['dtype']}",
        f"batch {results['batch']}, {results['layers']} coupling layers, conditioner MLP 2x{results['hidden']} tanh; "
        f"median of {results['repeats']} round-robin repeats after {results['warmup']} warm-up steps "
        f"({results['clock']} clock)",
        f"step: {results['step']}"
        + ("; the loss compiled by torch.compile (fullgraph, as `--compile` trains; every model, peers too)"
           if results.get("compile") else "; eager"),
        f"targets: NC <= {NC_VS_PEER_TARGET:.1f}x the fastest peer (aim {NC_VS_PEER_AIM:.1f}x); "
        f"WHC <= {WHC_VS_NC_TARGET:.1f}x NC",
        "",
    ]
    for dim, entry in results["dims"].items():
        lines += [f"## dim {dim}", "", "| model | median ms | IQR ms | / NC | launches / step |",
                  "|---|---:|---:|---:|---:|"]
        nc = next(iter(entry["rows"].values()))["median_ms"]
        for name, r in entry["rows"].items():
            tag = " (info)" if r["group"] == "info" else ""
            lines.append(f"| {name}{tag} | {r['median_ms']:.2f} | {r['iqr_ms']:.2f} "
                         f"({r['q1_ms']:.2f}-{r['q3_ms']:.2f}) | {r['median_ms'] / nc:.2f}x "
                         f"| {r.get('launches', '—')} |")
        lines.append("")
        for c in entry["checks"]:
            if c["target"] is None:
                verdict = "(no target)"
            else:
                verdict = "PASS" if c["pass"] else "MISS"
                verdict += f" (target <= {c['target']:.1f}x"
                verdict += f", aim {c['aim']:.1f}x)" if c.get("aim") else ")"
            paired = f", paired per-repeat {c['paired_ratio']:.2f}x" if "paired_ratio" in c else ""
            lines.append(f"- {c['what']}: {c['ratio']:.2f}x{paired} {verdict}")
        lines.append("")
    if results["unavailable"]:
        lines += ["Peers not run:"] + [f"- {p}: {why}" for p, why in results["unavailable"].items()] + [""]
    lines += ["Notes:"] + [f"- {n}: {note}" for n, note in results["notes"].items()]
    return "\n".join(lines)


@dataclass(frozen=True)
class BenchFlowsConfig(StepBenchConfig):
    """The settings of ``python -m experiments.bench flows`` (its flags; the step's size: :class:`StepBenchConfig`)."""
    device: str = common("device", "cpu", choices=["cpu", "cuda"])
    dtype: str = option("float32", "floating-point type", choices=["float32", "float64"])
    threads: Optional[int] = common("threads", None, help="torch.set_num_threads (default: torch's default)")
    peers: list[str] = option(list(PEERS), f"peers to run (of {', '.join(PEERS)})", nargs="*")
    nflows_resnet: bool = option(False, "also time the unmodified nflows SimpleRealNVP (ResidualNet conditioner), "
                                 "for information")
    no_manifold: bool = option(False, "skip TC and WHC")
    clock: str = option("wall", "wall time (default) or process CPU time (CPU only; use with --threads 1 on a busy "
                        "machine)", choices=["wall", "cpu"])
    compile: bool = option(False, "compile every model's loss (ours and the peers') with "
                           "torch.compile(fullgraph=True), the way --compile trains (a peer with graph breaks is "
                           "compiled with breaks allowed; the notes say which); the first steps compile and are not "
                           "timed")
    maf: bool = option(False, "also run the MAF benchmark (issue 6: MAF training step vs zuko and nflows MAF, MAF/IAF "
                       "sampling) in the same run; `python -m experiments.bench.maf` runs it alone")
    rfm: bool = option(False, "also run the rfm benchmark (issue 23: one flow-matching training step, Adam step "
                       "included, on S² vs H² at --rfm-batch, field width --hidden) in the same run; `python -m "
                       "experiments.bench.rfm` runs it alone")
    rfm_batch: int = option(512, "batch of the rfm benchmark's step (--rfm)", type=int)
    out: Optional[Path] = common("out", None, help="also write the results (.json) or the table (.md)")

    def __post_init__(self) -> None:
        if self.clock == "cpu" and self.device != "cpu":
            raise ValueError("--clock cpu measures CPU time; use it with --device cpu")


def run(args: BenchFlowsConfig) -> dict:
    """``python -m experiments.bench flows``: run, print the table (and the MAF table with ``--maf``), write
    ``--out``."""
    if args.repeats < 15:
        print(f"warning: --repeats {args.repeats} < 15; the issue asks for the median of at least 15 runs")
    results = bench_flows(args)
    text = render(results)
    print(text)
    if args.maf:
        rows = run_maf_benchmark(args.batch, tuple(args.dims), args.layers, args.hidden, args.repeats, args.device,
                                 args.warmup, args.threads)
        results["maf"] = rows
        maf_text = render_maf(rows)
        print("\n" + maf_text)
        text += "\n\n" + maf_text
    if args.rfm:
        results["rfm"] = run_rfm_benchmark(args.rfm_batch, args.hidden, repeats=args.repeats, warmup=args.warmup,
                                           device=args.device, dtype=args.dtype, threads=args.threads,
                                           clock=args.clock)
        rfm_text = render_rfm(results["rfm"])
        print("\n" + rfm_text)
        text += "\n\n" + rfm_text
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.suffix == ".json":
            args.out.write_text(json.dumps(results, indent=2))
        else:
            args.out.write_text(text + "\n")
    return results


