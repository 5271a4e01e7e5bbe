"""The service's settings come from RAGC_* variables, with clear errors for bad values."""

from __future__ import annotations

import pytest

from schemas.errors import InvalidInputError
from schemas.settings import Environment
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
    assert settings.pointer_poll_s == 1.5
    assert settings.l3_budget == 20


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RAGC_ROUTE_CACHE", "lots", "valid integer"),
        ("RAGC_ROUTE_CACHE", "-1", "greater than or equal to 0"),
        ("RAGC_POINTER_POLL_S", "soon", "valid number"),
        ("RAGC_POINTER_POLL_S", "0", "greater than 0"),
        ("RAGC_ENCODER_BATCH", "0", "greater than or equal to 1"),
        ("RAGC_ENCODER_BATCH", "2.5", "valid integer"),
        ("RAGC_ENCODER_WINDOW_MS", "-1", "greater than or equal to 0"),
        ("RAGC_ENCODER_WINDOW_MS", "nan", "finite number"),
        ("RAGC_L3_BUDGET", "-5", "greater than or equal to 0"),
        ("RAGC_AUDIT", "maybe", "valid boolean"),
    ],
)
def test_bad_values_name_the_variable_and_what_it_takes(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message) as raised:
        ServeSettings.from_env({name: value})
    assert str(raised.value).startswith(f"{name}={value!r} is not valid")
    assert (raised.value.hint or "").startswith(f"{name}: ")


def test_an_empty_variable_counts_as_unset() -> None:
    settings = ServeSettings.from_env({"RAGC_STORE": "", "RAGC_ROUTE_CACHE": ""})
    assert (settings.store, settings.route_cache) == ("sqlite:///.ragc/knowledge.db", 10_000)


def test_the_process_environment_is_read_when_no_mapping_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAGC_WARM_DSN", "postgresql://db/ragc")
    monkeypatch.setenv("RAGC_ENCODER_BATCH", "4")
    assert Environment.read().warm_dsn == "postgresql://db/ragc"
    assert ServeSettings.from_env().encoder_batch == 4
    assert ServeSettings.from_env({}).encoder_batch == 32  # a given mapping replaces it
