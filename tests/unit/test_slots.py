"""The typed slot grammar and slot-filled L2 templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.errors import InvalidInputError
from schemas.ladder import fill_template
from schemas.records import IntentTemplate, SlotSpec
from schemas.slots import extract_slots, parse_value
from tasks.ingest import read_faq

DAYS = SlotSpec(name="days", kind="duration", required=True)
REGION = SlotSpec(name="region", kind="enum", values=("EU", "UK", "US"))
COUNT = SlotSpec(name="count", kind="number")
WHEN = SlotSpec(name="when", kind="date")


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        (
            "I got my bike three weeks ago, can I return it to the UK?",
            {"days": "21", "region": "UK"},
        ),
        ("returned 20 days ago on 2026-03-04", {"days": "20", "count": "20", "when": "2026-03-04"}),
        ("a month ago, 2 bikes, shipped to the eu", {"days": "30", "count": "2", "region": "EU"}),
        ("ordered on March 3 and it took 1 week", {"days": "7", "count": "3", "when": "03-03"}),
    ],
)
def test_slots_are_read_from_the_question(question: str, expected: dict[str, str]) -> None:
    values, missing = extract_slots(question, (DAYS, REGION, COUNT, WHEN))
    assert values == expected
    assert missing == []


def test_a_required_slot_that_is_absent_is_reported() -> None:
    assert extract_slots("ship to the us", (DAYS, REGION)) == ({"region": "US"}, ["days"])


def test_given_values_win_and_are_checked_against_the_kind() -> None:
    assert extract_slots("3 weeks", (DAYS, REGION), {"days": 10, "region": "uk"}) == (
        {"days": "10", "region": "UK"},
        [],
    )
    assert parse_value(REGION, "Mars") is None


@given(st.integers(min_value=0, max_value=500), st.sampled_from(["day", "week", "month"]))
def test_durations_are_normalized_to_days(n: int, unit: str) -> None:
    factor = {"day": 1, "week": 7, "month": 30}[unit]
    values, _ = extract_slots(f"about {n} {unit}s ago", (DAYS,))
    assert values == {"days": str(n * factor)}


TEMPLATE = IntentTemplate(
    intent="refund.window",
    template="You received it {days} days ago; returns are accepted for 30 days.",
    slots=(DAYS,),
    static_context="Returns are accepted for 30 days from delivery.",
)


def test_a_template_is_rendered_when_its_slots_are_filled() -> None:
    assert fill_template(TEMPLATE, "it arrived 2 weeks ago", None) == (
        "You received it 14 days ago; returns are accepted for 30 days.",
        {"days": "14"},
    )


def test_the_plain_answer_is_served_when_a_required_slot_is_missing() -> None:
    assert fill_template(TEMPLATE, "can I return it?", None) == (TEMPLATE.static_context, {})


def _faq(tmp_path: Path, row: dict[str, object]) -> Path:
    path = tmp_path / "faq.jsonl"
    base = {"id": "a.b", "question": "Q?", "answer": "A."}
    path.write_text(json.dumps(base | row) + "\n")
    return path


def test_a_faq_line_may_declare_a_slot_template(tmp_path: Path) -> None:
    path = _faq(
        tmp_path, {"template": "In {days} days.", "slots": [{"name": "days", "kind": "duration"}]}
    )
    (faq,) = read_faq(path, "faq.jsonl", "faq")
    assert faq.template == "In {days} days."
    assert faq.slots == (SlotSpec(name="days", kind="duration"),)


@pytest.mark.parametrize(
    ("row", "says"),
    [
        (
            {"template": "In {weeks} weeks.", "slots": [{"name": "days", "kind": "duration"}]},
            "undeclared",
        ),
        ({"slots": [{"name": "days", "kind": "duration"}]}, "need a 'template'"),
        ({"template": "x {days}", "slots": [{"name": "days", "kind": "colour"}]}, "not valid"),
        (
            {"template": "x {days", "slots": [{"name": "days", "kind": "number"}]},
            "not a valid template",
        ),
    ],
)
def test_bad_slot_templates_are_refused_with_the_line(
    tmp_path: Path, row: dict[str, object], says: str
) -> None:
    with pytest.raises(InvalidInputError, match=r"faq\.jsonl:1") as raised:
        read_faq(_faq(tmp_path, row), "faq.jsonl", "faq")
    assert says in str(raised.value)
