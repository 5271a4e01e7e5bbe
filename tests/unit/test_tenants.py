"""Who a request speaks for: :class:`serving.tenants.TenantAuth` on its own."""

from __future__ import annotations

import logging

import pytest

from schemas.errors import InvalidInputError, StoreUnavailableError
from serving.tenants import TenantAuth, TenantCredentialsError, TenantForbiddenError
from stores.tenant_keys import digest_key

KEY = "ragc_tk_" + "a" * 43


class Keys:
    """A key source whose live keys the test sets, and which can go down."""

    def __init__(self, live: dict[str, str]) -> None:
        self.digests = live
        self.down = False

    def live(self) -> dict[str, str]:
        if self.down:
            raise StoreUnavailableError("the warm tier is down")
        return dict(self.digests)


@pytest.fixture
def keys() -> Keys:
    return Keys({digest_key(KEY): "acme"})


def test_the_key_names_the_tenant(keys: Keys) -> None:
    auth = TenantAuth("keys", keys)
    assert auth.identify(None, KEY) == "acme"
    assert auth.identify("acme", f" {KEY} ") == "acme"
    assert auth.identify(None, None) is None


def test_a_claim_needs_its_own_key(keys: Keys) -> None:
    auth = TenantAuth("keys", keys)
    with pytest.raises(TenantCredentialsError, match="need that tenant's API key"):
        auth.identify("acme", None)
    with pytest.raises(TenantCredentialsError, match="not a live tenant key"):
        auth.identify(None, KEY[:-1])
    with pytest.raises(TenantForbiddenError, match="does not belong to tenant 'beta'"):
        auth.identify("beta", KEY)
    with pytest.raises(InvalidInputError, match="tenant id"):
        auth.identify("acme\n", KEY)


def test_trust_believes_the_claim_and_ignores_keys(keys: Keys) -> None:
    auth = TenantAuth("trust", keys)
    assert auth.identify("beta", KEY) == "beta"
    assert auth.identify(None, "anything") is None


def test_without_a_key_store_only_anonymous_questions_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        auth = TenantAuth("keys", None)
    assert "only anonymous questions" in caplog.text
    assert auth.identify(None, None) is None
    with pytest.raises(TenantCredentialsError):
        auth.identify(None, KEY)


def test_an_outage_keeps_the_last_keys_and_is_logged_once(
    keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    auth = TenantAuth("keys", keys)
    keys.down = True
    keys.digests = {}
    with caplog.at_level(logging.INFO):
        assert not auth.refresh()
        assert not auth.refresh()
        assert auth.identify(None, KEY) == "acme"
        keys.down = False
        assert auth.refresh()
    assert caplog.text.count("cannot read tenant keys") == 1
    assert "readable again" in caplog.text
    with pytest.raises(TenantCredentialsError):  # revoked while it was down: refused now
        auth.identify(None, KEY)
