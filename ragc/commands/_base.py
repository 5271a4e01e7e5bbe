"""What every ``ragc`` command shares: the Typer app, the common options, clean failures and
output."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, ParamSpec, Protocol, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from schemas.errors import RagcError
from schemas.rollout import Rollout
from schemas.settings import Environment
from stores import DEFAULT_STORE_URL, SnapshotStore, open_store

if TYPE_CHECKING:
    from stores.warm import WarmTier

app = typer.Typer(
    name="ragc",
    help="Compile static knowledge into versioned answer snapshots and serve them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)

StoreOpt = Annotated[
    str,
    typer.Option(
        "--store",
        envvar="RAGC_STORE",
        help=f"Snapshot store URL (default {DEFAULT_STORE_URL}).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ProviderOpt = Annotated[
    str,
    typer.Option(help="Language-model provider: offline, anthropic, openai, azure or local."),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(help="Model for the provider (a GGUF path for local; default: its own)."),
]
WrongTargetOpt = Annotated[
    float,
    typer.Option(help="Router: highest expected share of wrong answers among those served."),
]
OosShareOpt = Annotated[
    float,
    typer.Option(help="Router: share of questions assumed to be outside the knowledge."),
]
SimilarityGateOpt = Annotated[
    bool,
    typer.Option(
        "--similarity-gate",
        help="Router: also tune a minimum similarity to the matched entry's phrasings "
        "(for traffic with many near misses of the knowledge).",
    ),
]


def fails_cleanly(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a :class:`RagcError` into one clear line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except RagcError as exc:
            err.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


@contextmanager
def opened_store(url: str | None) -> Iterator[SnapshotStore]:
    """The store at ``url`` (default ``RAGC_STORE``), closed when the block ends."""
    store = open_store(url or Environment.read().store)
    try:
        yield store
    finally:
        store.close()


def warm_tier(store: str | None) -> WarmTier:
    """The warm tier of ``store`` (default ``RAGC_STORE``), with ``RAGC_WARM_DSN``."""
    from stores.warm import WarmTier  # noqa: PLC0415 - psycopg only for the commands that need it

    settings = Environment.read()
    return WarmTier(store or settings.store, settings.warm_dsn)


@contextmanager
def opened_warm(
    store: str | None, component: Callable[[WarmTier], C | None], what: str
) -> Iterator[C]:
    """One warm-tier component of ``store`` (``component`` opens it, e.g.
    ``WarmTier.review_queue``), closed when the block ends; without a warm tier, an error
    naming ``what`` needs one."""
    from stores.warm import WarmTier  # noqa: PLC0415

    opened = WarmTier.require(component(warm_tier(store)), what)
    try:
        yield opened
    finally:
        opened.close()


def emit(value: object, as_json: bool, text: str) -> None:
    if as_json:
        sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    else:
        console.print(text, highlight=False)


def emit_rows(
    rows: Sequence[T],
    as_json: bool,
    columns: Sequence[str],
    cells: Callable[[T], Sequence[str]],
    empty: str,
) -> None:
    """``rows`` as JSON, or as a table of ``columns`` (``cells`` gives a row's), or ``empty``."""
    if as_json:
        emit(rows, True, "")
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*cells(row))
    console.print(table if rows else empty)


def describe_rollout(record: Rollout) -> str:
    if record.canary:
        return f"stable {record.stable}, canary {record.canary} at {record.percent:g}%"
    return f"stable {record.stable or '(none)'}"
