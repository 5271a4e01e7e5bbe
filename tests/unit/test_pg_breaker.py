"""The warm tier's fast failure and prompt reconnect, without a server (see also the slow
outage test in tests/integration/test_outages.py)."""

from __future__ import annotations

import pytest

from schemas.errors import StoreUnavailableError
from stores._pg import RECONNECT_S, Breaker, _Reconnect


def test_an_open_breaker_fails_at_once_with_the_error_that_opened_it() -> None:
    breaker = Breaker(hold=3600)
    breaker.check()  # closed: nothing to say
    breaker.trip(StoreUnavailableError("cannot reach the warm tier", hint="start it"))
    with pytest.raises(StoreUnavailableError, match=r"cannot reach the warm tier.*failing fast"):
        breaker.check()
    breaker.reset()
    breaker.check()


def test_a_breaker_lets_a_call_try_again_after_its_hold() -> None:
    breaker = Breaker(hold=0.0)
    breaker.trip(StoreUnavailableError("down"))
    breaker.check()  # the hold is over: this call may try


def test_reconnect_attempts_never_pause_longer_than_a_second() -> None:
    attempt = _Reconnect(timeout=300.0)
    delays = []
    for step in range(12):
        attempt.update_delay(float(step))
        delays.append(attempt.delay)
    assert 0.8 < delays[0] <= RECONNECT_S
    assert max(delays) <= RECONNECT_S
