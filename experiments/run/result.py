"""``RunResult``: what one run of ``density``, ``graph-recon`` or ``graph-gen`` produced, as written to and read
from its ``results.json``: the resolved config, the per-seed metrics, their mean ± std summary, timings and
versions. Every reader (the command line's summary line, the main job, ``reproduce``'s report, the CSV) takes
this one type; older ``results.json`` files (the data note inside ``config``, fields missing) still read.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from experiments.run.config import RunConfig
from experiments.run.errors import RunError
from experiments.run.files import append_csv_row, atomic_write_text, read_json

RESULTS_FILE = "results.json"
#: the headline metrics of a run's CSV row (mean and std each), and the row's columns
CSV_METRICS = ("auc", "ap", "test_ll", "accuracy")
CSV_FIELDS = ["finished", "command", "dataset", "model", "flow", "latent_dim", "epochs", "seeds", "world_size",
              *[f"{m}{suffix}" for m in CSV_METRICS for suffix in ("", "_std")], "wall_s", "out"]


def jsonable(x: Any) -> Any:
    """``x`` with paths as strings, numpy scalars as Python numbers and non-finite floats as strings."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def versions() -> dict[str, str]:
    """The versions a result was made with (this package, torch, python, numpy, torch-geometric)."""
    try:
        lib = metadata.version("riemannian-flows")
    except metadata.PackageNotFoundError:
        lib = "0.1.0 (not installed)"
    out = {"riemannian-flows": lib, "torch": torch.__version__, "python": platform.python_version(),
           "numpy": np.__version__}
    try:
        out["torch_geometric"] = metadata.version("torch-geometric")
    except metadata.PackageNotFoundError:  # pragma: no cover
        pass
    return out


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for one seed) over **all** seeds.

    Example:
        >>> mean_std([1.0, 3.0])
        {'mean': 2.0, 'std': 1.4142135623730951, 'n': 2}
    """
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": int(len(a))}


@dataclass(frozen=True)
class RunResult:
    """One run's ``results.json`` (see the module docstring).

    ``metrics`` holds one record per seed (``seed``, ``wall_s`` and the task's metrics), ``summary`` the mean, std
    and count of each headline metric over the seeds, ``extras`` what a task's jobs wrote per seed besides
    metrics (graph-gen: its baseline rows).

    Example:
        >>> cfg = RunConfig.for_command("graph-recon", dataset="tree", latent_dim=2, out="runs/x")
        >>> res = RunResult(command="graph-recon", config=cfg, metrics=[{"seed": 0, "wall_s": 1.0, "auc": 0.9}],
        ...                 summary={"auc": mean_std([0.9])}, wall_s=1.0)
        >>> RunResult.from_json(res.to_json()) == res
        True
        >>> RunResult.from_json({"metrics": [{"seed": 0, "auc": 0.5}]}).seeds  # an older, partial file
        [0]
    """

    command: str
    config: Optional[RunConfig]
    metrics: list[dict[str, Any]]
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    wall_s: float = 0.0  # training time summed over the seeds
    invocation_wall_s: float = 0.0  # this invocation's time (a resumed run counts only what it ran)
    world_size: int = 1
    versions: dict[str, str] = field(default_factory=dict)
    finished: str = ""
    data_note: str = ""  # what the data was (e.g. the graph's node and edge counts)
    extras: dict[str, Any] = field(default_factory=dict)  # per seed (str), what the task's jobs added

    @property
    def seeds(self) -> list[int]:
        """The seeds of :attr:`metrics`, in order."""
        return [r.get("seed") for r in self.metrics]

    @property
    def out(self) -> Optional[Path]:
        return None if self.config is None else self.config.out

    def to_json(self) -> dict[str, Any]:
        """The JSON of ``results.json``."""
        data = {"command": self.command, "config": None if self.config is None else self.config.to_json(),
                "data_note": self.data_note, "metrics": self.metrics, "summary": self.summary,
                "wall_s": self.wall_s, "invocation_wall_s": self.invocation_wall_s, "world_size": self.world_size,
                "versions": self.versions, "finished": self.finished}
        if self.extras:
            data["extras"] = self.extras
        return jsonable(data)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunResult":
        """The result stored by :meth:`to_json`, or by an older version (the data note inside ``config``; any
        field but ``metrics`` may be missing)."""
        stored = data.get("config")
        config = None if stored is None else RunConfig.from_json(stored)
        command = data.get("command") or (config.command if config is not None else "")
        note = data.get("data_note") or (stored or {}).get("data_note", "")
        return cls(command=command, config=config, metrics=list(data.get("metrics", [])),
                   summary=dict(data.get("summary", {})), wall_s=float(data.get("wall_s", 0.0)),
                   invocation_wall_s=float(data.get("invocation_wall_s", 0.0)),
                   world_size=int(data.get("world_size", 1)), versions=dict(data.get("versions", {})),
                   finished=str(data.get("finished", "")), data_note=str(note), extras=dict(data.get("extras", {})))

    @classmethod
    def load(cls, path: Path) -> "RunResult":
        """Read ``path`` (a ``results.json``, or the run folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / RESULTS_FILE
        data = read_json(path, keys=("metrics",), fix="move the run folder away (or rerun it with --overwrite)")
        try:
            return cls.from_json(data)
        except (TypeError, ValueError, AttributeError, KeyError) as err:  # fields of the wrong kind or value
            raise RunError(f"{path} is damaged: {type(err).__name__}: {err}; move the run folder away (or rerun "
                           "it with --overwrite)") from None

    def save(self, path: Path) -> None:
        """Write to ``path`` (a ``results.json``) atomically: a temporary file, then a rename."""
        atomic_write_text(json.dumps(self.to_json(), indent=2), Path(path))

    def csv_row(self) -> dict[str, Any]:
        """This run's row of the shared CSV (:data:`CSV_FIELDS`: settings, means and stds of the headline
        metrics)."""
        cfg = self.config
        row = {"finished": self.finished, "command": self.command, "dataset": cfg.dataset, "model": cfg.model,
               "flow": cfg.flow, "latent_dim": cfg.latent_dim, "epochs": cfg.epochs, "seeds": cfg.seeds,
               "world_size": self.world_size, "wall_s": f"{self.wall_s:.1f}", "out": str(cfg.out)}
        for m, s in self.summary.items():
            if m in CSV_METRICS:
                row[m], row[f"{m}_std"] = f"{s['mean']:.6g}", f"{s['std']:.6g}"
        return row


def append_csv(result: RunResult, path: Path) -> None:
    """Append ``result``'s row to the CSV ``path`` (shared by runs; see :func:`~experiments.run.files.append_csv_row`)."""
    append_csv_row(result.csv_row(), CSV_FIELDS, path)
