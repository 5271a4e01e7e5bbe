"""What the compiler (and L3 at serve time) asks of a language-model provider.

Providers work at the level of compile stages, not raw prompts, so the offline provider can
answer each request extractively and the Anthropic provider can turn it into a prompt. Every
method is deterministic for the offline provider; every LLM call of the Anthropic provider is
counted in :meth:`Provider.usage`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

from schemas.build import Usage
from schemas.records import Source

__all__ = ["DraftAnswer", "Passage", "Provider", "Usage", "Verdict"]


class Passage(msgspec.Struct, frozen=True, kw_only=True):
    """A piece of knowledge handed to a provider, with the section it came from."""

    id: str
    text: str
    source: Source
    title: str = ""


class DraftAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """A grounded answer and the ids of the passages it cites (empty when it abstains)."""

    text: str
    citations: tuple[str, ...] = ()
    abstained: bool = False


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """Whether an answer is supported by the passages it cites, with a score in [0, 1]."""

    supported: bool
    score: float
    reason: str = ""


@runtime_checkable
class Provider(Protocol):
    """A language-model provider as the compile stages use it."""

    name: str
    model: str

    def synthesize_questions(
        self, title: str, passages: Sequence[Passage], n: int
    ) -> tuple[str, ...]:
        """Up to ``n`` questions users would ask that ``passages`` answer."""
        ...

    def answer(self, question: str, passages: Sequence[Passage]) -> DraftAnswer:
        """A grounded answer to ``question`` from ``passages`` only, citing them."""
        ...

    def verify(self, question: str, answer: str, passages: Sequence[Passage]) -> Verdict:
        """Whether ``answer`` is supported by ``passages``."""
        ...

    def compose(self, question: str, context: str, *, max_tokens: int) -> str:
        """A short answer to ``question`` from ``context`` alone (L3 at serve time)."""
        ...

    def usage(self) -> list[Usage]:
        """Calls and tokens spent so far, per stage."""
        ...
