"""The docs stay true to the code: every built-in control is documented with its parameters and a preview."""
from __future__ import annotations

import pytest

from conftest import REPO
from threedb.controls.registry import BUILTIN_CONTROLS, import_control

DOC = (REPO / "docs" / "controls.md").read_text()


@pytest.mark.parametrize("name", sorted(BUILTIN_CONTROLS))
def test_every_builtin_control_is_documented_with_a_preview(name):
    cls = import_control(BUILTIN_CONTROLS[name])
    section = DOC.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
    for param in cls.params:
        assert f"| `{param.name}` |" in section, f"{name}.{param.name} missing from docs/controls.md"
    assert (REPO / "docs" / "images" / "controls" / f"{name}.png").is_file()


def test_readme_names_the_two_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_readme_lists_every_subcommand():
    """README's command-line block names every subcommand `threedb --help` offers."""
    from threedb.sim.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    readme = (REPO / "README.md").read_text()
    missing = [name for name in sub.choices if f"threedb {name}" not in readme]
    assert missing == []
