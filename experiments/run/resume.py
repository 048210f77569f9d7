"""``--resume`` and ``--overwrite``: what a run folder already holds (its recorded settings, finished seeds,
files), compared with the config of the run that is about to start."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from experiments.run.config import RUN_DEFINING, RunConfig
from experiments.run.errors import RunError
from experiments.run.files import read_json
from experiments.run.result import RESULTS_FILE, RunResult, jsonable


#: the file in ``--out`` that records the settings of the run that made it
CONFIG_FILE = "config.json"


def saved_config(out: Path) -> dict[str, Any] | None:
    """The settings recorded in ``out`` (``results.json`` of a finished run, else ``config.json``), or ``None``.

    Raises:
        RunError: the file is not JSON, or not a JSON object (one line naming it and what to do).
    """
    for name in (RESULTS_FILE, CONFIG_FILE):
        path = out / name
        if path.exists():
            data = read_json(path, keys=("config", "metrics") if name == RESULTS_FILE else (),
                             fix="move it away (or use another --out) and run again")
            stored = data["config"] if name == RESULTS_FILE else data
            if not isinstance(stored, dict):
                raise RunError(f"{path}: 'config' is {type(stored).__name__}, not an object of settings; move it "
                               "away (or use another --out) and run again")
            return stored
    return None


def check_same_run(out: Path, config: RunConfig) -> None:
    """Raise :class:`RunError` naming every field of :data:`RUN_DEFINING` whose value differs from the one recorded
    in ``out``. A field the stored config lacks (a file written before the field existed, or damaged) is unknown:
    it passes only if its value now is the default that runs had before the field existed
    (:meth:`RunConfig.defaults`), since that is what such a run trained with.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> _ = (out / CONFIG_FILE).write_text(json.dumps({"flow": "none", "lr": 0.001}))
        >>> check_same_run(out, RunConfig.for_command("graph-recon", flow="whc", lr=0.001))
        Traceback (most recent call last):
        ...
        experiments.run.errors.RunError: --resume: the run in ... was made with other settings: flow 'none' there, 'whc' now. ...
    """
    saved = saved_config(out)
    if saved is None:
        return
    now = jsonable(config.defining())
    before = jsonable({**RunConfig.defaults(config.command), "command": config.command})
    diff = [f"{f} {saved[f]!r} there, {now[f]!r} now" for f in RUN_DEFINING if f in saved and now[f] != saved[f]]
    unknown = [f"{f} {now[f]!r} now (not recorded there; runs made before it was recorded used {before.get(f)!r})"
               for f in RUN_DEFINING if f not in saved and now[f] != before.get(f)]
    if diff or unknown:
        raise RunError(f"--resume: the run in {out} was made with other settings: {'; '.join(diff + unknown)}. "
                       "Resume with its settings, or give another --out for a new run")


#: what a run writes in ``--out`` besides its ``seed<k>/`` folders: all that ``--overwrite`` may delete
RUN_FILES = (CONFIG_FILE, RESULTS_FILE, "training_curves.png", "baselines.json")  # baselines.json: graph-gen


_SEED_DIR = re.compile(r"seed\d+")


def _run_seed_dirs(out: Path) -> list[Path]:
    """The ``seed<k>/`` folders of a run in ``out`` (``seed`` and digits only: ``seedlings/`` is not one)."""
    return [p for p in out.iterdir() if p.is_dir() and _SEED_DIR.fullmatch(p.name)] if out.is_dir() else []


def clear_previous_run(out: Path, *, overwrite: bool) -> None:
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


def finished_result(out: Path, seeds: list[int]) -> RunResult | None:
    """``results.json`` of ``out`` if it already holds every one of ``seeds``, else ``None``."""
    path = out / "results.json"
    if not path.exists():
        return None
    result = RunResult.load(path)
    return result if set(seeds) <= set(result.seeds) and all((out / f"seed{s}" / "metrics.json").exists() for s in seeds) \
        else None
