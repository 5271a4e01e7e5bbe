"""Request ids, the access log and JSON log lines (serving/observe.py)."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from serving.app import create_app
from serving.observe import REQUEST_ID, JsonFormatter, configure_logging
from serving.settings import ServeSettings
from stores import SqliteStore
from tests.factories import make_snapshot


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("serving.test", logging.WARNING, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_a_json_line_carries_the_request_id_and_the_extra_fields() -> None:
    token = REQUEST_ID.set("req-7")
    try:
        line = JsonFormatter().format(_record("store %s", status=503, path="/v1/answer"))
    finally:
        REQUEST_ID.reset(token)
    entry = json.loads(line)
    assert {k: entry[k] for k in ("level", "logger", "message", "request_id")} == {
        "level": "warning",
        "logger": "serving.test",
        "message": "store %s",
        "request_id": "req-7",
    }
    assert (entry["status"], entry["path"]) == (503, "/v1/answer")
    assert entry["ts"].endswith("Z")
    assert "request_id" not in json.loads(JsonFormatter().format(_record("outside")))


def _boom() -> None:
    raise ValueError("boom")


def test_a_traceback_is_one_field_of_one_line() -> None:
    try:
        _boom()
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exc"]


def test_configure_logging_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        configure_logging("json")
        configure_logging("json")
        ours = [h for h in root.handlers if h.get_name() == "ragc"]
        assert len(ours) == 1
        assert isinstance(ours[0].formatter, JsonFormatter)
        assert [h for h in root.handlers if h.get_name() != "ragc"] == before
    finally:
        for handler in [h for h in root.handlers if h.get_name() == "ragc"]:
            root.removeHandler(handler)
        root.setLevel(level)


async def test_the_access_log_has_one_line_per_request_with_its_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.publish(make_snapshot("v1"), activate=True)
    settings = ServeSettings(store=store.url, audit=False, access_log=True)
    try:
        async with AsyncTestClient(create_app(settings, store=store)) as client:
            with caplog.at_level(logging.INFO, logger="ragc.access"):
                response = await client.post(
                    "/v1/answer",
                    json={"question": "How long do I have to return a bike?"},
                    headers={"X-Request-Id": "abc-123"},
                )
                await client.get("/readyz")
    finally:
        store.close()
    lines = [r for r in caplog.records if r.name == "ragc.access"]
    assert response.headers["x-request-id"] == "abc-123"
    assert [(r.method, r.path, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("POST", "/v1/answer", 200),
        ("GET", "/readyz", 200),
    ]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.emit(lines[0])
    assert json.loads(stream.getvalue())["duration_ms"] >= 0
