"""The typed slot grammar of L2 templates: numbers, durations, dates and enumerations.

Slot values are read from the question itself (or given by the caller) and checked against the
slot's kind: a number (digits or English number words), a duration normalized to days
("3 weeks" -> 21), an ISO or day-month date (normalized to ``YYYY-MM-DD`` or ``MM-DD``), or one
of the enumeration's values (matched on canonical text, so case and punctuation do not matter).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

from schemas.normalize import canonical_text
from schemas.records import SlotSpec

__all__ = ["extract_slots", "parse_value"]

_WORDS: Final = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "ninety": 90,
    "a": 1,
    "an": 1,
}
_UNITS: Final = {
    "day": 1,
    "days": 1,
    "week": 7,
    "weeks": 7,
    "month": 30,
    "months": 30,
    "year": 365,
    "years": 365,
}
_MONTHS: Final = {
    m: i
    for i, m in enumerate(
        [
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ],
        1,
    )
}
_NUMBER: Final = r"(\d+(?:\.\d+)?|" + "|".join(sorted(_WORDS, key=len, reverse=True)) + ")"
_DURATION: Final = re.compile(rf"\b{_NUMBER}\s+({'|'.join(_UNITS)})\b")
_PLAIN_NUMBER: Final = re.compile(r"\b(\d+(?:\.\d+)?)\b")
_ISO_DATE: Final = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_DAY_MONTH: Final = re.compile(
    rf"\b(?:(\d{{1,2}})\s+({'|'.join(_MONTHS)})|({'|'.join(_MONTHS)})\s+(\d{{1,2}}))\b"
)


def _number(token: str) -> float:
    return float(_WORDS[token]) if token in _WORDS else float(token)


def _format(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _duration(spec: SlotSpec, text: str) -> str | None:
    del spec
    found = _DURATION.search(text)
    return _format(_number(found.group(1)) * _UNITS[found.group(2)]) if found else None


def _plain_number(spec: SlotSpec, text: str) -> str | None:
    del spec
    found = _PLAIN_NUMBER.search(text)
    return _format(float(found.group(1))) if found else None


def _date(spec: SlotSpec, text: str) -> str | None:
    del spec
    iso = _ISO_DATE.search(text)
    if iso:
        return iso.group(0)
    found = _DAY_MONTH.search(text)
    if not found:
        return None
    day = found.group(1) or found.group(4)
    month = _MONTHS[found.group(2) or found.group(3)]
    return f"{month:02d}-{int(day):02d}"


def _enum(spec: SlotSpec, text: str) -> str | None:
    canonical = canonical_text(text)
    for value in sorted(spec.values, key=len, reverse=True):
        wanted = canonical_text(value)
        if wanted and re.search(rf"\b{re.escape(wanted)}\b", canonical):
            return value
    return None


_READERS: Final = {"duration": _duration, "number": _plain_number, "date": _date, "enum": _enum}


def _first(spec: SlotSpec, text: str) -> str | None:
    """The first value of the slot's kind in ``text`` (lower-cased, punctuation kept)."""
    return _READERS[spec.kind](spec, text)


def parse_value(spec: SlotSpec, raw: object) -> str | None:
    """A caller-given value in the slot's canonical form, or ``None`` when it does not fit."""
    if spec.kind == "enum":
        if not spec.values:  # an open enumeration takes any given value
            return str(raw).strip() or None
        wanted = canonical_text(str(raw))
        return next((v for v in spec.values if canonical_text(v) == wanted), None)
    numeric = isinstance(raw, int | float) and not isinstance(raw, bool)
    if spec.kind in ("number", "duration") and numeric:
        return _format(float(raw))  # type: ignore[arg-type]
    text = str(raw).casefold()
    if spec.kind == "duration" and _PLAIN_NUMBER.fullmatch(text.strip()):
        return _format(float(text))  # a bare number given for a duration is in days
    return _first(spec, text)


def extract_slots(
    question: str, specs: Sequence[SlotSpec], given: Mapping[str, object] | None = None
) -> tuple[dict[str, str], list[str]]:
    """Slot values for ``specs`` (given values first, then read from the question) and the
    names of required slots that stayed empty."""
    text = " ".join(question.casefold().split())
    values: dict[str, str] = {}
    missing: list[str] = []
    for spec in specs:
        value = None
        if given and spec.name in given:
            value = parse_value(spec, given[spec.name])
        if value is None:
            value = _first(spec, text)
        if value is None:
            value = spec.default
        if value is None:
            if spec.required:
                missing.append(spec.name)
            continue
        values[spec.name] = value
    return values, missing
