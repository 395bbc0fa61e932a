"""The package code a job runs, computed from the import graph: a rule's code inputs.

A rule lists the package files its script imports (directly or through other package modules,
at module level or inside functions) as inputs, so that editing one of them reruns exactly the
jobs whose code imports it, and a study never mixes results of old and new code. The graph is
read from the source (``ast``), not by importing: the workflow process needs none of the
jobs' dependencies to build it.

A module run as a program (``python -m reallymuted.testbed.namespace``) counts as imported by
the module that names it. Files a module reads at run time that are not Python (a driver's
web page, a Frida agent, the apps registry) are declared by the module itself, as a
module-level ``RESOURCES`` tuple of string literals: paths relative to the module's folder, or,
starting with ``/``, to the repository's root (``/workflow/apps.yaml``); they count as its
code.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from reallymuted.paths import PACKAGE, REPO

ROOT = PACKAGE.name  # "reallymuted"
MODULE_NAME = re.compile(rf"{ROOT}(\.[a-z_][a-z0-9_]*)+")


def imported_names(path: Path, programs: bool = True) -> set[str]:
    """Every module name ``path`` imports, anywhere in it (``from a import b`` gives both ``a``
    and ``a.b``: ``b`` may be a module), and with ``programs`` every package module it runs by
    name: a string that is exactly a module's dotted name (``python -m
    reallymuted.testbed.tracing``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if programs and MODULE_NAME.fullmatch(node.value):
                names.add(node.value)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_file(name: str) -> Path | None:
    """The source file of a package module (``reallymuted.analysis.extract``), or None when
    ``name`` is not one (a class or function imported from a module, another package)."""
    parts = name.split(".")
    if parts[0] != ROOT:
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _parents(name: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a/__init__``, ``a/b/__init__`` first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@functools.cache
def resources(path: Path) -> tuple[Path, ...]:
    """The non-Python files a module declares in its ``RESOURCES`` tuple."""
    found = []
    for node in ast.parse(path.read_text(), str(path)).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "RESOURCES" for t in targets):
            for element in getattr(node.value, "elts", []):
                if not (isinstance(element, ast.Constant) and isinstance(element.value, str)):
                    raise ValueError(f"{path}: RESOURCES must hold string literals only")
                name = element.value
                base = REPO if name.startswith("/") else path.parent
                resource = (base / name.lstrip("/")).resolve()
                if not resource.is_file():
                    raise ValueError(f"{path}: RESOURCES names {element.value}, which is missing")
                found.append(resource)
    return tuple(found)


@functools.cache
def _imported_files(path: Path) -> tuple[Path, ...]:
    """The package files ``path`` imports or runs directly (with their parent packages). Once
    per file: the closures of the rules' scripts share most of the package, and parsing it again
    for each script made reading the Snakefile take seconds."""
    found = {
        module
        for name in imported_names(path)
        for module in map(module_file, (*_parents(name), name))
        if module is not None
    }
    return tuple(found)


@functools.cache
def _closure(start: Path) -> frozenset[Path]:
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(f for f in _imported_files(path) if f not in seen)
    return frozenset(seen)


def code_files(script: str | Path, modules: Iterable[str] = ()) -> list[str]:
    """The package files (and their declared resources) that ``script`` runs, plus those of
    ``modules`` (imported by name at run time, e.g. the session's driver); sorted paths.
    The script itself is not listed: Snakemake reruns a job whose script changed."""
    return list(_code_files(Path(script).resolve(), tuple(modules)))


# Once per script and modules: an input function asks for every job, and parsing the package
# for each of 10 000 sessions made planning take minutes.
@functools.cache
def _code_files(script: Path, modules: tuple[str, ...]) -> tuple[str, ...]:
    starts = [script]
    for name in modules:
        found = module_file(name)
        if found is None:
            raise ValueError(f"{name} is not a module of the package")
        starts.append(found)
    files: set[Path] = set()
    for start in starts:
        files |= _closure(start)
    files.discard(script)
    declared = {r for f in files for r in resources(f)}
    return tuple(sorted(str(p) for p in files | declared))


def code_digest(script: str | Path, modules: Iterable[str], folder: Path) -> str:
    """One file standing for :func:`code_files`: a line ``sha256  path`` per file, its
    modification time that of the newest of them. A job with it as its one code input reruns
    when, and only when, a job with all those files as inputs would (Snakemake compares
    times), and the workflow plans it with one input instead of thirty."""
    modules = tuple(modules)
    # ``folder`` as given (relative to the run's directory): an input's recorded name must
    # not change when a study's folder is moved or copied (artifact verification does).
    return _code_digest(Path(script).resolve(), modules, Path(folder))


@functools.cache
def _code_digest(script: Path, modules: tuple[str, ...], folder: Path) -> str:
    files = [Path(f) for f in code_files(script, modules)]
    text = "".join(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f}\n" for f in files)
    digest = folder / ("+".join((script.stem, *modules)) + ".sha256")
    if not digest.is_file() or digest.read_text() != text:
        folder.mkdir(parents=True, exist_ok=True)
        partial = digest.with_name(f".{digest.name}.{os.getpid()}")
        partial.write_text(text)
        partial.replace(digest)  # atomic: cluster jobs parse the workflow too
    newest = max(f.stat().st_mtime_ns for f in files) if files else 0
    if digest.stat().st_mtime_ns != newest:
        os.utime(digest, ns=(newest, newest))
    return str(digest)


def digest_files(digest: str | Path) -> list[str]:
    """The files a :func:`code_digest` stands for."""
    return [line.split("  ", 1)[1] for line in Path(digest).read_text().splitlines()]
