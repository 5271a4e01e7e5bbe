"""Compile benchmark: full compile, unchanged recompile and partial recompile, one run.

    uv run python bench/compile.py [KNOWLEDGE_DIR ...]   (default: examples)

For each folder: a full compile with a cold build cache (per-stage seconds), a recompile of the
unchanged folder, and partial recompiles after one document's body changed, after its heading
changed (which changes the router's training questions, so the router is retrained), after one
document was added and after one was removed — each as a ratio of the full compile measured in
the same run — and then ``ragc compile`` of the unchanged folder run as a user runs it, with its
fixed overhead (the time outside the flow's own work). The folder is copied first; nothing in
the original is modified.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script, Python puts bench/ first on the path, where bench/stores.py would shadow
# the `stores` package: put the project root there instead.
if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench._setup import quiet_offline_environment

quiet_offline_environment()

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from flows.compile import CompileResult  # noqa: E402
from flows.recompile import RecompileParams, recompile_knowledge  # noqa: E402

console = Console()


def _documents(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in {".md", ".html", ".txt"})


def _touch_one(folder: Path, *, heading: bool) -> str:
    """Change one document and return its relative path: its body (a paragraph appended) or,
    with ``heading``, its first heading (which changes the questions the router learns)."""
    docs = _documents(folder)
    if docs:
        target = docs[len(docs) // 3 if heading else len(docs) // 2]
        text = target.read_text("utf-8")
        html = target.suffix == ".html"
        if heading:
            text = (
                text.replace("<h2>", "<h2>Revised: ", 1)
                if html
                else text.replace("# ", "# Revised: ", 1)
            )
        else:
            added = "This paragraph was added to measure a partial recompile."
            text = (
                text.replace("</body>", f"<p>{added}</p></body>", 1)
                if html and "</body>" in text
                else text + (f"<p>{added}</p>\n" if html else f"\n\n{added}\n")
            )
        target.write_text(text, "utf-8")
    else:  # an FAQ-only folder: change one answer, or one question
        target = next(folder.rglob("faq.jsonl"))
        lines = target.read_text("utf-8").splitlines()
        field = '"question": "' if heading else '"answer": "'
        index = 1 if heading else 0
        lines[index] = lines[index].replace(field, f"{field}Revised: ", 1)
        target.write_text("\n".join(lines) + "\n", "utf-8")
    return target.relative_to(folder).as_posix()


def _compile(folder: Path, work: Path, changed: list[str]) -> tuple[CompileResult, float]:
    params = RecompileParams(
        knowledge=str(folder),
        store=f"sqlite:///{work / 'knowledge.db'}",
        build_dir=str(work / "build"),
        changed=changed,
    )
    started = time.perf_counter()
    result = recompile_knowledge(params)
    return result, time.perf_counter() - started


def _add_one(folder: Path) -> str:
    """A new document: a copy of one under a new name and heading (the questions it asks are
    new to the router, so the router is retrained)."""
    docs = _documents(folder)
    if not docs:
        return _touch_one(folder, heading=True)  # an FAQ-only folder has no document to add
    original = docs[len(docs) // 4]
    target = original.with_name(f"added-{original.name}")
    text = original.read_text("utf-8")
    text = text.replace("# ", "# Added: ", 1).replace("<h2>", "<h2>Added: ", 1)
    target.write_text(text, "utf-8")
    return target.relative_to(folder).as_posix()


def _remove_one(folder: Path) -> str:
    docs = _documents(folder)
    target = docs[(3 * len(docs)) // 4] if docs else next(folder.rglob("faq.jsonl"))
    if not docs:  # an FAQ-only folder: drop one entry
        lines = target.read_text("utf-8").splitlines()
        target.write_text("\n".join(lines[1:]) + "\n", "utf-8")
    else:
        target.unlink()
    return target.relative_to(folder).as_posix()


def _command_overhead(folder: Path, work: Path) -> tuple[float, float]:
    """``ragc compile`` of the unchanged folder as a user runs it: its wall time, and the part
    outside the flow's own work (interpreter, imports, the temporary Prefect server, exit)."""
    command = [
        sys.executable,
        "-m",
        "ragc",
        "compile",
        str(folder),
        "--json",
        "--store",
        f"sqlite:///{work / 'knowledge.db'}",
        "--build-dir",
        str(work / "build"),
    ]
    started = time.perf_counter()
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=root)
    wall = time.perf_counter() - started
    return wall, wall - float(json.loads(done.stdout)["seconds"])


def bench(source: Path) -> None:
    runs: list[tuple[str, CompileResult, float]] = []
    with tempfile.TemporaryDirectory(prefix="ragc-bench-") as tmp:
        work = Path(tmp)
        folder = work / "knowledge"
        shutil.copytree(source, folder)
        regression = source.parent / "regression.jsonl"
        if regression.is_file():
            shutil.copy(regression, work / "regression.jsonl")
        result, seconds = _compile(folder, work, [])
        runs.append(("full (cold cache)", result, seconds))
        result, seconds = _compile(folder, work, [])
        runs.append(("recompile, unchanged", result, seconds))
        changes: list[tuple[str, Callable[[], str]]] = [
            ("body of {} changed", lambda: _touch_one(folder, heading=False)),
            ("heading of {} changed", lambda: _touch_one(folder, heading=True)),
            ("{} added", lambda: _add_one(folder)),
            ("{} removed", lambda: _remove_one(folder)),
        ]
        for label, change in changes:
            path = change()
            result, seconds = _compile(folder, work, [path])
            runs.append(("one document: " + label.format(path), result, seconds))
        command_wall, overhead = _command_overhead(folder, work)

    full_s = runs[0][2]
    stages = Table(title=f"{source} — seconds by stage (the full compile with a cold cache)")
    stages.add_column("stage")
    for name, _, _ in runs:
        stages.add_column(name.split(":")[-1].strip()[:24], justify="right")
    for stage in [s.stage for s in runs[0][1].stages]:
        stages.add_row(
            stage,
            *(f"{({s.stage: s.seconds for s in r.stages}).get(stage, 0):.2f}" for _, r, _ in runs),
        )
    console.print(stages)
    summary = Table(title=f"{source} — wall time, ratio to the full compile in this run")
    for column in ("run", "wall s", "ratio", "provider calls", "reused", "version"):
        summary.add_column(column, justify="right" if column != "run" else "left")
    for name, result, seconds in runs:
        summary.add_row(
            name,
            f"{seconds:.2f}",
            f"{seconds / full_s:.1%}",
            str(sum(result.provider_calls.values())),
            str(sum(result.provider_reused.values())),
            result.version,
        )
    console.print(summary)
    console.print(
        f"`ragc compile` of the unchanged folder: {command_wall:.1f} s from command start to "
        f"exit, {overhead:.1f} s of it outside the flow's own work (fixed overhead)"
    )
    first = runs[0][1]
    console.print(
        f"artifacts {first.counts}; entries {first.entries}; skipped {len(first.skipped)}"
    )


def main(argv: list[str]) -> None:
    folders = [Path(a) for a in argv] or [Path("examples")]
    for folder in folders:
        bench(folder)


if __name__ == "__main__":
    main(sys.argv[1:])
