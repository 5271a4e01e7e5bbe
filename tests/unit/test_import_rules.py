"""ARCHITECTURE.md's import rules, checked on the source: a forbidden import fails here."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {"ragc", "schemas", "stores", "providers", "tasks", "flows", "serving", "expectations"}
# Who may import whom, among the project's own packages.
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "stores": {"schemas"},
    "providers": {"schemas"},
    "expectations": {"schemas"},
    "tasks": {"schemas", "stores", "providers", "expectations"},
    "flows": {"tasks", "schemas"},
    "serving": {"schemas", "stores", "providers"},
    "ragc": PROJECT,
}
# Heavy compile-time libraries the runtime must never load.
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "serving": {"qdrant_client", "llama_index", "unstructured", "torch", "prefect_qdrant"},
    "schemas": {"qdrant_client", "llama_index", "unstructured", "torch", "prefect", "litestar"},
    "stores": {"qdrant_client", "llama_index", "unstructured", "torch"},
}


def imported_roots(source: str) -> set[str]:
    """Top-level module names a module imports (absolute imports only)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def violations(package: str, source: str) -> set[str]:
    roots = imported_roots(source)
    own = (roots & PROJECT) - {package} - ALLOWED[package]
    return own | (roots & FORBIDDEN_THIRD_PARTY.get(package, set()))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_what_the_architecture_allows(package: str) -> None:
    found = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / package).rglob("*.py")
        for name in violations(package, path.read_text())
    }
    assert not found, sorted(found)


@pytest.mark.parametrize(
    ("package", "source"),
    [
        ("serving", "from tasks.ingest import ingest_folder"),
        ("serving", "import qdrant_client"),
        ("serving", "from llama_index.core import Document"),
        ("schemas", "from stores import open_store"),
        ("stores", "import providers.offline"),
    ],
)
def test_the_checker_catches_forbidden_imports(package: str, source: str) -> None:
    assert violations(package, source)


LAZY_IN_THE_COMPILER = ("great_expectations", "unstructured", "sklearn", "llama_index", "spacy")
"""Libraries the compile flow loads in the stage that uses them, never on import (seconds each:
they would stand between a command's start and its first task)."""


def _loaded_after(code: str) -> set[str]:
    """Top-level modules loaded in a fresh interpreter after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


def test_importing_the_compile_flow_loads_no_stage_library() -> None:
    loaded = _loaded_after("import flows.compile")
    assert "prefect" in loaded  # the probe sees what the flow needs
    assert not loaded & set(LAZY_IN_THE_COMPILER), sorted(loaded & set(LAZY_IN_THE_COMPILER))


def test_a_bad_store_url_fails_before_the_compiler_is_imported() -> None:
    code = (
        "from typer.testing import CliRunner\n"
        "from ragc.cli import app\n"
        "r = CliRunner().invoke(app, ['eval', 'q.jsonl', '--knowledge', 'examples',"
        " '--store', '/tmp/not-a-url'])\n"
        "assert r.exit_code == 1, (r.exit_code, r.output)\n"
        "assert 'unknown store URL scheme' in r.output, r.output\n"
    )
    assert "flows" not in _loaded_after(code)
