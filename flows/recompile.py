"""The ``recompile-knowledge`` flow: a partial recompile after some documents changed.

It runs the same stages as a full compile, but everything derived from unchanged documents is
reused by content hash from the build cache — parsed chunks, embeddings, provider calls — and
review decisions hold for every answer whose fingerprint is unchanged. Only the changed
documents are parsed, embedded and answered again; the result is a new, complete version.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from prefect import flow
from pydantic import Field

from flows.compile import CompileParams, CompileResult, compile_knowledge
from schemas.errors import InvalidInputError

__all__ = ["RecompileParams", "recompile_knowledge"]


class RecompileParams(CompileParams):
    """A compile triggered by changed paths (from the knowledge-changed webhook or event)."""

    publish: bool = Field(default=True, description="Publish when every gate passes.")
    changed: list[str] = Field(
        default_factory=list, description="Paths relative to the knowledge folder that changed."
    )


def _check_paths(paths: list[str]) -> None:
    for path in paths:
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts or not path.strip():
            raise InvalidInputError(
                f"changed path {path!r} is not inside the knowledge folder",
                hint="give paths relative to the knowledge folder, without '..'",
            )


@flow(name="recompile-knowledge", log_prints=True, validate_parameters=True)
def recompile_knowledge(params: RecompileParams) -> CompileResult:
    """Recompile after ``params.changed`` changed; unchanged work is reused by content hash."""
    _check_paths(params.changed)
    return compile_knowledge(CompileParams(**params.model_dump(exclude={"changed"})))
