//! Kafka produce batches (record batch format v2, no compression) built from the staged rows
//! without a Python call per record.
//!
//! `ProduceBatch` stands where aiokafka's `BatchBuilder` stands when it is given to
//! `AIOKafkaProducer.send_batch`: aiokafka's sender calls `_set_producer_state`, `_build`,
//! `record_count`, `closed` and `close` on it, and `append` when a `send` of the same producer
//! finds it last in a partition's queue. The bytes are those aiokafka's
//! `DefaultRecordBatchBuilder` writes for the same records and timestamps
//! (`tests/unit/test_produce_batch.py` holds the two to it).

use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

/// Base offset, length, leader epoch, magic, CRC, attributes, last offset delta, first and
/// max timestamp, producer id, epoch, base sequence, record count.
const HEADER: usize = 61;
const LENGTH_AT: usize = 8;
const AFTER_LENGTH: usize = 12;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const TRANSACTIONAL: i16 = 0x10;

fn varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64; // zigzag, as Kafka's varints
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_size(value: i64) -> usize {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn field(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => varint(out, -1),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Bytes or None (a tombstone, a record without a key); anything else is a TypeError.
fn optional_bytes<'py>(value: &'py Bound<'py, PyAny>, what: &str) -> PyResult<Option<&'py [u8]>> {
    if value.is_none() {
        return Ok(None);
    }
    match value.downcast::<PyBytes>() {
        Ok(b) => Ok(Some(b.as_bytes())),
        Err(_) => Err(PyTypeError::new_err(format!(
            "Not supported type for {what}: {}",
            value.get_type().name()?
        ))),
    }
}

/// One partition's record batch, as aiokafka's sender takes it.
#[pyclass(module = "statekeeper_native")]
pub(crate) struct ProduceBatch {
    limit: usize,
    transactional: bool,
    buffer: Vec<u8>,
    records: i32,
    first_timestamp: Option<i64>,
    max_timestamp: i64,
    producer: (i64, i16, i32),
    closed: bool,
    built: Option<Py<PyBytes>>,
    scratch: Vec<u8>,
}

impl ProduceBatch {
    /// Append one record unless it would pass the limit (the first always goes in).
    fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> bool {
        if self.closed {
            return false;
        }
        let first = *self.first_timestamp.get_or_insert(timestamp);
        let body = &mut self.scratch;
        body.clear();
        body.push(0); // attributes
        varint(body, timestamp - first);
        varint(body, i64::from(self.records)); // offset delta: the base offset is 0 on produce
        field(body, key);
        field(body, value);
        varint(body, headers.len() as i64);
        for (name, header) in headers {
            field(body, Some(name));
            field(body, *header);
        }
        let needed = body.len() + varint_size(body.len() as i64);
        if self.records > 0 && self.buffer.len() + needed > self.limit {
            self.closed = true; // as aiokafka's BatchBuilder: full means closed
            return false;
        }
        varint(&mut self.buffer, body.len() as i64);
        self.buffer.extend_from_slice(body);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.records += 1;
        true
    }

    fn write_header(&mut self) {
        let length = (self.buffer.len() - AFTER_LENGTH) as i32;
        let (producer_id, epoch, sequence) = self.producer;
        let attributes: i16 = if self.transactional { TRANSACTIONAL } else { 0 };
        let first = self.first_timestamp.unwrap_or(0);
        let max = if self.first_timestamp.is_some() {
            self.max_timestamp
        } else {
            0
        };
        let b = &mut self.buffer;
        b[..LENGTH_AT].copy_from_slice(&0i64.to_be_bytes());
        b[LENGTH_AT..AFTER_LENGTH].copy_from_slice(&length.to_be_bytes());
        b[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // no partition leader epoch
        b[16] = 2; // magic
        b[ATTRIBUTES_AT..23].copy_from_slice(&attributes.to_be_bytes());
        b[23..27].copy_from_slice(&(self.records - 1).max(0).to_be_bytes());
        b[27..35].copy_from_slice(&first.to_be_bytes());
        b[35..43].copy_from_slice(&max.to_be_bytes());
        b[43..51].copy_from_slice(&producer_id.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&sequence.to_be_bytes());
        b[57..61].copy_from_slice(&self.records.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
        b[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
    }
}

#[pymethods]
impl ProduceBatch {
    /// An empty batch of at most `limit` bytes (one record always fits).
    #[new]
    #[pyo3(signature = (limit, transactional=false))]
    fn new(limit: usize, transactional: bool) -> Self {
        ProduceBatch {
            limit,
            transactional,
            buffer: vec![0; HEADER],
            records: 0,
            first_timestamp: None,
            max_timestamp: 0,
            producer: (-1, -1, 0),
            closed: false,
            built: None,
            scratch: Vec::with_capacity(256),
        }
    }

    /// Staged table writes from position `start` of `rows` (key -> value, None a
    /// tombstone), no headers, until the batch is full: how many went in.
    #[pyo3(signature = (rows, start=0, timestamp=None))]
    fn add_rows(
        &mut self,
        rows: &Bound<'_, PyDict>,
        start: usize,
        timestamp: Option<i64>,
    ) -> PyResult<usize> {
        let timestamp = timestamp.unwrap_or_else(now_ms);
        let mut added = 0;
        for (key, value) in rows.iter().skip(start) {
            let key = optional_bytes(&key, "key")?;
            let value = optional_bytes(&value, "value")?;
            if !self.push(timestamp, key, value, &[]) {
                break;
            }
            added += 1;
        }
        Ok(added)
    }

    /// Output records (key, value, headers) from position `start` of `records` until the
    /// batch is full: how many went in. Headers are (str, bytes or None) pairs.
    #[pyo3(signature = (records, start=0, timestamp=None))]
    fn add_records(
        &mut self,
        records: &Bound<'_, PyList>,
        start: usize,
        timestamp: Option<i64>,
    ) -> PyResult<usize> {
        let timestamp = timestamp.unwrap_or_else(now_ms);
        let mut added = 0;
        for record in records.iter().skip(start) {
            let record = record.downcast_into::<PyTuple>()?;
            let (key, value, headers) = (
                record.get_item(0)?,
                record.get_item(1)?,
                record.get_item(2)?,
            );
            let key = optional_bytes(&key, "key")?;
            let value = optional_bytes(&value, "value")?;
            let headers = headers.downcast_into::<PyList>()?;
            let ok = if headers.is_empty() {
                self.push(timestamp, key, value, &[])
            } else {
                let mut pairs: Vec<(Bound<'_, PyString>, Bound<'_, PyAny>)> = Vec::new();
                for pair in headers.iter() {
                    let pair = pair.downcast_into::<PyTuple>()?;
                    pairs.push((
                        pair.get_item(0)?.downcast_into::<PyString>()?,
                        pair.get_item(1)?,
                    ));
                }
                let mut held = Vec::with_capacity(pairs.len());
                for (name, header) in &pairs {
                    held.push((
                        name.to_str()?.as_bytes(),
                        optional_bytes(header, "header value")?,
                    ));
                }
                self.push(timestamp, key, value, &held)
            };
            if !ok {
                break;
            }
            added += 1;
        }
        Ok(added)
    }

    /// aiokafka's `BatchBuilder.append`, which a `send` of the same producer calls when it
    /// finds this batch last in a partition's queue: always None (full), so the send waits
    /// for this batch to go and starts a batch of its own. Records come in only through
    /// `add_rows` and `add_records`.
    #[pyo3(signature = (**_record))]
    fn append(&self, _record: Option<&Bound<'_, PyDict>>) -> Option<PyObject> {
        None
    }

    fn close(&mut self) {
        self.closed = true;
    }

    fn closed(&self) -> bool {
        self.closed
    }

    fn record_count(&self) -> i32 {
        self.records
    }

    /// Bytes so far; once built, the built batch's length (as aiokafka's).
    fn size(&self, py: Python<'_>) -> usize {
        match &self.built {
            Some(b) => b.bind(py).as_bytes().len(),
            None => self.buffer.len(),
        }
    }

    fn _set_producer_state(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> PyResult<()> {
        if self.built.is_some() {
            return Err(PyRuntimeError::new_err("the batch is built already"));
        }
        self.producer = (producer_id, producer_epoch, base_sequence);
        Ok(())
    }

    /// The batch's bytes (closes it; built once).
    fn _build(&mut self, py: Python<'_>) -> Py<PyBytes> {
        self.closed = true;
        if self.built.is_none() {
            self.write_header();
            self.built = Some(PyBytes::new(py, &self.buffer).unbind());
            self.buffer = Vec::new();
        }
        self.built
            .as_ref()
            .map(|b| b.clone_ref(py))
            .expect("built above")
    }
}
