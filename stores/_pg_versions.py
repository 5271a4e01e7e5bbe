"""The catalogue of published versions in Postgres, and their L2 enumeration slot values.

Publish records each version's manifest here when a Postgres warm tier is configured, so
operators (and other services) can query what was published, when, from which sources and
with which gate results, without opening the snapshot store. Entries are immutable like the
versions they describe: recording the same manifest again is a no-op, a different one for a
known version is refused.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence

import msgspec

from schemas.errors import ImmutableVersionError
from schemas.keys import validate_version
from schemas.manifest import Manifest
from schemas.records import IntentTemplate
from stores._pg import PgComponent, utc_time

__all__ = ["PostgresVersionCatalog"]


def _slot_rows(version: str, intents: Sequence[IntentTemplate]) -> list[tuple[str, ...]]:
    return sorted(
        {
            (version, intent.intent, slot.name, value)
            for intent in intents
            for slot in intent.slots
            for value in slot.values
        }
    )


class PostgresVersionCatalog(PgComponent):
    """Published versions' manifests in the Postgres warm tier (a DSN, or an injected pool)."""

    def record(self, manifest: Manifest, *, intents: Sequence[IntentTemplate] = ()) -> bool:
        """Record a published version (and its intents' enumeration slot values).

        Returns True when it was new, False when this exact manifest was already recorded;
        a different manifest under a recorded version raises ImmutableVersionError.
        """
        version = validate_version(manifest.version)
        encoded = msgspec.json.encode(manifest).decode()
        created_at = utc_time(manifest.created_at, f"the manifest of {version}")
        with self._connection() as conn:
            inserted = conn.execute(
                "INSERT INTO ragc.versions (version, manifest, checksum, created_at) "
                "VALUES (%s, %s::jsonb, %s, %s) ON CONFLICT (version) DO NOTHING RETURNING 1",
                (version, encoded, manifest.checksum, created_at),
            ).fetchone()
            if inserted is None:
                same = conn.execute(
                    "SELECT manifest = %s::jsonb FROM ragc.versions WHERE version = %s",
                    (encoded, version),
                ).fetchone()
                if same is None or not same[0]:
                    raise ImmutableVersionError(version)
                return False
            rows = _slot_rows(version, intents)
            if rows:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO ragc.l2_slot_values (version, intent, slot, value) "
                        "VALUES (%s, %s, %s, %s)",
                        rows,
                    )
        return True

    def get(self, version: str) -> Manifest | None:
        """One version's manifest, or ``None``."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT manifest::text FROM ragc.versions WHERE version = %s", (version,)
            ).fetchone()
        return msgspec.json.decode(row[0], type=Manifest) if row is not None else None

    def list(self) -> builtins.list[Manifest]:
        """Every recorded manifest, in publish order."""
        with self._connection() as conn:
            rows = conn.execute("SELECT manifest::text FROM ragc.versions ORDER BY seq").fetchall()
        return [msgspec.json.decode(r[0], type=Manifest) for r in rows]

    def slot_values(self, version: str) -> dict[str, dict[str, tuple[str, ...]]]:
        """Enumeration slot values of a version: intent → slot → sorted values."""
        with self._connection() as conn:
            rows = conn.execute(
                'SELECT intent, slot, array_agg(value ORDER BY value COLLATE "C") '
                "FROM ragc.l2_slot_values WHERE version = %s GROUP BY intent, slot "
                "ORDER BY intent, slot",
                (version,),
            ).fetchall()
        found: dict[str, dict[str, tuple[str, ...]]] = {}
        for intent, slot, values in rows:
            found.setdefault(intent, {})[slot] = tuple(values)
        return found
