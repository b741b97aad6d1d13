"""threedb.robustness stays free of the simulator: it imports nothing of sim, evaluators, dashboard,
companion, controls, policies or Blender (architecture map), so each algorithm can be used alone."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROBUSTNESS = Path(__file__).resolve().parents[1] / "robustness"
FORBIDDEN = ("threedb.sim", "threedb.evaluators", "threedb.dashboard", "threedb.companion", "threedb.controls",
             "threedb.policies", "bpy")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_robustness_imports_no_simulator_module() -> None:
    files = sorted(ROBUSTNESS.rglob("*.py"))
    assert files
    offending = {str(f.relative_to(ROBUSTNESS)): sorted(m for m in imported_modules(f)
                                                         if any(m == b or m.startswith(b + ".") for b in FORBIDDEN))
                 for f in files}
    assert {f: m for f, m in offending.items() if m} == {}


def test_importing_robustness_loads_no_simulator_module() -> None:
    code = ("import importlib, pkgutil, sys, threedb.robustness as r\n"
            "for m in pkgutil.walk_packages(r.__path__, 'threedb.robustness.'): importlib.import_module(m.name)\n"
            f"bad = [m for m in sys.modules if m.startswith({FORBIDDEN!r})]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
