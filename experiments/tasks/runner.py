"""Running one configured command (``density``, ``graph-recon``, ``graph-gen``; a
:class:`~experiments.run.config.RunConfig`): load its data, make a job per seed and hand them to
:func:`experiments.run.protocol.run`. The command line, the main job and ``reproduce`` all call
:func:`run_command`. A new task adds its loader and job to :data:`TASKS` (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import torch

from experiments import datasets as ds
from experiments.models import paper_name
from experiments.run import distributed as D
from experiments.run.config import RunConfig
from experiments.run.protocol import Job, run
from experiments.run.result import RunResult
from experiments.tasks.density import DensityJob
from experiments.tasks.graph_gen import GraphGenJob
from experiments.tasks.graph_recon import GraphReconJob


class Prepared(NamedTuple):
    """A command's data, loaded: the config resolved against it, a job per seed, and a note on the data."""

    cfg: RunConfig
    make_job: Callable[[RunConfig, int], Job]
    note: str


def _density(cfg: RunConfig) -> Prepared:
    data = ds.load_density(cfg.dataset, cfg.data_root, verify=not cfg.no_verify_data)
    return Prepared(cfg, lambda c, seed: DensityJob(c, data, seed), data.note)


def _graph_recon(cfg: RunConfig) -> Prepared:
    data = ds.load_graph(cfg.dataset, cfg.data_root, verify=not cfg.no_verify_data)
    cfg = cfg.replace(latent_dim=cfg.latent_dim or data.latent_dim)
    return Prepared(cfg, lambda c, seed: GraphReconJob(c, data, seed), data.summary())


def _graph_gen(cfg: RunConfig) -> Prepared:
    train, test, kind = ds.load_graph_set(cfg.dataset)
    return Prepared(cfg, lambda c, seed: GraphGenJob(c, train, test, kind, seed),
                    f"{len(train)} train / {len(test)} test graphs ({kind})")


#: per command, how its data is loaded and its jobs are made
TASKS: dict[str, Callable[[RunConfig], Prepared]] = {"density": _density, "graph-recon": _graph_recon,
                                                      "graph-gen": _graph_gen}


def default_out(cfg: RunConfig) -> Path:
    """``runs/<command>/<dataset>-<model>-<flow>-d<latent_dim>``: where a run goes without ``--out``."""
    return Path("runs") / cfg.command / f"{cfg.dataset}-{cfg.model}-{cfg.flow}-d{cfg.latent_dim}"


def run_command(cfg: RunConfig) -> RunResult:
    """Run one configured command; its :class:`~experiments.run.result.RunResult`, whose ``config`` is the
    resolved ``cfg`` (the dataset's latent dimension where ``cfg.latent_dim`` is ``None``, the default ``--out``)."""
    torch.set_num_threads(cfg.threads)
    D.init_from_env(cfg.device)
    describe = f"{cfg.command} {cfg.dataset} {paper_name(cfg.model, cfg.flow)}"
    prepared = TASKS[cfg.command](cfg)
    cfg = prepared.cfg.replace(out=prepared.cfg.out or default_out(prepared.cfg))
    return run(cfg.command, cfg, lambda seed: prepared.make_job(cfg, seed), describe=describe,
               progress=not cfg.no_progress, data_note=prepared.note)
