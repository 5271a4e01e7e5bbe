"""``ragc models prepare`` and ``ragc db``: one-time set-up of encoders and the warm tier."""

from __future__ import annotations

from typing import Annotated

import typer

from ragc.commands._base import (
    JsonOpt,
    app,
    console,
    emit,
    fails_cleanly,
)
from schemas.errors import InvalidInputError

# --- ragc db: the Postgres warm tier's schema -----------------------------------------------

models_app = typer.Typer(help="Local encoders: prepare them once per machine or image.")
app.add_typer(models_app, name="models")


@models_app.command("prepare")
def models_prepare(as_json: JsonOpt = False) -> None:
    """Convert all-mpnet-base-v2 (the router's encoder) into the model cache
    ($RAGC_MODEL_DIR, default ~/.cache/ragc/models) once; a server never converts."""
    from providers.mpnet import prepare_mpnet  # noqa: PLC0415 - heavy

    path = prepare_mpnet()
    emit({"model": str(path)}, as_json, f"all-mpnet-base-v2 ready at {path}")


db_app = typer.Typer(help="The Postgres warm tier: schema migrations and their status.")
app.add_typer(db_app, name="db")
DsnOpt = Annotated[
    str,
    typer.Option(
        "--dsn",
        envvar="RAGC_WARM_DSN",
        help="Postgres DSN of the warm tier (postgresql://user:pass@host:5432/db).",
        show_default=False,
    ),
]


def _warm_dsn(dsn: str) -> str:
    if not dsn.strip():
        raise InvalidInputError(
            "no Postgres warm tier given", hint="pass --dsn postgresql://... or set RAGC_WARM_DSN"
        )
    return dsn.strip()


@db_app.command("upgrade")
@fails_cleanly
def db_upgrade(dsn: DsnOpt = "", as_json: JsonOpt = False) -> None:
    """Apply pending migrations (idempotent; concurrent upgraders are safe)."""
    from stores.postgres import current_revision, migrate, redact  # noqa: PLC0415 - psycopg

    url = _warm_dsn(dsn)
    applied = migrate(url)
    revision = current_revision(url)
    done = f"applied {', '.join(applied)}" if applied else "up to date"
    emit(
        {"dsn": redact(url), "applied": applied, "revision": revision},
        as_json,
        f"{done} (revision {revision}) at {redact(url)}",
    )


@db_app.command("status")
@fails_cleanly
def db_status(dsn: DsnOpt = "", as_json: JsonOpt = False) -> None:
    """Show the warm tier's schema revision and any pending migrations."""
    from stores.postgres import migration_status  # noqa: PLC0415 - psycopg

    status = migration_status(_warm_dsn(dsn))
    if as_json:
        emit(status, True, "")
        return
    console.print(
        f"{status.dsn}: revision {status.revision or '(none)'}, this ragc needs {status.expected}",
        highlight=False,
    )
    for migration in status.applied:
        changed = " [red](changed since applied)[/]" if migration.changed else ""
        console.print(f"  applied {migration.name} at {migration.applied_at}{changed}")
    for name in status.pending:
        console.print(f"  pending {name}", highlight=False)
    if status.pending:
        console.print("run `ragc db upgrade` to apply the pending migrations", highlight=False)
