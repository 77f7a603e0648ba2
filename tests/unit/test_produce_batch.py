"""The compiled produce batch (native/src/produce.rs) writes what aiokafka's BatchBuilder writes.

The batched input path hands ``statekeeper_native.ProduceBatch`` to
``AIOKafkaProducer.send_batch`` in place of aiokafka's ``BatchBuilder``; the broker must get the
same bytes for the same records, timestamp and producer state.
"""

from __future__ import annotations

import random

import pytest
import statekeeper_native  # built by `make deps` (native/)
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

LIMIT = 1_000_000
TIMESTAMP = 1_796_000_000_123


def random_bytes(rng: random.Random, longest: int) -> bytes:
    return rng.randbytes(rng.choice([0, 1, rng.randrange(longest + 1)]))


def random_records(
    rng: random.Random, count: int
) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]]:
    records = []
    for _ in range(count):
        key = None if rng.random() < 0.1 else random_bytes(rng, 40)
        value = None if rng.random() < 0.1 else random_bytes(rng, 400)
        headers = [
            (rng.choice(["trace", "statekeeper-reason", "ü"]), rng.choice([None, b"", b"x" * 200]))
            for _ in range(rng.choice([0, 0, 1, 3]))
        ]
        records.append((key, value, headers))
    return records


def aiokafka_bytes(records: list, producer: tuple[int, int, int], limit: int = LIMIT) -> bytes:
    builder = BatchBuilder(limit, 0)
    for key, value, headers in records:
        assert builder.append(timestamp=TIMESTAMP, key=key, value=value, headers=headers)
    builder._set_producer_state(*producer)
    return bytes(builder._build())


@pytest.mark.parametrize("seed", range(5))
def test_records_are_the_bytes_aiokafka_builds(seed: int) -> None:
    rng = random.Random(seed)
    records = random_records(rng, rng.randrange(1, 300))
    producer = (rng.randrange(2**40), rng.randrange(2**15), rng.randrange(2**31))
    batch = statekeeper_native.ProduceBatch(LIMIT)
    assert batch.add_records(records, 0, TIMESTAMP) == len(records)
    batch._set_producer_state(*producer)
    built = batch._build()
    assert built == aiokafka_bytes(records, producer)
    assert batch.size() == len(built)
    assert batch.record_count() == len(records)

    parsed = DefaultRecordBatch(built)
    assert parsed.validate_crc()
    assert (parsed.producer_id, parsed.producer_epoch, parsed.base_sequence) == producer
    back = [(r.key, r.value, list(r.headers)) for r in parsed]
    assert back == [(k, v, list(h)) for k, v, h in records]


def test_table_writes_are_records_without_headers_and_none_is_a_tombstone() -> None:
    rows = {b"a": b"1", b"b": None, b"c": b"3" * 1000}
    batch = statekeeper_native.ProduceBatch(LIMIT)
    assert batch.add_rows(rows, 0, TIMESTAMP) == 3
    expected = aiokafka_bytes([(k, v, []) for k, v in rows.items()], (-1, -1, 0))
    assert batch._build() == expected


def test_a_full_batch_closes_and_says_how_many_went_in() -> None:
    records = [(b"k%d" % n, b"v" * 100, []) for n in range(50)]
    batch = statekeeper_native.ProduceBatch(1_000)
    taken = batch.add_records(records, 0, TIMESTAMP)
    assert 0 < taken < len(records)
    assert batch.closed()
    assert batch.add_records(records, taken, TIMESTAMP) == 0  # closed: nothing more goes in
    # aiokafka takes the same records before it is full.
    reference = BatchBuilder(1_000, 0)
    fits = 0
    while reference.append(timestamp=TIMESTAMP, key=records[fits][0], value=b"v" * 100):
        fits += 1
    assert taken == fits
    assert batch._build() == bytes(reference._build())

    rest = statekeeper_native.ProduceBatch(1_000)
    assert rest.add_records(records, taken, TIMESTAMP) > 0  # the next batch from where it stopped


def test_one_record_always_fits() -> None:
    batch = statekeeper_native.ProduceBatch(10)
    assert batch.add_rows({b"key": b"x" * 100}, 0, TIMESTAMP) == 1
    assert batch.record_count() == 1


def test_a_send_never_appends_to_it_and_it_builds_once() -> None:
    batch = statekeeper_native.ProduceBatch(LIMIT)
    batch.add_rows({b"a": b"1"}, 0, TIMESTAMP)
    assert batch.append(timestamp=None, key=b"x", value=b"y", headers=[]) is None
    first = batch._build()
    assert batch._build() is first
    with pytest.raises(RuntimeError):
        batch._set_producer_state(1, 0, 0)


def test_anything_but_bytes_is_a_type_error() -> None:
    batch = statekeeper_native.ProduceBatch(LIMIT)
    with pytest.raises(TypeError, match="key"):
        batch.add_rows({"text": b"1"}, 0, TIMESTAMP)
    with pytest.raises(TypeError, match="value"):
        batch.add_records([(b"k", 3, [])], 0, TIMESTAMP)
    assert batch.record_count() == 0
