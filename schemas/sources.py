"""Knowledge sources: the folders a compile may be asked for by name, declared in one file.

A deployment, a change event or a worker names knowledge (``handbook``), not a path on some
machine: the sources file (``RAGC_SOURCES``, TOML) says where each name's documents live, so
a worker whose image does not hold them can pull them::

    [knowledge.examples]
    path = "examples"                  # a folder (relative to this file)

    [knowledge.handbook]
    git = "https://git.example.com/acme/handbook.git"
    ref = "main"                       # branch or tag (default: the remote's HEAD)
    subdir = "docs"                    # the knowledge inside the checkout (default: its root)

    [knowledge.help-center]
    url = "s3://acme-help/center/"     # any fsspec URL: s3://, gcs://, file://, memory://, ...

Each entry has exactly one of ``path``, ``git`` or ``url``. Credentials never go in the file:
git and fsspec read theirs from the environment (``AWS_*``, a credential helper, ...).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Final

import msgspec

from schemas.errors import InvalidInputError

__all__ = ["NAME", "KnowledgeSource", "load_sources"]

NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""A knowledge name: what an event's resource id ``ragc.knowledge.<name>`` carries."""


class KnowledgeSource(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where one named knowledge folder's documents come from."""

    name: str
    path: str | None = None
    git: str | None = None
    ref: str | None = None
    subdir: str = ""
    url: str | None = None

    @property
    def kind(self) -> str:
        return "path" if self.path is not None else "git" if self.git is not None else "url"


def _entry(name: str, table: object, where: Path) -> KnowledgeSource:
    fix = f'give [knowledge.{name}] one of path = "folder", git = "repository URL" or url = "…"'
    if not NAME.match(name):
        raise InvalidInputError(
            f"{where}: knowledge name {name!r} is not a name",
            hint="use letters, digits, '-', '_' and '.', at most 64, starting with a letter or "
            "digit",
        )
    if not isinstance(table, dict):
        raise InvalidInputError(f"{where}: [knowledge.{name}] is not a table", hint=fix)
    try:
        source = msgspec.convert({**table, "name": name}, KnowledgeSource)
    except msgspec.ValidationError as exc:
        raise InvalidInputError(f"{where}: [knowledge.{name}]: {exc}", hint=fix) from exc
    given = [k for k in ("path", "git", "url") if getattr(source, k) is not None]
    if len(given) != 1:
        raise InvalidInputError(
            f"{where}: [knowledge.{name}] has {' and '.join(given) or 'none'} of path, git, url",
            hint=fix,
        )
    if source.ref is not None and source.git is None:
        raise InvalidInputError(
            f"{where}: [knowledge.{name}] has a ref but no git repository", hint=fix
        )
    sub = Path(source.subdir)
    if sub.is_absolute() or ".." in sub.parts:
        raise InvalidInputError(
            f"{where}: [knowledge.{name}] subdir {source.subdir!r} leaves the checkout",
            hint="give subdir relative to the repository root, without '..'",
        )
    if source.path is not None:
        folder = Path(source.path)
        source = msgspec.structs.replace(
            source, path=str(folder if folder.is_absolute() else where.parent / folder)
        )
    return source


def load_sources(path: Path) -> dict[str, KnowledgeSource]:
    """The sources a TOML file declares, by name (see the module docstring)."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise InvalidInputError(
            f"knowledge sources file {path} does not exist",
            hint="create it, or point RAGC_SOURCES at the right file",
        ) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(
            f"{path} is not TOML: {exc}", hint="see the [knowledge.NAME] tables in the README"
        ) from exc
    tables = data.get("knowledge", {})
    if not isinstance(tables, dict) or set(data) - {"knowledge"}:
        raise InvalidInputError(
            f"{path}: only [knowledge.NAME] tables belong in a sources file",
            hint="declare each source as [knowledge.NAME] with path, git or url",
        )
    return {name: _entry(name, table, path) for name, table in tables.items()}
