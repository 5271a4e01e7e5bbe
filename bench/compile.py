"""Compile benchmark: full compile, unchanged recompile and partial recompile, one run.

    uv run python bench/compile.py [KNOWLEDGE_DIR ...]   (default: examples)

For each folder: a full compile with a cold build cache (per-stage seconds), a recompile of the
unchanged folder, a partial recompile after the body of one document changed, and one after a
heading changed (which changes the router's training questions, so the router is retrained) —
each as a ratio of the full compile measured in the same run. The folder is copied first;
nothing in the original is modified.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
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


def _touch_one(folder: Path, *, heading: bool) -> str:
    """Change one document and return its relative path: its body (a paragraph appended) or,
    with ``heading``, its first heading (which changes the questions the router learns)."""
    docs = sorted(p for p in folder.rglob("*.md") if p.is_file())
    if docs:
        target = docs[len(docs) // 3 if heading else len(docs) // 2]
        text = target.read_text("utf-8")
        if heading:
            text = text.replace("# ", "# Revised: ", 1)
        else:
            text += "\n\nThis paragraph was added to measure a partial recompile.\n"
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


def bench(source: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="ragc-bench-") as tmp:
        work = Path(tmp)
        folder = work / "knowledge"
        shutil.copytree(source, folder)
        regression = source.parent / "regression.jsonl"
        if regression.is_file():
            shutil.copy(regression, work / "regression.jsonl")
        full, full_s = _compile(folder, work, [])
        unchanged, unchanged_s = _compile(folder, work, [])
        changed_path = _touch_one(folder, heading=False)
        partial, partial_s = _compile(folder, work, [changed_path])
        retitled_path = _touch_one(folder, heading=True)
        retitled, retitled_s = _compile(folder, work, [retitled_path])

    stages = Table(title=f"{source} — full compile by stage (cold build cache)")
    stages.add_column("stage")
    stages.add_column("full s", justify="right")
    stages.add_column("unchanged s", justify="right")
    stages.add_column("partial s", justify="right")
    stages.add_column("retitled s", justify="right")
    full_t, same_t, part_t, title_t = (
        {s.stage: s.seconds for s in r.stages} for r in (full, unchanged, partial, retitled)
    )
    for stage, seconds in full_t.items():
        stages.add_row(
            stage,
            f"{seconds:.2f}",
            f"{same_t.get(stage, 0):.2f}",
            f"{part_t.get(stage, 0):.2f}",
            f"{title_t.get(stage, 0):.2f}",
        )
    console.print(stages)
    summary = Table(title=f"{source} — wall time, ratio to the full compile in this run")
    for column in ("run", "wall s", "ratio", "provider calls", "reused", "version"):
        summary.add_column(column, justify="right" if column != "run" else "left")
    for name, result, seconds in (
        ("full (cold cache)", full, full_s),
        ("recompile, unchanged", unchanged, unchanged_s),
        (f"partial: body of {changed_path} changed", partial, partial_s),
        (f"partial: heading of {retitled_path} changed", retitled, retitled_s),
    ):
        summary.add_row(
            name,
            f"{seconds:.2f}",
            f"{seconds / full_s:.1%}",
            str(sum(result.provider_calls.values())),
            str(sum(result.provider_reused.values())),
            result.version,
        )
    console.print(summary)
    console.print(f"artifacts {full.counts}; entries {full.entries}; skipped {len(full.skipped)}")


def main(argv: list[str]) -> None:
    folders = [Path(a) for a in argv] or [Path("examples")]
    for folder in folders:
        bench(folder)


if __name__ == "__main__":
    main(sys.argv[1:])
