"""Prompt texts of the language-model providers and the parsing of their JSON replies.

Kept apart from the providers so their HTTP, retry and usage logic stays short. The
knowledge block is rendered deterministically (same passages, same bytes) so the provider's
prompt cache can reuse it across stages; everything volatile goes into the user message.
Parsers raise :class:`MalformedReplyError` (a ``ValueError``); the provider turns it into a
``ProviderError`` naming the stage.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from providers.base import DraftAnswer, Passage, Verdict

__all__ = [
    "ANSWER_INSTRUCTIONS",
    "COMPOSE_INSTRUCTIONS",
    "NO_ANSWER",
    "PROMPT_VERSION",
    "REPLY_SCHEMAS",
    "SYNTHESIZE_INSTRUCTIONS",
    "VERIFY_INSTRUCTIONS",
    "MalformedReplyError",
    "answer_request",
    "compose_request",
    "load_json",
    "parse_answer",
    "parse_compose",
    "parse_questions",
    "parse_verdict",
    "render_knowledge",
    "synthesize_request",
    "verify_request",
]

NO_ANSWER = "NO_ANSWER"

SYNTHESIZE_INSTRUCTIONS = (
    "You write the questions real users would ask that the knowledge passages above answer, "
    "the way they type them: a few short keyword queries, full questions, and task-style ones "
    '("how do I ..."), each worded differently. Each question must be answerable from the '
    "passages alone. Reply with one JSON object and nothing else: "
    '{"questions": [strings]}'
)
ANSWER_INSTRUCTIONS = (
    "Answer the user's question using only the knowledge passages above. Cite the ids of the "
    "passages you used (the text in square brackets). If the passages do not answer the "
    "question, abstain. Reply with one JSON object and nothing else: "
    '{"answer": string, "citations": [passage ids], "abstain": boolean}'
)
VERIFY_INSTRUCTIONS = (
    "Judge whether the proposed answer is fully supported by the knowledge passages above; "
    "any claim not stated in the passages makes it unsupported. Reply with one JSON object "
    'and nothing else: {"supported": boolean, "score": number from 0 to 1, "reason": string}'
)
COMPOSE_INSTRUCTIONS = (
    "Answer the user's question briefly, using only the context above. If the context does "
    f"not answer it, reply with exactly {NO_ANSWER} and nothing else."
)

PROMPT_VERSION = hashlib.sha256(
    "\x00".join(
        (SYNTHESIZE_INSTRUCTIONS, ANSWER_INSTRUCTIONS, VERIFY_INSTRUCTIONS, COMPOSE_INSTRUCTIONS)
    ).encode()
).hexdigest()[:12]
"""A digest of every instruction text: part of each call's cache key, so a changed prompt is
never answered from calls cached under the old one."""

REPLY_SCHEMAS: dict[str, dict[str, Any]] = {
    "synthesize": {
        "type": "object",
        "properties": {"questions": {"type": "array", "items": {"type": "string"}}},
        "required": ["questions"],
        "additionalProperties": False,
    },
    "answer": {
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "citations": {"type": "array", "items": {"type": "string"}},
            "abstain": {"type": "boolean"},
        },
        "required": ["answer", "citations", "abstain"],
        "additionalProperties": False,
    },
    "verify": {
        "type": "object",
        "properties": {
            "supported": {"type": "boolean"},
            "score": {"type": "number"},
            "reason": {"type": "string"},
        },
        "required": ["supported", "score", "reason"],
        "additionalProperties": False,
    },
}
"""The JSON each stage replies with, for APIs that constrain a reply to a schema (``compose``
replies in plain text). The parsers below check the same shape, so a server that ignores the
schema is caught there."""

_FENCE = re.compile(r"^```[\w-]*[ \t]*\n?(.*?)\n?```$", re.DOTALL)
_SPACES = re.compile(r"\s+")


class MalformedReplyError(ValueError):
    """The model's reply is not the JSON the stage asked for."""


def render_knowledge(passages: Sequence[Passage]) -> str:
    """The cached system block: each passage as ``[id] title (source: path#anchor)``, then text."""
    parts = [
        f"[{p.id}] {p.title or p.source.section} (source: {p.source.ref})\n{p.text.strip()}"
        for p in passages
    ]
    return "Knowledge passages:\n\n" + "\n\n".join(parts)


def synthesize_request(title: str, n: int) -> str:
    """The user message of the synthesize stage."""
    return (
        f"Write up to {n} distinct questions about {title!r} that the passages answer: "
        "mix short keyword queries, full questions and how-do-I tasks."
    )


def answer_request(question: str) -> str:
    """The user message of the answer stage."""
    return f"Question: {question}"


def verify_request(question: str, answer: str) -> str:
    """The user message of the verify stage."""
    return f"Question: {question}\n\nProposed answer: {answer}"


def compose_request(question: str) -> str:
    """The user message of the compose stage."""
    return question


def load_json(text: str) -> Any:
    """The JSON value in ``text``, tolerating code fences and prose around it."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        pass
    starts = [i for i in (stripped.find("["), stripped.find("{")) if i >= 0]
    if starts:
        try:
            return json.JSONDecoder().raw_decode(stripped, min(starts))[0]
        except json.JSONDecodeError:
            pass
    raise MalformedReplyError(f"reply is not JSON: {_excerpt(text)!r}")


def parse_questions(text: str, n: int) -> tuple[str, ...]:
    """Up to ``n`` distinct non-empty questions from a JSON array (or ``{"questions": [...]}``).

    A reply cut off inside its array (a small model repeating itself until its token budget
    ends), or whose object is never closed, still yields the questions it completed; an
    unfinished one is dropped.
    """
    try:
        value = load_json(text)
    except MalformedReplyError:
        value = _complete_strings(text)
        if not value:
            raise
    if isinstance(value, dict):
        value = value.get("questions")
    if not isinstance(value, list):
        raise MalformedReplyError(f"expected a JSON array of questions: {_excerpt(text)!r}")
    questions: list[str] = []
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str):
            continue
        question = _SPACES.sub(" ", item).strip()
        key = question.casefold()
        if question and key not in seen:
            seen.add(key)
            questions.append(question)
    return tuple(questions[: max(n, 0)])


def parse_answer(text: str, passage_ids: Sequence[str]) -> DraftAnswer:
    """A draft answer citing only known passages; it abstains when nothing valid is cited."""
    value = _load_object(text)
    if value.get("abstain") is True:
        return DraftAnswer(text="", abstained=True)
    answer = value.get("answer")
    if not isinstance(answer, str):
        raise MalformedReplyError(f'"answer" is not a string: {_excerpt(text)!r}')
    raw = value.get("citations", [])
    cited = raw if isinstance(raw, list) else []
    known = set(passage_ids)
    citations = tuple(dict.fromkeys(c for c in cited if isinstance(c, str) and c in known))
    if not citations or not answer.strip():
        return DraftAnswer(text="", abstained=True)
    return DraftAnswer(text=answer.strip(), citations=citations)


def parse_verdict(text: str) -> Verdict:
    """A verdict with its score clamped to [0, 1] (derived from ``supported`` when missing)."""
    value = _load_object(text)
    supported = value.get("supported")
    if not isinstance(supported, bool):
        raise MalformedReplyError(f'"supported" is not a boolean: {_excerpt(text)!r}')
    score = value.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or math.isnan(score):
        score = 1.0 if supported else 0.0
    reason = value.get("reason")
    return Verdict(
        supported=supported,
        score=min(1.0, max(0.0, float(score))),
        reason=reason.strip() if isinstance(reason, str) else "",
    )


def parse_compose(text: str) -> str:
    """The composed answer, or ``""`` when the model replied NO_ANSWER."""
    answer = text.strip()
    return "" if not answer or answer.startswith(NO_ANSWER) else answer


_JSON_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')


def _complete_strings(text: str) -> list[str]:
    """The complete strings of the first JSON list of strings in ``text``, read up to its
    ``]`` or, where the reply was cut off, up to the last string that was closed."""
    position = text.find("[")
    if position < 0:
        return []
    position += 1
    strings: list[str] = []
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        match = _JSON_STRING.match(text, position)
        if match is None:  # the list's end, its cut, or something that is not a string
            return strings
        try:
            item = json.loads(match.group())
        except json.JSONDecodeError:
            return strings
        strings.append(item)
        position = match.end()


def _load_object(text: str) -> dict[str, Any]:
    value = load_json(text)
    if not isinstance(value, dict):
        raise MalformedReplyError(f"expected a JSON object: {_excerpt(text)!r}")
    return value


def _excerpt(text: str, limit: int = 80) -> str:
    flat = _SPACES.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
