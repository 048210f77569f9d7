"""Every Python block of the README and of ``docs/guide.md`` runs unmodified (so the docs cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = [REPO_ROOT / "README.md", REPO_ROOT / "docs" / "guide.md"]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[tuple[str, str]]:
    """``(id, source)`` of each fenced ``python`` block of a Markdown file, the id naming file and line."""
    text = path.read_text()
    return [(f"{path.name}:{text[:m.start()].count(chr(10)) + 1}", m.group(1)) for m in FENCE.finditer(text)]


BLOCKS = [block for path in DOCS for block in python_blocks(path)]


def test_the_docs_have_python_blocks():
    names = {b[0].split(":")[0] for b in BLOCKS}
    assert names == {"README.md", "guide.md"}, names
    assert len(BLOCKS) >= 8


# a block that trains on a real dataset (Cora) takes minutes on a CPU: slow
@pytest.mark.parametrize("source", [pytest.param(src, id=name, marks=[pytest.mark.slow] if "RF_DATA_ROOT" in src else [])
                                    for name, src in BLOCKS])
def test_doc_block_runs(source, request, monkeypatch, tmp_path):
    if "RF_DATA_ROOT" in source:  # the data_root fixture skips, with the reason, where there are no datasets
        monkeypatch.setenv("RF_DATA_ROOT", str(request.getfixturevalue("data_root")))
    monkeypatch.chdir(tmp_path)
    exec(compile(source, "<doc block>", "exec"), {"__name__": "__doc_block__"})
