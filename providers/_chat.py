"""The compile stages as prompts over one chat call, shared by every language-model provider.

:class:`ChatProvider` turns each stage of :class:`providers.base.Provider` into a prompt (the
texts live in :mod:`providers._prompts`) and parses the reply; a subclass supplies only
:meth:`ChatProvider._complete`, one call of its API or runtime. Every call puts the static
knowledge first and the volatile question last, so a provider's prompt cache (Anthropic's
``cache_control``, the automatic prefix caching of OpenAI, vLLM and llama.cpp) can reuse the
knowledge across stages. A reply that is not the JSON a stage asked for is an
:class:`UnusableReplyError` naming the provider and the stage.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Protocol, Self, TypeVar

import msgspec

from providers import _prompts as prompts
from providers.base import DraftAnswer, Passage, Usage, Verdict
from schemas.errors import PermanentError, RetryableError

__all__ = [
    "MAX_TOKENS",
    "STAGES",
    "ChatProvider",
    "Prompt",
    "ProviderError",
    "ProviderUnavailableError",
    "UnusableReplyError",
]

T = TypeVar("T")

STAGES = ("synthesize", "answer", "verify", "compose")
MAX_TOKENS = {"synthesize": 1024, "answer": 1024, "verify": 512}
"""Reply budgets per stage; ``compose`` is given its own by the caller."""


class ProviderError(PermanentError):
    """A provider refused a call or replied with something unusable; retrying won't help."""

    def __init__(
        self,
        message: str,
        *,
        stage: str | None = None,
        status: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.stage = stage
        self.status = status
        super().__init__(message, hint=hint)


class UnusableReplyError(ProviderError):
    """A reply that is not the JSON its stage asked for: the call worked, the model did not.

    A compile may do without that one reply (a section keeps its heading as its question);
    other provider errors (a refused key, a bad request) stop it.
    """


class ProviderUnavailableError(RetryableError):
    """The provider stayed rate-limited, overloaded or unreachable through every retry."""

    def __init__(self, message: str, *, stage: str, status: int | None = None) -> None:
        self.stage = stage
        self.status = status
        super().__init__(message, hint="the API is busy or unreachable; try again later")


class Prompt(msgspec.Struct, frozen=True, kw_only=True):
    """One call of a stage: ``knowledge`` then ``instructions`` as the static prefix (what a
    prompt cache reuses), ``request`` last."""

    stage: str
    knowledge: str
    instructions: str
    request: str
    max_tokens: int | None = None
    """The caller's reply budget (``compose``); else the provider's for the stage."""

    @property
    def system(self) -> str:
        """The static prefix as one system message."""
        return f"{self.knowledge}\n\n{self.instructions}"

    @property
    def budget(self) -> int:
        """The reply budget: the caller's, else :data:`MAX_TOKENS` of the stage."""
        return self.max_tokens or MAX_TOKENS[self.stage]


class _Closable(Protocol):
    def close(self) -> None: ...


class ChatProvider:
    """A :class:`providers.base.Provider` whose stages are prompts; subclasses call a model.

    Subclasses set :attr:`name` and :attr:`model`, call ``super().__init__()`` and implement
    :meth:`_complete`, recording what each successful call spent with :meth:`_record`.
    """

    name: str
    model: str
    _opened: _Closable | None = None
    """What the provider built and so must close (an SDK client, a loaded model); what was
    injected is the caller's to close."""

    def __init__(self) -> None:
        self._usage = {stage: Usage(stage=stage) for stage in STAGES}
        self._usage_lock = threading.Lock()

    # -- the Provider protocol ---------------------------------------------------------------

    def synthesize_questions(
        self, title: str, passages: Sequence[Passage], n: int
    ) -> tuple[str, ...]:
        """Up to ``n`` distinct questions users would ask that ``passages`` answer."""
        if n <= 0 or not passages:
            return ()
        prompt = Prompt(
            stage="synthesize",
            knowledge=prompts.render_knowledge(passages),
            instructions=prompts.SYNTHESIZE_INSTRUCTIONS,
            request=prompts.synthesize_request(title, n),
        )
        return self._parsed(prompt, lambda reply: prompts.parse_questions(reply, n))

    def answer(self, question: str, passages: Sequence[Passage]) -> DraftAnswer:
        """A grounded answer citing only ``passages``; abstains when nothing valid is cited."""
        if not passages:
            return DraftAnswer(text="", abstained=True)
        prompt = Prompt(
            stage="answer",
            knowledge=prompts.render_knowledge(passages),
            instructions=prompts.ANSWER_INSTRUCTIONS,
            request=prompts.answer_request(question),
        )
        ids = [p.id for p in passages]
        return self._parsed(prompt, lambda reply: prompts.parse_answer(reply, ids))

    def verify(self, question: str, answer: str, passages: Sequence[Passage]) -> Verdict:
        """Whether ``answer`` is supported by ``passages``, scored in [0, 1]."""
        if not passages:
            return Verdict(supported=False, score=0.0, reason="no passages to check against")
        prompt = Prompt(
            stage="verify",
            knowledge=prompts.render_knowledge(passages),
            instructions=prompts.VERIFY_INSTRUCTIONS,
            request=prompts.verify_request(question, answer),
        )
        return self._parsed(prompt, prompts.parse_verdict)

    def compose(self, question: str, context: str, *, max_tokens: int) -> str:
        """A short answer from ``context`` alone, at most ``max_tokens``; ``""`` when it can't."""
        if not context.strip() or max_tokens <= 0:
            return ""
        prompt = Prompt(
            stage="compose",
            knowledge=context,
            instructions=prompts.COMPOSE_INSTRUCTIONS,
            request=prompts.compose_request(question),
            max_tokens=max_tokens,
        )
        return prompts.parse_compose(self._complete(prompt))

    def usage(self) -> list[Usage]:
        """Calls and tokens of every successful response so far, one record per stage."""
        with self._usage_lock:
            return [msgspec.structs.replace(self._usage[stage]) for stage in STAGES]

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Release what the provider opened (a client it built, a loaded model); idempotent."""
        opened, self._opened = self._opened, None
        if opened is not None:
            opened.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- for subclasses ------------------------------------------------------------------------

    def _complete(self, prompt: Prompt) -> str:
        """One call of ``prompt``; the reply's text."""
        raise NotImplementedError

    def _parsed(self, prompt: Prompt, parse: Callable[[str], T]) -> T:
        """``prompt``'s reply through ``parse``; a malformed one is an UnusableReplyError."""
        reply = self._complete(prompt)
        try:
            return parse(reply)
        except prompts.MalformedReplyError as exc:
            raise self._malformed(prompt.stage, exc) from exc

    def _record(
        self,
        stage: str,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read: int = 0,
        cache_write: int = 0,
    ) -> None:
        """Add one successful call's tokens to ``stage``'s usage."""
        with self._usage_lock:
            record = self._usage[stage]
            record.calls += 1
            record.input_tokens += input_tokens
            record.output_tokens += output_tokens
            record.cache_read_input_tokens += cache_read
            record.cache_creation_input_tokens += cache_write

    def _malformed(self, stage: str, exc: prompts.MalformedReplyError) -> UnusableReplyError:
        """The error for a reply that is not the JSON the stage asked for."""
        return UnusableReplyError(
            f"{self.name} {stage} reply is malformed: {exc}",
            stage=stage,
            hint="the model did not follow the JSON format; retry or try another model",
        )
