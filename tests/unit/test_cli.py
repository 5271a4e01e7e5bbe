"""The ``ragc`` command line against a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from ragc.cli import app
from schemas.build import Usage
from schemas.manifest import DuplicateGroup, DuplicateMember, MemberStatus
from schemas.records import Source
from stores import open_store, write_snapshot
from stores.review import ReviewItem, SqliteReviewQueue
from tests.factories import make_snapshot

runner = CliRunner()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'knowledge.db'}"


@pytest.fixture
def snapshots(tmp_path: Path) -> dict[str, Path]:
    return {
        v: write_snapshot(make_snapshot(v), tmp_path / "snapshots" / v) for v in ("v1", "v2", "v3")
    }


def ragc(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_help_lists_every_command() -> None:
    code, out, _ = ragc("--help")
    assert code == 0
    for command in (
        "compile",
        "serve",
        "ask",
        "eval",
        "versions",
        "publish",
        "rollback",
        "rollout",
        "gc",
        "pin",
    ):
        assert command in out


def test_publish_rollout_rollback_pin_and_gc(url: str, snapshots: dict[str, Path]) -> None:
    assert ragc("publish", str(snapshots["v1"]), "--activate", "--store", url)[0] == 0
    assert ragc("publish", str(snapshots["v2"]), "--store", url)[0] == 0

    code, out, _ = ragc("rollout", "v2", "--percent", "10", "--store", url, "--json")
    assert code == 0
    assert json.loads(out) | {"updated_at": ""} == {
        "stable": "v1",
        "canary": "v2",
        "percent": 10.0,
        "updated_at": "",
    }

    code, out, _ = ragc("rollout", "v2", "--store", url)
    assert (code, out.strip()) == (0, "stable v2")
    assert ragc("pin", "acme", "v1", "--store", url)[0] == 0
    assert ragc("publish", str(snapshots["v3"]), "--activate", "--store", url)[0] == 0

    code, out, _ = ragc("rollback", "--store", url)
    assert (code, out.strip()) == (0, "stable v2")

    code, out, _ = ragc("versions", "--store", url, "--json")
    listed = {v["version"]: v for v in json.loads(out)}
    assert listed["v1"]["pinned_by"] == ["acme"]
    assert listed["v2"]["active"]

    code, out, _ = ragc("gc", "--keep", "1", "--store", url, "--json")
    assert (code, json.loads(out)["removed"]) == (0, [])  # v1 pinned, v2 active, v3 newest
    assert ragc("pin", "acme", "--clear", "--store", url)[0] == 0
    code, out, _ = ragc("gc", "--keep", "1", "--store", url, "--json")
    assert (code, json.loads(out)["removed"]) == (0, ["v1"])

    code, out, _ = ragc("versions", "--store", url, "--json")
    assert [(v["version"], v["active"]) for v in json.loads(out)] == [("v2", True), ("v3", False)]


def test_store_url_comes_from_the_environment(
    url: str, snapshots: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGC_STORE", url)
    assert ragc("publish", str(snapshots["v1"]), "--activate")[0] == 0
    store = open_store(url)
    assert store.active_version() == "v1"
    store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("versions", "--store", "ftp://example/x"), "unknown store URL scheme 'ftp'"),
        (("rollout", "v9"), "version 'v9' is not published"),
        (("rollback",), "no earlier version to roll back to"),
        (("pin", "Bad Tenant", "v1"), "tenant id 'Bad Tenant' is not valid"),
        (("compile", "examples", "--wrong-target", "1.5"), "bad compile option wrong_target"),
        (("compile", "examples", "--oos-share", "-0.1"), "bad compile option oos_share"),
        (("eval", "q.jsonl", "--knowledge", "examples", "--wrong-target", "0"), "bad eval option"),
        (("eval", "q.jsonl", "--knowledge", "examples", "--oos-share", "1"), "bad eval option"),
    ],
)
def test_bad_input_exits_non_zero_with_one_clear_line(
    url: str, snapshots: dict[str, Path], args: tuple[str, ...], message: str
) -> None:
    ragc("publish", str(snapshots["v1"]), "--activate", "--store", url)
    full = args if "--store" in args else (*args, "--store", url)

    code, _, err = ragc(*full)

    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert message in err
    store = open_store(url)
    assert store.active_version() == "v1"
    store.close()


def test_a_malformed_snapshot_is_refused_and_nothing_changes(
    url: str, snapshots: dict[str, Path]
) -> None:
    ragc("publish", str(snapshots["v1"]), "--activate", "--store", url)
    broken = snapshots["v2"]
    (broken / "exact.jsonl").write_text("{not json\n")

    code, _, err = ragc("publish", str(broken), "--activate", "--store", url)

    assert code == 1
    assert "exact.jsonl:1" in err
    code, out, _ = ragc("versions", "--store", url, "--json")
    assert [(v["version"], v["active"]) for v in json.loads(out)] == [("v1", True)]


@pytest.mark.parametrize("flag", [(), ("--similarity-gate",)])
def test_eval_passes_the_similarity_gate_choice_to_the_router_policy(
    flag: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragc import evaluate  # noqa: PLC0415 - patched where the command imports it from
    from schemas.errors import InvalidInputError  # noqa: PLC0415

    seen: list[object] = []

    def run_eval(*args: object, policy: object = None, **kwargs: object) -> None:
        seen.append(policy)
        raise InvalidInputError("stopped after the policy was built")

    monkeypatch.setattr(evaluate, "run_eval", run_eval)
    code, _, err = ragc("eval", "q.jsonl", "--knowledge", str(tmp_path), *flag)
    assert code == 1
    assert "stopped after the policy was built" in err
    assert [getattr(p, "similarity_gate", None) for p in seen] == [bool(flag)]


def _group() -> DuplicateGroup:
    def member(path: str, status: MemberStatus, answer: float) -> DuplicateMember:
        return DuplicateMember(
            entry_id=f"{path[:6]}.close-contact",
            question="What should I do after close contact?",
            section=Source(doc_id=path[:6], path=path, section="Close", anchor="close-contact"),
            question_similarity=0.998,
            answer_similarity=answer,
            status=status,
        )

    return DuplicateGroup(
        id="dup-0123456789ab",
        verdict="conflict",
        canonical="page-1.close-contact",
        members=(member("page-1.html", "canonical", 1.0), member("page-2.html", "held", 0.68)),
        reason="questions alike (cosine >= 0.95)",
    )


def test_eval_prints_strict_and_lenient_figures_and_the_duplicates_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    from ragc import evaluate  # noqa: PLC0415 - patched where the command imports it from
    from schemas.evaluation import summarize  # noqa: PLC0415

    report = msgspec.structs.replace(
        summarize([]),
        coverage=0.3158,
        wrong_rate=0.3333,
        duplicate_served=5,
        coverage_lenient=0.3816,
        wrong_rate_lenient=0.1944,
    )
    result = evaluate.EvalResult(
        version="v1",
        compiled=False,
        threshold=0.2,
        report=report,
        outcomes=[],
        duplicate_groups=6,
        conflict_groups=2,
        cost=evaluate.CompileCost(
            seconds=4293.2,
            usage=(
                Usage(stage="synthesize", calls=2, input_tokens=900, output_tokens=300),
                Usage(stage="answer", calls=1, input_tokens=1200, output_tokens=80),
            ),
        ),
    )
    monkeypatch.setattr(evaluate, "run_eval", lambda *a, **k: result)

    code, out, _ = ragc("eval", "q.jsonl", "--knowledge", str(tmp_path))
    assert code == 0
    lines = {" ".join(line.strip(" │|").split()) for line in out.splitlines()}
    assert "coverage │ 31.6%" in lines
    assert "wrong-answer rate │ 33.3%" in lines
    assert "served an equivalent duplicate │ 5 (6 duplicate groups, 2 conflicting)" in lines
    assert "coverage, duplicates counted right │ 38.2%" in lines
    assert "wrong-answer rate, duplicates counted right │ 19.4%" in lines
    assert "compile │ 4,293 s, 2,100 input and 380 output tokens" in lines

    code, out, _ = ragc("eval", "q.jsonl", "--knowledge", str(tmp_path), "--json")
    figures = json.loads(out)
    assert (figures["duplicate_served"], figures["coverage_lenient"]) == (5, 0.3816)
    assert figures["compile"]["seconds"] == 4293.2
    assert [u["output_tokens"] for u in figures["compile"]["usage"]] == [300, 80]


def test_compile_lists_the_duplicate_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    import flows.compile  # noqa: PLC0415 - patched where the command imports it from

    result = flows.compile.CompileResult(
        version="v1",
        published=False,
        snapshot_dir=str(tmp_path),
        counts={},
        gates=(),
        stages=(),
        skipped=(),
        provider_calls={},
        provider_reused={},
        entries={"approved": 1, "pending": 1},
        duplicates=(_group(),),
        seconds=1.0,
    )
    monkeypatch.setattr(flows.compile, "compile_knowledge", lambda params: result)

    code, out, _ = ragc("compile", str(tmp_path), "--store", f"sqlite:///{tmp_path / 'k.db'}")
    assert code == 0
    assert (
        "duplicate groups (entries asking the same question): 1; 0 with the same answer, "
        "1 conflicting" in out
    )
    assert (
        "dup-0123456789ab conflict (questions alike (cosine >= 0.95)) → page-1.close-contact" in out
    )
    assert "held      page-2.html#close-contact" in out
    assert "(question 1.00, answer 0.68)" in out

    code, out, _ = ragc(
        "compile", str(tmp_path), "--store", f"sqlite:///{tmp_path / 'k.db'}", "--json"
    )
    assert json.loads(out)["duplicates"][0]["members"][1]["status"] == "held"


def test_review_list_says_why_an_answer_is_held(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    queue = SqliteReviewQueue(url)
    try:
        queue.submit(
            [
                ReviewItem(
                    entry_id="page-2.close-contact",
                    fingerprint="fp",
                    question="Close contact?",
                    answer="Call.",
                    score=1.0,
                    reason="duplicate question answered differently",
                )
            ]
        )
    finally:
        queue.close()
    code, out, _ = ragc("review", "list", "--store", url)
    assert code == 0
    assert "duplicate question answered" in out
    code, out, _ = ragc("review", "list", "--store", url, "--json")
    assert json.loads(out)[0]["reason"] == "duplicate question answered differently"


def test_tenant_keys_are_issued_once_listed_without_the_key_and_revoked(url: str) -> None:
    code, out, _ = ragc("tenant-keys", "add", "acme", "--label", "widget", "--store", url)
    key = out.split("\n")[1].strip()
    assert code == 0
    assert key.startswith("ragc_tk_")
    code, out, _ = ragc("tenant-keys", "list", "--store", url, "--json")
    listed = json.loads(out)
    assert code == 0
    assert [(k["tenant"], k["label"], k["revoked_at"]) for k in listed] == [
        ("acme", "widget", None)
    ]
    assert key not in out
    code, out, _ = ragc("tenant-keys", "revoke", listed[0]["key_id"], "--store", url)
    assert (code, out.strip()) == (0, f"revoked key {listed[0]['key_id']} of tenant acme")
    code, _, err = ragc("tenant-keys", "add", "Acme", "--store", url)
    assert code == 1
    assert "tenant id 'Acme' is not valid" in err
