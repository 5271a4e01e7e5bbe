"""The offline provider: deterministic, extractive, no network.

It builds questions from headings, answers with the documents' own sentences (so every answer is
a quotation of its cited section), verifies by lexical containment of each answer sentence in the
cited text, and composes L3 answers by picking the context sentences that share the most content
words with the question. It cannot paraphrase or reason; when the text does not answer, it says
so by abstaining.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Final

from providers._text import containment, content_words, sentences
from providers.base import DraftAnswer, Passage, Usage, Verdict

__all__ = ["OfflineProvider"]

_ANSWER_WORDS: Final = 90
_SUPPORTED: Final = 0.8
_TEMPLATES: Final = (
    "{t}",
    "What about {t}?",
    "Tell me about {t}",
    "What should I know about {t}?",
    "How does {t} work?",
    "Can you explain {t}?",
    "Where can I find information on {t}?",
    "I have a question about {t}",
)


class OfflineProvider:
    """:class:`providers.base.Provider` without a language model."""

    name = "offline"
    model = "extractive-v1"

    def __init__(self) -> None:
        self._calls: dict[str, int] = defaultdict(int)

    def synthesize_questions(
        self, title: str, passages: Sequence[Passage], n: int
    ) -> tuple[str, ...]:
        self._calls["synthesize"] += 1
        del passages  # questions come from the heading alone; the text cannot be paraphrased
        heading = title.strip().rstrip(":")
        found: list[str] = []
        if heading.endswith("?"):
            found.append(heading)
        subject = heading.rstrip("?")
        lowered = subject[:1].lower() + subject[1:] if subject[1:2].islower() else subject
        found += [t.format(t=lowered if i else subject) for i, t in enumerate(_TEMPLATES)]
        return tuple(dict.fromkeys(found))[:n]

    def answer(self, question: str, passages: Sequence[Passage]) -> DraftAnswer:
        self._calls["answer"] += 1
        wanted = set(content_words(question))
        best: Passage | None = None
        best_overlap = 0
        for passage in passages:
            overlap = len(wanted & set(content_words(f"{passage.title} {passage.text}")))
            if overlap > best_overlap:
                best, best_overlap = passage, overlap
        if best is None:
            return DraftAnswer(text="", abstained=True)
        picked: list[str] = []
        words = 0
        for sentence in sentences(best.text):
            if picked and words + len(sentence.split()) > _ANSWER_WORDS:
                break
            picked.append(sentence)
            words += len(sentence.split())
        return DraftAnswer(text=" ".join(picked), citations=(best.id,))

    def verify(self, question: str, answer: str, passages: Sequence[Passage]) -> Verdict:
        self._calls["verify"] += 1
        del question
        evidence = "\n".join(p.text for p in passages)
        claims = sentences(answer)
        if not claims or not evidence:
            return Verdict(supported=False, score=0.0, reason="nothing to verify")
        scores = [containment(claim, evidence) for claim in claims]
        score = min(scores)
        weakest = claims[scores.index(score)]
        return Verdict(
            supported=score >= _SUPPORTED,
            score=round(score, 4),
            reason="every sentence is in the cited text"
            if score >= _SUPPORTED
            else f"not supported by the cited text: {weakest[:80]!r}",
        )

    def compose(self, question: str, context: str, *, max_tokens: int) -> str:
        self._calls["compose"] += 1
        wanted = set(content_words(question))
        # A sentence is relevant only when it shares most of what the question asks about:
        # half its content words, and at least two (one for a one-word question).
        needed = min(len(wanted), max(2, math.ceil(len(wanted) / 2)))
        ranked = [
            (len(wanted & set(content_words(s))), i, s)
            for i, s in enumerate(sentences(context))
            if not s.startswith("## ")
        ]
        relevant = sorted(
            (r for r in ranked if r[0] >= max(needed, 1)), key=lambda r: (-r[0], r[1])
        )
        picked: list[tuple[int, str]] = []
        words = 0
        for _, index, sentence in relevant:
            if picked and words + len(sentence.split()) > max_tokens:
                break
            picked.append((index, sentence))
            words += len(sentence.split())
        return " ".join(s for _, s in sorted(picked))

    def usage(self) -> list[Usage]:
        return [Usage(stage=stage, calls=calls) for stage, calls in sorted(self._calls.items())]
