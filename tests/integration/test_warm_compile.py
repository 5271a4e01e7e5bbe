"""The compiler on the warm tier: review queue and version catalogue in Postgres."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.compile import CompileParams, compile_knowledge
from schemas.errors import GateFailedError
from stores.postgres import PostgresReviewQueue, PostgresVersionCatalog
from tasks.review import ReviewPolicy
from tests.conftest import EXAMPLES

# Slow: two full compiles of the examples (about 50 s); it runs in CI's second step.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_harness"),
]


def test_held_answers_and_published_versions_go_to_postgres(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGC_WARM_DSN", dsn)
    base = CompileParams(
        knowledge=str(EXAMPLES),
        store=f"sqlite:///{tmp_path / 'k.db'}",
        build_dir=str(tmp_path / "build"),
        publish=True,
    )

    published = compile_knowledge(base)
    # Under full review every generated answer is held, so a regression case that needs one
    # fails the gate, and the message points at the queue.
    needs_held = tmp_path / "regression.jsonl"
    needs_held.write_text(
        '{"query": "how are repairs and replacements handled", '
        '"accept": [{"entry_id": "warranty.repairs-and-replacements"}], "oos_type": null}\n'
    )
    with pytest.raises(GateFailedError, match="wait in the review queue"):
        compile_knowledge(
            base.model_copy(
                update={"review": ReviewPolicy(mode="full"), "regression": str(needs_held)}
            )
        )

    catalogue = PostgresVersionCatalog(dsn)
    queue = PostgresReviewQueue(dsn)
    try:
        assert [m.version for m in catalogue.list()] == [published.version]
        pending = queue.items("pending")
    finally:
        catalogue.close()
        queue.close()
    assert len(pending) > 10  # every generated answer waits for a person
    assert all(item.status == "pending" and item.answer for item in pending)
