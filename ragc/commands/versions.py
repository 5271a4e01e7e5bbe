"""``ragc versions``, ``publish``, ``rollout``, ``rollback``, ``pin``, ``gc``: the version
pointers from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragc.commands._base import (
    JsonOpt,
    StoreOpt,
    app,
    describe_rollout,
    emit,
    emit_rows,
    err,
    fails_cleanly,
    opened_store,
)
from stores import read_snapshot
from stores.base import PARTIAL_GRACE_S


@app.command()
@fails_cleanly
def versions(store: StoreOpt = "", as_json: JsonOpt = False) -> None:
    """List published versions with their pointers."""
    with opened_store(store) as s:
        listed = s.versions()
    emit_rows(
        listed,
        as_json,
        ("version", "created", "exact", "intents", "topics", "state"),
        lambda info: (
            info.version,
            info.created_at,
            str(info.counts.get("exact", 0)),
            str(info.counts.get("intents", 0)),
            str(info.counts.get("topics", 0)),
            " ".join(
                [f for f, on in (("active", info.active), ("canary", info.canary)) if on]
                + [f"pinned:{t}" for t in info.pinned_by]
            ),
        ),
        "no versions published yet",
    )


@app.command()
@fails_cleanly
def publish(
    snapshot: Annotated[
        Path | None, typer.Argument(help="Snapshot folder (manifest.json + JSONL).")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Snapshot folder as a local path or fsspec URL (s3://bucket/archive/v3, ...), "
            "instead of SNAPSHOT.",
            show_default=False,
        ),
    ] = None,
    activate: Annotated[
        bool, typer.Option("--activate/--no-activate", help="Make it the active version.")
    ] = False,
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Publish a snapshot folder (or --from URL) as a new immutable version."""
    where = source if source is not None else snapshot
    if where is None or (snapshot is not None and source is not None):
        err.print("[bold red]error:[/] give a SNAPSHOT folder or --from URL (one)", highlight=False)
        raise typer.Exit(2)
    loaded = read_snapshot(where)
    with opened_store(store) as s:
        info = s.publish(loaded, activate=activate)
    emit(info, as_json, f"published {info.version}" + (" (active)" if info.active else ""))


@app.command()
@fails_cleanly
def rollout(
    version: Annotated[str, typer.Argument(help="Version to roll out.")],
    percent: Annotated[
        float, typer.Option("--percent", "-p", min=0, max=100, help="Share of sessions.")
    ] = 100.0,
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Serve VERSION to a share of sessions as a canary; 100 makes it the active version."""
    with opened_store(store) as s:
        record = s.rollout(version, percent)
    emit(record.public(), as_json, describe_rollout(record))


@app.command()
@fails_cleanly
def rollback(store: StoreOpt = "", as_json: JsonOpt = False) -> None:
    """End a running canary, or return to the previously active version."""
    with opened_store(store) as s:
        record = s.rollback()
    emit(record.public(), as_json, describe_rollout(record))


@app.command()
@fails_cleanly
def pin(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    version: Annotated[str | None, typer.Argument(help="Version to pin the tenant to.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the tenant's pin.")] = False,
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Pin a tenant to one version (or --clear the pin)."""
    if (version is None) == (not clear):
        err.print("[bold red]error:[/] give a VERSION to pin, or --clear to unpin", highlight=False)
        raise typer.Exit(2)
    with opened_store(store) as s:
        s.pin(tenant, None if clear else version)
    message = f"unpinned {tenant}" if clear else f"pinned {tenant} to {version}"
    emit({"tenant": tenant, "version": None if clear else version}, as_json, message)


@app.command()
@fails_cleanly
def gc(
    keep: Annotated[int, typer.Option("--keep", min=1, help="Newest versions to keep.")] = 3,
    partial_grace: Annotated[
        float,
        typer.Option(
            "--partial-grace",
            min=0,
            help="Seconds a partial load's publisher must have been silent for the load to be "
            "removed (0: at once; only when no publisher is running).",
        ),
    ] = PARTIAL_GRACE_S,
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Delete old versions (never the stable, canary or a pinned one) and dead partial loads."""
    with opened_store(store) as s:
        report = s.gc(keep, partial_grace_s=partial_grace)
    removed = ", ".join((*report.removed, *report.partial_removed)) or "nothing"
    emit(report, as_json, f"removed {removed}; kept {', '.join(report.kept) or 'nothing'}")
