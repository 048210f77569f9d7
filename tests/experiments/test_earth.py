"""``earth`` (issue 23, item 6): the catalogues load as the staged files or fail in one line, the splits are the
80/10/10 protocol, the reported model is the one chosen on validation, and the command writes its outputs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments import datasets as ds
from experiments.tasks import earth
from manifolds import Sphere

DATA_ROOT = os.environ.get(ds.DATA_ROOT_ENV)


def _write_volcano(root: Path, lines: list[str]) -> Path:
    path = root / "earth" / ds.EARTH_FILES["volcano"][0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _events(n: int, seed: int = 0) -> list[str]:
    """``n`` events in two clusters (lat, lon in degrees), as catalogue lines."""
    g = np.random.default_rng(seed)
    centres = np.array([[35.0, 139.0], [-10.0, -75.0]])
    pts = centres[g.integers(2, size=n)] + g.normal(0, 5, size=(n, 2))
    return [f"{lat:.3f},{lon:.3f}" for lat, lon in pts]


@pytest.mark.skipif(not DATA_ROOT, reason=f"the real catalogues need ${ds.DATA_ROOT_ENV} (a copy of shared/data)")
@pytest.mark.parametrize("name", ds.EARTH_DATASETS)
def test_real_catalogues_load_with_their_staged_counts(name):
    x = ds.load_earth(name, Path(DATA_ROOT))
    assert x.shape == (ds.EARTH_FILES[name][1], 3) and x.dtype == torch.float64
    assert torch.allclose(x.norm(dim=-1), torch.ones(len(x), dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-3), (torch.float64, 1e-9)])
def test_latlon_round_trip_over_the_globe(dtype, tol):
    """xyz -> lat/lon -> xyz is the identity on points spread over the whole sphere (poles and the date line
    included), and lat/lon -> xyz lands on the unit sphere with z = north."""
    x = Sphere(2).uniform().sample((20_000,)).to(dtype)
    x = torch.cat([x, torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [-1.0, -1e-7, 0.0]],
                                   dtype=dtype)])
    x = x / x.norm(dim=-1, keepdim=True)  # unit norm in this dtype
    ll = ds.xyz_to_latlon(x)
    assert ll[:, 0].abs().max() <= 90 and ll[:, 1].abs().max() <= 180
    assert (ds.latlon_to_xyz(ll) - x).abs().max() < tol
    north = ds.latlon_to_xyz(torch.tensor([[90.0, 123.0], [0.0, 90.0]], dtype=dtype))
    assert torch.allclose(north, torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=dtype), atol=tol)


def test_loader_skips_comments_and_header_and_reads_degrees(tmp_path):
    _write_volcano(tmp_path, ["# a source line", "Latitude,Longitude", "90,0", "", "0,90", "-30.5,200"])
    x = ds.load_earth("volcano", tmp_path, verify=False)
    want = ds.latlon_to_xyz(torch.tensor([[90.0, 0.0], [0.0, 90.0], [-30.5, 200.0]], dtype=torch.float64))
    assert torch.equal(x, want)


def test_loader_refuses_a_changed_file_unless_told(tmp_path):
    _write_volcano(tmp_path, ["Latitude,Longitude"] + _events(10))
    with pytest.raises(ds.DataFileError, match="sha256 .* differs .*--no-verify-data"):
        ds.load_earth("volcano", tmp_path)
    assert len(ds.load_earth("volcano", tmp_path, verify=False)) == 10


@pytest.mark.parametrize("lines, match", [
    (["Latitude,Longitude", "1.0,2.0", "3.0;4.0", "5,6"], "line 3 is '3.0;4.0', not 'latitude,longitude'"),
    (["1.0,2.0", "1.0,2.0,3.0"], "line 2"),
    (["1.0,2.0", "91.0,2.0"], "line 2: latitude 91.0 .* out of range"),
    (["# nothing but a comment"], "0 events"),
])
def test_loader_names_the_bad_line(tmp_path, lines, match):
    _write_volcano(tmp_path, lines)
    with pytest.raises(ds.DataFileError, match=match):
        ds.load_earth("volcano", tmp_path, verify=False)


def test_loader_refuses_a_damaged_or_missing_file(tmp_path):
    path = _write_volcano(tmp_path, [])
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00garbage")
    with pytest.raises(ds.DataFileError, match="not text"):
        ds.load_earth("volcano", tmp_path, verify=False)
    with pytest.raises(ds.DataFileError, match="sha256"):
        ds.load_earth("volcano", tmp_path)
    with pytest.raises(ds.MissingDataError, match="earth/fire.csv.*--data-root"):
        ds.load_earth("fire", tmp_path)
    with pytest.raises(ValueError, match="unknown earth dataset 'mars'"):
        ds.load_earth("mars", tmp_path)


@pytest.mark.parametrize("n", [827, 6120, 10])
def test_split_is_80_10_10_disjoint_covering_and_seeded(n):
    x = torch.arange(n, dtype=torch.float64)[:, None].expand(n, 3)
    s = ds.split_earth(x, seed=3)
    assert (len(s.train), len(s.val)) == (round(0.8 * n), round(0.1 * n))
    assert len(s.test) == n - len(s.train) - len(s.val)
    ids = [set(t[:, 0].long().tolist()) for t in (s.train, s.val, s.test)]
    assert sum(map(len, ids)) == n and set.union(*ids) == set(range(n))  # disjoint and covering
    assert torch.equal(ds.split_earth(x, seed=3).test, s.test)
    assert not torch.equal(ds.split_earth(x, seed=4).train, s.train)


def test_kept_model_is_the_best_on_validation_and_normalised():
    """The record's validation NLL is the kept model's (model selection), never worse than the untrained
    uniform start, and the learned density integrates to 1 over the sphere (NLL w.r.t. the area measure)."""
    x = ds.latlon_to_xyz(torch.tensor([[float(a), float(b)] for a, b in
                                       (s.split(",") for s in _events(300))], dtype=torch.float64))
    split = ds.split_earth(x, 0)
    args = earth.EarthConfig(steps=60, eval_every=10, layers=2, bins=4, hidden=16, lr=1e-2, no_progress=True)
    rec, q = earth.train("sphere-spline", "volcano", split, 0, args, Sphere(2))
    assert abs(earth.nll(q, split.val.to(earth.DTYPE["sphere-spline"])) - rec["val_nll"]) < 1e-9
    assert rec["val_nll"] < earth.UNIFORM_NLL and rec["best_step"] > 0 and math.isfinite(rec["test_nll"])
    logq = earth.density_map(q, (360, 720))
    lat = np.deg2rad(90 - (np.arange(360) + 0.5) * 0.5)
    cell = np.deg2rad(0.5) ** 2 * np.cos(lat)[:, None]  # area of a 0.5° cell
    assert abs(float((np.exp(logq) * cell).sum()) - 1) < 2e-3


def test_a_non_finite_validation_stops_the_run_and_keeps_the_best(monkeypatch, capsys):
    """Parameters that score NaN are not trained on: the run stops at that evaluation, says so, and the kept
    model is the last finite best."""
    x = ds.latlon_to_xyz(torch.tensor([[float(a), float(b)] for a, b in
                                       (s.split(",") for s in _events(200))], dtype=torch.float64))
    split = ds.split_earth(x, 0)
    calls, real = [], earth.nll

    def nll(q, pts):  # the third validation (step 20) is NaN
        calls.append(1)
        return math.nan if len(calls) == 3 else real(q, pts)

    monkeypatch.setattr(earth, "nll", nll)
    args = earth.EarthConfig(steps=60, eval_every=10, layers=2, bins=4, hidden=16, lr=1e-2, no_progress=True)
    rec, q = earth.train("sphere-spline", "volcano", split, 0, args, Sphere(2))
    assert rec["steps_run"] == 20 and rec["best_step"] == 10 and math.isfinite(rec["test_nll"])
    assert "non-finite validation NLL at step 20" in rec["stopped"]
    assert "non-finite" in capsys.readouterr().err


def test_earth_runs_end_to_end_and_writes_its_outputs(tmp_path, capsys):
    from experiments.cli import main

    _write_volcano(tmp_path / "data", ["Latitude,Longitude"] + _events(120))
    out = tmp_path / "out"
    argv = ["earth", "--quick", "--datasets", "volcano", "--seeds", "2", "--data-root", str(tmp_path / "data"),
            "--out", str(out), "--no-progress", "--layers", "2", "--bins", "4", "--hidden", "16", "--eval-every", "5",
            "--models", "sphere-spline,rfm"]
    assert main(argv + ["--no-verify-data"]) == 0
    res = json.loads((out / "earth.json").read_text())
    runs = res["datasets"][0]["runs"]
    assert [(r["model"], r["seed"]) for r in runs] == [(m, s) for s in (0, 1) for m in earth.MODELS]
    assert all(r["steps_run"] == earth.QUICK_STEPS for r in runs)
    assert all(res["datasets"][0]["summary"][m]["n"] == 2 for m in earth.MODELS)
    assert all(math.isfinite(r["test_nll"]) for r in runs)
    md = (out / "earth.md").read_text()
    assert all(t in md for t in ("ours: sphere-spline", "ours: rfm", "Where we stand", "Riemannian score-based",
                                 "not verified"))
    assert (out / "earth.png").stat().st_size > 10_000
    capsys.readouterr()
    # the staged file's checksum guards the default; bad names fail in one line before any training
    for extra, match in [([], "sha256"), (["--datasets", "mars"], "unknown dataset mars"),
                         (["--models", "nf"], "unknown model nf")]:
        assert main(argv + extra) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1


def test_merge_combines_runs_of_separate_processes_and_refuses_overlaps(tmp_path, capsys):
    """Seeds run in two processes merge into one table over both (n = 2); the same run twice, or a folder without
    results, is refused in one line and writes nothing."""
    from experiments.cli import main

    _write_volcano(tmp_path / "data", ["Latitude,Longitude"] + _events(120))
    base = ["earth", "--quick", "--datasets", "volcano", "--data-root", str(tmp_path / "data"), "--no-verify-data",
            "--no-progress", "--layers", "2", "--bins", "4", "--hidden", "16", "--harmonics", "2",
            "--models", "sphere-spline", "--seeds", "1"]
    for seed in (0, 1):
        assert main(base + ["--seed", str(seed), "--out", str(tmp_path / f"s{seed}")]) == 0
    parts = [json.loads((tmp_path / f"s{seed}" / "earth.json").read_text()) for seed in (0, 1)]
    out = tmp_path / "merged"
    assert main(["earth", "--merge", f"{tmp_path / 's0'},{tmp_path / 's1'}", "--out", str(out)]) == 0
    merged = json.loads((out / "earth.json").read_text())
    runs = merged["datasets"][0]["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    nll = [p["datasets"][0]["runs"][0]["test_nll"] for p in parts]
    summary = merged["datasets"][0]["summary"]["sphere-spline"]
    assert summary["n"] == 2 and abs(summary["mean"] - sum(nll) / 2) < 1e-12
    assert "over 2 of 1 seeds" not in (out / "earth.md").read_text()
    capsys.readouterr()
    for folders, match in [(f"{tmp_path / 's0'},{tmp_path / 's0'}", "both have volcano sphere-spline seed 0"),
                           (str(tmp_path / "nothing"), "earth.json")]:
        assert main(["earth", "--merge", folders, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1
    assert not (tmp_path / "bad" / "earth.json").exists()


def test_with_ema_the_kept_model_is_the_moving_average_of_the_trained_one():
    """``--ema d``: the parameters validated, kept and scored are the moving average of the trained ones (the
    record's validation NLL is the kept model's, and it is not the last raw iterate, which is the run without
    ``--ema``'s: the average does not change the training); a decay outside [0, 1) is refused in one line."""
    x = ds.latlon_to_xyz(torch.tensor([[float(a), float(b)] for a, b in
                                       (s.split(",") for s in _events(300))], dtype=torch.float64))
    split = ds.split_earth(x, 0)
    kw = dict(steps=40, eval_every=40, layers=2, bins=4, hidden=16, lr=1e-2, no_progress=True)
    raw_rec, raw = earth.train("sphere-spline", "volcano", split, 0, earth.EarthConfig(ema=0.0, **kw), Sphere(2))
    rec, q = earth.train("sphere-spline", "volcano", split, 0, earth.EarthConfig(ema=0.9, **kw), Sphere(2))
    assert (raw_rec["ema"], rec["ema"], raw_rec["best_step"], rec["best_step"]) == (0.0, 0.9, 40, 40)
    assert abs(earth.nll(q, split.val) - rec["val_nll"]) < 1e-9 and rec["val_nll"] < earth.UNIFORM_NLL
    gap = max((a - b).abs().max().item() for a, b in zip(q.transform.parameters(), raw.transform.parameters()))
    assert gap > 1e-4
    for bad in (1.0, -0.5, math.nan):
        with pytest.raises(ValueError, match="--ema must be in"):
            earth.EarthConfig(ema=bad)


def test_sphere_spline_depth_and_rate_are_per_dataset_unless_given():
    # volcano's sharp sites get 16 coupling layers at half the rate, the other catalogues 8 (SPLINE_LAYERS, LR);
    # --layers and --lr override both
    def params(args, dataset):
        return sum(p.numel() for p in earth.make_model("sphere-spline", Sphere(2), args, dataset).transform.parameters())

    default, given = earth.EarthConfig(no_progress=True), earth.EarthConfig(layers=4, no_progress=True)
    assert params(default, "volcano") == 2 * params(default, "fire") == 2 * params(default, "earthquake")
    assert params(given, "volcano") == params(given, "fire") == params(default, "fire") // 2
    with pytest.raises(ValueError, match="--layers must be positive"):
        earth.EarthConfig(layers=-1)
    lr = {d: earth.schedule("sphere-spline", d, default)[2] for d in ds.EARTH_DATASETS}
    assert lr["volcano"] == lr["fire"] / 2 == 5e-4
    assert {earth.schedule("sphere-spline", d, earth.EarthConfig(lr=0.01))[2] for d in ds.EARTH_DATASETS} == {0.01}


def test_compiled_training_is_the_eager_training_up_to_rounding(monkeypatch):
    """``--compile``: sphere-spline's step goes through torch.compile (recorded) and trains the same model as the
    eager step, run after run (the second seed recompiles for its new model); rfm stays eager."""
    monkeypatch.setattr(earth, "COMPILE_BACKEND", "aot_eager")  # the graph without code generation, fast on CI
    x = ds.latlon_to_xyz(torch.tensor([[float(a), float(b)] for a, b in
                                       (s.split(",") for s in _events(300))], dtype=torch.float64))
    kw = dict(steps=20, eval_every=10, layers=2, bins=4, hidden=16, lr=1e-2, ema=0.0, no_progress=True)
    for seed in (0, 1):
        split = ds.split_earth(x, seed)
        eager, _ = earth.train("sphere-spline", "volcano", split, seed, earth.EarthConfig(**kw), Sphere(2))
        comp, _ = earth.train("sphere-spline", "volcano", split, seed, earth.EarthConfig(compile=True, **kw),
                              Sphere(2))
        assert (eager["compiled"], comp["compiled"]) == (False, True)
        assert comp["test_nll"] < earth.UNIFORM_NLL - 0.1
        assert abs(comp["test_nll"] - eager["test_nll"]) < 1e-6, (seed, comp["test_nll"], eager["test_nll"])


def test_restarts_keep_the_best_on_validation_and_score_their_normalised_mixture(tmp_path, capsys):
    """``--restarts K``: K runs of one split from different initialisations (restart 0 is the run without the
    flag); the one kept, scored and reported is the one of the lowest validation NLL, every restart's figures are
    in the record, and the equal-weight mixture of the K kept models is a density that integrates to 1 over the
    sphere, scored on validation and test (its NLL is that of the model itself when all K are the same model)."""
    x = ds.latlon_to_xyz(torch.tensor([[float(a), float(b)] for a, b in
                                       (s.split(",") for s in _events(300))], dtype=torch.float64))
    split = ds.split_earth(x, 0)
    kw = dict(steps=30, eval_every=10, layers=2, bins=4, hidden=16, lr=1e-2, no_progress=True)
    single, q0 = earth.train("sphere-spline", "volcano", split, 0, earth.EarthConfig(**kw), Sphere(2))
    rec, q = earth.train_restarts("sphere-spline", "volcano", split, 0, earth.EarthConfig(restarts=3, **kw), Sphere(2))
    vals = [r["val_nll"] for r in rec["restarts"]]
    assert [r["restart"] for r in rec["restarts"]] == [0, 1, 2] and len(set(vals)) == 3  # different initialisations
    assert rec["restarts"][0]["val_nll"] == single["val_nll"] and rec["restarts"][0]["test_nll"] == single["test_nll"]
    assert rec["val_nll"] == min(vals) and rec["restart"] == vals.index(min(vals))
    assert abs(earth.nll(q, split.val) - rec["val_nll"]) < 1e-9
    assert rec["train_s"] == pytest.approx(sum(r["train_s"] for r in rec["restarts"]))
    assert rec["mixture"]["k"] == 3 and math.isfinite(rec["mixture"]["test_nll"])
    assert abs(earth.mixture_nll([q0, q0, q0], split.test) - single["test_nll"]) < 1e-9
    # a mixture of densities is a density: the restarts' mixture integrates to 1 (0.5° cells)
    lat = np.deg2rad(90 - (np.arange(360) + 0.5) * 0.5)
    cell = np.deg2rad(0.5) ** 2 * np.cos(lat)[:, None]
    rows = [earth.density_map(m, (360, 720)) for m in (q0, q)]
    mix = np.log(np.mean([np.exp(r) for r in rows], axis=0))
    assert abs(float((np.exp(mix) * cell).sum()) - 1) < 2e-3
    for pt in split.val[:3].split(1):  # at one event: -log((q0(x) + q(x)) / 2)
        want = -math.log((math.exp(-earth.nll(q0, pt)) + math.exp(-earth.nll(q, pt))) / 2)
        assert abs(earth.mixture_nll([q0, q], pt) - want) < 1e-9
    with pytest.raises(ValueError, match="--restarts is negative"):
        earth.EarthConfig(restarts=-1)
    # the command: the mixture has its own row of the table, the kept restart is named on the console
    from experiments.cli import main

    _write_volcano(tmp_path / "data", ["Latitude,Longitude"] + _events(120))
    assert main(["earth", "--quick", "--datasets", "volcano", "--models", "sphere-spline", "--seeds", "1",
                 "--restarts", "2", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                 "--no-progress", "--layers", "2", "--bins", "4", "--hidden", "16", "--no-verify-data"]) == 0
    run = json.loads((tmp_path / "out" / "earth.json").read_text())["datasets"][0]["runs"][0]
    assert len(run["restarts"]) == 2 and run["mixture"]["k"] == 2
    md = (tmp_path / "out" / "earth.md").read_text()
    assert "| ours: sphere-spline, mixture of its 2 restarts |" in md and "sphere-spline ×2 mixture − best" in md
    assert "(2 restarts) | " in md
    assert f"restart {run['restart']} of 2" in capsys.readouterr().out


def test_restarts_default_per_model_and_dataset(monkeypatch):
    """Without ``--restarts`` the number of runs per split is :data:`RESTARTS` (3 for sphere-spline on flood, 1
    elsewhere); the flag overrides it; one run has no mixture."""
    calls = []

    def fake_train(model, dataset, split, seed, args, M, restart=0):
        calls.append((dataset, restart))
        return {"restart": restart, "val_nll": 1.0 - restart, "test_nll": 2.0, "best_step": 1, "train_s": 1.0}, None

    monkeypatch.setattr(earth, "train", fake_train)
    monkeypatch.setattr(earth, "mixture_nll", lambda qs, x: 0.5)
    split = ds.split_earth(ds.latlon_to_xyz(torch.zeros(20, 2, dtype=torch.float64)), 0)
    for dataset, given, want in (("flood", 0, 3), ("fire", 0, 1), ("fire", 2, 2), ("flood", 1, 1)):
        calls.clear()
        rec, _ = earth.train_restarts("sphere-spline", dataset, split, 0, earth.EarthConfig(restarts=given), Sphere(2))
        assert calls == [(dataset, r) for r in range(want)]
        assert ("mixture" in rec) == (want > 1) and rec["restart"] == want - 1
    assert earth.RESTARTS["sphere-spline"]["flood"] == 3
    assert set(earth.RESTARTS["rfm"].values()) == {1}
