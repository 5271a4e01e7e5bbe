"""The service's settings come from RAGC_* variables, with clear errors for bad values."""

from __future__ import annotations

import pytest

from schemas.errors import InvalidInputError
from serving.settings import ServeSettings


def test_defaults_without_any_variable() -> None:
    settings = ServeSettings.from_env({})
    assert settings.store == "sqlite:///.ragc/knowledge.db"
    assert settings.audit is True
    assert settings.route_cache == 10_000
    assert (settings.encoder_batch, settings.encoder_window_ms) == (32, 1.0)
    assert settings.admin_token is None


def test_variables_override_the_defaults() -> None:
    settings = ServeSettings.from_env(
        {
            "RAGC_STORE": "redis://127.0.0.1:6379/0",
            "RAGC_AUDIT": "off",
            "RAGC_ROUTE_CACHE": "0",
            "RAGC_POINTER_POLL_S": "1.5",
            "RAGC_L3_BUDGET": "20",
            "RAGC_ENCODER_BATCH": "1",
            "RAGC_ENCODER_WINDOW_MS": "2.5",
        }
    )
    assert (settings.encoder_batch, settings.encoder_window_ms) == (1, 2.5)
    assert settings.store == "redis://127.0.0.1:6379/0"
    assert settings.audit is False
    assert settings.route_cache == 0
    assert settings.poll_interval == 1.5
    assert settings.l3_budget == 20


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RAGC_ROUTE_CACHE", "lots", "RAGC_ROUTE_CACHE='lots' is not a number"),
        ("RAGC_ROUTE_CACHE", "-1", "RAGC_ROUTE_CACHE=-1 is negative"),
        ("RAGC_POINTER_POLL_S", "soon", "RAGC_POINTER_POLL_S='soon' is not a number"),
        ("RAGC_ENCODER_BATCH", "0", "RAGC_ENCODER_BATCH=0 is below 1"),
        ("RAGC_ENCODER_BATCH", "2.5", "RAGC_ENCODER_BATCH='2.5' is not a number"),
        ("RAGC_ENCODER_WINDOW_MS", "-1", "RAGC_ENCODER_WINDOW_MS=-1.0 is out of range"),
        ("RAGC_ENCODER_WINDOW_MS", "nan", "RAGC_ENCODER_WINDOW_MS=nan is out of range"),
    ],
)
def test_bad_numbers_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ServeSettings.from_env({name: value})
