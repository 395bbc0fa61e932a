"""The package's layout keeps its promises (docs/layout.md): what records sessions as root
lives under ``testbed/``, what reads evidence under ``analysis/`` and never imports the testbed,
no module imports itself back through others, and one module spells the results layout."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from reallymuted import codegraph
from reallymuted.paths import PACKAGE

MODULES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[Path]:
    """The package modules ``path`` imports (at module level or inside functions)."""
    found = set()
    for name in codegraph.imported_names(path, programs=False):
        module = codegraph.module_file(name)
        if module is not None and module != path:
            found.add(module)
    return found


def test_the_package_has_no_import_cycle() -> None:
    graph = {path: imports_of(path) for path in MODULES}
    state: dict[Path, str] = {}
    cycles: list[list[str]] = []

    def visit(path: Path, trail: list[Path]) -> None:
        state[path] = "open"
        for target in sorted(graph[path]):
            if state.get(target) == "open":
                cycle = [*trail[trail.index(target) :], target]
                cycles.append([module_name(p) for p in cycle])
            elif target not in state:
                visit(target, [*trail, target])
        state[path] = "done"

    for path in MODULES:
        if path not in state:
            visit(path, [path])
    assert not cycles, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    "path",
    sorted((PACKAGE / "analysis").rglob("*.py")),
    ids=lambda p: module_name(p),
)
def test_analysis_never_imports_the_testbed(path: Path) -> None:
    """Not even through another module: the analysis runs where the testbed's programs
    (Frida, Playwright, a namespace) are not."""
    reached = codegraph.code_files(path)
    testbed = [f for f in reached if Path(f).is_relative_to(PACKAGE / "testbed")]
    assert not testbed, f"{module_name(path)} reaches the testbed through: {testbed}"


def strings(path: Path) -> list[tuple[int, str]]:
    """The string literals of a Python file that are not docstrings (f-strings by parts)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


LAYOUT = re.compile(r"results/(raw|sessions|stimuli)|figures/timelines|rep\{")


def test_the_results_layout_is_spelled_in_one_module(repo_root: Path) -> None:
    """Session folders, analysis folders, stimuli and timelines: only reallymuted/paths.py
    spells them; the rule files and scripts take them from it."""
    spelled = []
    for path in [*MODULES, *sorted((repo_root / "scripts").glob("*.py"))]:
        if path == PACKAGE / "paths.py":
            continue
        spelled += [f"{path.name}:{n}: {s!r}" for n, s in strings(path) if LAYOUT.search(s)]
    for path in [repo_root / "Snakefile", *sorted((repo_root / "workflow/rules").glob("*.smk"))]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if LAYOUT.search(code) and not code.strip().startswith('"logs/'):
                spelled.append(f"{path.name}:{number}: {line.strip()}")
    assert not spelled, "results layout spelled outside reallymuted/paths.py:\n  " + "\n  ".join(
        spelled
    )


def test_declared_resources_exist_and_count_as_code() -> None:
    """A module's RESOURCES (web pages, agents, the registry) are inputs of the jobs that run it."""
    from reallymuted.testbed.drivers import driver_module

    files = codegraph.code_files(
        PACKAGE.parent.parent / "scripts/session_run.py", [driver_module("profile")]
    )
    names = {Path(f).name for f in files}
    # the runner the supervisor starts as a program, its agent, the profile's pages
    assert {"namespace.py", "mic_reads.js", "meeting.html", "profile.js"} <= names, names
    assert "baresip.py" not in names  # another driver's module is not this session's code
    native = codegraph.code_files(
        PACKAGE.parent.parent / "scripts/session_run.py", [driver_module("native-windows")]
    )
    assert str(PACKAGE.parent.parent / "workflow/apps.yaml") in native  # from the repo root


def test_the_readme_is_a_newcomers_page_and_links_every_other(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    pages = sorted(p.relative_to(repo_root).as_posix() for p in (repo_root / "docs").glob("*.md"))
    assert pages, "docs/ holds the method notes"
    unlinked = [p for p in [*pages, "ARTIFACT-APPENDIX.md"] if f"]({p})" not in readme]
    assert not unlinked, f"pages the README does not link: {unlinked}"
