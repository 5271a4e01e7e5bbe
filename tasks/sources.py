"""Stage 0 — fetch: the knowledge a compile was asked for, as a local folder.

``knowledge`` is a folder, or the name of a source in the sources file (``RAGC_SOURCES``; see
:mod:`schemas.sources`). A ``path`` source is that folder; a ``git`` source is cloned (shallow)
into ``BUILD_DIR/sources/NAME/checkout`` and, on later compiles, fetched and checked out there
again; a ``url`` source (any fsspec URL) is copied into ``BUILD_DIR/sources/NAME/files``,
replacing the previous copy so that removed documents disappear too. The checkout and the copy
are the compile's knowledge folder; what changed is then found by content hash, as always.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

from schemas.errors import InvalidInputError, RetryableError
from schemas.settings import Environment
from schemas.sources import NAME, KnowledgeSource, load_sources
from tasks._policies import stage_task

__all__ = ["GIT_TIMEOUT_S", "fetch_knowledge", "knowledge_folder", "materialize"]

logger = logging.getLogger(__name__)

GIT_TIMEOUT_S: Final = 300.0
"""A clone or fetch that takes longer is stopped (and retried as a transient failure)."""


def _git(*args: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - git with arguments from the sources file
            ["git", *args],  # noqa: S607 - git from PATH, as a user runs it
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except FileNotFoundError as exc:
        raise InvalidInputError(
            "git is not installed here", hint="install git on the worker, or use a url source"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise RetryableError(f"git {args[0]} took over {GIT_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        raise RetryableError(
            f"git {' '.join(args[:1])} failed: {done.stderr.strip()[-500:]}",
            hint="check the repository URL, the ref and the worker's git credentials",
        )
    return done.stdout.strip()


def _checkout(source: KnowledgeSource, dest: Path) -> Path:
    assert source.git is not None
    ref = [source.ref] if source.ref else []
    if (dest / ".git").is_dir():
        _git("fetch", "--depth", "1", "origin", *(ref or ["HEAD"]), cwd=dest)
        _git("checkout", "--force", "--detach", "FETCH_HEAD", cwd=dest)
        _git("clean", "-ffdx", cwd=dest)
    else:
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        branch = ["--branch", source.ref] if source.ref else []
        _git("clone", "--depth", "1", *branch, "--", source.git, str(dest))
    commit = _git("rev-parse", "HEAD", cwd=dest)
    logger.info("knowledge %s: %s at %s", source.name, source.git, commit)
    return dest


def _copy(source: KnowledgeSource, dest: Path) -> Path:
    assert source.url is not None
    import fsspec  # type: ignore[import-untyped]  # noqa: PLC0415 - only url sources need it

    try:
        fs, root = fsspec.core.url_to_fs(source.url)
        folder = fs.isdir(root)
    except (OSError, ValueError, ImportError) as exc:
        raise RetryableError(
            f"knowledge {source.name}: {source.url} cannot be read: {exc}",
            hint="check the URL and the worker's credentials for it (from the environment)",
        ) from exc
    if not folder:
        raise InvalidInputError(
            f"knowledge {source.name}: {source.url} is not a folder",
            hint="give the URL of a folder (a prefix) of documents",
        )
    staging = dest.with_name(dest.name + ".new")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        fs.get(root.rstrip("/") + "/", str(staging) + "/", recursive=True)
    except OSError as exc:
        raise RetryableError(
            f"knowledge {source.name}: copying {source.url} failed: {exc}",
            hint="check the URL and the worker's credentials for it (from the environment)",
        ) from exc
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return dest


def materialize(source: KnowledgeSource, build_dir: Path) -> Path:
    """The source's documents as a local folder (fetched into ``build_dir`` when remote)."""
    home = build_dir / "sources" / source.name
    if source.kind == "path":
        folder = Path(str(source.path))
    elif source.kind == "git":
        folder = _checkout(source, home / "checkout")
    else:
        folder = _copy(source, home / "files")
    folder = folder / source.subdir if source.subdir else folder
    if not folder.is_dir():
        raise InvalidInputError(
            f"knowledge {source.name}: {folder} is not a folder",
            hint="check the source's path, or its subdir inside the repository",
        )
    return folder


def knowledge_folder(knowledge: str, build_dir: Path, sources: Path | None = None) -> Path:
    """The local folder of ``knowledge``: a folder as given, else the named source's."""
    folder = Path(knowledge)
    if folder.is_dir():
        return folder
    file = sources or (Path(s) if (s := Environment.read().sources) else None)
    declared = load_sources(file) if file is not None else {}
    if knowledge not in declared:
        what = (
            f"is neither a folder nor a source named in {file}"
            if file
            else "is not a folder (and RAGC_SOURCES names no sources file)"
        )
        raise InvalidInputError(
            f"knowledge {knowledge!r} {what}",
            hint="give a knowledge folder, or declare the name as [knowledge.NAME] in the "
            "sources file (RAGC_SOURCES)"
            if NAME.match(knowledge)
            else "give a knowledge folder",
        )
    return materialize(declared[knowledge], build_dir)


@stage_task(retries=2)
def fetch_knowledge(knowledge: str, build_dir: str) -> str:
    """Prefect task over :func:`knowledge_folder` (a failed clone or copy is retried)."""
    return str(knowledge_folder(knowledge, Path(build_dir)))
