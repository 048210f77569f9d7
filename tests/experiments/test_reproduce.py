"""RESULTS.md is written from the runs on disk: paper and ours side by side, what was not run said plainly."""

from __future__ import annotations

from pathlib import Path

from experiments.cli import main
from experiments.run.config import RunConfig
from experiments.run.result import RunResult


def test_reproduce_runs_a_subset_and_reports_it(tmp_path: Path, monkeypatch) -> None:
    import experiments.paper.reproduce as rep

    real = rep.configs

    def tiny(table):  # the real table, at tiny settings
        out = []
        for name, cfg in real(table):
            out.append((name, cfg.replace(epochs=2, **({"iwae_samples": 4} if cfg.command == "density" else {}))))
        return out

    monkeypatch.setattr(rep, "configs", tiny)
    md = tmp_path / "RESULTS.md"
    md.write_text("old\n" + rep.NOTES_MARKER + "\nhand-written notes\n")
    assert main(["reproduce", "--tables", "table1", "--only", "bdp2-WHC,bdp2-N-VAE", "--seeds", "2",
                 "--out", str(tmp_path / "runs"), "--results-md", str(md), "--no-progress"]) == 0
    text = md.read_text()
    assert "## Table 1" in text and "-55.1 ± 0.4" in text  # the paper's WHC BDP-2 number
    assert "(n=2)" in text and "not run" in text
    assert "bdp2-WHC: 2" in text and "dis-ii-WHC: 0" in text
    assert text.rstrip().endswith("hand-written notes")


def test_stop_launching_at_is_the_next_such_time(monkeypatch) -> None:
    """A reproduction started before midnight with ``--stop-launching-at 02:00`` stops at 02:00 the next day
    (not at once); a time later today stays today; a malformed time is a clear error."""
    import datetime as dt

    import pytest

    import experiments.paper.reproduce as rep

    class Clock(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 12, 1, 23, 50)

    monkeypatch.setattr(rep.dt, "datetime", Clock)
    assert rep._deadline("02:00") == Clock(2026, 12, 2, 2, 0)
    assert rep._deadline("23:55") == Clock(2026, 12, 1, 23, 55)
    assert rep._deadline(None) is None
    with pytest.raises(SystemExit, match="HH:MM"):
        rep._deadline("2am")


def test_table3_selects_the_kl_weight_on_validation_edges_only(tmp_path: Path, monkeypatch) -> None:
    """Table 3 runs every β of KL_WEIGHTS for SELECT_SEEDS seeds, keeps the one with the best mean *validation*
    AUC (written to selection.json), brings only that one to the table's seed count and reports it."""
    import json

    import experiments.paper.reproduce as rep

    real = rep.configs
    monkeypatch.setattr(rep, "configs", lambda table: [  # the embedded tree instead of Dis-II, 2 epochs
        (name, cfg.replace(dataset="tree", epochs=2)) for name, cfg in real(table)])
    md = tmp_path / "RESULTS.md"
    out = tmp_path / "runs"
    assert main(["reproduce", "--tables", "table3", "--only", "dis-ii-H-VAE", "--seeds", "3", "--out", str(out),
                 "--results-md", str(md), "--no-progress"]) == 0
    folder = out / "table3" / "dis-ii-H-VAE"
    sel = json.loads((folder / "selection.json").read_text())
    assert set(sel["val_auc"]) == {f"{b:g}" for b in rep.KL_WEIGHTS}
    best = sel["kl_weight"]
    assert sel["val_auc"][f"{best:g}"] == max(sel["val_auc"].values())
    # then λ at that β, by the same rule
    assert set(sel["val_auc_weight_decay"]) == {f"{w:g}" for w in rep.WEIGHT_DECAYS}
    wd = sel["weight_decay"]
    assert sel["val_auc_weight_decay"][f"{wd:g}"] == max(sel["val_auc_weight_decay"].values())
    assert sel["val_auc_weight_decay"]["0"] == sel["val_auc"][f"{best:g}"]  # λ = 0 is the β stage's run
    settings = [(beta, 0.0) for beta in rep.KL_WEIGHTS] + [(best, w) for w in rep.WEIGHT_DECAYS if w]
    for beta, w in settings:  # every setting but the selected one stops at the selection's seeds
        sub = folder / (f"kl{beta:g}" + (f"-wd{w:g}" if w else ""))
        n = len(list(sub.glob("seed*/metrics.json")))
        assert n == (3 if (beta, w) == (best, wd) else rep.SELECT_SEEDS)
        cfg = json.loads((sub / "results.json").read_text())["config"]
        assert (cfg["kl_weight"], cfg["weight_decay"]) == (beta, w)
    text = md.read_text()
    assert f"(n=3, β={best:g}, λ={wd:g})" in text


def test_kl_weight_selection_never_reads_the_test_edges(tmp_path: Path) -> None:
    """The β with the best validation AUC wins even where another β has the better test AUC; ties go to the
    smaller β; missing seeds are a clear error."""
    import json

    import pytest

    import experiments.paper.reproduce as rep

    def write(beta, val, test):
        f = tmp_path / f"kl{beta:g}"
        f.mkdir()
        per_seed = [{"seed": s, "val_auc": val, "auc": test} for s in range(rep.SELECT_SEEDS)]
        (f / "results.json").write_text(json.dumps({"metrics": per_seed}))

    with pytest.raises(FileNotFoundError, match="seeds the β selection reads"):
        rep.select_kl_weight(tmp_path)
    for beta, val, test in zip(rep.KL_WEIGHTS, (0.90, 0.95, 0.95, 0.80, 0.70), (0.99, 0.90, 0.91, 0.99, 0.99)):
        write(beta, val, test)
    assert rep.select_kl_weight(tmp_path) == rep.KL_WEIGHTS[1]
    assert json.loads((tmp_path / "selection.json").read_text())["kl_weight"] == rep.KL_WEIGHTS[1]
    # a table with its own grid (the latent table) reads only its β values
    assert rep.select_kl_weight(tmp_path, (30.0, 100.0)) == 30.0
    assert set(json.loads((tmp_path / "selection.json").read_text())["val_auc"]) == {"30", "100"}
    assert rep.KL_GRIDS["latent"] == rep.LATENT_KL_WEIGHTS and rep.KL_GRIDS["table3"] == rep.KL_WEIGHTS


def test_weight_decay_selection_is_a_second_stage_on_validation_edges_only(tmp_path: Path) -> None:
    """λ is chosen at the selected β by validation AUC (never by the test AUC; ties go to the smaller λ), is added
    to selection.json, and is what the report loads; a new β selection drops a λ chosen at another β."""
    import json

    import pytest

    import experiments.paper.reproduce as rep

    def write(name, val, test):
        f = tmp_path / name
        f.mkdir()
        per_seed = [{"seed": s, "val_auc": val, "auc": test} for s in range(rep.SELECT_SEEDS)]
        (f / "results.json").write_text(json.dumps({"metrics": per_seed}))

    grid_b, grid_w = (3.0, 30.0), (0.0, 0.1, 1.0)
    with pytest.raises(FileNotFoundError, match="select β first"):
        rep.select_weight_decay(tmp_path, 30.0, grid_w)
    write("kl3", 0.90, 0.99)
    write("kl30", 0.92, 0.90)
    assert rep.select_kl_weight(tmp_path, grid_b) == 30.0
    with pytest.raises(FileNotFoundError, match="seeds the λ selection reads"):
        rep.select_weight_decay(tmp_path, 30.0, grid_w)
    write("kl30-wd0.1", 0.95, 0.80)  # best validation, worst test
    write("kl30-wd1", 0.95, 0.99)  # tied validation: the smaller λ wins
    assert rep.select_weight_decay(tmp_path, 30.0, grid_w) == 0.1
    sel = json.loads((tmp_path / "selection.json").read_text())
    assert (sel["kl_weight"], sel["weight_decay"]) == (30.0, 0.1)
    assert sel["val_auc_weight_decay"] == {"0": 0.92, "0.1": 0.95, "1": 0.95}
    assert rep._selected(tmp_path) == (30.0, 0.1)
    assert rep.select_weight_decay(tmp_path, 30.0, (0.0,)) == 0.0  # a grid of one reads nothing
    with pytest.raises(FileNotFoundError, match="no β selection at β = 3"):
        rep.select_weight_decay(tmp_path, 3.0, grid_w)
    rep.select_kl_weight(tmp_path, grid_b)  # a fresh β selection: λ must be selected again
    assert rep._selected(tmp_path) == (30.0, 0.0)
    assert rep.WD_GRIDS == {"table3": rep.WEIGHT_DECAYS, "latent": rep.LATENT_WEIGHT_DECAYS}
    assert all(grid[0] == 0.0 for grid in rep.WD_GRIDS.values())  # the paper's plain Adam is always a candidate


def test_reference_protocol_and_latent_tables_are_what_they_say() -> None:
    """table3ref runs Table 3's models at the reference's flow-script settings; latent covers every dataset × dim ×
    model once; best-of-10 needs 10 seeds and picks by the metric."""
    import experiments.paper.reproduce as rep

    ref = dict(rep.configs("table3ref"))
    ours = dict(rep.configs("table3"))
    assert ref.keys() == ours.keys()
    for name, cfg in ref.items():
        assert (cfg.decoder, cfg.hidden, cfg.epochs, cfg.kl_weight) == ("distance", 200, 2000, 1.0)
        assert (cfg.dataset, cfg.model, cfg.flow, cfg.latent_dim) == (ours[name].dataset, ours[name].model,
                                                                       ours[name].flow, ours[name].latent_dim)
    latent = rep.configs("latent")
    assert len(latent) == len(rep.LATENT_DATASETS) * len(rep.LATENT_DIMS) * len(rep.LATENT_MODELS)
    assert {(c.dataset, c.latent_dim) for _, c in latent} == {(d, k) for d in rep.LATENT_DATASETS
                                                               for k in rep.LATENT_DIMS}
    res = {"metrics": [{"seed": s, "auc": a} for s, a in enumerate([0.9, 0.8, 0.95, 0.7, 0.85, 0.6, 0.99, 0.5,
                                                                    0.93, 0.91, 0.2])]}
    top = [0.99, 0.95, 0.93, 0.91, 0.9]  # seed 10 is beyond the first 10 and is not looked at
    m = sum(top) / 5
    sd = (sum((v - m) ** 2 for v in top) / 4) ** 0.5
    assert rep._best_of(RunResult.from_json(res), "auc", 3) == f"{m:.3f} ± {sd:.3f}"
    assert rep._best_of(RunResult.from_json({"metrics": res["metrics"][:5]}), "auc", 3) == "needs 10 seeds (n=5)"


def test_a_report_from_a_partial_runs_folder_keeps_the_other_tables_sections(tmp_path: Path) -> None:
    """A table with no run on disk keeps its section of the previous RESULTS.md, marked as kept (once, however
    often the report is rewritten); a table with runs is written from them."""
    import experiments.paper.reproduce as rep

    md = tmp_path / "RESULTS.md"
    md.write_text("# old\n\n## Table 1 — BDP test log-likelihood (IWAE, K = 500)\n\n| N-VAE | -55.2 KEEP ME |\n\n"
                  "## Table 3 — graph reconstruction (test ROC-AUC / AP)\n\nOLD TABLE 3\n\n" + rep.NOTES_MARKER + "\nnotes\n")
    for _ in range(2):
        rep.write_report(tmp_path / "runs", md, "test")
    text = md.read_text()
    # table 1 from the file; tables 2, 4 and figure 5 from the first rewrite (written "not run" then)
    assert text.count("KEEP ME") == 1 and text.count("this section is kept") == 4
    assert "OLD TABLE 3" not in text  # Table 3 is always written from the runs ("not run" where none)
    assert "**table1**: no run under" in text and text.rstrip().endswith("notes")


def test_a_reported_setting_says_whether_its_weight_decay_was_selected(tmp_path: Path) -> None:
    """The report's ", β=…, λ=…" marks λ with † where the configuration's selection has no λ (runs at λ = 0 made
    before λ joined the selection), and shows the chosen λ plainly where it was selected."""
    import json

    import experiments.paper.reproduce as rep

    folder = tmp_path / "latent" / "cora-d8-TC"
    folder.mkdir(parents=True)
    cfg = RunConfig.for_command("graph-recon", dataset="cora", kl_weight=10.0, weight_decay=0.0)
    res = RunResult(command="graph-recon", config=cfg, metrics=[])
    (folder / "selection.json").write_text(json.dumps({"kl_weight": 10.0}))
    assert rep._setting_text(tmp_path, "latent", "cora-d8-TC", res) == f", β=10, λ=0{rep.UNSELECTED_MARK}"
    (folder / "selection.json").write_text(json.dumps({"kl_weight": 10.0, "weight_decay": 1.0}))
    res = RunResult(command="graph-recon", config=cfg.replace(weight_decay=1.0), metrics=[])
    assert rep._setting_text(tmp_path, "latent", "cora-d8-TC", res) == ", β=10, λ=1"
    assert rep._setting_text(tmp_path, "table3ref", "dis-i-TC", res) == ""  # no selection there
    assert rep._setting_text(tmp_path, "latent", "cora-d8-TC", None) == ""


def test_ctrl_c_in_reproduce_keeps_what_ran_and_says_how_to_continue(tmp_path: Path, monkeypatch, capsys) -> None:
    """Ctrl-C during a seed (the run checkpoints its epoch and raises Interrupted): reproduce writes the report of
    what finished, exits with 130 and one message saying to run the same command again; no traceback."""
    import experiments.tasks.runner as commands
    import experiments.paper.reproduce as rep
    from experiments.run.errors import Interrupted

    real = rep.configs
    monkeypatch.setattr(rep, "configs", lambda table: [
        (name, cfg.replace(dataset="tree", epochs=2)) for name, cfg in real(table)])
    calls = []
    run = commands.run_command

    def run_or_interrupt(cfg):
        calls.append(cfg)
        if len(calls) == 2:  # the second seed is interrupted
            raise Interrupted(1, cfg.epochs, Path(cfg.out) / "seed1" / "checkpoint.pt")
        return run(cfg)

    monkeypatch.setattr(commands, "run_command", run_or_interrupt)
    md = tmp_path / "RESULTS.md"
    code = main(["reproduce", "--tables", "table3ref", "--only", "dis-ii-H-VAE", "--seeds", "3",
                 "--out", str(tmp_path / "runs"), "--results-md", str(md), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 130
    assert "interrupted (Ctrl-C) after epoch 1 of 2" in err and "run the same reproduce command again" in err
    assert "(n=1)" in md.read_text()  # the finished seed is reported
