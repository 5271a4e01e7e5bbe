"""Credentials never reach a banner, a log line or an error message."""

from __future__ import annotations

import pytest

from schemas.redact import redact


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://ragc:s3cret@cache:6380/1?prefix=kb", "rediss://ragc:***@cache:6380/1?prefix=kb"),
        ("postgresql://ragc:p%40ss@db/warm", "postgresql://ragc:***@db/warm"),
        ("host=db password='a b\\'c' dbname=warm", "host=db password=*** dbname=warm"),
        (
            "postgresql://db/warm?password=s3cret&sslmode=require",
            "postgresql://db/warm?password=***&sslmode=require",
        ),
        ("sqlite:///.ragc/knowledge.db", "sqlite:///.ragc/knowledge.db"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_passwords_are_masked_and_the_rest_is_kept(text: str, masked: str) -> None:
    assert redact(text) == masked
    assert "s3cret" not in redact(text)
