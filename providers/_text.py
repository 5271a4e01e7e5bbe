"""Small lexical tools shared by the offline provider: sentences, content words, overlap."""

from __future__ import annotations

import re
from typing import Final

from schemas.normalize import canonical_text

__all__ = ["STOPWORDS", "containment", "content_words", "sentences"]

STOPWORDS: Final = frozenset(
    """a an the and or but if then else of to in on at by for with from into onto about as is are
    was were be been being am do does did doing have has had having i me my mine we us our ours you
    your yours he him his she her hers it its they them their theirs this that these those what
    which who whom whose when where why how can could would should will shall may might must not no
    nor so too very just than there here also any all each every some such own same other more
    most only out up down over under again further once s t get got""".split()  # noqa: SIM905
)
_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")


def sentences(text: str) -> list[str]:
    """Split text into sentences (and list items), dropping empty pieces."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def content_words(text: str) -> list[str]:
    """Canonical words of ``text`` without stopwords, in order."""
    return [w for w in canonical_text(text).split() if w not in STOPWORDS]


def containment(claim: str, evidence: str) -> float:
    """Share of the claim's content words found in the evidence (1.0 for an empty claim)."""
    words = set(content_words(claim))
    if not words:
        return 1.0
    return len(words & set(content_words(evidence))) / len(words)
