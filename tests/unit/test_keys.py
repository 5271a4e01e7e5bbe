"""Cache keys: shape, stability across processes, and no collisions across scopes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import InvalidInputError
from schemas.keys import (
    KeyKind,
    exact_key,
    intent_key,
    key_kind,
    pin_key,
    slot_hash,
    topic_key,
    unique_name,
)
from schemas.normalize import canonical_text
from schemas.rollout import canary_bucket

ROOT = Path(__file__).resolve().parents[2]
versions = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z")
tenants = st.none() | st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,20}\Z")
languages = st.sampled_from(["en", "es", "de", "pt", "fr"])


def test_key_shapes_follow_the_contract() -> None:
    assert exact_key("v23", "Can I get a refund?").startswith("knowledge:v23:en:exact:")
    assert (
        intent_key("v23", "refund.eligibility", tenant="acme", language="en-GB")
        == "knowledge:v23:en:tenant_acme:intent:refund.eligibility"
    )
    assert topic_key("v23", "refunds") == "knowledge:v23:en:topic:refunds"
    assert pin_key("acme") == "knowledge:pin:tenant_acme"
    slotted = intent_key("v23", "refund.eligibility", slots={"days": 40, "product": "battery"})
    assert slotted.startswith("knowledge:v23:en:intent:refund.eligibility:slot_")
    assert "battery" not in slotted


def test_paraphrases_with_the_same_canonical_form_share_a_key() -> None:
    assert exact_key("v1", "What's the return window?") == exact_key(
        "v1", "  what is the RETURN window "
    )


@given(st.dictionaries(st.text(min_size=1), st.integers() | st.text(), min_size=1))
def test_slot_hash_ignores_order(slots: dict[str, object]) -> None:
    assert slot_hash(slots) == slot_hash(dict(reversed(list(slots.items()))))


@given(
    st.tuples(versions, languages, tenants, st.text()),
    st.tuples(versions, languages, tenants, st.text()),
)
def test_keys_of_different_scopes_never_collide(
    a: tuple[str, str, str | None, str], b: tuple[str, str, str | None, str]
) -> None:
    key_a = exact_key(a[0], a[3], language=a[1], tenant=a[2])
    key_b = exact_key(b[0], b[3], language=b[1], tenant=b[2])
    same_scope = a[:3] == b[:3] and canonical_text(a[3]) == canonical_text(b[3])
    assert (key_a == key_b) == same_scope


@given(versions, tenants, st.sampled_from(["faq.a", "faq.b"]))
def test_intent_and_topic_keys_never_collide_with_exact_keys(
    version: str, tenant: str | None, name: str
) -> None:
    keys = {
        exact_key(version, name, tenant=tenant),
        intent_key(version, name, tenant=tenant),
        topic_key(version, name, tenant=tenant),
    }
    assert len(keys) == 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: exact_key("v1:x", "q"), "version label"),
        (lambda: exact_key("", "q"), "version label"),
        (lambda: exact_key("v1", "q", tenant="Acme"), "tenant id"),
        (lambda: exact_key("v1", "q", tenant="a:b"), "tenant id"),
        # A trailing newline would otherwise pass a `$`-anchored pattern: "acme\n" must not
        # be a second name for acme's pin and budget.
        (lambda: exact_key("v1", "q", tenant="acme\n"), "tenant id"),
        (lambda: exact_key("v1\n", "q"), "version label"),
        (lambda: intent_key("v1", "refund\n"), "intent"),
        (lambda: exact_key("v1", "q", language="english"), "BCP 47"),
        (lambda: intent_key("v1", "refund:eligibility"), "intent"),
        (lambda: topic_key("v1", "refund policy"), "topic"),
    ],
)
def test_bad_key_parts_are_refused_with_a_clear_message(call: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        call()  # type: ignore[operator]


_PRINT_KEYS = """
import json, sys
from schemas.keys import exact_key, intent_key
cases = json.loads(sys.stdin.read())
print(json.dumps([
    [exact_key(v, q, language=l, tenant=t), intent_key(v, "a.b", tenant=t, slots={"q": q})]
    for v, l, t, q in cases
]))
"""


@settings(deadline=None)  # each example starts a process: no wall-clock deadline
@given(st.lists(st.tuples(versions, languages, tenants, st.text()), min_size=1, max_size=20))
def test_keys_are_identical_in_another_process(
    cases: list[tuple[str, str, str | None, str]],
) -> None:
    here = [
        [exact_key(v, q, language=lang, tenant=t), intent_key(v, "a.b", tenant=t, slots={"q": q})]
        for v, lang, t, q in cases
    ]
    there = subprocess.run(
        [sys.executable, "-c", _PRINT_KEYS],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert json.loads(there.stdout) == here


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        (exact_key("v1", "How long?"), KeyKind.EXACT),
        (exact_key("v1", "How long?", tenant="acme"), KeyKind.EXACT),
        (intent_key("v1", "refund.window"), KeyKind.INTENT),
        (topic_key("v1", "refunds", tenant="acme"), KeyKind.TOPIC),
        ("knowledge:active", None),
        ("knowledge:v1:en:blob:router.json", None),
        ("other:v1:en:exact:abc", None),
    ],
)
def test_a_key_names_its_record_kind(key: str, kind: KeyKind | None) -> None:
    assert key_kind(key) == kind


def test_a_taken_name_gets_the_first_free_suffix() -> None:
    taken: set[str] = set()
    assert [unique_name("faq", taken) for _ in range(3)] == ["faq", "faq-2", "faq-3"]
    assert taken == {"faq", "faq-2", "faq-3"}
    headings: set[str] = {"setup-1"}
    # GitHub numbers repeated headings from 1 and skips anchors already taken.
    assert [unique_name("setup", headings, first=1) for _ in range(3)] == [
        "setup",
        "setup-2",
        "setup-3",
    ]


def test_a_seeded_canary_bucket_cannot_be_computed_without_the_seed() -> None:
    plain = [canary_bucket("acme", f"s{i}") for i in range(200)]
    seeded = [canary_bucket("acme", f"s{i}", "0" * 32) for i in range(200)]
    other = [canary_bucket("acme", f"s{i}", "1" * 32) for i in range(200)]
    assert seeded == [canary_bucket("acme", f"s{i}", "0" * 32) for i in range(200)]
    assert sum(a == b for a, b in zip(plain, seeded, strict=True)) < 3
    assert sum(a == b for a, b in zip(seeded, other, strict=True)) < 3
    assert all(0 <= b < 100 for b in seeded)
