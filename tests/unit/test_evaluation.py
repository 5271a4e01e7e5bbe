"""Eval metrics: what counts as correct, and how the report's figures are defined."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.build import RegressionCase
from schemas.evaluation import Outcome, is_correct, outcome_of, summarize
from schemas.ladder import Answer, Layer, LoadedSnapshot
from schemas.manifest import DuplicateGroup, DuplicateMember
from schemas.records import Source
from tests.factories import make_snapshot

REFUNDS = Source(
    doc_id="refunds", path="policies/refunds.md", section="Return window", anchor="return-window"
)
SHIPPING = Source(
    doc_id="shipping", path="policies/shipping.md", section="Costs & fees", anchor="costs-fees"
)


def _answer(
    layer: Layer = "L1",
    *,
    entry_id: str | None = "refund.window",
    sources: tuple[Source, ...] = (REFUNDS,),
    latency_ms: float = 1.0,
    confidence: float = 1.0,
) -> Answer:
    if layer == "SAFE":
        entry_id, sources = None, ()
    return Answer(
        answer="text",
        layer=layer,
        entry_id=entry_id,
        sources=sources,
        version="v1",
        cache_key=None,
        confidence=confidence,
        latency_ms=latency_ms,
    )


def _case(*accept: dict[str, str], oos_type: str | None = None) -> RegressionCase:
    return RegressionCase(query="q", accept=accept, oos_type=oos_type)


def _outcome(case: RegressionCase, answer: Answer) -> Outcome:
    return outcome_of(case, answer)


# --- is_correct -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "correct"),
    [
        ({"entry_id": "refund.window"}, True),
        ({"entry_id": "shipping.cost"}, False),
        ({"doc_id": "refunds"}, True),
        ({"doc_id": "shipping"}, False),
        ({"section": "Return window"}, True),
        ({"section": "RETURN WINDOW"}, True),
        ({"section": "return-window!"}, True),
        ({"section": "Return windows"}, False),
        ({"doc_id": "refunds", "section": "return window"}, True),
        ({"doc_id": "shipping", "section": "Return window"}, False),
        ({"entry_id": "refund.window", "doc_id": "shipping"}, False),
        ({}, True),
    ],
)
def test_a_target_matches_when_each_of_its_fields_does(
    target: dict[str, str], correct: bool
) -> None:
    assert is_correct(_answer(), _case(target)) is correct


def test_doc_id_matches_any_cited_source() -> None:
    answer = _answer("L3", entry_id=None, sources=(REFUNDS, SHIPPING))
    assert is_correct(answer, _case({"doc_id": "shipping"}))
    assert is_correct(answer, _case({"doc_id": "refunds"}))
    assert not is_correct(answer, _case({"doc_id": "warranty"}))


def test_section_punctuation_and_case_are_ignored() -> None:
    answer = _answer("L2", entry_id="shipping.cost", sources=(SHIPPING,))
    assert is_correct(answer, _case({"section": "costs fees"}))
    assert is_correct(answer, _case({"section": "COSTS / FEES"}))
    assert not is_correct(answer, _case({"section": "costs"}))


def test_doc_id_and_section_must_hold_for_the_same_source() -> None:
    answer = _answer("L3", entry_id=None, sources=(REFUNDS, SHIPPING))
    assert not is_correct(answer, _case({"doc_id": "refunds", "section": "Costs & fees"}))


def test_any_accept_target_may_match() -> None:
    case = _case({"entry_id": "other"}, {"doc_id": "refunds"})
    assert is_correct(_answer(), case)
    assert not is_correct(_answer(), _case({"entry_id": "other"}, {"doc_id": "other"}))


def test_a_source_target_needs_a_cited_source() -> None:
    assert not is_correct(_answer(sources=()), _case({"doc_id": "refunds"}))
    assert is_correct(_answer(sources=()), _case({"entry_id": "refund.window"}))


def test_the_fallback_is_never_correct_for_an_in_scope_query() -> None:
    assert not is_correct(_answer("SAFE"), _case({}))
    assert not is_correct(_answer("SAFE"), _case({"entry_id": "refund.window"}))


@pytest.mark.parametrize(("layer", "correct"), [("SAFE", True), ("L1", False), ("L3", False)])
def test_only_the_fallback_is_correct_out_of_scope(layer: Layer, correct: bool) -> None:
    assert is_correct(_answer(layer), _case()) is correct


# --- summarize --------------------------------------------------------------------------------


def test_a_wrong_answer_out_of_scope_counts_as_wrong_and_lowers_rejection() -> None:
    report = summarize(
        [
            _outcome(_case({"entry_id": "refund.window"}), _answer("L1")),
            _outcome(_case(), _answer("L2", entry_id="shipping.cost")),
            _outcome(_case(), _answer("SAFE")),
        ]
    )
    assert (report.queries, report.in_scope, report.out_of_scope) == (3, 1, 2)
    assert report.wrong_rate == 0.5
    assert report.rejection == 0.5
    assert report.coverage == 1.0
    assert report.pass_rate == round(2 / 3, 4)


def test_the_fallback_in_scope_lowers_coverage_but_is_not_wrong() -> None:
    report = summarize(
        [
            _outcome(_case({"entry_id": "refund.window"}), _answer("L1")),
            _outcome(_case({"entry_id": "shipping.cost"}), _answer("SAFE")),
        ]
    )
    assert report.coverage == 0.5
    assert report.wrong_rate == 0.0
    assert report.rejection is None
    assert report.pass_rate == 0.5


def test_a_wrong_in_scope_answer_is_wrong_and_not_covered() -> None:
    report = summarize([_outcome(_case({"entry_id": "other"}), _answer("L1"))])
    assert (report.coverage, report.wrong_rate, report.pass_rate) == (0.0, 1.0, 0.0)


def test_rejection_is_split_by_out_of_scope_type() -> None:
    report = summarize(
        [
            _outcome(_case(oos_type="chitchat"), _answer("SAFE")),
            _outcome(_case(oos_type="chitchat"), _answer("L1")),
            _outcome(_case(oos_type="adversarial"), _answer("SAFE")),
            _outcome(_case(), _answer("L3")),
            _outcome(_case({"doc_id": "refunds"}), _answer("L1")),
        ]
    )
    assert report.rejection_by_type == {"adversarial": 1.0, "chitchat": 0.5, "unspecified": 0.0}
    assert list(report.rejection_by_type) == ["adversarial", "chitchat", "unspecified"]
    assert report.rejection == 0.5


def test_layer_share_and_latency_percentiles() -> None:
    in_scope = _case({"entry_id": "refund.window"})
    report = summarize(
        [_outcome(in_scope, _answer("L1", latency_ms=float(ms))) for ms in range(11, 0, -1)]
        + [_outcome(_case(), _answer("SAFE", latency_ms=50.0)) for _ in range(11)]
    )
    assert report.layer_share == {"L1": 0.5, "SAFE": 0.5}
    assert report.latency_p50_ms == {"L1": 6.0, "SAFE": 50.0}
    assert report.latency_p99_ms == {"L1": 11.0, "SAFE": 50.0}


def test_a_single_latency_is_every_percentile() -> None:
    report = summarize([_outcome(_case(), _answer("SAFE", latency_ms=2.5))])
    assert report.latency_p50_ms == report.latency_p99_ms == {"SAFE": 2.5}


def test_an_empty_run_has_neutral_figures() -> None:
    report = summarize([])
    assert (report.queries, report.coverage, report.wrong_rate) == (0, 0.0, 0.0)
    assert report.rejection is None
    assert report.pass_rate == 1.0
    assert report.layer_share == {}


def test_an_outcome_copies_the_answer_and_the_case() -> None:
    case = _case({"entry_id": "refund.window"}, oos_type=None)
    answer = _answer("L2", latency_ms=3.25, confidence=0.8)
    outcome = outcome_of(case, answer)
    assert outcome.served
    assert outcome.correct
    assert outcome.in_scope
    assert (outcome.layer, outcome.entry_id, outcome.confidence, outcome.latency_ms) == (
        "L2",
        "refund.window",
        0.8,
        3.25,
    )
    assert outcome.expected == case.accept


# --- properties -------------------------------------------------------------------------------

LAYERS: tuple[Layer, ...] = ("L1", "L2", "L3", "SAFE")
queries = st.lists(
    st.tuples(
        st.sampled_from(LAYERS),
        st.sampled_from(["refund.window", "shipping.cost"]),
        st.one_of(st.none(), st.sampled_from(["refund.window", "shipping.cost"])),
        st.one_of(st.none(), st.sampled_from(["chitchat", "adversarial"])),
    ),
    max_size=40,
)


@given(queries)
def test_rates_are_shares_and_pass_rate_counts_right_outcomes(
    rows: list[tuple[Layer, str, str | None, str | None]],
) -> None:
    outcomes = []
    for layer, served_id, expected_id, oos_type in rows:
        case = _case({"entry_id": expected_id}) if expected_id else _case(oos_type=oos_type)
        outcomes.append(_outcome(case, _answer(layer, entry_id=served_id)))
    report = summarize(outcomes)
    assert 0.0 <= report.coverage <= 1.0
    assert 0.0 <= report.wrong_rate <= 1.0
    assert report.rejection is None or 0.0 <= report.rejection <= 1.0
    assert all(0.0 <= r <= 1.0 for r in report.rejection_by_type.values())
    assert sum(report.layer_share.values()) == pytest.approx(1.0 if rows else 0.0, abs=1e-3)
    right_in_scope = sum(
        layer != "SAFE" and served == expected
        for layer, served, expected, _ in rows
        if expected is not None
    )
    rejected_oos = sum(layer == "SAFE" for layer, _, expected, _ in rows if expected is None)
    if rows:
        assert report.pass_rate == round((right_in_scope + rejected_oos) / len(rows), 4)


def test_the_report_says_why_each_miss_and_wrong_answer_happened() -> None:
    from ragc.report import render_report  # noqa: PLC0415 - the CLI's report module
    from schemas.evaluation import threshold_curve  # noqa: PLC0415

    missed = msgspec.structs.replace(
        _outcome(_case({"entry_id": "refund.damaged"}), _answer("SAFE")),
        explanation="far from every phrasing of refund.damaged: similarity 0.55 below 0.72",
    )
    wrong = msgspec.structs.replace(
        _outcome(_case(oos_type="in_domain"), _answer("L2", confidence=0.8)),
        explanation="matched refund.window at 0.80 (threshold 0.5) <b>",
    )
    outcomes = [missed, wrong]
    page = render_report("t", summarize(outcomes), outcomes, threshold_curve(outcomes), 0.5)
    assert "far from every phrasing of refund.damaged: similarity 0.55 below 0.72" in page
    assert "matched refund.window at 0.80 (threshold 0.5) &lt;b&gt;" in page


# --- equivalent duplicates --------------------------------------------------------------------

ARRIVAL = Source(doc_id="a", path="a.html", section="When will it arrive?", anchor="arrive")
DELIVERY = Source(doc_id="b", path="b.html", section="When is it delivered?", anchor="delivery")
TRACKING = Source(doc_id="c", path="c.html", section="Can I track it?", anchor="track")


def _group(*, held: bool = False) -> DuplicateGroup:
    """``a.arrive`` (canonical) and ``b.delivery`` (merged, or a held conflict)."""
    return DuplicateGroup(
        id="dup-0123456789ab",
        verdict="conflict" if held else "same",
        canonical="a.arrive",
        members=(
            DuplicateMember(entry_id="a.arrive", question="?", section=ARRIVAL, status="canonical"),
            DuplicateMember(
                entry_id="b.delivery",
                question="?",
                section=DELIVERY,
                status="held" if held else "merged",
            ),
        ),
    )


def _served(layer: Layer = "L2", *, entry_id: str | None = "a.arrive") -> Answer:
    return _answer(layer, entry_id=entry_id, sources=(ARRIVAL,))


@pytest.mark.parametrize(
    "target",
    [
        {"doc_id": "b", "section": "When is it delivered?"},
        {"doc_id": "b"},
        {"entry_id": "b.delivery"},
    ],
)
def test_serving_the_canonical_entry_of_a_targets_group_is_an_equivalent_duplicate(
    target: dict[str, str],
) -> None:
    outcome = outcome_of(_case(target), _served(), duplicates=[_group()])
    assert not outcome.correct
    assert outcome.duplicate == "dup-0123456789ab"


def test_an_l3_answer_citing_a_merged_section_is_an_equivalent_duplicate() -> None:
    answer = _answer("L3", entry_id=None, sources=(DELIVERY,))
    outcome = outcome_of(_case({"doc_id": "a"}), answer, duplicates=[_group()])
    assert outcome.duplicate == "dup-0123456789ab"


def test_a_held_conflict_is_not_an_equivalent() -> None:
    outcome = outcome_of(_case({"doc_id": "b"}), _served(), duplicates=[_group(held=True)])
    assert outcome.duplicate is None


@pytest.mark.parametrize(
    ("case", "answer"),
    [
        (_case({"doc_id": "a"}), _served()),  # right: nothing to forgive
        (_case({"doc_id": "b"}), _served("SAFE")),  # not served
        (_case(oos_type="in_domain"), _served()),  # out of scope: any answer is wrong
        (_case({"doc_id": "c"}), _served()),  # the target is in no group
        (_case({"doc_id": "b"}), _answer("L2", entry_id="c.track", sources=(TRACKING,))),
    ],
)
def test_only_a_wrong_in_scope_answer_within_the_targets_group_is_a_duplicate(
    case: RegressionCase, answer: Answer
) -> None:
    assert outcome_of(case, answer, duplicates=[_group()]).duplicate is None


def test_duplicates_are_counted_apart_with_strict_and_lenient_figures() -> None:
    groups = [_group()]
    outcomes = [
        outcome_of(_case({"doc_id": "a"}), _served(), duplicates=groups),  # right
        outcome_of(_case({"doc_id": "b"}), _served(), duplicates=groups),  # duplicate
        outcome_of(_case({"doc_id": "c"}), _served(), duplicates=groups),  # wrong
        outcome_of(_case({"doc_id": "c"}), _served("SAFE"), duplicates=groups),  # miss
    ]
    report = summarize(outcomes)
    assert report.duplicate_served == 1
    assert (report.coverage, report.coverage_lenient) == (0.25, 0.5)
    assert (report.wrong_rate, report.wrong_rate_lenient) == (0.6667, 0.3333)
    assert report.pass_rate == 0.25  # the regression gate stays strict


def test_groups_come_from_the_loaded_snapshot_manifest() -> None:
    snapshot = make_snapshot("v1")
    grouped = msgspec.structs.replace(
        snapshot, manifest=msgspec.structs.replace(snapshot.manifest, duplicates=(_group(),))
    )
    outcome = outcome_of(_case({"doc_id": "b"}), _served(), LoadedSnapshot(grouped))
    assert outcome.duplicate == "dup-0123456789ab"
    assert outcome_of(_case({"doc_id": "b"}), _served(), LoadedSnapshot(snapshot)).duplicate is None


SECTIONS = (ARRIVAL, DELIVERY, TRACKING)
served_rows = st.lists(
    st.tuples(
        st.sampled_from(LAYERS),
        st.sampled_from(SECTIONS),
        st.one_of(st.none(), st.sampled_from(SECTIONS)),
    ),
    max_size=40,
)


@settings(deadline=None)
@given(served_rows, st.booleans())
def test_lenient_figures_forgive_exactly_the_equivalent_duplicates(
    rows: list[tuple[Layer, Source, Source | None]], held: bool
) -> None:
    groups = [_group(held=held)]
    outcomes = [
        outcome_of(
            _case({"doc_id": expected.doc_id}) if expected else _case(oos_type="in_domain"),
            _answer(layer, entry_id=f"{served.doc_id}.{served.anchor}", sources=(served,)),
            duplicates=groups,
        )
        for layer, served, expected in rows
    ]
    report = summarize(outcomes)
    pair = {ARRIVAL.doc_id, DELIVERY.doc_id}
    expected_duplicates = sum(
        layer != "SAFE"
        and expected is not None
        and not held
        and served.doc_id != expected.doc_id
        and {served.doc_id, expected.doc_id} == pair
        for layer, served, expected in rows
    )
    assert report.duplicate_served == expected_duplicates
    assert all(not o.correct for o in outcomes if o.duplicate is not None)
    assert report.coverage_lenient >= report.coverage
    assert report.wrong_rate_lenient <= report.wrong_rate
    in_scope = sum(expected is not None for _, _, expected in rows)
    served = sum(layer != "SAFE" for layer, _, _ in rows)
    if in_scope:
        assert report.coverage_lenient == pytest.approx(
            report.coverage + expected_duplicates / in_scope, abs=1e-3
        )
    if served:
        assert report.wrong_rate_lenient == pytest.approx(
            report.wrong_rate - expected_duplicates / served, abs=1e-3
        )
    if not expected_duplicates:
        assert (report.coverage_lenient, report.wrong_rate_lenient) == (
            report.coverage,
            report.wrong_rate,
        )


def test_the_report_lists_equivalent_duplicates_apart_and_the_groups() -> None:
    from ragc.report import render_report  # noqa: PLC0415 - the CLI's report module
    from schemas.evaluation import threshold_curve  # noqa: PLC0415

    duplicate = outcome_of(_case({"doc_id": "b"}), _served(), duplicates=[_group()])
    wrong = outcome_of(_case({"doc_id": "c"}), _served(), duplicates=[_group()])
    outcomes = [duplicate, wrong]
    page = render_report(
        "t", summarize(outcomes), outcomes, threshold_curve(outcomes), 0.5, [_group()]
    )
    assert "Served an equivalent duplicate (1)" in page
    assert "Worst confusions (1 wrong answers, besides 1 equivalent\nduplicates)" in page
    assert "coverage, duplicates counted right</th><td>50.0%" in page
    assert "wrong-answer rate</th><td>100.0%" in page
    assert "Duplicate groups of the snapshot (1)" in page
    assert "b.html#delivery" in page
