"""Request bodies nested too deeply are refused before any decoder recurses into them."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from serving.dependencies import MAX_JSON_DEPTH, json_depth_exceeds

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=40,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@given(_JSON, st.integers(min_value=0, max_value=6))
def test_the_bound_counts_nesting_not_brackets_inside_strings(value: object, limit: int) -> None:
    body = json.dumps(value).encode()
    assert json_depth_exceeds(body, limit) == (_depth(value) > limit)


def test_a_thousand_nested_arrays_exceed_the_bound_and_a_request_does_not() -> None:
    nested = b'{"question": "hi", "slots": {"a": ' + b"[" * 1000 + b"]" * 1000 + b"}}"
    assert json_depth_exceeds(nested)
    flat = json.dumps({"questions": [{"question": "[[[{", "slots": {"a": 1}}] * 1000}).encode()
    assert not json_depth_exceeds(flat)
    assert MAX_JSON_DEPTH >= 8
