"""Pandera schemas for the tables that pass between compile stages.

Each stage boundary converts its records to a frame and validates it, so a stage that emits a
malformed table (duplicate ids, empty text, scores out of range) fails at that boundary with the
offending rows named, not three stages later.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors
from pandera.typing.pandas import Series

from schemas.errors import GateFailedError

__all__ = [
    "ChunkFrame",
    "EntryFrame",
    "QuestionFrame",
    "SourceFrame",
    "TopicFrame",
    "to_frame",
    "validate_records",
]


class SourceFrame(pa.DataFrameModel):
    """Sources after ingest."""

    path: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    doc_id: Series[str] = pa.Field(str_length={"min_value": 1})
    sha256: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{64}$")
    bytes: Series[int] = pa.Field(gt=0)


class TopicFrame(pa.DataFrameModel):
    """Topics after discovery."""

    id: Series[str] = pa.Field(unique=True, str_matches=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    name: Series[str] = pa.Field(str_length={"min_value": 1})


class ChunkFrame(pa.DataFrameModel):
    """Chunks after parse & chunk."""

    id: Series[str] = pa.Field(unique=True, str_length={"min_value": 8})
    doc_id: Series[str] = pa.Field(str_length={"min_value": 1})
    path: Series[str] = pa.Field(str_length={"min_value": 1})
    section: Series[str] = pa.Field(str_length={"min_value": 1})
    anchor: Series[str] = pa.Field(str_matches=r"^[^\s#]+$")
    text: Series[str] = pa.Field(str_length={"min_value": 1})
    order: Series[int] = pa.Field(ge=0)


class QuestionFrame(pa.DataFrameModel):
    """Questions after synthesis."""

    entry_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    text: Series[str] = pa.Field(str_length={"min_value": 1})
    origin: Series[str] = pa.Field(isin=["faq", "heading", "miss", "synthesized", "title"])


class EntryFrame(pa.DataFrameModel):
    """Entries after answering, verification and review."""

    id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    question: Series[str] = pa.Field(str_length={"min_value": 1})
    answer: Series[str]
    score: Series[float] = pa.Field(ge=0.0, le=1.0)
    status: Series[str] = pa.Field(isin=["approved", "pending", "rejected"])

    @pa.dataframe_check
    @classmethod
    def served_answers_are_sourced(cls, df: pd.DataFrame) -> pd.Series[bool]:
        """An approved answer has text and at least one source."""
        approved = df["status"] == "approved"
        return ~approved | ((df["answer"].str.len() > 0) & (df["sources"].map(len) > 0))


def to_frame(records: Sequence[msgspec.Struct]) -> pd.DataFrame:
    """Records as a frame (one column per field)."""
    return pd.DataFrame([msgspec.structs.asdict(r) for r in records])


def validate_records(
    stage: str, records: Sequence[msgspec.Struct], model: type[pa.DataFrameModel]
) -> None:
    """Validate records against a frame model; raise :class:`GateFailedError` naming rows."""
    if not records:
        return
    try:
        model.validate(to_frame(records), lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        seen: dict[str, str] = {}
        for row in cases.itertuples():
            check = str(row.check)
            where = (
                str(row.column)
                if row.column and check not in ("served_answers_are_sourced",)
                else "row"
            )
            seen.setdefault(f"{where}: {check}", str(row.index))
        detail = "; ".join(f"{what} (row {index})" for what, index in list(seen.items())[:5])
        raise GateFailedError(f"schema:{stage}", detail) from exc
