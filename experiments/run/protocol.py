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

from experiments.run import distributed as D
from experiments.run.config import RUN_DEFINING, RunConfig

#: which metrics go into ``summary`` for each command (the names other tools rely on)
SUMMARY_METRICS = {
    "density": ("test_ll",),
    "graph-recon": ("auc", "ap", "auc_at_best_val", "ap_at_best_val", "best_val_epoch", "map", "distortion",
                    "depth_spearman"),
    "graph-gen": ("accuracy", "avg_triangles", "avg_clustering", "mmd_degree", "mmd_clustering", "mmd_spectral",
                  "accuracy_lcc", "avg_triangles_lcc", "avg_clustering_lcc", "edges_per_node", "lcc_share"),
}


class StopRequested(RuntimeError):
    """Raised by the hidden ``--stop-after N`` option once epoch ``N`` is checkpointed (simulates a kill)."""


class RunError(ValueError):
    """A run cannot start or continue as asked (a different config on ``--resume``, unreadable checkpoints); the
    message says what was found and what to do. The command line prints it and exits with 2."""


class Interrupted(StopRequested):
    """Raised after Ctrl-C (SIGINT): the epoch in progress (``epoch`` of ``epochs``) was finished and checkpointed
    to ``checkpoint``; ``--resume`` continues."""

    def __init__(self, epoch: int, epochs: int, checkpoint: Path) -> None:
        self.epoch, self.epochs, self.checkpoint = epoch, epochs, checkpoint
        super().__init__(f"interrupted after epoch {epoch} of {epochs}; the checkpoint {checkpoint} holds it: "
                         "run the same command with --resume to continue")


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

    def artifacts(self, folder: Path, history: list[dict]) -> dict[str, Any]:
        """Plots and other files of this seed; returns extra JSON-able data for ``results.json``."""
        return {}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def adam(params, lr: float, *, weight_decay: float = 0.0, capturable: bool = False) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` (``weight_decay=0``) or, with ``weight_decay=λ > 0``, ``torch.optim.AdamW``: Adam with
    decoupled weight decay (Loshchilov & Hutter 2019), each step ``θ ← θ − lr·λ·θ`` besides the Adam update
    ``θ ← θ − lr·m̂/(√v̂ + ε)``, for every parameter that has a gradient. Fused (one kernel for all parameters)
    where torch has a fused kernel for these parameters (CPU and CUDA floating-point tensors, torch >= 2.4), the
    loop implementation otherwise.

    ``capturable=True`` keeps the step count on the device, so the update can be captured in a CUDA graph
    (:class:`experiments.run.steps.TrainStep`). The same update rule; for the small models of the graph runs the fused step is about 4× faster (0.13 vs
    0.57 ms for a 2-layer WHC graph VAE on this 2-core machine), which is a few percent of an epoch.

    Example:
        >>> opt = adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
        >>> type(opt).__name__, opt.defaults["lr"]
        ('Adam', 0.001)
        >>> type(adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3, weight_decay=0.1)).__name__
        'AdamW'
    """
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0; got {weight_decay}")
    params = list(params)
    cls, extra = (torch.optim.AdamW, {"weight_decay": weight_decay}) if weight_decay > 0 else (torch.optim.Adam, {})
    # torch checks devices and dtypes for the fused kernel only at the first step, so check them here
    if all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        try:
            return cls(params, lr=lr, fused=True, capturable=capturable, **extra)
        except (RuntimeError, TypeError, ValueError):  # a torch without a fused CPU kernel (< 2.4)
            pass
    return cls(params, lr=lr, capturable=capturable, **extra)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_synced(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path``, flushed to the disk."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path.tmp`` then ``os.replace``: a reader never sees a half-written checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    _save_synced(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def versions() -> dict[str, str]:
    from importlib import metadata

    try:
        lib = metadata.version("riemannian-flows")
    except metadata.PackageNotFoundError:
        lib = "0.1.0 (not installed)"
    out = {"riemannian-flows": lib, "torch": torch.__version__, "python": platform.python_version(),
           "numpy": np.__version__}
    try:
        import torch_geometric

        out["torch_geometric"] = torch_geometric.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for one seed) over **all** seeds."""
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": int(len(a))}


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


def previous_checkpoint(ckpt: Path) -> Path:
    """Where the checkpoint before ``ckpt`` is kept (``checkpoint.prev.pt``)."""
    return ckpt.with_name(ckpt.stem + ".prev" + ckpt.suffix)


def save_checkpoint(state: dict[str, Any], ckpt: Path) -> None:
    """Write ``ckpt`` atomically and keep the one it replaces as :func:`previous_checkpoint` (so a checkpoint
    damaged after it was written, or a crash between the two renames, still leaves one to resume from)."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    _save_synced(state, tmp)
    if ckpt.exists():
        os.replace(ckpt, previous_checkpoint(ckpt))
    os.replace(tmp, ckpt)


def load_checkpoint(ckpt: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint of a seed: ``ckpt``, else the one kept back; ``None`` if neither exists.

    Raises:
        RunError: checkpoints exist but none can be read (the message names them and what to do).
    """
    problems = []
    for path in (ckpt, previous_checkpoint(ckpt)):
        if not path.exists():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or not {"job", "epoch", "history", "rng"} <= set(state):
                raise ValueError("it is not a checkpoint of this program")
        except Exception as err:  # a truncated or foreign file: EOFError, RuntimeError (zip), UnpicklingError, ...
            problems.append(f"{path} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'empty'})")
            print(f"warning: cannot read the checkpoint {path}; trying the one before it", file=sys.stderr)
            continue
        if problems:
            print(f"resuming from {path} (epoch {state['epoch']})", file=sys.stderr)
        return state
    if problems:
        raise RunError(f"no readable checkpoint for this seed: {'; '.join(problems)}. Delete {ckpt.parent} to "
                       "train this seed again from the start (the other seeds are kept), then run with --resume")
    return None


def train_seed(job: Job, folder: Path, *, resume: bool, checkpoint_every: int, stop_after: int | None,
               desc: str, progress: bool = True) -> tuple[dict[str, float], list[dict], float]:
    """Train ``job`` to its last epoch (resuming from ``folder/checkpoint.pt`` if asked) and evaluate it.

    Returns ``(metrics, history, wall_s)`` where ``wall_s`` counts the training and evaluation time of this
    seed over all its invocations (a resumed run adds to the time saved in its checkpoint).
    """
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "checkpoint.pt"
    start, history, elapsed = 0, [], 0.0
    state = load_checkpoint(ckpt) if resume else None
    if state is not None:
        job.load_state_dict(state["job"])
        start, history, elapsed = state["epoch"], state["history"], state["wall_s"]
        set_rng_state(state["rng"][D.rank()] if D.world_size() == len(state["rng"]) else state["rng"][0])
    t0 = time.perf_counter()
    bar = tqdm(range(start, job.epochs), initial=start, total=job.epochs, desc=desc, leave=False,
               disable=not (progress and D.is_main()), dynamic_ncols=True, mininterval=0.5, file=sys.stderr)
    pending: list[dict] = []  # records whose values are still tensors on the device
    with deferred_interrupt() as interrupt:
        _train_epochs(job, bar, history, pending, ckpt, checkpoint_every, stop_after, interrupt, elapsed, t0)
    bar.close()
    metrics = job.evaluate()
    wall = elapsed + time.perf_counter() - t0
    return metrics, history, wall


def _train_epochs(job: Job, bar, history: list[dict], pending: list[dict], ckpt: Path, checkpoint_every: int,
                  stop_after: int | None, interrupt: dict[str, bool], elapsed: float, t0: float) -> None:
    """The epoch loop of :func:`train_seed` (appends to ``history``): train, read the losses in batches,
    checkpoint; stop (with a checkpoint) after ``--stop-after`` or a Ctrl-C."""
    for epoch in bar:
        rec = job.train_epoch(epoch)
        rec["epoch"] = epoch
        history.append(rec)
        pending.append(rec)
        done = epoch + 1
        interrupted = interrupt["hit"] and done < job.epochs
        stop = (stop_after is not None and done >= stop_after and done < job.epochs) or interrupted
        checkpoint = done % checkpoint_every == 0 or stop
        if checkpoint or done == job.epochs or len(pending) >= READ_EVERY:
            read_records(pending)  # one host read for the whole batch of epochs
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
                save_checkpoint({"job": job.state_dict(), "epoch": done, "history": history, "rng": rngs,
                                 "wall_s": elapsed + time.perf_counter() - t0}, ckpt)
            D.barrier()
        if interrupted:
            bar.close()
            raise Interrupted(done, job.epochs, ckpt)
        if stop:
            bar.close()
            raise StopRequested(f"stopped after epoch {done} as asked (--stop-after); continue with --resume")


#: the file in ``--out`` that records the settings of the run that made it
CONFIG_FILE = "config.json"


def saved_config(out: Path) -> dict[str, Any] | None:
    """The settings recorded in ``out`` (``results.json`` of a finished run, else ``config.json``), or ``None``."""
    for name in ("results.json", CONFIG_FILE):
        path = out / name
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except ValueError as err:
                raise RunError(f"{path} is not readable JSON ({err}); move it away to resume without the check, "
                               "or use another --out") from None
            return data.get("config", data) if name == "results.json" else data
    return None


def check_same_run(out: Path, config: RunConfig) -> None:
    """Raise :class:`RunError` naming every field of :data:`RUN_DEFINING` whose value differs from the one recorded
    in ``out``.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> _ = (out / CONFIG_FILE).write_text(json.dumps({"flow": "none", "lr": 0.001}))
        >>> check_same_run(out, RunConfig.for_command("graph-recon", flow="whc", lr=0.001))
        Traceback (most recent call last):
        ...
        experiments.run.protocol.RunError: --resume: the run in ... was made with other settings: flow 'none' there, 'whc' now. ...
    """
    saved = saved_config(out)
    if saved is None:
        return
    now = _jsonable(config.defining())
    diff = [f"{f} {saved[f]!r} there, {now[f]!r} now" for f in RUN_DEFINING
            if f in now and f in saved and now[f] != saved[f]]
    if diff:
        raise RunError(f"--resume: the run in {out} was made with other settings: {'; '.join(diff)}. Resume with "
                       "its settings, or give another --out for a new run")


def run(command: str, config: RunConfig, make_job: Callable[[int], Job], *,
        describe: str = "", progress: bool = True) -> dict[str, Any]:
    """Run ``config.seeds`` seeds of a task and write ``results.json`` and a CSV row (main process only).

    Seeds are ``seed, seed+1, …``; each has ``<out>/seed<k>/`` with its checkpoint, ``metrics.json``, history
    and plots. With ``resume`` finished seeds are read back and an unfinished one continues from its checkpoint;
    without it the folder's previous seeds are discarded.
    """
    out = Path(config.out)
    resume = config.resume
    seeds = [config.seed + i for i in range(config.seeds)]
    if resume:
        check_same_run(out, config)
        finished = _finished_results(out, seeds)
        if finished is not None:
            if D.is_main():
                print(f"[{describe}] already finished: {len(seeds)} seed(s) in {out / 'results.json'} (nothing "
                      "trained, no CSV row added)", file=sys.stderr, flush=True)
            return finished
    with run_lock(out):
        if D.is_main():
            out.mkdir(parents=True, exist_ok=True)
            if not resume:
                _clear_previous_run(out, overwrite=config.overwrite)
            if not resume or not (out / CONFIG_FILE).exists():
                atomic_write_text(json.dumps(_jsonable(config.to_json()), indent=2), out / CONFIG_FILE)
        D.barrier()
        return _run_seeds(command, config, make_job, out, seeds, resume, describe, progress)


#: what a run writes in ``--out`` besides its ``seed<k>/`` folders: all that ``--overwrite`` may delete
RUN_FILES = (CONFIG_FILE, "results.json", "training_curves.png", "baselines.json")  # baselines.json: graph-gen
_SEED_DIR = re.compile(r"seed\d+")


def _run_seed_dirs(out: Path) -> list[Path]:
    """The ``seed<k>/`` folders of a run in ``out`` (``seed`` and digits only: ``seedlings/`` is not one)."""
    return [p for p in out.iterdir() if p.is_dir() and _SEED_DIR.fullmatch(p.name)] if out.is_dir() else []


def _clear_previous_run(out: Path, *, overwrite: bool) -> None:
    """Before a new run in ``out``: refuse if another run's files are there (unless ``overwrite``, which deletes
    those files and nothing else)."""
    own = [out / f for f in RUN_FILES if (out / f).exists()] + _run_seed_dirs(out)
    if not own:
        return
    if not overwrite:
        names = ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in own))
        raise RunError(f"{out} already holds a run ({names}): continue it with --resume, replace it with "
                       "--overwrite (which deletes only those files), or choose another --out")
    for path in own:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``<out>/.run.lock`` (an exclusive ``fcntl`` lock) for the run: a second run in the same ``--out``
    stops at once with :class:`RunError` instead of overwriting the first one's files. Under ``torchrun`` rank 0
    holds it."""
    if not D.is_main():
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".run.lock", "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"another run is using {out} (it holds {out / '.run.lock'}); wait for it to finish or "
                           "choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _run_seeds(command: str, config: RunConfig, make_job: Callable[[int], Job], out: Path, seeds: list[int],
               resume: bool, describe: str, progress: bool) -> dict[str, Any]:
    """The seeds of :func:`run`, then ``results.json``, the CSV row and the training curves."""
    per_seed: list[dict[str, Any]] = []
    extras: dict[str, Any] = {}
    t_start = time.perf_counter()
    for seed in seeds:
        folder = out / f"seed{seed}"
        done_file = folder / "metrics.json"
        if resume and done_file.exists():
            per_seed.append(json.loads(done_file.read_text()))
            continue
        seed_everything(seed)
        job = make_job(seed)
        every = config.checkpoint_every or max(1, job.epochs // 20)
        metrics, history, wall = train_seed(job, folder, resume=resume, checkpoint_every=every,
                                            stop_after=config.stop_after,
                                            desc=f"{describe} seed {seed}", progress=progress)
        record = {"seed": seed, "wall_s": wall, **metrics}
        if D.is_main():
            extra = job.artifacts(folder, history)
            if extra:
                extras[str(seed)] = extra
            atomic_write_text(json.dumps(_jsonable(history)), folder / "history.json")
            atomic_write_text(json.dumps(_jsonable(record), indent=2), done_file)
            (folder / "checkpoint.pt").unlink(missing_ok=True)
            previous_checkpoint(folder / "checkpoint.pt").unlink(missing_ok=True)
            shown = ", ".join(f"{k}={metrics[k]:.4g}" for k in SUMMARY_METRICS[command] if k in metrics)
            print(f"[{describe}] seed {seed}: {shown} ({wall:.1f} s)", file=sys.stderr, flush=True)
        D.barrier()
        per_seed.append(record)
    results = {
        "command": command,
        "config": _jsonable(config.to_json()),
        "metrics": per_seed,
        "summary": {k: mean_std([r[k] for r in per_seed]) for k in SUMMARY_METRICS[command]
                    if all(k in r for r in per_seed)},
        "wall_s": float(sum(r["wall_s"] for r in per_seed)),
        "invocation_wall_s": time.perf_counter() - t_start,
        "world_size": D.world_size(),
        "versions": versions(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if extras:
        results["extras"] = _jsonable(extras)
    if D.is_main():
        atomic_write_text(json.dumps(_jsonable(results), indent=2), out / "results.json")
        append_csv(results, Path(config.csv or out.parent / "results.csv"))
        from experiments.plots import training_curves

        training_curves([json.loads((out / f"seed{s}" / "history.json").read_text())
                         if (out / f"seed{s}" / "history.json").exists() else [] for s in seeds],
                        out / "training_curves.png", title=describe)
    D.barrier()
    return results


def _finished_results(out: Path, seeds: list[int]) -> dict[str, Any] | None:
    """``results.json`` of ``out`` if it already holds every one of ``seeds``, else ``None``."""
    path = out / "results.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    done = {r.get("seed") for r in results.get("metrics", [])}
    return results if set(seeds) <= done and all((out / f"seed{s}" / "metrics.json").exists() for s in seeds) \
        else None


CSV_METRICS = ("auc", "ap", "test_ll", "accuracy")
CSV_FIELDS = ["finished", "command", "dataset", "model", "flow", "latent_dim", "epochs", "seeds", "world_size",
              *[f"{m}{suffix}" for m in CSV_METRICS for suffix in ("", "_std")], "wall_s", "out"]


def append_csv(results: dict[str, Any], path: Path) -> None:
    """Append one row per run (means and stds of the headline metrics) under an exclusive ``fcntl`` lock, so runs
    that share a CSV never interleave; the header is written once, by whoever finds the file empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = results["config"]
    row = {"finished": results["finished"], "command": results["command"], "dataset": cfg["dataset"],
           "model": cfg["model"], "flow": cfg["flow"], "latent_dim": cfg["latent_dim"], "epochs": cfg["epochs"],
           "seeds": cfg["seeds"], "world_size": results["world_size"], "wall_s": f"{results['wall_s']:.1f}",
           "out": cfg["out"]}
    for m, s in results["summary"].items():
        if m in CSV_METRICS:
            row[m], row[f"{m}_std"] = f"{s['mean']:.6g}", f"{s['std']:.6g}"
    with open(path, "a", newline="") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # runs sharing one CSV append one at a time
        try:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            if f.seek(0, os.SEEK_END) == 0:  # empty: the first writer writes the header, under the lock
                w.writeheader()
            w.writerow(row)
            f.flush()
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
