"""Issue 23: code above ``manifolds/`` asks a manifold only what :class:`~manifolds.base.ManifoldOps` declares. A
grep over the sources finds no manifold-name comparison (``.name ==`` / ``!=`` / ``in``) and no attribute probe
(``hasattr(manifold, …)`` / ``hasattr(self.manifold, …)``) in ``flows/`` and ``vae/``; ``experiments/`` is listed with
``experiments/`` too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: a manifold's kind read from its name, or its attributes probed
PATTERNS = (
    re.compile(r"manifold\)?\.name\s*(==|!=|\bin\b|\bnot in\b)"),
    re.compile(r"\bname\s*(==|!=)\s*[\"'](Euclidean|Lorentz|Sphere|Torus|PoincareBall|Product)[\"']"),
    re.compile(r"\b(has|get)attr\(\s*(self\.)?manifold\b"),
    re.compile(r"\b(has|get)attr\(\s*M\b"),
)

def _hits(package: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        lines = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
                 for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if any(p.search(line) for p in PATTERNS)]
        if lines:
            out[path.name] = lines
    return out


def test_the_patterns_catch_what_they_are_for():
    """The grep would see each kind of dispatch the issue lists (so an empty result means something)."""
    for line in ('if self.manifold.name != "Euclidean":', 'if manifold.name == "Lorentz":',
                 'return hasattr(self.manifold, "set_k")', 'if not hasattr(manifold, "k"):',
                 'if getattr(manifold, "learnable", False):', 'return n if manifold.name in ms else None'):
        assert any(p.search(line) for p in PATTERNS), line
    assert not any(p.search('raise ValueError(f"got {manifold.name}")') for p in PATTERNS)


@pytest.mark.parametrize("package", ["flows", "vae", "experiments"])
def test_no_manifold_name_or_attribute_dispatch(package):
    hits = _hits(package)
    assert not hits, "dispatch on a manifold's name or attributes; ask ManifoldOps instead:\n" + "\n".join(
        line for lines in hits.values() for line in lines)
