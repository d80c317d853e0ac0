"""`check_metadata` takes shortcuts (it looks at the encoded text for NUL escapes and
brackets before it walks the value): it must refuse exactly what a plain walk refuses."""

from __future__ import annotations

import json
import math
from types import MappingProxyType
from typing import Any

from hypothesis import given, settings, strategies as st

from chatledger.domain import MAX_JSON_DEPTH, check_metadata, json_depth
from chatledger.errors import ValidationError
from tests.factories import examples

# Text that the shortcuts could be fooled by: NUL, lone surrogates, a backslash followed
# by "u0000" (the escape, but written out), brackets inside strings.
_TRICKY = st.sampled_from(["\x00", "\ud800", "\\u0000", "\\\\u0000", "[[[[", "{{", "é😀", "a"])
_TEXT = st.lists(st.one_of(_TRICKY, st.text(max_size=3)), max_size=4).map("".join)
_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _TEXT)


def _values(depth: int) -> Any:
    return st.recursive(
        _SCALAR,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.tuples(inner, inner),
            st.dictionaries(_TEXT, inner, max_size=3),
        ),
        max_leaves=depth,
    )


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list | tuple):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _numbers(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list | tuple):
        return [n for v in value for n in _numbers(v)]
    return []


def _refused_by_a_plain_walk(value: dict[str, Any]) -> bool:
    if _depth(value) > MAX_JSON_DEPTH:
        return True
    # JSON has no infinity: an encoder that writes one writes text no parser takes.
    if any(not math.isfinite(n) for n in _numbers(value)):
        return True
    return any("\x00" in s or any(0xD800 <= ord(c) <= 0xDFFF for c in s) for s in _strings(value))


def _nested(levels: int, inner: Any) -> Any:
    for _ in range(levels):
        inner = [inner]
    return inner


@settings(max_examples=examples(300))
@given(value=st.dictionaries(_TEXT, _values(12), max_size=4), levels=st.integers(0, 40))
def test_it_refuses_exactly_what_a_plain_walk_refuses(value: dict[str, Any], levels: int) -> None:
    value = {**value, "deep": _nested(levels, value.get("x", "leaf"))}
    try:
        checked = check_metadata("m", value)
    except ValidationError:
        refused = True
    else:
        refused = False
        assert checked == value and json.loads(json.dumps(checked)) is not None
    assert refused == _refused_by_a_plain_walk(value), value
    assert json_depth(value) == min(_depth(value), MAX_JSON_DEPTH + 1)


def test_any_mapping_will_do_and_too_deep_is_refused_without_recursing() -> None:
    assert check_metadata("m", MappingProxyType({"a": (1, [2])})) == {"a": (1, [2])}
    for deep in (_nested(MAX_JSON_DEPTH, 1), _nested(100_000, 1)):
        try:
            check_metadata("m", {"a": deep})
        except ValidationError as error:
            assert "nested deeper" in error.message
        else:
            raise AssertionError("accepted")
