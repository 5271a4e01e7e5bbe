"""The answer ladder over one loaded snapshot: L1 exact -> L2 intent -> L3 topic -> SAFE.

This is the one code path that turns a question into an answer. The service runs it per
request; the compiler's regression gate and ``ragc eval`` run it over labelled queries. It does
no I/O: the caller loads the snapshot and supplies an optional composer for L3. There is no
path to free generation: every answer is an approved record, an approved template, a
composition restricted to a curated topic block, or the vetted fallback.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal, Protocol, TypeVar

import msgspec

from schemas.arrays import Floats
from schemas.errors import PermanentError
from schemas.keys import exact_key, exact_key_of, intent_key, topic_key
from schemas.manifest import Snapshot
from schemas.normalize import normalize_question
from schemas.records import ExactAnswer, FallbackAnswer, IntentTemplate, Source, TopicBlock
from schemas.router import ROUTER_BLOB, Prediction, RouterModel
from schemas.slots import extract_slots

__all__ = [
    "Answer",
    "Composer",
    "LoadedSnapshot",
    "Route",
    "answer_question",
    "fill_template",
    "render_template",
    "route_of",
]

Layer = Literal["L1", "L2", "L3", "SAFE"]
T = TypeVar("T")
DEFAULT_FALLBACK: Final = (
    "I'm not sure about that one, so I won't guess. Please contact our support team and a "
    "person will help you."
)
L3_FLOOR_RATIO: Final = 0.75
"""L3 is tried when the router's best in-scope guess reaches this share of its lowest threshold."""
L3_MAX_TOKENS: Final = 120
_SENTENCE: Final = re.compile(r"(?<=[.!?])\s+")


Route = Callable[[str], Prediction]
"""A question's router verdict (what the L2 and L3 rungs read)."""


def route_of(
    router: RouterModel | None, encode: Callable[[Sequence[str]], Floats] | None = None
) -> Route | None:
    """The one way a question reaches ``router``: its sentence vector from ``encode`` (an
    encoder's batch ``embed``) when the router reads vectors. ``None`` without a router.

    Raises :class:`PermanentError` when the router reads vectors and there is no encoder,
    rather than answer as if the snapshot had no router.
    """
    if router is None:
        return None
    if not router.needs_embedding:
        return lambda question: router.predict(question, None)
    if encode is None:
        raise PermanentError(
            f"the router reads sentence vectors from {router.header.embedder} and no encoder "
            "was given",
            hint="pass the snapshot's encoder (embedder_for(router.header.embedder))",
        )
    return lambda question: router.predict(question, encode([question])[0])


class Composer(Protocol):
    """What L3 needs from a provider."""

    def compose(self, question: str, context: str, *, max_tokens: int) -> str: ...


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """The response object of ``POST /v1/answer`` and ``ragc ask``."""

    answer: str
    layer: Layer
    entry_id: str | None
    sources: tuple[Source, ...]
    version: str
    cache_key: str | None
    confidence: float
    latency_ms: float
    normalized: str = ""
    explanation: str = ""
    candidates: tuple[tuple[str, float], ...] = ()
    """The router's best classes and probabilities; empty when it judged the question far from
    every class it knows (its similarity gate)."""
    faq_only: bool = False
    """True when the ladder ran without L3 (the tenant's LLM budget is spent): the answer
    came from the FAQ rungs only, whichever rung it is."""


class LoadedSnapshot:
    """A snapshot indexed for answering: dictionaries by key plus the router."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.version = snapshot.version
        self.manifest = snapshot.manifest
        self.exact: dict[str, ExactAnswer] = {}
        self.intents: dict[str, IntentTemplate] = {}
        self.topics: dict[str, TopicBlock] = {}
        for record in snapshot.exact:
            for phrasing in record.phrasings:
                key = exact_key(
                    self.version, phrasing, language=record.language, tenant=record.tenant
                )
                self.exact.setdefault(key, record)
        for intent in snapshot.intents:
            key = intent_key(
                self.version, intent.intent, language=intent.language, tenant=intent.tenant
            )
            self.intents[key] = intent
        for topic in snapshot.topics:
            key = topic_key(self.version, topic.topic, language=topic.language, tenant=topic.tenant)
            self.topics[key] = topic
        self.fallbacks: dict[tuple[str, str], FallbackAnswer] = {
            (f.domain, f.language): f for f in snapshot.fallbacks
        }
        blob = snapshot.blobs.get(ROUTER_BLOB)
        self.router = RouterModel.from_bytes(blob) if blob else None
        self.intent_topic = {i.intent: i.topic for i in snapshot.intents}
        self.intent_domain = {i.intent: i.domain for i in snapshot.intents}

    def fallback(self, domain: str, language: str) -> FallbackAnswer:
        for key in ((domain, language), ("general", language), (domain, "en"), ("general", "en")):
            if key in self.fallbacks:
                return self.fallbacks[key]
        return FallbackAnswer(domain="general", text=DEFAULT_FALLBACK)


class _SlotDict(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render_template(template: IntentTemplate, slots: Mapping[str, object]) -> str:
    """The template with slot values filled in (defaults for missing ones, braces kept else)."""
    values = _SlotDict({s.name: s.default for s in template.slots if s.default is not None})
    values.update({k: str(v) for k, v in slots.items()})
    return template.template.format_map(values)


def fill_template(
    template: IntentTemplate, question: str, given: Mapping[str, object] | None
) -> tuple[str, dict[str, str]]:
    """The L2 answer text and the slot values used: the template rendered with slots read from
    the question (or given), or the plain approved answer when a required slot is missing."""
    if not template.slots:
        return render_template(template, {}), {}
    values, missing = extract_slots(question, template.slots, given)
    if missing and template.static_context:
        return template.static_context, {}
    return render_template(template, values), values


def _scoped(table: Mapping[str, T], keys: tuple[str | None, str]) -> tuple[str, T] | None:
    for key in keys:
        if key is not None and key in table:
            return key, table[key]
    return None


def _attribute(block: TopicBlock, composed: str) -> tuple[Source, ...]:
    """The block sources whose section text the composed answer quotes (all of them when it
    quotes none, as with an LLM's own wording)."""
    by_ref = {source.ref: source for source in block.sources}
    flat = " ".join(composed.split())
    cited: list[Source] = []
    for passage in block.passages:
        source = by_ref.get(passage.ref)
        if source is None or source in cited:
            continue
        pieces = (
            " ".join(p.split()) for line in passage.text.splitlines() for p in _SENTENCE.split(line)
        )
        if any(len(piece) > 20 and piece in flat for piece in pieces):
            cited.append(source)
    return tuple(cited) or block.sources


def answer_question(
    loaded: LoadedSnapshot,
    question: str,
    *,
    tenant: str | None = None,
    language: str | None = None,
    slots: Mapping[str, object] | None = None,
    composer: Composer | None = None,
    allow_l3: bool = True,
    route: Route | None = None,
) -> Answer:
    """Walk the ladder for one question.

    ``route`` gives the router's verdict (see :func:`route_of`; the service passes a memo of
    it, since a version's routing of a given text never changes). Without it the snapshot's
    router runs on the text alone, and one that reads vectors raises.
    """
    started = time.perf_counter()
    version = loaded.version
    normalized = normalize_question(question, language)

    def done(
        layer: Layer,
        text: str,
        *,
        entry_id: str | None,
        sources: tuple[Source, ...],
        cache_key: str | None,
        confidence: float,
        explanation: str,
        candidates: tuple[tuple[str, float], ...] = (),
    ) -> Answer:
        return Answer(
            answer=text,
            layer=layer,
            entry_id=entry_id,
            sources=sources,
            version=version,
            cache_key=cache_key,
            confidence=round(confidence, 4),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            normalized=normalized.text,
            explanation=explanation,
            candidates=candidates,
            faq_only=not allow_l3,
        )

    lang = normalized.language
    scoped = exact_key_of(version, normalized, tenant=tenant) if tenant else None
    hit = _scoped(loaded.exact, (scoped, exact_key_of(version, normalized)))
    if hit is not None:
        key, record = hit
        return done(
            "L1",
            record.answer,
            entry_id=record.id,
            sources=record.sources,
            cache_key=key,
            confidence=1.0,
            explanation="exact match of the canonical question",
        )

    if route is None:
        route = route_of(loaded.router)
    prediction = route(question) if route is not None else None
    if prediction is not None and prediction.intent is not None:
        keys = (
            intent_key(version, prediction.intent, language=lang, tenant=tenant)
            if tenant
            else None,
            intent_key(version, prediction.intent, language=lang),
        )
        found = _scoped(loaded.intents, keys)
        if found is not None:
            key, template = found
            text, filled = fill_template(template, question, slots)
            if filled:
                key = intent_key(
                    version, template.intent, language=lang, tenant=template.tenant, slots=filled
                )
            return done(
                "L2",
                text,
                entry_id=template.intent,
                sources=template.sources,
                cache_key=key,
                confidence=prediction.confidence,
                explanation=prediction.reason + (f"; slots {filled}" if filled else ""),
                candidates=prediction.candidates,
            )

    candidates = prediction.candidates if prediction is not None and not prediction.far else ()
    best = candidates[0] if candidates else None
    threshold = loaded.router.lowest_threshold if loaded.router else 1.0
    domain = loaded.intent_domain.get(best[0], "general") if best else "general"
    near = best is not None and best[1] >= threshold * L3_FLOOR_RATIO
    topic = loaded.intent_topic.get(best[0]) if best and near else None
    if topic is not None and composer is not None and allow_l3:
        keys = (
            topic_key(version, topic, language=lang, tenant=tenant) if tenant else None,
            topic_key(version, topic, language=lang),
        )
        found_topic = _scoped(loaded.topics, keys)
        if found_topic is not None:
            key, block = found_topic
            composed = composer.compose(question, block.context, max_tokens=L3_MAX_TOKENS).strip()
            if composed:
                return done(
                    "L3",
                    composed,
                    entry_id=None,
                    sources=_attribute(block, composed),
                    cache_key=key,
                    confidence=best[1] if best else 0.0,
                    explanation=f"composed from topic {topic}",
                    candidates=candidates,
                )
    fallback = loaded.fallback(domain, lang)
    return done(
        "SAFE",
        fallback.text,
        entry_id=None,
        sources=(),
        cache_key=None,
        confidence=best[1] if best else 0.0,
        explanation=prediction.reason if prediction else "no router in this snapshot",
        candidates=candidates,
    )
