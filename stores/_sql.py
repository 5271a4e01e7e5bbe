"""The SQL both tiers speak: a table component written once, run on SQLite or on Postgres.

The embedded tier (the store's SQLite file) and the warm tier (Postgres) keep the same tables.
A component that needs no backend's own feature (the change ledger, the audit log's queries)
is written once against :class:`SqlTables`, with ``?`` placeholders, ``{t}`` before each table
name (the Postgres schema) and ``{seq}`` for the column that orders rows as they were written;
:class:`SqliteTables` and ``stores._pg.PgTables`` run it.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final, Protocol

import msgspec

__all__ = ["POSTGRES", "SQLITE", "Dialect", "Rows", "Run", "SqlTables", "SqliteTables"]


class Rows(Protocol):
    """What a statement gives back, as both drivers' cursors do."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


Run = Callable[[str, Sequence[Any]], Rows]
"""Run one statement (in the backend's own placeholder style) inside a transaction."""


class Dialect(msgspec.Struct, frozen=True):
    """How one backend spells what the shared statements leave open."""

    placeholder: str
    schema: str
    """Written before every table name: ``ragc.`` on Postgres."""
    json_arrays: bool
    """Text arrays are stored as JSON text (SQLite) rather than as native arrays (Postgres)."""
    no_limit: int | None
    """The ``LIMIT`` parameter that means no limit."""

    def sql(self, text: str, *, seq: str) -> str:
        """``text`` with its tables, ordering column and placeholders spelled for this backend."""
        return text.format(t=self.schema, seq=seq).replace("?", self.placeholder)

    def array(self, values: Sequence[str]) -> object:
        """A text array as this backend stores it."""
        return msgspec.json.encode(list(values)).decode() if self.json_arrays else list(values)

    def limit(self, limit: int) -> int | None:
        """A row limit: a negative one means none, as in SQLite."""
        return limit if limit >= 0 else self.no_limit

    @staticmethod
    def strings(stored: object) -> tuple[str, ...]:
        """A stored text array (JSON text or a native array) as a tuple."""
        if isinstance(stored, str | bytes):
            return tuple(msgspec.json.decode(stored, type=list[str]))
        return tuple(msgspec.convert(stored, list[str]))


SQLITE: Final = Dialect(placeholder="?", schema="", json_arrays=True, no_limit=-1)
POSTGRES: Final = Dialect(placeholder="%s", schema="ragc.", json_arrays=False, no_limit=None)


class SqlTables(ABC):
    """A component over tables both tiers keep. Subclasses open the transactions."""

    dialect: Dialect
    seq: str = "rowid"
    """The column that orders this component's rows as they were written."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection (or the pool this component opened)."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Run]:
        """One transaction: committed when the block ends, rolled back when it raises."""

    def _sql(self, text: str) -> str:
        """A shared statement as this component's backend spells it."""
        return self.dialect.sql(text, seq=self.seq)

    def _one(self, text: str, params: Sequence[Any] = ()) -> Any:
        """The first row of a statement (``None`` without one), in its own transaction."""
        with self._transaction() as run:
            return run(self._sql(text), params).fetchone()

    def _all(self, text: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row of a statement, in its own transaction."""
        with self._transaction() as run:
            return run(self._sql(text), params).fetchall()

    def _count(self, text: str, params: Sequence[Any] = ()) -> int:
        """Run a statement in its own transaction; the number of rows it changed."""
        with self._transaction() as run:
            return run(self._sql(text), params).rowcount


class SqliteTables(SqlTables):
    """:class:`SqlTables` on the store's SQLite file: one connection, serialized by a lock."""

    dialect = SQLITE

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = threading.Lock()

    @contextmanager
    def _transaction(self) -> Iterator[Run]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db.execute
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
