"""Experiment-test settings: one intra-op thread (2-core shared CI machines; see tests/vae/conftest.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def usage_error(capsys):
    """``usage_error(argv) -> str``: the last line the parser prints for a refused command line (exit code 2, the
    usage's line ``python -m experiments ...: error: ...``)."""
    from experiments.cli import build_parser, parse

    def refused(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as exc:
            parse(argv, build_parser())
        assert exc.value.code == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("python -m experiments")
        return line

    return refused
