"""The command line end to end on tiny settings: files written, resume, errors, DDP, the main job, the report."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> int:
    return main([*map(str, args), "--no-progress"])


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def check_run_files(out: Path, metrics: tuple[str, ...], seeds: int = 1) -> dict:
    res = results(out)
    assert set(res) >= {"config", "metrics", "summary", "wall_s", "versions"}
    assert {"riemannian-flows", "torch"} <= set(res["versions"])
    assert len(res["metrics"]) == seeds and res["wall_s"] > 0
    for m in metrics:
        assert set(res["summary"][m]) >= {"mean", "std"} and res["summary"][m]["n"] == seeds
    assert (out / "training_curves.png").stat().st_size > 0
    rows = list(csv.DictReader(open(out.parent / "results.csv")))
    assert rows[-1]["out"] == str(out)
    return res


def test_graph_recon_writes_results_plots_and_csv(tmp_path: Path) -> None:
    out = tmp_path / "recon"
    assert run_cli("graph-recon", "--dataset", "tree", "--flow", "whc", "--epochs", "12", "--seeds", "2",
                   "--out", out) == 0
    res = check_run_files(out, ("auc", "ap", "auc_at_best_val", "ap_at_best_val", "map", "distortion",
                                "depth_spearman"), seeds=2)
    assert 0 <= res["summary"]["auc"]["mean"] <= 1
    assert 0 < res["summary"]["map"]["mean"] <= 1 and res["summary"]["distortion"]["mean"] >= 0
    for seed in res["metrics"]:  # model selection on validation: the chosen evaluation has the best val AUC
        history = json.loads((out / f"seed{seed['seed']}" / "history.json").read_text())
        val = {i + 1: r["val_auc"] for i, r in enumerate(history) if "val_auc" in r}
        val[12] = max(val.get(12, -1.0), seed["val_auc"])
        assert val[int(seed["best_val_epoch"])] == max(val.values())
        if seed["best_val_epoch"] == 12:
            assert seed["auc_at_best_val"] == seed["auc"]
    assert res["config"]["dataset"] == "tree" and res["config"]["latent_dim"] == 2
    assert (out / "seed0" / "latents_poincare.png").stat().st_size > 0
    assert not (out / "seed0" / "checkpoint.pt").exists()  # removed once the seed finished


def test_density_bdp_and_digits(tmp_path: Path) -> None:
    assert run_cli("density", "--dataset", "bdp", "--model", "euclidean", "--flow", "nc", "--epochs", "2",
                   "--iwae-samples", "4", "--out", tmp_path / "bdp") == 0
    res = check_run_files(tmp_path / "bdp", ("test_ll",))
    assert res["metrics"][0]["test_examples"] == 95  # 30 % of 315
    assert run_cli("density", "--dataset", "digits", "--flow", "tc", "--epochs", "1", "--iwae-samples", "4",
                   "--out", tmp_path / "digits") == 0
    assert results(tmp_path / "digits")["summary"]["test_ll"]["mean"] < 0
    assert (tmp_path / "digits" / "seed0" / "latents_poincare.png").exists()


def test_graph_gen_writes_generated_graphs(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    assert run_cli("graph-gen", "--dataset", "trees", "--flow", "whc", "--epochs", "1", "--num-generate", "4",
                   "--out", out) == 0
    res = check_run_files(out, ("accuracy", "mmd_degree"))
    assert 0 <= res["summary"]["accuracy"]["mean"] <= 100
    assert (out / "seed0" / "generated_graphs.png").stat().st_size > 0


@pytest.mark.parametrize("args,stop", [
    (("graph-recon", "--dataset", "tree", "--flow", "whc", "--epochs", "20"), 7),
    (("density", "--dataset", "digits", "--flow", "whc", "--epochs", "3", "--iwae-samples", "4"), 1),
    (("graph-gen", "--dataset", "trees", "--model", "euclidean", "--flow", "nc", "--epochs", "2",
      "--num-generate", "4"), 3),  # interrupted in stage 2 (the flow prior)
])
def test_resume_after_interruption_gives_the_same_result(tmp_path: Path, args, stop) -> None:
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_cli(*args, "--out", full, "--checkpoint-every", "2") == 0
    assert run_cli(*args, "--out", cut, "--checkpoint-every", "2", "--stop-after", stop) == 3  # "killed"
    assert (cut / "seed0" / "checkpoint.pt").exists() and not (cut / "results.json").exists()
    assert run_cli(*args, "--out", cut, "--checkpoint-every", "2", "--resume") == 0
    a, b = results(full), results(cut)
    keys = [k for k in a["metrics"][0] if k not in ("wall_s",)]
    assert {k: a["metrics"][0][k] for k in keys} == {k: b["metrics"][0][k] for k in keys}


@pytest.mark.parametrize("argv,message", [
    (["graph-recon", "--dataset", "pubmed"], "invalid choice: 'pubmed'"),
    (["graph-recon", "--model", "euclidean", "--flow", "whc"], "does not apply to --model euclidean"),
    (["density", "--flow", "realnvp3000"], "unknown flow 'realnvp3000'"),
    (["density", "--epochs", "0"], "expected a positive int"),
    (["graph-gen", "--flow", "none"], "graph-gen needs a flow prior"),
    (["graph-recon", "--model", "cubical"], "--model must be one of euclidean, hyperbolic, spherical, poincare"),
    (["graph-recon", "--epoch", "3"], "unrecognized arguments: --epoch"),  # no prefixes of options
    (["density", "--lr", "inf"], "expected a positive finite float"),
    (["graph-recon", "--latent-dim", "1", "--flow", "whc"], "needs dimension n >= 2"),
    (["graph-gen", "--flow", "rfm"], "graph-gen's prior needs a flow with graph (GAT) networks"),
    (["graph-recon", "--kl-weight", "-1"], "argument --kl-weight: expected a finite number >= 0"),
    (["graph-recon", "--kl-weight", "nan"], "argument --kl-weight: expected a finite number >= 0"),
    (["graph-recon", "--weight-decay", "-0.1"], "argument --weight-decay: expected a finite number >= 0"),
    (["graph-recon", "--weight-decay", "inf"], "argument --weight-decay: expected a finite number >= 0"),
    (["graph-recon", "--decoder", "cosine"], "invalid choice: 'cosine'"),
])
def test_invalid_options_are_usage_errors(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv,expected", [
    (["graph-recon", "--dataset", "dis-i"], "hyperbolics_edges/bio-diseasome.edges"),
    (["graph-recon", "--dataset", "dis-ii"], "hgcn/disease_lp/disease_lp.edges.csv"),
    (["density", "--dataset", "mnist"], "mnist_t10k/t10k-images-idx3-ubyte.gz"),
])
def test_missing_data_names_the_file_and_where_to_get_it(tmp_path: Path, argv, expected, capsys) -> None:
    assert main([*argv, "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "https://" in err and "--data-root" in err


def test_help_explains_datasets_and_flows(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["graph-recon", "--help"])
    text = capsys.readouterr().out
    for word in ("dis-ii", "mammals", "whc", "--resume", "--seeds", "--data-root", "--device", "--latent-dim"):
        assert word in text


def test_main_job_prints_the_table_and_draws_the_disk(tmp_path: Path, capsys) -> None:
    assert main(["main", "--epochs", "3", "--out", str(tmp_path / "main"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for name in ("N-VAE", "H-VAE", "WHC", "Embed", "Nickel & Kiela", "test AUC", "test AP", "MAP", "distortion",
                 "Spearman", "ceiling"):
        assert name in out
    assert (tmp_path / "main" / "latents_poincare.png").stat().st_size > 0
    summary = json.loads((tmp_path / "main" / "main.json").read_text())
    assert [r["model"] for r in summary["rows"]] == ["N-VAE", "H-VAE", "WHC", "Embed"]
    for row in summary["rows"]:  # every hierarchy metric, per model, as mean/std over the seeds
        for metric in ("auc", "ap", "map", "distortion", "depth_spearman"):
            assert row[metric]["n"] == 1 and math.isfinite(row[metric]["mean"])
    assert 0.8 < summary["depth_spearman_ceiling"] < 0.86  # balanced 3-ary tree: 2/3 of the nodes are leaves


def test_ctrl_c_in_the_main_job_is_one_message_and_exit_130(tmp_path: Path, monkeypatch, capsys) -> None:
    import experiments.tasks.runner as commands
    from experiments.run.errors import Interrupted

    def interrupted(cfg):
        raise Interrupted(7, cfg.epochs, Path(cfg.out) / "seed0" / "checkpoint.pt")

    monkeypatch.setattr(commands, "run_command", interrupted)
    assert main(["main", "--epochs", "20", "--out", str(tmp_path / "main"), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "interrupted (Ctrl-C) after epoch 7 of 20" in err and "run it again" in err


def test_ddp_two_processes_train_and_write_results_once(tmp_path: Path, device) -> None:
    """Two processes under torchrun (on ``--device``: with one GPU both share it, through gloo)."""
    out = tmp_path / "ddp"
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "experiments", "density", "--dataset", "digits", "--flow", "whc", "--epochs", "11",
           "--batch-size", "512", "--iwae-samples", "4", "--out", str(out), "--no-progress",
           "--device", device.type]  # 11: past the warm-up
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = results(out)
    assert res["world_size"] == 2
    assert res["metrics"][0]["test_examples"] == 359  # both ranks' shares of the test set, gathered
    assert res["metrics"][0]["k_rank_spread"] == 0  # the curvature, learnable after the warm-up, stays in sync
    assert proc.stdout.count("results in") == 1  # rank 0 alone reports and writes
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 1 and rows[0]["world_size"] == "2"


def test_ctrl_c_checkpoints_the_current_epoch_and_resume_finishes_the_same_run(tmp_path: Path) -> None:
    """SIGINT during training: the epoch in progress is finished and checkpointed, the process exits with 130 and a
    one-line message naming --resume; resuming gives exactly the result of an uninterrupted run."""
    import signal
    import time

    import torch

    args = ["graph-recon", "--dataset", "tree", "--flow", "none", "--epochs", "1500", "--checkpoint-every", "1000"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "experiments", *args, "--out", str(cut)], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    seen = ""
    while "seed 0" not in seen:  # the progress bar is up: training has started
        ch = proc.stderr.read(1)
        assert ch, f"the run ended before training started: {seen[-2000:]}"
        seen += ch
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (seen + err)[-3000:]
    assert "--resume" in err and "Traceback" not in err
    state = torch.load(cut / "seed0" / "checkpoint.pt", weights_only=False)
    assert 0 < state["epoch"] < 1500  # not the last multiple of --checkpoint-every: the interrupted epoch
    assert run_cli(*args, "--out", cut, "--resume") == 0
    full = tmp_path / "full"
    assert run_cli(*args, "--out", full) == 0
    a, b = results(full), results(cut)
    keys = [k for k in a["metrics"][0] if k != "wall_s"]
    assert {k: a["metrics"][0][k] for k in keys} == {k: b["metrics"][0][k] for k in keys}


def _append_rows(args: tuple[str, int]) -> None:
    from experiments.run.config import RunConfig
    from experiments.run.result import RunResult, append_csv

    path, count = args
    results = RunResult(command="graph-recon", finished="now", world_size=1, wall_s=1.0, metrics=[],
                        config=RunConfig.for_command("graph-recon", dataset="tree", latent_dim=2, out="o"))
    for _ in range(count):
        append_csv(results, Path(path))


def test_concurrent_runs_append_to_one_csv_with_one_header(tmp_path: Path) -> None:
    """Four processes appending 50 rows each to a new results.csv at once: one header, 200 whole rows."""
    import multiprocessing

    path = tmp_path / "results.csv"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_append_rows, [(str(path), 50)] * 4)
    lines = path.read_text().splitlines()
    assert sum(line.startswith("finished,") for line in lines) == 1 and lines[0].startswith("finished,")
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 200 and all(r["dataset"] == "tree" and r["flow"] == "whc" for r in rows)


def test_cuda_without_a_gpu_is_a_usage_error(monkeypatch, capsys) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        main(["graph-recon", "--device", "cuda"])
    assert exc.value.code == 2 and "torch sees no CUDA device" in capsys.readouterr().err


def test_resume_refuses_other_settings_and_a_finished_run_is_reported_once(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    base = ["graph-recon", "--dataset", "tree", "--epochs", "5", "--out", str(out)]
    assert run_cli(*base, "--flow", "none") == 0
    capsys.readouterr()
    # another flow and latent dimension on --resume: refused, naming the fields, nothing written
    assert run_cli(*base, "--flow", "whc", "--latent-dim", "3", "--resume") == 2
    err = capsys.readouterr().err
    assert "flow 'none' there, 'whc' now" in err and "latent_dim" in err
    assert run_cli(*base, "--flow", "none", "--lr", "0.05", "--resume") == 2
    assert "lr 0.001 there, 0.05 now" in capsys.readouterr().err
    assert run_cli(*base, "--flow", "none", "--weight-decay", "0.1", "--resume") == 2
    assert "weight_decay 0.0 there, 0.1 now" in capsys.readouterr().err
    # the same settings: the finished run is reported, not trained again, and no second CSV row
    assert run_cli(*base, "--flow", "none", "--resume") == 0
    assert "already finished" in capsys.readouterr().err
    assert len(list(csv.DictReader(open(tmp_path / "results.csv")))) == 1


def test_a_damaged_checkpoint_falls_back_to_the_one_before_and_none_left_is_a_clear_error(tmp_path: Path,
                                                                                          capsys) -> None:
    args = ("graph-recon", "--dataset", "tree", "--flow", "whc", "--epochs", "12", "--checkpoint-every", "2")
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_cli(*args, "--out", full) == 0
    assert run_cli(*args, "--out", cut, "--stop-after", "7") == 3
    ckpt = cut / "seed0" / "checkpoint.pt"
    prev = cut / "seed0" / "checkpoint.prev.pt"
    assert ckpt.exists() and prev.exists()
    ckpt.write_bytes(b"")  # zero bytes: the newest checkpoint is damaged
    capsys.readouterr()
    assert run_cli(*args, "--out", cut, "--resume") == 0
    assert "does not load" in capsys.readouterr().err
    a, b = results(full), results(cut)
    keys = [k for k in a["metrics"][0] if k != "wall_s"]
    assert {k: a["metrics"][0][k] for k in keys} == {k: b["metrics"][0][k] for k in keys}  # replayed from epoch 6
    # both damaged: a one-line error naming the files and what to do, not a trace
    again = tmp_path / "again"
    assert run_cli(*args, "--out", again, "--stop-after", "7") == 3
    for path in (again / "seed0" / "checkpoint.pt", again / "seed0" / "checkpoint.prev.pt"):
        path.write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert run_cli(*args, "--out", again, "--resume") == 2
    err = capsys.readouterr().err
    assert "no checkpoint of this seed loads" in err and "checkpoint.prev.pt" in err and "Delete" in err


def test_an_out_with_a_run_is_refused_overwrite_deletes_only_the_runs_files_and_a_lock_stops_a_second_run(
        tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    (out / "seedlings_dataset").mkdir(parents=True)  # a user's folder that merely starts with "seed"
    (out / "seedlings_dataset" / "keep.txt").write_text("mine")
    (out / "notes.md").write_text("mine too")
    base = ["graph-recon", "--dataset", "tree", "--flow", "none", "--epochs", "4", "--out", str(out)]
    assert run_cli(*base) == 0  # an --out with only the user's files is fine, and they are left alone
    assert run_cli(*base) == 2  # a second run there is refused ...
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and "seed0/" in err
    assert run_cli(*base, "--overwrite") == 0  # ... unless asked to replace it
    assert (out / "seedlings_dataset" / "keep.txt").read_text() == "mine" and (out / "notes.md").exists()
    assert (out / "seed0" / "metrics.json").exists()
    # a run holding the lock of an --out stops another one at once
    import fcntl

    with open(out / ".run.lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        capsys.readouterr()
        assert run_cli(*base, "--overwrite") == 2  # not even --overwrite replaces a run in progress
        assert "another run is using" in capsys.readouterr().err
    assert (out / "seed0" / "metrics.json").exists()


def test_plotted_radius_is_the_hyperbolic_distance_from_the_origin() -> None:
    """The main job's radius-by-depth panels read the hyperbolic distance back from Poincaré-disk coordinates:
    ``dist0(z) / sqrt(k)`` for latents near and far from the origin, any curvature; the plane's is ``|z|``."""
    import numpy as np
    import torch

    from experiments import plots
    from manifolds import Lorentz

    for k in (0.25, 1.0, 4.0):
        M = Lorentz(k=k).double()
        u = torch.randn(200, 2, dtype=torch.float64)
        u = u / u.norm(dim=-1, keepdim=True) * torch.logspace(-3, np.log10(8 * k ** 0.5), 200).unsqueeze(-1)
        z = M.expmap0_spatial(u)
        pts, in_disk = plots.disk_coordinates(M, z)
        assert in_disk
        np.testing.assert_allclose(plots.radius(pts, in_disk), (M.dist0(z) / k ** 0.5).numpy(), rtol=1e-6)
    plane = np.array([[3.0, 4.0]])
    assert plots.radius(plane, False).tolist() == [5.0]
