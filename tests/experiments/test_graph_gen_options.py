"""graph-gen's encoder input, schedule and sampler options, its baselines file, and their rows in RESULTS.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.cli import build_parser, main, validate
from experiments.run.config import RUN_DEFINING, RunConfig
from experiments.tasks.graph_gen import GraphGenJob, stage_schedule


def test_options_parse_into_the_run_config_and_define_the_run() -> None:
    parser = build_parser()
    args = parser.parse_args(["graph-gen", "--node-input", "adjacency", "--schedule", "reference",
                              "--sampler", "spanning-tree"])
    cfg = validate(args, parser)
    assert (cfg.node_input, cfg.schedule, cfg.sampler) == ("adjacency", "reference", "spanning-tree")
    default = validate(parser.parse_args(["graph-gen"]), parser)
    assert (default.node_input, default.schedule, default.sampler) == ("structural", "paper", "bernoulli")
    assert {"node_input", "schedule", "sampler"} <= set(RUN_DEFINING)
    assert RunConfig.from_json(cfg.to_json()) == cfg
    old = {k: v for k, v in cfg.to_json().items() if k not in ("node_input", "schedule", "sampler")}
    assert RunConfig.from_json(old).sampler == "bernoulli"  # a config stored before these options loads


@pytest.mark.parametrize("argv,message", [
    (["graph-gen", "--sampler", "kruskal"], "argument --sampler: invalid choice: 'kruskal'"),
    (["graph-gen", "--node-input", "rows"], "argument --node-input: invalid choice: 'rows'"),
    (["graph-gen", "--schedule", "fast"], "argument --schedule: invalid choice: 'fast'"),
    (["graph-recon", "--sampler", "spanning-tree"], "unrecognized arguments: --sampler"),  # graph-gen only
])
def test_bad_options_are_usage_errors(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_run_config_rejects_unknown_values_naming_the_option() -> None:
    with pytest.raises(ValueError, match=r"sampler must be one of bernoulli, spanning-tree, max-spanning-tree; "
                                         r"got 'kruskal' \(command line: --sampler"):
        RunConfig.for_command("graph-gen", sampler="kruskal")
    with pytest.raises(ValueError, match="node_input must be one of"):
        RunConfig.for_command("graph-gen", node_input="rows")


def test_reference_schedule_sets_stage_lengths_learning_rates_and_curvature() -> None:
    assert stage_schedule("paper", 100, 1e-2) == (100, 1e-2, 100, 1e-2, 1.0)
    assert stage_schedule("reference", 100, 1e-2) == (50, 1e-2, 100, pytest.approx(1e-3), 4.0)
    assert stage_schedule("reference", 3, 1e-2)[0] == 2  # ceil(3/2)
    with pytest.raises(ValueError, match="schedule must be one of"):
        stage_schedule("fast", 10, 1e-2)
    import networkx as nx

    train = [nx.random_labeled_tree(n, seed=n) for n in (6, 8, 10)]
    test = [nx.random_labeled_tree(12, seed=1)]
    cfg = RunConfig.for_command("graph-gen", epochs=4, schedule="reference", node_input="adjacency")
    job = GraphGenJob(cfg, train, test, "tree", 0)
    assert job.stage_epochs == 2 and job.epochs == 6
    assert job.opt_ae.param_groups[0]["lr"] == pytest.approx(1e-2)
    assert job.opt_flow.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert float(job.manifold.k) == pytest.approx(4.0)
    assert job.gen.autoencoder.conv1.in_channels == 12  # padded to the data set's largest graph (test included)
    paper = GraphGenJob(cfg.replace(schedule="paper"), train, test, "tree", 0)
    assert paper.stage_epochs == 4 and paper.epochs == 8 and float(paper.manifold.k) == pytest.approx(1.0)
    nll = job.validation_nll(train[:2])
    assert set(nll) == {"ae_nll", "flow_nll"} and nll["ae_nll"] > 0


def test_graph_gen_with_the_spanning_tree_sampler_writes_new_metrics_and_baselines(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    assert main(["graph-gen", "--dataset", "trees", "--flow", "whc", "--epochs", "1", "--num-generate", "6",
                 "--sampler", "spanning-tree", "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    s = {k: v["mean"] for k, v in res["summary"].items()}
    assert s["accuracy"] == 100.0 and s["lcc_share"] == 1.0  # trees on all nodes by construction
    assert 0.9 < s["edges_per_node"] < 1.0  # (n-1)/n for n = 20..99
    base = json.loads((out / "baselines.json").read_text())
    er, floor, trees = base["erdos_renyi"], base["training"], base["random_tree"]
    assert trees["accuracy"] == 100.0 and trees["mmd_degree"] < er["mmd_degree"]  # random trees are the data here
    assert base["dataset"] == "trees" and 0.0 < er["edge_density"] < 0.1
    assert floor["accuracy"] == 100.0 and floor["mmd_degree"] < er["mmd_degree"]
    for row in (er, floor):
        assert {"mmd_degree", "mmd_clustering", "mmd_spectral", "edges_per_node", "lcc_share"} <= set(row)


def test_report_prints_the_new_columns_the_baseline_rows_and_dashes_for_old_runs(tmp_path: Path) -> None:
    import experiments.paper.reproduce as rep

    runs = tmp_path / "runs"

    def write(name, summary, **config):
        folder = runs / "table4" / name
        folder.mkdir(parents=True)
        cfg = RunConfig.for_command("graph-gen", **config).to_json()
        (folder / "results.json").write_text(json.dumps({
            "config": cfg, "metrics": [{"seed": 0}], "wall_s": 1.0,
            "summary": {k: {"mean": v, "std": 0.0, "n": 1} for k, v in summary.items()}}))
        return folder

    old = {"accuracy": 10.0, "accuracy_lcc": 50.0, "avg_triangles": 0.0, "avg_clustering": 0.0,
           "avg_triangles_lcc": 0.0, "avg_clustering_lcc": 0.0, "mmd_degree": 0.25, "mmd_clustering": 0.0,
           "mmd_spectral": 0.3}
    write("trees-NC", old, model="euclidean", flow="nc")  # a run from before edges_per_node / lcc_share
    folder = write("trees-WHC-spanning-tree", {**old, "accuracy": 100.0, "edges_per_node": 0.981,
                                               "lcc_share": 1.0, "mmd_degree": 0.0123}, sampler="spanning-tree")
    row = {"mmd_degree": 0.045, "mmd_clustering": 0.065, "mmd_spectral": 0.087, "edges_per_node": 0.985,
           "lcc_share": 0.729, "accuracy": 0.0, "accuracy_lcc": 12.5}
    (folder / "baselines.json").write_text(json.dumps({"erdos_renyi": {**row, "edge_density": 0.0302},
                                                       "training": {**row, "mmd_degree": 0.0004}}))
    md = tmp_path / "RESULTS.md"
    rep.write_report(runs, md, "test")
    text = md.read_text()
    section = text.split("## Table 4", 1)[1].split("## Figure 5", 1)[0]
    lines = {line.split(" | ")[0].lstrip("| "): line for line in section.splitlines() if line.startswith("| ")}
    assert "Edges / node" in lines["Row"] and "LCC share" in lines["Row"] and "Degree MMD" in lines["Row"]
    assert "0.0123 ± 0.0000 (n=1)" in lines["WHC (sampler spanning-tree)"]
    assert "0.981 ± 0.000 (n=1)" in lines["WHC (sampler spanning-tree)"]
    nc = lines["NC"].split(" | ")
    assert nc[1].startswith("0.2500") and nc[4] == nc[5] == "—"  # old run: MMDs shown, new metrics missing
    assert lines["trees-TC"].count("not run") == 7  # not run: labelled by its configuration name
    er = lines["Erdős–Rényi (true density), p = 0.0302"].split(" | ")
    assert er[1:4] == ["0.0450", "0.0650", "0.0870"]
    assert lines["training graphs (floor)"].split(" | ")[1] == "0.0004"
    assert lines["uniform random trees (spanning-tree control)"].count("—") == 7  # not in this older baselines.json
    fig5 = text.split("## Figure 5", 1)[1]
    assert "| Erdős–Rényi (true density) | — |" in fig5  # no lobster run: the rows are there, empty


def test_validation_comparison_holds_out_training_graphs_only(monkeypatch) -> None:
    import experiments.tasks.graph_gen_validation as gv

    seen = {}
    real = gv.GraphGenJob.validation_nll

    def spy(job, graphs):
        seen["fit"], seen["held"] = job.train, graphs
        return real(job, graphs)

    monkeypatch.setattr(gv.GraphGenJob, "validation_nll", spy)
    rows = gv.compare("trees", [("adjacency", "reference")], val=3, epochs=1)
    train, test, _ = gv.ds.load_graph_set("trees")
    assert len(rows) == 1 and rows[0]["node_input"] == "adjacency" and rows[0]["schedule"] == "reference"
    assert rows[0]["ae_nll"] > 0 and rows[0]["val_graphs"] == 3
    assert len(seen["fit"]) == len(train) - 3 and all(g in train[-3:] for g in seen["held"])
    assert not any(g is t for g in seen["held"] + seen["fit"] for t in test)  # the test graphs choose nothing
    with pytest.raises(ValueError, match="--val must be between 1 and"):
        gv.compare("trees", [("structural", "paper")], val=0)
