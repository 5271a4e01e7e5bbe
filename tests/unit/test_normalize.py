"""The canonical form of a question: examples and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.normalize import canonical_text, language_tag, normalize_question


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("  How   LONG do I have?? ", "how long do i have"),
        ("Can't I return it?", "cannot i return it"),
        ("I won\u2019t pay, what\u2019s the fee?", "i will not pay what is the fee"),
        (
            "We're here; they'll go; I've been; I'm late; you'd know",
            "we are here they will go i have been i am late you would know",
        ),
        ("the customer's bike", "the customers bike"),
        ("30-day return window (EU/UK)", "30 day return window eu uk"),
        ("\uff28\uff45\uff4c\uff4c\uff4f", "hello"),  # full-width letters, NFKC
        ("STRASSE vs Stra\u00dfe", "strasse vs strasse"),  # case folding, not lower()
        ("tab\tand\nnewline\u00a0nbsp", "tab and newline nbsp"),
        ("'quoted'", "quoted"),
        ("costs \u20ac5 + 10%?", "costs \u20ac5 + 10"),
    ],
)
def test_canonical_text_examples(raw: str, canonical: str) -> None:
    assert canonical_text(raw) == canonical


@given(st.text())
def test_canonical_text_is_idempotent(raw: str) -> None:
    once = canonical_text(raw)
    assert canonical_text(once) == once


@given(st.text())
def test_canonical_text_has_no_edge_or_double_spaces(raw: str) -> None:
    text = canonical_text(raw)
    assert text == text.strip()
    assert "  " not in text
    assert "'" not in text


@given(st.text(alphabet=st.characters(categories=["Lu", "Ll", "Nd", "Zs", "Po"])))
def test_case_and_spacing_do_not_change_the_canonical_form(raw: str) -> None:
    assert canonical_text(raw) == canonical_text(f"  {raw.casefold()}\t ")
    assert canonical_text(raw.encode("ascii", "ignore").decode().upper()) == canonical_text(
        raw.encode("ascii", "ignore").decode().lower()
    )


@pytest.mark.parametrize(
    ("tag", "primary"), [(None, "en"), ("", "en"), ("en-GB", "en"), ("PT_br", "pt"), ("es", "es")]
)
def test_language_tag_keeps_the_primary_subtag(tag: str | None, primary: str) -> None:
    assert language_tag(tag) == primary


@pytest.mark.parametrize("tag", ["english", "e", "12", "en:x"])
def test_language_tag_rejects_what_is_not_a_tag(tag: str) -> None:
    with pytest.raises(ValueError, match="BCP 47"):
        language_tag(tag)


def test_normalize_question_carries_the_language() -> None:
    normalized = normalize_question("¿Dónde está mi pedido?", "es-MX")
    assert (normalized.text, normalized.language) == ("dónde está mi pedido", "es")
