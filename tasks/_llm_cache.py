"""Every provider call of a compile, cached by (stage, prompt version, context, provider, model).

A recompile of unchanged knowledge asks the same questions over the same passages, so it is
answered entirely from this cache and makes no provider calls at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec

from providers._prompts import PROMPT_VERSION
from providers.base import DraftAnswer, Passage, Provider, Usage, Verdict
from schemas.keys import content_hash
from stores.cache import BuildCache

__all__ = ["CachedProvider"]

T = TypeVar("T")
STAGE_VERSION = "1"
"""Bump when a stage's prompts or parsing change, so cached results are not reused."""


class CachedProvider:
    """A :class:`providers.base.Provider` whose calls go through the build cache."""

    def __init__(self, inner: Provider, cache: BuildCache) -> None:
        self.inner = inner
        self.cache = cache
        self.name = inner.name
        self.model = inner.model
        self.generated: Counter[str] = Counter()
        self.reused: Counter[str] = Counter()

    def _call(self, stage: str, kind: type[T], args: dict[str, Any], compute: Any) -> T:
        key = content_hash(
            msgspec.json.encode(
                {
                    "stage": stage,
                    "v": STAGE_VERSION,
                    "prompts": PROMPT_VERSION,
                    "provider": self.name,
                    "model": self.model,
                    "args": args,
                },
                order="sorted",
            ),
            40,
        )
        cached = self.cache.get("llm", key)
        if cached is not None:
            self.reused[stage] += 1
            return msgspec.json.decode(cached, type=kind)
        result = compute()
        self.generated[stage] += 1
        self.cache.put("llm", key, msgspec.json.encode(result))
        return result  # type: ignore[no-any-return]

    def synthesize_questions(
        self, title: str, passages: Sequence[Passage], n: int
    ) -> tuple[str, ...]:
        return self._call(
            "synthesize",
            tuple[str, ...],
            {"title": title, "passages": [p.text for p in passages], "n": n},
            lambda: self.inner.synthesize_questions(title, passages, n),
        )

    def answer(self, question: str, passages: Sequence[Passage]) -> DraftAnswer:
        return self._call(
            "answer",
            DraftAnswer,
            {"question": question, "passages": [(p.id, p.title, p.text) for p in passages]},
            lambda: self.inner.answer(question, passages),
        )

    def verify(self, question: str, answer: str, passages: Sequence[Passage]) -> Verdict:
        return self._call(
            "verify",
            Verdict,
            {"question": question, "answer": answer, "passages": [p.text for p in passages]},
            lambda: self.inner.verify(question, answer, passages),
        )

    def compose(self, question: str, context: str, *, max_tokens: int) -> str:
        return self._call(
            "compose",
            str,
            {"question": question, "context": content_hash(context, 40), "max": max_tokens},
            lambda: self.inner.compose(question, context, max_tokens=max_tokens),
        )

    def usage(self) -> list[Usage]:
        return self.inner.usage()
