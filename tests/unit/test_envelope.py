"""Envelope decoding: every bad input becomes a reason code, never another exception."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statekeeper import codec
from statekeeper.topics.envelope import _validate_each_field, decode_envelope, validate_envelope
from statekeeper.topics.rejections import Reason, Rejected

TYPES = frozenset({"workflow.start"})


def valid(**overrides: Any) -> dict[str, Any]:
    body = {
        "v": 1,
        "id": "e-1",
        "type": "workflow.start",
        "tenant": "acme",
        "key": "inv-1",
        "ts": 1_700_000_000_000,
        "data": {"workflow": "invoice"},
    }
    body.update(overrides)
    return body


def decode(value: Any, max_bytes: int = 1024) -> Any:
    raw = value if isinstance(value, bytes) else msgpack.packb(value)
    return decode_envelope(raw, max_bytes=max_bytes, types=TYPES)


def reason_for(value: Any, max_bytes: int = 1024) -> Reason:
    with pytest.raises(Rejected) as caught:
        decode(value, max_bytes)
    return caught.value.reason


def test_valid_envelope_decodes_with_record_key() -> None:
    envelope = decode(valid())
    assert envelope.record_key == b"acme/inv-1"
    assert envelope.data == {"workflow": "invoice"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xc1", Reason.UNDECODABLE),
        (b"\x92\x01", Reason.UNDECODABLE),  # truncated array
        (msgpack.packb([1, 2]), Reason.INVALID_ENVELOPE),
        (valid(v=2), Reason.UNSUPPORTED_VERSION),
        (valid(v=True), Reason.INVALID_ENVELOPE),
        (valid(id=""), Reason.INVALID_ENVELOPE),
        (valid(id="x" * 129), Reason.INVALID_ENVELOPE),
        (valid(tenant="Acme"), Reason.INVALID_ENVELOPE),
        (valid(tenant="-acme"), Reason.INVALID_ENVELOPE),
        (valid(key="é" * 129), Reason.INVALID_ENVELOPE),  # 258 UTF-8 bytes
        (valid(ts=-1), Reason.INVALID_ENVELOPE),
        (valid(ts="now"), Reason.INVALID_ENVELOPE),
        (valid(data=[1]), Reason.INVALID_ENVELOPE),
        (valid(type="workflow.other"), Reason.UNKNOWN_TYPE),
    ],
)
def test_bad_envelopes_have_reasons(value: Any, reason: Reason) -> None:
    assert reason_for(value) == reason


def test_oversize_is_refused_before_decoding() -> None:
    assert reason_for(valid(data={"pad": "x" * 2000}), max_bytes=1024) == Reason.OVERSIZE


def test_missing_value_is_undecodable() -> None:
    with pytest.raises(Rejected) as caught:
        decode_envelope(None, max_bytes=10, types=TYPES)
    assert caught.value.reason == Reason.UNDECODABLE


def test_deep_nesting_is_refused() -> None:
    nested: Any = "x"
    for _ in range(40):
        nested = [nested]
    assert reason_for(valid(data={"deep": nested}), max_bytes=10_000) == Reason.UNDECODABLE


def test_rejection_keeps_the_decoded_event() -> None:
    with pytest.raises(Rejected) as caught:
        decode(valid(ts="yesterday"))
    assert caught.value.event["ts"] == "yesterday"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_reject(raw: bytes) -> None:
    with contextlib.suppress(Rejected):
        decode_envelope(raw, max_bytes=256, types=TYPES)


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(valid()) + ["x"]), json_like, max_size=8))
def test_random_maps_only_ever_reject(value: dict[str, Any]) -> None:
    with contextlib.suppress(Rejected):
        decode(value, max_bytes=100_000)


VARIANTS = {
    "v": [2, True, 1.0, "1"],
    "id": ["", "x" * 128, "x" * 129, 7],
    "type": ["workflow.other", "", None],
    "tenant": ["beta-2", "Acme", "-x", "a" * 64, "a" * 65, 3],
    "key": ["", "k" * 256, "k" * 257, "é" * 128, "é" * 129, "a\nb", "ü", b"k"],
    "ts": [0, -1, True, "now", 1.5],
    "data": [{}, [1], None],
}


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid envelope with a few fields changed to other values, or left out."""
    value = valid()
    for name in draw(st.sets(st.sampled_from(sorted(VARIANTS)), max_size=3)):
        if draw(st.integers(0, 5)) == 0:
            del value[name]
        else:
            value[name] = draw(st.sampled_from(VARIANTS[name]))
    return value


def outcome(validate: Any, value: dict[str, Any]) -> Any:
    try:
        return validate(value, types=TYPES)
    except Rejected as rejection:
        return rejection.reason, rejection.detail


SINGLE_CHANGES = [(name, variant) for name, variants in VARIANTS.items() for variant in variants]


@pytest.mark.parametrize(
    ("name", "variant"), [*SINGLE_CHANGES, *((n, "<left out>") for n in VARIANTS)]
)
def test_the_quick_check_agrees_on_every_single_change(name: str, variant: Any) -> None:
    for tenant in ("acme", "first-seen"):  # the quick check knows the tenant only once seen
        value = valid(**{"tenant": tenant, name: variant})
        if variant == "<left out>":
            del value[name]
        assert outcome(validate_envelope, value) == outcome(_validate_each_field, value)


@settings(max_examples=500, deadline=None)
@given(near_valid())
def test_the_quick_check_agrees_with_the_field_by_field_one(value: dict[str, Any]) -> None:
    """``validate_envelope`` answers the common case in one expression, else field by field."""
    assert outcome(validate_envelope, value) == outcome(_validate_each_field, value)


def nested_to(depth: int, container: str) -> Any:
    value: Any = 1
    for n in range(depth):
        value = [value, "x" * n] if container == "list" else {"k": value, "n": n}
    return value


@pytest.mark.parametrize("container", ["list", "map"])
def test_nesting_up_to_the_limit_is_decoded_and_one_more_level_is_not(container: str) -> None:
    assert codec.unpack(codec.pack(nested_to(codec.MAX_DEPTH, container))) is not None
    with pytest.raises(codec.DecodeError):
        codec.unpack(codec.pack(nested_to(codec.MAX_DEPTH + 1, container)))


@pytest.mark.parametrize("where", ["data", "extra field", "data, tenant not seen yet"])
def test_an_envelope_nests_at_most_to_the_limit_wherever_the_nesting_is(where: str) -> None:
    """The quick path checks only ``data`` for depth, so only when nothing else can nest."""
    for depth, allowed in ((codec.MAX_DEPTH - 1, True), (codec.MAX_DEPTH, False)):
        nested = nested_to(depth, "map")  # inside the envelope map: one level more
        if where == "extra field":
            value = valid(extra=nested)
        elif where == "data":
            value = valid(data=nested)
        else:
            value = valid(data=nested, tenant=f"unseen-{depth}")
        if allowed:
            assert decode(value, max_bytes=100_000).tenant == value["tenant"]
        else:
            assert reason_for(value, max_bytes=100_000) is Reason.UNDECODABLE


def test_the_quick_check_keeps_the_length_limit_of_the_type() -> None:
    """A caller may accept a type it read from the record itself (redrive does)."""
    long_type = "workflow." + "x" * 100
    value = valid(type=long_type)
    types = frozenset({long_type})
    validate_envelope(valid(), types=TYPES)  # the tenant is known: the quick check applies
    for validate in (validate_envelope, _validate_each_field):
        with pytest.raises(Rejected) as caught:
            validate(value, types=types)
        assert caught.value.reason is Reason.INVALID_ENVELOPE
