"""Self-normalizing flows (Keller et al., ICML 2021) at CPU scale: an SNF FC model and its exact-gradient twin.

``python -m experiments.tasks.snf --dataset digits --epochs 20 --out runs/snf`` trains two identical fully connected flows
(same initialisation, same batches) on dequantised images, one with the self-normalizing surrogate gradient
(:func:`flows.selfnorm.self_normalizing_objective`, O(D²) per layer) and one with exact gradients (``slogdet``,
O(D³)), and reports for both the test negative log-likelihood in nats and bits/dim (exact log-dets, eval mode),
the training time per epoch, and how well each layer's R inverts its W. ``results.json`` is written atomically
into ``--out``.

Data: scikit-learn's bundled 8×8 digits (default; 17 grey levels, 80/20 split as in ``experiments.datasets``), or
the offline MNIST test split (``--dataset mnist``: ``<data-root>/mnist_t10k``, first 8,000 images train, last 2,000
test, 256 levels). Pixels ``v`` are dequantised ``x = (v + u)/L``, ``u ~ U[0, 1)``, and mapped to logit space
``s = logit(α + (1 − 2α)x)``; the reported NLL is that of ``v + u`` on the integer scale ``[0, L)``, i.e. it
includes the logit Jacobian and ``D log L``, so bits/dim are comparable with the literature's.

Model (density direction): ActNorm → [SelfNormLinear → LeakyReLU] × layers → SelfNormLinear → N(0, I).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.distributions import Independent, Normal
from tqdm import tqdm

from experiments.datasets import _need, _split, default_data_root, read_idx
from experiments.run.files import atomic_write_text
from experiments.run.options import add_config_arguments, common, config_from_args, option, positive
from flows import ActNorm, Compose, Flow
from flows.selfnorm import LeakyReLU, SelfNormLinear, self_normalizing, self_normalizing_objective

Tensor = torch.Tensor

#: logit preprocessing ``logit(α + (1 − 2α)x)`` (RealNVP's MNIST value)
LOGIT_ALPHA: float = 1e-6
#: Adam learning rate and batch size of the paper's MNIST FC runs
DEFAULT_LR: float = 1e-3
DEFAULT_BATCH: int = 100
#: Weight λ of the reconstruction term. The paper's λ = 1 is below the stability threshold λσ² > 1/8 of
#: ``flows.selfnorm`` here: dequantised pixels in logit space are strongly correlated, so a layer's inputs have
#: directions of small variance σ², R stops tracking W⁻¹ and training degrades (digits, 60 epochs, seed 0: SNF 114.5
#: vs exact 104.5 nats, R-vs-exact sample error 3.5; with λ = 10: 105.5 vs 105.8 nats, 0.04).
DEFAULT_LAMBDA: float = 10.0


def load_pixels(name: str, root: Optional[Path]) -> tuple[Tensor, Tensor, int]:
    """Integer pixels ``(train, test, levels)`` as float64 tensors of shape ``(N, D)``."""
    if name == "digits":
        from sklearn.datasets import load_digits  # lazy: import cost (~5 s measured)

        v = torch.tensor(load_digits().data, dtype=torch.float64)
        tr, te = _split(len(v), 0.8, 0)
        return v[tr], v[te], 17
    if name == "mnist":
        images = read_idx(_need(root, "mnist_t10k/t10k-images-idx3-ubyte.gz", "mnist"))
        v = torch.from_numpy(images.reshape(len(images), -1).astype(np.float64))
        return v[:8000], v[8000:], 256
    raise ValueError(f"unknown dataset {name!r}; choose 'digits' or 'mnist'")


def to_logit(v: Tensor, levels: int, generator: torch.Generator, alpha: float = LOGIT_ALPHA
             ) -> tuple[Tensor, Tensor]:
    """Dequantise and map to logit space; returns ``(s, log|ds/d(v+u)|)`` (per sample, summed over pixels)."""
    x = (v + torch.rand(v.shape, generator=generator, dtype=v.dtype)) / levels
    p = alpha + (1 - 2 * alpha) * x
    s = torch.log(p) - torch.log1p(-p)
    ladj = (math.log(1 - 2 * alpha) - math.log(levels) - torch.log(p) - torch.log1p(-p)).sum(-1)
    return s, ladj


def make_model(dim: int, layers: int, seed: int) -> Flow:
    """ActNorm → [SelfNormLinear → LeakyReLU] × layers → SelfNormLinear (density direction) over N(0, I)."""
    torch.manual_seed(seed)
    density_order: list = [ActNorm(dim)]
    for _ in range(layers):
        density_order += [SelfNormLinear(dim), LeakyReLU()]
    density_order.append(SelfNormLinear(dim))
    base = Independent(Normal(torch.zeros(dim), torch.ones(dim)), 1)
    return Flow(base, Compose(density_order[::-1]))


def evaluate(q: Flow, s: Tensor, ladj: Tensor, batch: int = 500) -> dict[str, float]:
    """Exact test NLL (nats, on the integer scale) and bits/dim; per-layer ``‖h − RWh‖²/D`` on the test inputs."""
    q.transform.eval()
    layers = sum(isinstance(m, SelfNormLinear) for m in q.transform.modules())
    nll = []
    with torch.no_grad(), self_normalizing(q.transform, surrogate=False) as rec:
        for i in range(0, len(s), batch):
            nll.append(-(q.log_prob(s[i:i + batch].float()).double() + ladj[i:i + batch]))
    # the layers append in density order, once per batch: rec[k::layers] are layer k's errors
    recon = [float(torch.cat(rec[k::layers]).mean()) / s.size(1) for k in range(layers)]
    q.transform.train()
    nats = float(torch.cat(nll).mean())
    return {"test_nll_nats": nats, "test_bits_per_dim": nats / (s.size(1) * math.log(2)),
            "reconstruction_per_dim": recon}


def train(q: Flow, train_v: Tensor, levels: int, exact: bool, args: argparse.Namespace, test: tuple[Tensor, Tensor],
          label: str) -> dict[str, Any]:
    opt = torch.optim.Adam(q.transform.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)  # same batches and noise for both models
    history, epoch_seconds = [], []
    n = len(train_v)
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(n, generator=g)
        bar = tqdm(range(0, n, args.batch_size), desc=f"{label} epoch {epoch}/{args.epochs}", leave=False,
                   file=sys.stderr, disable=args.quiet)
        total, seen, t0 = 0.0, 0, time.perf_counter()
        for i in bar:
            s, _ = to_logit(train_v[perm[i:i + args.batch_size]], levels, g, args.logit_alpha)
            opt.zero_grad(set_to_none=True)
            out = self_normalizing_objective(q, s.float(), lam=args.lam, exact=exact)
            out.loss.backward()
            opt.step()
            total += float(out.loss.detach()) * len(s)
            seen += len(s)
            bar.set_postfix(loss=f"{total / seen:.2f}")
        epoch_seconds.append(time.perf_counter() - t0)
        row = {"epoch": epoch, "train_loss": total / seen, "seconds": epoch_seconds[-1]}
        if epoch == args.epochs or epoch % max(1, args.epochs // 5) == 0:
            row.update(evaluate(q, *test))
        history.append(row)
        if not args.quiet:
            tqdm.write(f"{label:5s} epoch {epoch:3d}  loss {row['train_loss']:9.2f}  {row['seconds']:6.2f} s"
                       + (f"  test NLL {row['test_nll_nats']:8.2f} nats ({row['test_bits_per_dim']:.3f} bits/dim)"
                          if "test_nll_nats" in row else ""), file=sys.stderr)
    final = evaluate(q, *test)
    final.update({"seconds_per_epoch": float(np.mean(epoch_seconds)), "history": history})
    return final


def sample_agreement(q: Flow, n: int = 500, seed: int = 1) -> float:
    """Max over samples of ‖x_R − x_exact‖ / mean ‖x_exact‖ (logit space): sampling through R vs the exact solve."""
    q.transform.eval()
    z = torch.randn(n, q.base.event_shape[0], generator=torch.Generator().manual_seed(seed))
    a, b = z, z
    with torch.no_grad():
        for t in q.transform.transforms:
            a = t(a)[0]
            b = t(b, exact=False)[0] if isinstance(t, SelfNormLinear) else t(b)[0]
    return float((a - b).norm(dim=-1).max() / a.norm(dim=-1).mean())


@dataclass(frozen=True)
class SnfConfig:
    """The settings of ``python -m experiments.tasks.snf`` (its flags)."""

    dataset: str = option("digits", "pixels to model", choices=("digits", "mnist"))
    epochs: int = option(20, "training epochs", type=positive())
    layers: int = option(2, "number of SNF-Linear + LeakyReLU blocks (plus one SNF)", type=int)
    batch_size: int = option(DEFAULT_BATCH, "batch size", type=positive())
    lr: float = option(DEFAULT_LR, "Adam learning rate", type=float)
    lam: float = option(DEFAULT_LAMBDA, "weight λ of the reconstruction term", type=float)
    logit_alpha: float = option(LOGIT_ALPHA, "α of the logit preprocessing", type=float)
    seed: int = common("seed", 0)
    threads: int = common("threads", 1)
    data_root: Optional[Path] = common("data_root", None)
    out: Optional[Path] = common("out", None, help="folder for results.json", required=True)
    quiet: bool = option(False, "no progress bar or per-epoch lines")

    def __post_init__(self) -> None:
        if self.layers < 0:
            raise ValueError("--layers must be non-negative")


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m experiments.tasks.snf", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_arguments(p, SnfConfig)
    try:
        args = config_from_args(SnfConfig, p.parse_args(argv))
    except ValueError as err:
        p.error(str(err))
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    train_v, test_v, levels = load_pixels(args.dataset, args.data_root)
    test = to_logit(test_v, levels, torch.Generator().manual_seed(12345), args.logit_alpha)  # one fixed dequantisation of the test set
    dim = train_v.size(1)
    results: dict[str, Any] = {}
    for label, exact in (("snf", False), ("exact", True)):
        q = make_model(dim, args.layers, args.seed)
        results[label] = train(q, train_v, levels, exact, args, test, label)
        results[label]["r_vs_exact_sample_error"] = sample_agreement(q)

    out = {
        "experiment": "snf", "dataset": args.dataset, "dim": dim, "levels": levels,
        "train_size": len(train_v), "test_size": len(test_v),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "models": results,
        "speedup_per_epoch": results["exact"]["seconds_per_epoch"] / results["snf"]["seconds_per_epoch"],
        "wall_seconds": time.perf_counter() - t_start,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(out, indent=2), args.out / "results.json")

    print(f"{args.dataset}: D = {dim}, {len(train_v)} train / {len(test_v)} test, {args.epochs} epochs, "
          f"λ = {args.lam}, {args.layers + 1} SNF layers")
    print(f"{'model':6s} {'test NLL (nats)':>16s} {'bits/dim':>9s} {'s/epoch':>8s} {'max ‖h−RWh‖²/D':>15s} "
          f"{'R-vs-exact samples':>19s}")
    for label in ("snf", "exact"):
        r = results[label]
        print(f"{label:6s} {r['test_nll_nats']:16.2f} {r['test_bits_per_dim']:9.3f} {r['seconds_per_epoch']:8.2f} "
              f"{max(r['reconstruction_per_dim']):15.2e} {r['r_vs_exact_sample_error']:19.2e}")
    print(f"time per epoch, exact / SNF: {out['speedup_per_epoch']:.2f}x; results in {args.out / 'results.json'}")
    return out


if __name__ == "__main__":
    main()
