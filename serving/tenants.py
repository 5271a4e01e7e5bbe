"""Who is asking: the tenant of a request, from its API key, never from what the body claims.

With ``RAGC_TENANT_AUTH=keys`` (the default) a request's tenant is the one its ``X-API-Key``
belongs to. A request without a key is anonymous: it gets the untenanted knowledge, the stable
or canary version, and no tenant's pin or L3 budget; naming a tenant without that tenant's key
is refused (401), and so is naming another tenant than the key's (403).

``RAGC_TENANT_AUTH=trust`` is the documented opt-out for a single-tenant deployment, or one
behind a gateway that authenticates callers itself: the body's ``tenant`` is believed.

The live keys (digest → tenant) are held in memory and re-read from the warm tier in the
background, so checking a key costs one SHA-256 and a dict lookup, and a warm tier that goes
away leaves the last keys read working until it comes back.
"""

from __future__ import annotations

import logging
import threading
from typing import Final, Literal, Protocol

from schemas.errors import PermanentError, RagcError
from schemas.keys import validate_tenant
from stores.tenant_keys import digest_key

__all__ = [
    "REFRESH_S",
    "KeySource",
    "TenantAuth",
    "TenantAuthMode",
    "TenantCredentialsError",
    "TenantForbiddenError",
]

TenantAuthMode = Literal["keys", "trust"]
REFRESH_S: Final = 5.0
"""Seconds between reads of the live keys: how long a revoked key keeps working, at most."""
HEADER: Final = "X-API-Key"

logger = logging.getLogger(__name__)


class KeySource(Protocol):
    """Where the live keys are read from (:class:`stores.tenant_keys.TenantKeys`)."""

    def live(self) -> dict[str, str]: ...


class TenantCredentialsError(PermanentError):
    """The request names a tenant without that tenant's key, or its key is not a live one
    (HTTP 401)."""


class TenantForbiddenError(PermanentError):
    """The request's key belongs to another tenant than the one it names (HTTP 403)."""


class TenantAuth:
    """Resolves a request's tenant; the key map is refreshed by a background thread."""

    def __init__(
        self,
        mode: TenantAuthMode,
        source: KeySource | None,
        *,
        interval: float = REFRESH_S,
    ) -> None:
        self.mode = mode
        self.source = source
        self.interval = interval
        self._digests: dict[str, str] = {}
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if mode == "keys" and source is None:
            logger.warning(
                "tenant keys need a warm tier (RAGC_WARM_DSN, or a sqlite:/// store): "
                "only anonymous questions will be answered"
            )
        self.refresh()

    def refresh(self) -> bool:
        """Read the live keys now; on failure keep the last ones (logged once per outage)."""
        if self.mode != "keys" or self.source is None:
            return True
        try:
            digests = self.source.live()
        except RagcError as exc:
            if not self._failing:
                logger.warning("cannot read tenant keys, keeping the last ones read: %s", exc)
            self._failing = True
            return False
        if self._failing:
            logger.info("tenant keys readable again (%d live)", len(digests))
        self._failing = False
        self._digests = digests
        return True

    def start(self) -> None:
        if self.mode == "keys" and self.source is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ragc-tenant-keys", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def identify(self, claimed: str | None, key: str | None) -> str | None:
        """The tenant a request speaks for: ``claimed`` is the body's ``tenant``, ``key`` the
        ``X-API-Key`` header. Raises the 401/403 errors above."""
        if claimed is not None:
            validate_tenant(claimed)
        if self.mode == "trust":
            return claimed
        if key is None:
            if claimed is None:
                return None
            raise TenantCredentialsError(
                f"answers for tenant {claimed!r} need that tenant's API key",
                hint=f"send the key in the {HEADER} header (an operator issues one with "
                f'`ragc tenant-keys add {claimed}`), or leave out "tenant" for the shared '
                "knowledge",
            )
        tenant = self._digests.get(digest_key(key.strip()))
        if tenant is None:
            raise TenantCredentialsError(
                f"the {HEADER} header is not a live tenant key",
                hint="check it was copied whole and not revoked (`ragc tenant-keys list`)",
            )
        if claimed is not None and claimed != tenant:
            raise TenantForbiddenError(
                f"this API key does not belong to tenant {claimed!r}",
                hint='leave out "tenant" (the key names it), or use that tenant\'s own key',
            )
        return tenant
