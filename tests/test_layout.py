"""The packages import one way (README "Layout"): every import of one of our packages from
another, lazy ones inside functions included, is an edge of the allowed picture, so no package
imports one that imports it back.  Read from the source (ast), so it needs no imports itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {
    "pandalab": {"collector", "learning", "sim", "store", "safety", "robot_drivers", "nets"},
    "collector": {"robot_drivers", "store", "nets", "safety"},
    "learning": {"sim", "store", "nets", "safety", "robot_drivers"},
    "sim": {"robot_drivers", "safety"},
    "robot_drivers": {"safety"},
    "store": set(),
    "nets": set(),
    "safety": set(),
}


def imports_of(package: str) -> dict[str, list[str]]:
    """Our packages imported by ``package``, each with the files importing it."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in ALLOWED and top != package:
                    found.setdefault(top, []).append(str(path.relative_to(REPO)))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_lies_below_it(package):
    wrong = {name: files for name, files in imports_of(package).items() if name not in ALLOWED[package]}
    assert not wrong, f"{package} imports {wrong}"


def test_the_allowed_picture_has_no_cycle():
    seen: dict[str, int] = {}

    def visit(package: str) -> None:
        assert seen.get(package) != 1, f"import cycle through {package}"
        if seen.get(package) == 2:
            return
        seen[package] = 1
        for below in ALLOWED[package]:
            visit(below)
        seen[package] = 2

    for package in ALLOWED:
        visit(package)


def test_every_package_of_the_repository_is_in_the_picture():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert packages == set(ALLOWED)
