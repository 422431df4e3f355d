"""Imports point one way: experiments -> workers -> simulator -> distopt -> torch.

distopt imports only the standard library and torch (never numpy, ray, or the layers above).
"""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["distopt", "simulator", "workers", "experiments"]  # lower to higher
THIRD_PARTY_ALLOWED = {"distopt": {"torch"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", LAYERS)
def test_no_upward_imports(layer):
    above = set(LAYERS[LAYERS.index(layer) + 1:])
    bad = []
    for path in (ROOT / layer).rglob("*.py"):
        hit = _imports(path) & above
        if hit:
            bad.append(f"{path.relative_to(ROOT)} imports {sorted(hit)}")
    assert not bad, "imports must point down (experiments -> workers -> simulator -> distopt):\n" + "\n".join(bad)


def test_distopt_imports_torch_and_stdlib_only():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = []
    for path in (ROOT / "distopt").rglob("*.py"):
        extra = _imports(path) - stdlib - THIRD_PARTY_ALLOWED["distopt"] - {"distopt"}
        if extra:
            bad.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}")
    assert not bad, "distopt/ may import torch only:\n" + "\n".join(bad)


def test_the_check_can_fail(tmp_path):
    """The parser sees both import forms (a test that cannot fail proves nothing)."""
    f = tmp_path / "m.py"
    f.write_text("import experiments.cli\nfrom workers import x\nfrom . import y\n")
    assert _imports(f) == {"experiments", "workers"}
