"""``/v1/answer``: the answer ladder over HTTP."""

from __future__ import annotations

import time
from typing import Annotated

import anyio
import anyio.to_thread
from litestar import Controller, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, JSONBody

from schemas.ladder import Answer
from serving.dto import AnswerRequest, BatchRequest, BatchResponse
from serving.fastpath import MAX_KEY, answer_fast_path, asked
from serving.service import AnswerService

__all__ = ["AnswerController"]

SessionHeader = Annotated[
    str | None, HeaderParameter(name="X-Session-Id", required=False, max_length=128)
]
KeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="X-API-Key",
        required=False,
        max_length=MAX_KEY,
        description="A tenant's API key: the request speaks for that tenant. Without one the "
        "answer comes from the shared (untenanted) knowledge.",
    ),
]


class AnswerController(Controller):
    """Answers from the active snapshot: L1 exact, L2 intent, L3 topic block, or SAFE."""

    path = "/v1/answer"
    tags = ["answers"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post("/", operation_id="answer", status_code=200, middleware=[answer_fast_path])
    async def answer(
        self,
        data: JSONBody[AnswerRequest],
        service: NamedDependency[AnswerService],
        session: SessionHeader = None,
        key: KeyHeader = None,
    ) -> Answer:
        """Answer one question."""
        # On the loop; only the encoder is awaited (batched), and a composer that does I/O
        # runs in a worker thread (see AnswerService.answer_async).
        return await service.answer_async(
            data.question, **asked(service, data, key=key, session=session)
        )

    @post("/batch", operation_id="answer_batch", status_code=200)
    async def batch(
        self,
        data: JSONBody[BatchRequest],
        service: NamedDependency[AnswerService],
        state: State,
        session: SessionHeader = None,
        key: KeyHeader = None,
    ) -> BatchResponse:
        """Answer up to 100 questions in order (for evaluations).

        Batches run one at a time per process, in a worker thread that lets the event loop
        have the interpreter between questions: a batch waits for the one before it, while
        single answers go on being served beside it.
        """

        requests = [(q, asked(service, q, key=key, session=session)) for q in data.questions]

        def run() -> BatchResponse:
            answers = []
            for question, keywords in requests:
                answers.append(service.answer(question.question, **keywords))
                time.sleep(0)  # hand the GIL to the event loop between questions
            return BatchResponse(answers=answers)

        limiter: anyio.CapacityLimiter = state.batches
        return await anyio.to_thread.run_sync(run, limiter=limiter)
