"""The codec: msgpack with our limits; a kept packer gives the bytes a fresh one would."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from statekeeper import codec

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text()
    | st.binary(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)  # fmt: skip


@given(values)
def test_pack_gives_the_bytes_of_a_fresh_packer_and_round_trips(value: Any) -> None:
    packed = codec.pack(value)
    assert packed == msgpack.packb(value, use_bin_type=True)
    assert codec.pack(value) == packed  # the kept packer starts each value afresh


def test_a_value_that_cannot_be_packed_leaves_nothing_behind() -> None:
    with pytest.raises(TypeError):
        codec.pack({"a": [1, object()]})
    assert codec.pack({"b": 1}) == msgpack.packb({"b": 1}, use_bin_type=True)


def test_unpack_keeps_str_keys_strict_and_arrays_as_lists() -> None:
    assert codec.unpack(msgpack.packb({"k": [1, (2, 3)], "b": b"x"})) == {
        "k": [1, [2, 3]],
        "b": b"x",
    }
    with pytest.raises(codec.DecodeError):
        codec.unpack(msgpack.packb({1: "int key"}))
    with pytest.raises(codec.DecodeError):
        codec.unpack(msgpack.packb(1) + b"\x01")  # trailing bytes


def test_a_large_value_does_not_leave_its_buffer_with_the_thread() -> None:
    big = b"x" * (codec.KEEP_PACKER_BELOW + 1)
    assert codec.pack(big) == msgpack.packb(big, use_bin_type=True)
    assert getattr(codec._local, "packer", None) is None
    assert codec.pack({"b": 1}) == msgpack.packb({"b": 1}, use_bin_type=True)
