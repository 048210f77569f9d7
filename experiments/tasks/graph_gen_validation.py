"""``python -m experiments.tasks.graph_gen_validation``: choose graph-gen's encoder input and schedule on validation graphs.

The last ``--val`` training graphs of a data set are held out (the test graphs are not touched); a
:class:`~experiments.tasks.graph_gen.GraphGenJob` is trained on the others for each ``(node_input, schedule)`` and
scored by :meth:`~experiments.tasks.graph_gen.GraphGenJob.validation_nll` on the held-out ones: ``ae_nll`` (nats per
graph, the decoder's NLL of the validation adjacency matrices given their encoder latents; the criterion) and
``flow_nll`` (the prior's NLL of those latents: comparable between runs of the same curvature and encoder only).
It prints one JSON line per run and writes them all to ``--json``.

Example:
    python -m experiments.tasks.graph_gen_validation --dataset trees --json runs/val_trees.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from experiments import datasets as ds
from experiments.constants import SCHEDULES
from experiments.run.config import RunConfig
from experiments.run.files import atomic_write_text, check_output
from experiments.run.options import add_config_arguments, common, config_from_args, option
from experiments.tasks.graph_gen import GraphGenJob
from vae.constants import NODE_INPUTS


def compare(dataset: str, settings: list[tuple[str, str]], *, seed: int = 0, val: int = 10, flow: str = "whc",
            epochs: int | None = None) -> list[dict]:
    """Train one job per ``(node_input, schedule)`` on the training graphs less the last ``val``, and return their
    :meth:`~experiments.tasks.graph_gen.GraphGenJob.validation_nll` on those ``val`` graphs (with the settings and
    wall time)."""
    train, test, kind = ds.load_graph_set(dataset)
    if not 0 < val < len(train):
        raise ValueError(f"--val must be between 1 and {len(train) - 1} (the training graphs); got {val}")
    fit, held = train[:-val], train[-val:]
    rows = []
    for node_input, schedule in settings:
        extra = {} if epochs is None else {"epochs": epochs}
        cfg = RunConfig.for_command("graph-gen", dataset=dataset, flow=flow, node_input=node_input,
                                    schedule=schedule, seed=seed, **extra)
        torch.manual_seed(seed)
        # the test graphs only set the adjacency rows' padding width (the data set's largest node count)
        job = GraphGenJob(cfg, fit, test, kind, seed)
        t0 = time.perf_counter()
        for epoch in range(job.epochs):
            job.train_epoch(epoch)
        row = {"dataset": dataset, "node_input": node_input, "schedule": schedule, "seed": seed, "val_graphs": val,
               **job.validation_nll(held), "wall_s": time.perf_counter() - t0}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


@dataclass(frozen=True)
class GraphGenValidationConfig:
    """The settings of ``python -m experiments.tasks.graph_gen_validation`` (its flags)."""

    dataset: str = option("trees", "graph-gen data set", choices=ds.GENERATION_DATASETS)
    seed: int = common("seed", 0)
    val: int = option(10, "training graphs held out for validation", type=int)
    epochs: Optional[int] = option(None, "--epochs of graph-gen (default: its default)", type=int)
    node_inputs: str = option("structural,adjacency", f"of {', '.join(NODE_INPUTS)}")
    schedules: str = option("paper,reference", f"of {', '.join(SCHEDULES)}")
    threads: int = common("threads", 1)
    json: Optional[Path] = option(None, "where to write the rows", type=Path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.tasks.graph_gen_validation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, GraphGenValidationConfig)
    args = config_from_args(GraphGenValidationConfig, p.parse_args(argv))
    torch.set_num_threads(args.threads)
    if args.json:
        check_output(args.json, "--json")
    settings = [(n, s) for n in args.node_inputs.split(",") for s in args.schedules.split(",")]
    rows = compare(args.dataset, settings, seed=args.seed, val=args.val, epochs=args.epochs)
    if args.json:
        atomic_write_text(json.dumps(rows, indent=2), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
