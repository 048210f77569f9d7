"""Issue 13: one typed run configuration. The command line's defaults are :class:`RunConfig`'s (written once),
``results.json`` stores the resolved config and reads back equal, and the main job and ``reproduce`` build theirs
from the same defaults instead of hand-written dicts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from experiments.cli import build_parser, main, validate
from experiments.run.config import COMMANDS, RUN_DEFINING, RunConfig
from experiments.run.result import RunResult


@pytest.mark.parametrize("command", COMMANDS)
def test_the_command_line_defaults_are_the_run_configs(command):
    parser = build_parser()
    args = parser.parse_args([command] + (["--flow", "whc"] if command == "graph-gen" else []))
    cfg = validate(args, parser)
    expected = RunConfig.for_command(command, **({"flow": "whc"} if command == "graph-gen" else {}))
    assert cfg == expected
    # every option of the command is a setting of RunConfig (nothing travels beside it)
    names = {f.name for f in dataclasses.fields(RunConfig)}
    assert set(vars(args)) - {"command"} <= names


def test_run_config_is_frozen_and_checks_its_values():
    cfg = RunConfig.for_command("graph-recon")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 0.1
    assert cfg.replace(lr=0.1).lr == 0.1 and cfg.lr == 1e-3
    with pytest.raises(TypeError):
        RunConfig.for_command("graph-recon", learning_rate=0.1)  # a misspelt setting is an error, not ignored
    with pytest.raises(ValueError, match="unknown command"):
        RunConfig.for_command("graph-reconstruction")
    with pytest.raises(ValueError, match="cuda_graph"):
        RunConfig.for_command("graph-recon", cuda_graph="yes")


def test_results_json_stores_the_resolved_config_and_it_reads_back_equal(tmp_path: Path):
    out = tmp_path / "run"
    assert main(["graph-recon", "--dataset", "tree", "--epochs", "3", "--out", str(out), "--no-progress"]) == 0
    stored = json.loads((out / "results.json").read_text())["config"]
    cfg = RunConfig.from_json(stored)
    # resolved on the way: the dataset's latent dimension and the --out given; the data summary is the result's note
    assert cfg.latent_dim == 2 and cfg.out == out and "nodes" in RunResult.load(out).data_note
    assert RunResult.load(out).config == cfg
    assert cfg == RunConfig.for_command("graph-recon", dataset="tree", epochs=3, latent_dim=2, out=out,
                                        no_progress=True)
    assert set(RUN_DEFINING) <= set(stored)
    written = json.loads((out / "config.json").read_text())  # what --resume compares against
    assert {k: written[k] for k in RUN_DEFINING} == {k: stored[k] for k in RUN_DEFINING}


def test_an_older_config_with_unknown_keys_still_reads():
    old = {"command": "graph-recon", "dataset": "tree", "cuda_graph": False, "data_note": "x", "out": "runs/x",
           "extra": {"data_note": "x"}}
    cfg = RunConfig.from_json(old)
    assert cfg.cuda_graph == "off" and cfg.out == Path("runs/x") and not hasattr(cfg, "extra")


def test_results_json_of_today_still_reads(tmp_path: Path):
    """A ``results.json`` as written before RunResult (the data note inside ``config``) reads into a RunResult,
    and a RunResult writes and reads back equal."""
    old = {"command": "graph-recon", "config": {"command": "graph-recon", "dataset": "tree", "latent_dim": 2,
                                                "out": "runs/x", "extra": {}, "data_note": "10 nodes"},
           "metrics": [{"seed": 0, "wall_s": 1.5, "auc": 0.9}, {"seed": 1, "wall_s": 2.5, "auc": 0.8}],
           "summary": {"auc": {"mean": 0.85, "std": 0.07, "n": 2}}, "wall_s": 4.0, "invocation_wall_s": 4.1,
           "world_size": 1, "versions": {"torch": "2"}, "finished": "2026-01-01T00:00:00+0000"}
    (tmp_path / "results.json").write_text(json.dumps(old))
    res = RunResult.load(tmp_path)
    assert res.seeds == [0, 1] and res.data_note == "10 nodes" and res.summary["auc"]["mean"] == 0.85
    assert res.config == RunConfig(command="graph-recon", dataset="tree", latent_dim=2, out="runs/x")
    assert res.wall_s == 4.0 and res.out == Path("runs/x")
    res.save(tmp_path / "again.json")
    assert RunResult.load(tmp_path / "again.json") == res


def test_reproduce_builds_its_runs_from_the_defaults():
    from experiments.paper.reproduce import TABLE_ORDER, configs

    for table in TABLE_ORDER:
        for name, cfg in configs(table):
            assert isinstance(cfg, RunConfig), name
    dis = dict(configs("table3"))["dis-ii-WHC"]
    assert (dis.epochs, dis.lr, dis.hidden, dis.latent_dim, dis.flow) == (3000, 1e-3, 16, 2, "whc")
