"""Runs you can trust (issue 25): a resume never mixes settings, reproduce never reports a stale run, a damaged or
unwritable file is one line naming it (exit 2, before any training), a checkpoint of another model falls back to
the previous one, shared data files are checked by sha256, and a diverging run stops at once keeping its last
finite checkpoint."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from experiments.cli import main
from experiments.run.config import RunConfig
from experiments.run.errors import RunError
from experiments.run.protocol import Job, train_seed
from experiments.run.result import RunResult

DATA = Path(os.environ.get("RF_DATA_ROOT", Path(__file__).resolve().parents[3] / "shared" / "data"))
RECON = ("graph-recon", "--dataset", "tree", "--flow", "none", "--epochs", "4")


def run_cli(*args) -> int:
    return main([*map(str, args), "--no-progress"])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` made unwritable for this process: mode bits for a user, the immutable attribute for root (whom
    mode bits do not stop)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: cannot make a path read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


# ---- item 1: resume compares the complete defining config ------------------------------------------------------

def test_resume_refuses_a_field_absent_from_the_stored_config_unless_it_has_the_old_default(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(*RECON, "--out", out, "--stop-after", "2") == 3
    stored = json.loads((out / "config.json").read_text())
    del stored["weight_decay"]  # a config.json written before the field existed
    (out / "config.json").write_text(json.dumps(stored))
    capsys.readouterr()
    assert run_cli(*RECON, "--out", out, "--resume", "--weight-decay", "1") == 2
    line = one_error_line(capsys)
    assert "weight_decay 1.0 now (not recorded there" in line and "used 0.0" in line
    assert not (out / "results.json").exists()  # nothing trained at the new λ
    assert run_cli(*RECON, "--out", out, "--resume") == 0  # λ = 0, the default before the field: the same run
    assert RunResult.load(out).config.weight_decay == 0.0
    # an empty config.json records nothing: a changed learning rate is refused, not continued
    other = tmp_path / "empty"
    assert run_cli(*RECON, "--out", other, "--stop-after", "2") == 3
    (other / "config.json").write_text("{}")
    capsys.readouterr()
    assert run_cli(*RECON, "--out", other, "--resume", "--lr", "0.01") == 2
    assert "lr 0.01 now (not recorded there" in one_error_line(capsys)


# ---- item 3: damaged and unwritable files ----------------------------------------------------------------------

@pytest.mark.parametrize("name,text,what", [
    ("config.json", '{"flow": "none", ', "not JSON"),
    ("results.json", "\x00\x01garbage", "not JSON"),
    ("results.json", '{"config": {"command": "graph-recon"}}', "no 'metrics'"),
])
def test_a_damaged_run_file_is_one_line_naming_it(tmp_path, capsys, name, text, what):
    out = tmp_path / "run"  # config.json is what an unfinished run records; results.json a finished one's
    assert run_cli(*RECON, "--out", out, *(("--stop-after", "2") if name == "config.json" else ())) == \
        (3 if name == "config.json" else 0)
    (out / name).write_text(text)
    capsys.readouterr()
    assert run_cli(*RECON, "--out", out, "--resume") == 2
    line = one_error_line(capsys)
    assert str(out / name) in line and what in line and ("move" in line or "repair" in line)


def test_a_damaged_seed_metrics_file_is_one_line_naming_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(*RECON, "--out", out, "--seeds", "2") == 0
    (out / "results.json").unlink()  # the run is not finished: resume reads the seeds' metrics.json
    (out / "seed0" / "metrics.json").write_text("[1, 2")
    capsys.readouterr()
    assert run_cli(*RECON, "--out", out, "--seeds", "2", "--resume") == 2
    line = one_error_line(capsys)
    assert str(out / "seed0" / "metrics.json") in line and "not JSON" in line and "delete" in line


@pytest.mark.parametrize("text,what", [("{not json", "not JSON"), ('{"weight_decay": 1}', "no 'kl_weight'"),
                                       ('{"kl_weight": "ten"}', "not numbers")])
def test_a_damaged_selection_json_is_one_line_naming_it(tmp_path, capsys, text, what):
    folder = tmp_path / "runs" / "table3" / "dis-ii-WHC"
    folder.mkdir(parents=True)
    (folder / "selection.json").write_text(text)
    assert main(["reproduce", "--report-only", "--out", str(tmp_path / "runs"), "--results-md",
                 str(tmp_path / "R.md")]) == 2
    line = one_error_line(capsys)
    assert str(folder / "selection.json") in line and what in line and "delete it" in line


def test_a_read_only_out_or_csv_is_refused_before_training(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    with read_only(ro):
        assert run_cli(*RECON, "--out", ro) == 2
        line = one_error_line(capsys)
        assert str(ro) in line and "permission denied" in line and "--out" in line
    csv = tmp_path / "rows.csv"
    csv.write_text("")
    out = tmp_path / "run"
    with read_only(csv):
        assert run_cli(*RECON, "--out", out, "--csv", csv) == 2
        line = one_error_line(capsys)
        assert str(csv) in line and "--csv" in line
    assert not (out / "seed0").exists()  # refused before training, not after
    assert run_cli(*RECON, "--out", out, "--csv", csv) == 0 and csv.read_text().count("\n") == 2


# ---- item 3/4: a checkpoint of another model falls back to the previous one ------------------------------------

@pytest.mark.parametrize("strip_name", [False, True])
def test_a_checkpoint_of_another_model_falls_back_to_the_previous_one(tmp_path, capsys, strip_name):
    """A ``tc`` run whose newest checkpoint is a ``whc`` run's resumes from ``checkpoint.prev.pt`` (saying so) and
    ends as the uninterrupted run; refused by the checkpoint's recorded flow, or, in a checkpoint without it, by
    the flow's own state-dict name check."""
    args = ("graph-recon", "--dataset", "tree", "--epochs", "8", "--checkpoint-every", "2")
    full, cut, other = tmp_path / "full", tmp_path / "cut", tmp_path / "other"
    assert run_cli(*args, "--flow", "tc", "--out", full) == 0
    assert run_cli(*args, "--flow", "tc", "--out", cut, "--stop-after", "5") == 3
    assert run_cli(*args, "--flow", "whc", "--out", other, "--stop-after", "5") == 3
    foreign = torch.load(other / "seed0" / "checkpoint.pt", weights_only=False)
    assert foreign["flow"] == "whc"
    if strip_name:
        del foreign["flow"]
    torch.save(foreign, cut / "seed0" / "checkpoint.pt")
    capsys.readouterr()
    assert run_cli(*args, "--flow", "tc", "--out", cut, "--resume") == 0
    err = capsys.readouterr().err
    assert "does not load" in err and "resuming from" in err and "checkpoint.prev.pt" in err
    a, b = RunResult.load(full).metrics[0], RunResult.load(cut).metrics[0]
    assert {k: v for k, v in a.items() if k != "wall_s"} == {k: v for k, v in b.items() if k != "wall_s"}


# ---- item 4: the sha256 of shared data files -------------------------------------------------------------------

def test_an_edited_shared_data_file_is_refused_unless_asked(tmp_path, capsys):
    src = DATA / "hyperbolics_edges" / "phylo_tree.edges"
    if not src.exists():
        pytest.skip(f"{src} not here")
    (tmp_path / "hyperbolics_edges").mkdir()
    edited = tmp_path / "hyperbolics_edges" / "phylo_tree.edges"
    lines = src.read_text().splitlines()
    lines[0] = " ".join(reversed(lines[0].split()))  # the same edge written the other way round: another file
    edited.write_text("\n".join(lines) + "\n")
    args = ("graph-recon", "--dataset", "phylo", "--data-root", tmp_path, "--flow", "none", "--epochs", "1")
    assert run_cli(*args, "--out", tmp_path / "a") == 2
    line = one_error_line(capsys)
    assert str(edited) in line and "sha256" in line and "--no-verify-data" in line
    assert not (tmp_path / "a").exists()
    assert run_cli(*args, "--out", tmp_path / "b", "--no-verify-data") == 0  # the user's own copy, asked for
    shutil.copy(src, edited)
    assert run_cli(*args, "--out", tmp_path / "c") == 0  # the shared bytes pass


# ---- item 8: a diverging run stops at once ---------------------------------------------------------------------

class Diverging(Job):
    """Loss 1/(epoch+1) until ``bad``, then NaN; parameters (``w``) the epoch count."""

    def __init__(self, epochs: int, bad: int) -> None:
        self.epochs, self.bad, self.w = epochs, bad, torch.zeros(())

    def train_epoch(self, epoch: int) -> dict:
        self.w = torch.tensor(float(epoch + 1)) if epoch < self.bad else torch.tensor(math.nan)
        return {"loss": torch.tensor(1.0 / (epoch + 1)) if epoch < self.bad else torch.tensor(math.nan)}

    def state_dict(self) -> dict:
        return {"w": self.w.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.w = state["w"]

    def evaluate(self) -> dict:  # pragma: no cover - never reached
        raise AssertionError("a diverged run must not be evaluated")


def test_a_non_finite_loss_stops_the_run_naming_the_epoch_and_keeps_the_last_finite_checkpoint(tmp_path):
    with pytest.raises(RunError) as err:
        train_seed(Diverging(epochs=20, bad=6), tmp_path, resume=False, checkpoint_every=4, stop_after=None,
                   desc="t", progress=False, blame="--weight-decay 1e+04")
    msg = str(err.value)
    assert "at epoch 7" in msg and "--weight-decay 1e+04" in msg and "\n" not in msg
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 4 and torch.isfinite(state["job"]["w"]) and state["job"]["w"] == 4.0


class GradientDiverging(Diverging):
    """A finite loss throughout, but the parameters turn non-finite at ``bad`` (a non-finite gradient)."""

    def train_epoch(self, epoch: int) -> dict:
        self.w = torch.tensor(float(epoch + 1)) if epoch < self.bad else torch.tensor(math.inf)
        return {"loss": torch.tensor(1.0 / (epoch + 1))}


def test_a_non_finite_gradient_under_a_finite_loss_never_reaches_a_checkpoint(tmp_path):
    with pytest.raises(RunError) as err:
        train_seed(GradientDiverging(epochs=20, bad=5), tmp_path, resume=False, checkpoint_every=4,
                   stop_after=None, desc="t", progress=False, blame="--lr 10")
    assert "at epoch 8" in str(err.value) and "gradient" in str(err.value) and "--lr 10" in str(err.value)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 4 and state["job"]["w"] == 4.0


def test_a_diverging_setting_is_one_line_naming_it_not_a_traceback(tmp_path, capsys):
    assert run_cli("graph-recon", "--dataset", "tree", "--flow", "none", "--epochs", "6", "--kl-weight", "1e39",
                   "--out", tmp_path / "run") == 2
    line = one_error_line(capsys)
    assert "diverged" in line and "epoch 1" in line and "--kl-weight 1e+39" in line
    assert not (tmp_path / "run" / "results.json").exists()


# ---- item 9: results are on disk before the optional metrics run -----------------------------------------------

def test_a_failing_optional_metric_keeps_the_run(tmp_path, capsys, monkeypatch):
    from experiments.tasks.graph_recon import GraphReconJob

    def fail(self):
        raise MemoryError("simulated: the hierarchy metrics ran out of memory")

    monkeypatch.setattr(GraphReconJob, "hierarchy", fail)
    out = tmp_path / "run"
    assert run_cli(*RECON, "--out", out) == 0
    assert "optional metrics" in capsys.readouterr().err
    res = RunResult.load(out)
    assert 0 <= res.summary["auc"]["mean"] <= 1 and "map" not in res.summary


def test_hierarchy_sources_samples_the_hierarchy_metrics(tmp_path):
    out = tmp_path / "run"
    assert run_cli(*RECON, "--out", out, "--hierarchy-sources", "50") == 0
    seed = RunResult.load(out).metrics[0]
    assert seed["hierarchy_sources"] == 50 and seed["map_se"] > 0 and 0 < seed["map"] <= 1


# ---- item 2: reproduce never reports a run made at other settings ----------------------------------------------

def test_reproduce_refuses_or_skips_runs_made_at_other_settings(tmp_path, capsys):
    import experiments.paper.reproduce as rep

    runs = tmp_path / "runs"
    folder = runs / "table3" / "dis-ii-WHC"
    (folder / "kl1").mkdir(parents=True)
    (folder / "selection.json").write_text(json.dumps({"kl_weight": 1.0}))
    table_cfg = dict(rep.configs("table3"))["dis-ii-WHC"]
    quick = table_cfg.replace(epochs=2, out=folder / "kl1")  # a quick --epochs 2 run where Table 3's belongs
    RunResult(command="graph-recon", config=quick, metrics=[{"seed": 0, "wall_s": 1.5, "auc": 0.123456}],
              summary={"auc": {"mean": 0.123456, "std": 0.0, "n": 1}}, wall_s=1.5).save(folder / "kl1" / "results.json")
    md = tmp_path / "R.md"
    assert main(["reproduce", "--report-only", "--tables", "table3", "--out", str(runs),
                 "--results-md", str(md)]) == 2
    line = one_error_line(capsys)
    assert "table3/dis-ii-WHC" in line and "epochs 2 there, 3000 in the table" in line and "--skip-stale" in line
    assert not md.exists()
    assert main(["reproduce", "--report-only", "--tables", "table3", "--out", str(runs), "--results-md", str(md),
                 "--skip-stale"]) == 0
    assert "skipped" in capsys.readouterr().err
    text = md.read_text()
    assert "0.1235" not in text and "Wall time of a Dis-II WHC run" not in text
    # at the table's settings the same run is reported, with its wall-time line
    RunResult(command="graph-recon", config=table_cfg.replace(out=folder / "kl1"),
              metrics=[{"seed": 0, "wall_s": 1.5, "auc": 0.123456}],
              summary={"auc": {"mean": 0.123456, "std": 0.0, "n": 1}}, wall_s=1.5).save(folder / "kl1" / "results.json")
    assert rep.stale_runs(runs, ("table3",)) == []
    assert main(["reproduce", "--report-only", "--tables", "table3", "--out", str(runs),
                 "--results-md", str(md)]) == 0
    assert "Wall time of a Dis-II WHC run (3000 epochs" in md.read_text()


@pytest.mark.parametrize("argv", [
    ["hdensity", "--quick", "--targets", "wn-mixture", "--models", "tc", "--out", "{blocked}/sub"],
    ["main", "--epochs", "1", "--seeds", "1", "--out", "{blocked}/sub"],
])
def test_commands_that_write_reports_refuse_an_unwritable_out_before_any_work(tmp_path, capsys, argv):
    """hdensity and the main job check their report files before training (a path under a file cannot be made,
    even by root): one line naming it and the flag, exit 2, nothing trained."""
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    rc = main([a.format(blocked=blocked) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "--out" in err and str(blocked) in err


def test_a_benchmark_refuses_an_unwritable_out_before_timing(tmp_path, capsys):
    from experiments.cli import bench_main

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_:
        bench_main(["flows", "--dims", "2", "--repeats", "1", "--out", str(blocked / "bench.json")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and "--out" in err and str(blocked) in err


def test_a_figure_is_written_whole_or_not_at_all(tmp_path):
    # every picture of the experiments goes through save_figure: a reader never finds a half-written PNG, and a
    # failed write leaves no temporary file behind
    from experiments.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = tmp_path / "sub" / "curve.png"
    save_figure(fig, path, dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in path.parent.iterdir()] == ["curve.png"]
    with pytest.raises(ValueError):  # matplotlib refuses the format: nothing is left in the folder
        save_figure(fig, tmp_path / "sub" / "curve.nosuchformat")
    assert [p.name for p in path.parent.iterdir()] == ["curve.png"]
    plt.close(fig)
