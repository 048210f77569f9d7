"""RESULTS.md is written from the runs on disk: paper and ours side by side, what was not run said plainly."""

from __future__ import annotations

from pathlib import Path

from experiments.__main__ import main


def test_reproduce_runs_a_subset_and_reports_it(tmp_path: Path, monkeypatch) -> None:
    import experiments.reproduce as rep

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

    import experiments.reproduce as rep

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
