"""The compile flow end to end on the example knowledge (offline provider, real libraries)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.sorting import FlowRunSort

from flows._artifacts import GATES_KEY, SUMMARY_KEY
from schemas.errors import GateFailedError, InvalidInputError
from serving.runtime import VersionCache
from stores import open_store, read_snapshot
from tests.conftest import EXAMPLES
from tests.e2e.conftest import Compiled

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture
def versions(compiled: Compiled) -> Iterator[VersionCache]:
    store = open_store(compiled.url)
    yield VersionCache(store)
    store.close()


def test_the_examples_compile_pass_every_gate_and_publish(compiled: Compiled) -> None:
    result = compiled.first
    assert result.published
    assert all(g.passed for g in result.gates), result.gates
    assert {g.name for g in result.gates} >= {
        "expectations:l1_exact",
        "expectations:l2_intents",
        "expectations:l3_topics",
        "groundedness",
        "regression",
        "miss-coverage",
    }
    assert result.counts["exact"] >= 40
    assert result.counts["topics"] >= 3
    assert result.skipped == ()
    assert [s.stage for s in result.stages] == [
        "fetch",
        "ingest",
        "chunk",
        "index",
        "topics",
        "synthesize",
        "auto-faq",
        "answer",
        "verify",
        "duplicates",
        "review",
        "compile",
        "gates",
        "publish",
    ]
    # The warranty page's "How to make a warranty claim" asks the curated FAQ's question and
    # answers it alike: one group, served by the curated entry.
    (group,) = result.duplicates
    assert (group.verdict, group.canonical) == ("same", "warranty.claim")
    assert [m.section.path for m in group.members] == ["faq.jsonl", "policies/warranty.md"]
    snapshot = read_snapshot(result.snapshot_dir)
    assert snapshot.manifest.version == result.version
    assert snapshot.manifest.duplicates == result.duplicates
    assert {s.path for s in snapshot.manifest.sources} >= {
        "policies/refunds.md",
        "help/account.html",
        "help/charging.txt",
        "help/privacy.pdf",
    }
    # L3 blocks hold document passages only: FAQ answers are L1/L2's, never composed.
    cited = {s.path for block in snapshot.topics for s in block.sources}
    assert cited
    assert "faq.jsonl" not in cited
    assert all("faq.jsonl" not in block.context for block in snapshot.topics)
    # The run's summary and gates are artifacts in Prefect.
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[SUMMARY_KEY, GATES_KEY]))
        )
    shown = "\n".join(str(a.data) for a in found)
    assert f"# Compile of {result.version}" in shown
    assert f"All {len(result.gates)} gates passed." in shown


def test_a_recompile_of_unchanged_knowledge_makes_no_provider_calls(compiled: Compiled) -> None:
    assert sum(compiled.first.provider_calls.values()) > 0
    assert compiled.second.provider_calls == {}
    assert sum(compiled.second.provider_reused.values()) == sum(
        compiled.first.provider_calls.values()
    )
    store = open_store(compiled.url)
    assert store.active_version() == compiled.second.version
    store.close()


def test_a_curated_question_is_answered_verbatim_with_its_citation(
    compiled: Compiled, versions: VersionCache
) -> None:
    ready = versions.get(compiled.second.version)
    answer = ready.answer("What's your return window?")
    assert answer.layer == "L1"
    assert answer.entry_id == "refund.window"
    assert answer.answer.startswith("You have 30 days")
    assert [(s.doc_id, s.path, s.anchor) for s in answer.sources] == [
        ("faq", "faq.jsonl", "refund.window")
    ]


@pytest.mark.parametrize(
    ("question", "doc_id", "section"),
    [
        ("Tell me about Two-factor authentication", "account", "Two-factor authentication"),
        ("What about charging times?", "charging", "Charging times"),
        ("How long we keep your data", "privacy", "How long we keep your data"),
        ("What should I know about non-returnable items?", "refunds", "Non-returnable items"),
    ],
)
def test_document_sections_are_answered_from_their_own_text(
    compiled: Compiled, versions: VersionCache, question: str, doc_id: str, section: str
) -> None:
    answer = versions.get(compiled.second.version).answer(question)
    assert answer.layer in ("L1", "L2")
    assert [(s.doc_id, s.section) for s in answer.sources][:1] == [(doc_id, section)]
    text_path = {
        "account": "help/account.html",
        "charging": "help/charging.txt",
        "privacy": "help/privacy.pdf",
        "refunds": "policies/refunds.md",
    }[doc_id]
    assert answer.sources[0].path == text_path


def test_an_unrelated_question_gets_the_safe_fallback(
    compiled: Compiled, versions: VersionCache
) -> None:
    answer = versions.get(compiled.second.version).answer("who won the world cup in 1998")
    assert answer.layer == "SAFE"
    assert answer.sources == ()
    assert "not sure" in answer.answer


def test_broken_documents_are_reported_and_skipped(compiled: Compiled, tmp_path: Path) -> None:
    knowledge = tmp_path / "knowledge"
    shutil.copytree(EXAMPLES, knowledge)
    (knowledge / "junk.md").write_bytes(bytes(range(256)) * 40)
    (knowledge / "empty.txt").write_text("")
    (knowledge / "huge.md").write_bytes(b"# Huge\n\n" + b"word " * (4 * 1024 * 1024))
    (knowledge / "notes.xyz").write_text("unknown format")

    result = compiled.compile(knowledge, publish=False, build_dir=str(tmp_path / "build"))

    reasons = {s.path: s.reason for s in result.skipped}
    assert set(reasons) == {"junk.md", "empty.txt", "huge.md", "notes.xyz"}
    assert "NUL" in reasons["junk.md"]
    assert reasons["empty.txt"] == "empty file"
    assert "MiB limit" in reasons["huge.md"]
    assert all(g.passed for g in result.gates)
    assert not result.published


def test_a_failed_gate_publishes_nothing_and_the_active_version_keeps_serving(
    compiled: Compiled, tmp_path: Path
) -> None:
    store = open_store(compiled.url)
    before = (store.active_version(), [v.version for v in store.versions()])
    store.close()
    impossible = tmp_path / "regression.jsonl"
    impossible.write_text(
        "\n".join(
            json.dumps(
                {
                    "query": f"what is the airspeed of swallow {i}",
                    "accept": [{"entry_id": "refund.window"}],
                }
            )
            for i in range(5)
        )
    )

    with pytest.raises(GateFailedError, match="regression") as raised:
        compiled.compile(regression=str(impossible))
    # The error (what the CLI prints) names the figure, its threshold and the failing cases.
    assert "against a threshold of 0.99" in str(raised.value)
    assert "'what is the airspeed of swallow 0': expected refund.window" in str(raised.value)

    store = open_store(compiled.url)
    assert (store.active_version(), [v.version for v in store.versions()]) == before
    store.close()

    # In Prefect: a Failed flow run whose failed task is the gate, and the gates artifact.
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        assert run.state is not None
        assert run.state.is_failed(), run.state
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
        failed = sorted(t.name for t in tasks if t.state is not None and t.state.is_failed())
        assert failed == ["gate-regression"]
        gates = {t.name for t in tasks if t.name.startswith("gate-")}
        assert {"gate-regression", "gate-groundedness", "gate-expectations:l1_exact"} <= gates
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[GATES_KEY])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
        )
    table = str(artifact.data)
    assert "| regression | **FAIL** |" in table
    assert "## Failing cases of regression" in table
    assert "| what is the airspeed of swallow 4 | refund.window |" in table


def test_a_folder_with_nothing_to_compile_is_refused(compiled: Compiled, tmp_path: Path) -> None:
    (tmp_path / "empty.md").write_text("   \n")
    with pytest.raises(InvalidInputError, match="nothing in"):
        compiled.compile(tmp_path, publish=False, build_dir=str(tmp_path / "build"))
