"""What every run does: seeds, the epoch loop with a progress bar, atomic checkpoints and ``--resume``,
``results.json`` (config, per-seed metrics, mean ± std summary, wall time, versions) and a CSV row.

A task (density, graph reconstruction, graph generation) is a :class:`Job` per seed: it builds its model from
the seed, trains one epoch at a time, exposes ``state_dict``/``load_state_dict`` and finally evaluates. The loop
here saves a checkpoint (model, optimisers, RNG states, epoch, history) every ``checkpoint_every`` epochs, by
writing a temporary file and renaming it, so an interrupted run resumes from the last checkpoint and replays
the remaining epochs exactly.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from experiments.plots import training_curves
from experiments.run import distributed as D
from experiments.run.checkpoints import load_checkpoint, previous_checkpoint, save_checkpoint
from experiments.run.config import RunConfig
from experiments.run.errors import Interrupted, RunError, StopRequested  # noqa: F401  (RunError: re-exported)
from experiments.run.files import atomic_write_text, check_writable, file_errors, read_json
from experiments.run.locks import run_lock
from experiments.run.result import RESULTS_FILE, RunResult, append_csv, jsonable, mean_std, versions
from experiments.run.resume import CONFIG_FILE, check_same_run, clear_previous_run, finished_result
from experiments.run.seeding import rng_state, seed_everything, set_rng_state

#: which metrics go into ``summary`` for each command (the names other tools rely on)
SUMMARY_METRICS = {
    "density": ("test_ll",),
    "graph-recon": ("auc", "ap", "auc_at_best_val", "ap_at_best_val", "best_val_epoch", "map", "distortion",
                    "depth_spearman"),
    "graph-gen": ("accuracy", "avg_triangles", "avg_clustering", "mmd_degree", "mmd_clustering", "mmd_spectral",
                  "accuracy_lcc", "avg_triangles_lcc", "avg_clustering_lcc", "edges_per_node", "lcc_share"),
}


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[dict[str, bool]]:
    """Within the block, Ctrl-C (SIGINT) sets ``flag["hit"]`` instead of raising, so the training loop can finish
    the epoch in progress, write a checkpoint and stop cleanly; a second Ctrl-C raises ``KeyboardInterrupt`` at
    once. Outside the main thread, or under ``torchrun`` (whose ranks must stop at the same epoch), SIGINT keeps its
    usual meaning."""
    flag = {"hit": False}
    if threading.current_thread() is not threading.main_thread() or D.is_distributed():
        yield flag
        return

    def handler(signum, frame) -> None:
        if flag["hit"]:
            raise KeyboardInterrupt
        flag["hit"] = True
        print("\ninterrupted: finishing this epoch and writing a checkpoint (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class Job:
    """One seeded training run of a task. Subclasses set ``epochs`` and implement the methods below."""

    epochs: int = 0
    #: name of the metric shown live in the progress bar (a key of the per-epoch record)
    live_metric: str | None = None

    def train_epoch(self, epoch: int) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def optional_metrics(self) -> dict[str, float]:
        """Metrics computed after the seed's results are on disk (costly ones a run must not be lost to, e.g. the
        graph's hierarchy metrics): a failure is reported in one line and the run keeps :meth:`evaluate`'s."""
        return {}

    def artifacts(self, folder: Path, history: list[dict]) -> dict[str, Any]:
        """Plots and other files of this seed; returns extra JSON-able data for ``results.json``."""
        return {}


#: epochs between host reads of the training losses (a step's terms stay on the device until then)
READ_EVERY = 50


def read_records(records: list[dict]) -> None:
    """Replace the tensor values of ``records`` (per-epoch losses left on the device) by Python floats, in place,
    with one host read for all of them.

    Example:
        >>> recs = [{"loss": torch.tensor(1.5)}, {"loss": torch.tensor(0.5), "k": 4.0}]
        >>> read_records(recs); recs
        [{'loss': 1.5}, {'loss': 0.5, 'k': 4.0}]
    """
    slots = [(r, key) for r in records for key, v in r.items() if torch.is_tensor(v)]
    if not slots:
        return
    values = torch.stack([r[key].detach().reshape(()).to(torch.float64) for r, key in slots]).tolist()
    for (r, key), v in zip(slots, values):
        r[key] = v


def diverged(records: list[dict]) -> dict | None:
    """The first of ``records`` (values already read to the host) whose loss is not finite, or ``None``.

    Example:
        >>> diverged([{"loss": 1.0, "epoch": 0}, {"loss": float("nan"), "epoch": 1}])
        {'loss': nan, 'epoch': 1}
    """
    return next((r for r in records if isinstance(r.get("loss"), float) and not math.isfinite(r["loss"])), None)


#: the settings that make a run diverge most often (named in its error where they differ from the defaults)
DIVERGENCE_SUSPECTS = ("lr", "weight_decay", "kl_weight", "final_radius", "flow_layers")


def suspects(config: RunConfig) -> str:
    """The settings of ``config`` most likely to make a loss non-finite: those of :data:`DIVERGENCE_SUSPECTS` that
    differ from the command's defaults, as flags (``--weight-decay 1e+04``); else the learning rate.

    Example:
        >>> suspects(RunConfig.for_command("graph-recon", weight_decay=1e4))
        '--weight-decay 1e+04'
    """
    base = RunConfig.defaults(config.command)
    odd = [f for f in DIVERGENCE_SUSPECTS if getattr(config, f) != base.get(f)] or ["lr"]
    return ", ".join(f"--{f.replace('_', '-')} {getattr(config, f):.3g}" for f in odd)


def finite_state(state: Any) -> bool:
    """Whether every floating tensor in ``state`` (nested dicts and lists, e.g. a job's ``state_dict``) is finite.
    Called only where a checkpoint is about to be written (which copies every tensor to the host anyway), so that a
    gradient that turned non-finite while the loss was still finite never reaches a checkpoint.

    Example:
        >>> finite_state({"model": {"w": torch.ones(2)}, "opt": [torch.tensor(float("inf"))]})
        False
    """
    flags: dict[torch.device, list[torch.Tensor]] = {}
    for t in _floating_tensors(state):
        flags.setdefault(t.device, []).append(torch.isfinite(t).all())
    return all(bool(torch.stack(f).all()) for f in flags.values())  # one read per device


def _floating_tensors(state: Any) -> Iterator[torch.Tensor]:
    if torch.is_tensor(state):
        if state.is_floating_point():
            yield state.detach()
    elif isinstance(state, dict):
        for v in state.values():
            yield from _floating_tensors(v)
    elif isinstance(state, (list, tuple)):
        for v in state:
            yield from _floating_tensors(v)


def _diverged(what: str, epoch: int, blame: str, ckpt: Path) -> RunError:
    """The one-line error of a run that diverged at (0-based) ``epoch``."""
    kept = f"the last finite checkpoint, {ckpt}, is kept" if ckpt.exists() else "no checkpoint was written before"
    return RunError(f"the run diverged at epoch {epoch + 1}: {what}; most likely from {blame}: lower it and run "
                    f"again with --overwrite ({kept})")


def train_seed(job: Job, folder: Path, *, resume: bool, checkpoint_every: int, stop_after: int | None,
               desc: str, progress: bool = True, flow: str | None = None,
               blame: str = "the learning rate") -> tuple[dict[str, float], list[dict], float]:
    """Train ``job`` to its last epoch (resuming from ``folder/checkpoint.pt`` if asked) and evaluate it.

    ``flow`` (the registered flow's name) is recorded in each checkpoint and a checkpoint of another is refused;
    ``blame`` names the settings a non-finite loss is reported with.
    Returns ``(metrics, history, wall_s)`` where ``wall_s`` counts the training and evaluation time of this
    seed over all its invocations (a resumed run adds to the time saved in its checkpoint).

    Raises:
        RunError: the loss turned non-finite (the run stops at the next host read of the losses, before any
            checkpoint of a non-finite state: the last checkpoint is finite and kept).
    """
    with file_errors(folder, "create", "make --out writable or give another --out"):
        folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "checkpoint.pt"
    start, history, elapsed = 0, [], 0.0
    state = load_checkpoint(ckpt, job.load_state_dict, flow) if resume else None
    if state is not None:
        start, history, elapsed = state["epoch"], state["history"], state["wall_s"]
        set_rng_state(state["rng"][D.rank()] if D.world_size() == len(state["rng"]) else state["rng"][0])
    t0 = time.perf_counter()
    bar = tqdm(range(start, job.epochs), initial=start, total=job.epochs, desc=desc, leave=False,
               disable=not (progress and D.is_main()), dynamic_ncols=True, mininterval=0.5, file=sys.stderr)
    pending: list[dict] = []  # records whose values are still tensors on the device
    with deferred_interrupt() as interrupt:
        _train_epochs(job, bar, history, pending, ckpt, checkpoint_every, stop_after, interrupt, elapsed, t0,
                      flow, blame)
    bar.close()
    try:
        metrics = job.evaluate()
    except FloatingPointError as err:  # the final evaluation's host read found non-finite scores
        raise _diverged(f"non-finite ({str(err).split(':')[0]})", job.epochs - 1, blame, ckpt) from None
    wall = elapsed + time.perf_counter() - t0
    return metrics, history, wall


def _train_epochs(job: Job, bar, history: list[dict], pending: list[dict], ckpt: Path, checkpoint_every: int,
                  stop_after: int | None, interrupt: dict[str, bool], elapsed: float, t0: float,
                  flow: str | None = None, blame: str = "the learning rate") -> None:
    """The epoch loop of :func:`train_seed` (appends to ``history``): train, read the losses in batches (the
    only host syncs; a non-finite loss is caught there), checkpoint; stop (with a checkpoint) after
    ``--stop-after`` or a Ctrl-C."""
    for epoch in bar:
        try:
            rec = job.train_epoch(epoch)
        except FloatingPointError as err:  # a host read of the epoch (an evaluation) found non-finite values
            bar.close()
            raise _diverged(f"non-finite ({str(err).split(':')[0]})", epoch, blame, ckpt) from None
        rec["epoch"] = epoch
        history.append(rec)
        pending.append(rec)
        done = epoch + 1
        interrupted = interrupt["hit"] and done < job.epochs
        stop = (stop_after is not None and done >= stop_after and done < job.epochs) or interrupted
        checkpoint = done % checkpoint_every == 0 or stop
        if checkpoint or done == job.epochs or len(pending) >= READ_EVERY:
            read_records(pending)  # one host read for the whole batch of epochs
            bad = diverged(pending)
            if bad is not None:  # checked before this epoch's checkpoint: the one on disk is the last finite state
                bar.close()
                raise _diverged(f"the training loss {bad['loss']}", bad["epoch"], blame, ckpt)
            pending.clear()
            post = {"loss": f"{rec['loss']:.4g}"}
            live = job.live_metric
            if live is not None:
                last = next((h[live] for h in reversed(history) if live in h), None)
                if last is not None:
                    post[live] = f"{last:.4g}"
            bar.set_postfix(post, refresh=False)
        if checkpoint:
            rngs = D.all_gather_object(rng_state())
            if D.is_main():
                state = job.state_dict()
                if not finite_state(state):  # a gradient turned non-finite while the loss was still finite
                    bar.close()
                    raise _diverged("non-finite parameters or optimiser state (a non-finite gradient)", epoch, blame,
                                    ckpt)
                save_checkpoint({"job": state, "flow": flow, "epoch": done, "history": history, "rng": rngs,
                                 "wall_s": elapsed + time.perf_counter() - t0}, ckpt)
            D.barrier()
        if interrupted:
            bar.close()
            raise Interrupted(done, job.epochs, ckpt)
        if stop:
            bar.close()
            raise StopRequested(f"stopped after epoch {done} as asked (--stop-after); continue with --resume")


def run(command: str, config: RunConfig, make_job: Callable[[int], Job], *,
        describe: str = "", progress: bool = True, data_note: str = "") -> RunResult:
    """Run ``config.seeds`` seeds of a task and write ``results.json`` and a CSV row (main process only).

    Seeds are ``seed, seed+1, …``; each has ``<out>/seed<k>/`` with its checkpoint, ``metrics.json``, history
    and plots. With ``resume`` finished seeds are read back and an unfinished one continues from its checkpoint;
    without it the folder's previous seeds are discarded. ``data_note`` (what the data was) goes into the result.
    """
    out = Path(config.out)
    resume = config.resume
    seeds = [config.seed + i for i in range(config.seeds)]
    if D.is_main():  # before any training: a run must not train to the end and then lose its results
        check_writable(out, Path(config.csv or out.parent / "results.csv"))
    if resume:
        check_same_run(out, config)
        finished = finished_result(out, seeds)
        if finished is not None:
            if D.is_main():
                print(f"[{describe}] already finished: {len(seeds)} seed(s) in {out / RESULTS_FILE} (nothing "
                      "trained, no CSV row added)", file=sys.stderr, flush=True)
            return finished
    with run_lock(out):
        if D.is_main():
            out.mkdir(parents=True, exist_ok=True)
            if not resume:
                clear_previous_run(out, overwrite=config.overwrite)
            if not resume or not (out / CONFIG_FILE).exists():
                atomic_write_text(json.dumps(jsonable(config.to_json()), indent=2), out / CONFIG_FILE)
        D.barrier()
        t_start = time.perf_counter()
        per_seed, extras = [], {}
        for seed in seeds:
            per_seed.append(_run_seed(command, config, make_job, out / f"seed{seed}", seed, describe, progress,
                                      extras))
        result = RunResult(command=command, config=config, metrics=per_seed,
                           summary={k: mean_std([r[k] for r in per_seed]) for k in SUMMARY_METRICS[command]
                                    if all(k in r for r in per_seed)},
                           wall_s=float(sum(r["wall_s"] for r in per_seed)),
                           invocation_wall_s=time.perf_counter() - t_start, world_size=D.world_size(),
                           versions=versions(), finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           data_note=data_note, extras=jsonable(extras))
        if D.is_main():
            _write_run_files(result, out, seeds, describe)
        D.barrier()
        return result


def _run_seed(command: str, config: RunConfig, make_job: Callable[[int], Job], folder: Path, seed: int,
              describe: str, progress: bool, extras: dict[str, Any]) -> dict[str, Any]:
    """One seed of :func:`run` (read back if ``--resume`` finds it finished); its record ``{seed, wall_s,
    metrics...}``. What the job adds to ``results.json`` goes to ``extras[str(seed)]``."""
    done_file = folder / "metrics.json"
    if config.resume and done_file.exists():
        return read_json(done_file, keys=("seed",), fix=f"delete {folder} and run with --resume to train this seed "
                         "again")
    seed_everything(seed)
    job = make_job(seed)
    every = config.checkpoint_every or max(1, job.epochs // 20)
    metrics, history, wall = train_seed(job, folder, resume=config.resume, checkpoint_every=every,
                                        stop_after=config.stop_after, desc=f"{describe} seed {seed}",
                                        progress=progress, flow=None if config.flow == "none" else config.flow,
                                        blame=suspects(config))
    record = {"seed": seed, "wall_s": wall, **metrics}
    if D.is_main():  # the seed's results first: an optional metric or plot that fails afterwards cannot lose them
        atomic_write_text(json.dumps(jsonable(history)), folder / "history.json")
        atomic_write_text(json.dumps(jsonable(record), indent=2), done_file)
        (folder / "checkpoint.pt").unlink(missing_ok=True)
        previous_checkpoint(folder / "checkpoint.pt").unlink(missing_ok=True)
        record.update(_optional_metrics(job, done_file))
        metrics = record
        extra = job.artifacts(folder, history)
        if extra:
            extras[str(seed)] = extra
        shown = ", ".join(f"{k}={metrics[k]:.4g}" for k in SUMMARY_METRICS[command] if k in metrics)
        print(f"[{describe}] seed {seed}: {shown} ({wall:.1f} s)", file=sys.stderr, flush=True)
    D.barrier()
    return record


def _optional_metrics(job: Job, done_file: Path) -> dict[str, float]:
    """``job.optional_metrics()``, added to ``done_file`` (already holding the seed's metrics); ``{}`` with a
    one-line warning if it fails (the seed's results stay as written)."""
    try:
        extra = job.optional_metrics()
    except Exception as err:  # any failure of an optional metric (memory, a degenerate graph): the run is kept
        print(f"warning: the optional metrics of {done_file.parent} failed ({type(err).__name__}: "
              f"{str(err).splitlines()[0] if str(err) else ''}); its results in {done_file} are kept without them",
              file=sys.stderr, flush=True)
        return {}
    if extra:
        record = read_json(done_file, keys=("seed",))
        atomic_write_text(json.dumps(jsonable({**record, **extra}), indent=2), done_file)
    return extra


def _write_run_files(result: RunResult, out: Path, seeds: list[int], describe: str) -> None:
    """``results.json``, the CSV row and ``training_curves.png`` of a finished run."""
    result.save(out / RESULTS_FILE)
    append_csv(result, Path(result.config.csv or out.parent / "results.csv"))
    histories = [out / f"seed{s}" / "history.json" for s in seeds]
    training_curves([json.loads(h.read_text()) if h.exists() else [] for h in histories],
                    out / "training_curves.png", title=describe)
