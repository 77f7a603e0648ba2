//! statekeeper's compiled workflow core: the common case of one workflow item event, from the
//! record's bytes and the item's stored row to the rows and the status record to stage.
//!
//! The Python path (`statekeeper.agents.workflow.handle_item_event` and what it calls) is the
//! reference. This core takes only `workflow.start` and `workflow.transition` events that the
//! reference would apply, and gives the very bytes the reference would stage. For anything else
//! — another event type, a rejection, a redelivery or replay, a record off its key or
//! partition, a row of an older schema, input it does not parse — it answers None and touches
//! nothing, and the caller runs the Python path. `tests/unit/test_native.py` holds the two to
//! the same output.

mod msgpack;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use msgpack::{Head, Read, Reader, Unsupported, Writer};
use pyo3::prelude::*;
use pyo3::intern;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

const ENVELOPE_VERSION: i128 = 1;
const STORE_VERSION: i128 = 2;
const ROW_FIELDS: usize = 16; // the schema version and Item's 15 fields
const MAX_DEPTH: usize = 32;
const MAX_ID_CHARS: usize = 128;
const MAX_TYPE_CHARS: usize = 64;
const MAX_KEY_BYTES: usize = 256;
const MAX_ATTRS: usize = 64;
const MAX_ATTR_NAME: usize = 64;
const MAX_ATTR_TEXT: usize = 1024;
const MAX_NOTE_TEXT: usize = 2048;
const ACTIVE: &str = "active";
const COMPLETED: &str = "completed";
const CANCELLED: &str = "cancelled";
const START: &str = "workflow.start";
const TRANSITION: &str = "workflow.transition";

/// A definition as the core reads it (built once per definition object).
struct Definition {
    initial: String,
    terminal: HashSet<String>,
    transitions: HashMap<String, HashSet<String>>, // source -> targets
    sla_seconds: HashMap<String, i128>,
}

impl Definition {
    /// None when the definition holds something the core does not read (an SLA that is
    /// not an int): the Python path then handles that workflow's events.
    fn from_python(definition: &Bound<'_, PyAny>) -> PyResult<Option<Definition>> {
        let mut sla_seconds = HashMap::new();
        for (state, seconds) in definition.getattr("sla_seconds")?.downcast::<PyDict>()?.iter() {
            let Ok(seconds) = seconds.extract::<i64>() else {
                return Ok(None);
            };
            sla_seconds.insert(state.extract::<String>()?, i128::from(seconds));
        }
        let mut transitions: HashMap<String, HashSet<String>> = HashMap::new();
        for (source, target) in definition.getattr("transitions")?.extract::<HashSet<(String, String)>>()? {
            transitions.entry(source).or_default().insert(target);
        }
        Ok(Some(Definition {
            initial: definition.getattr("initial")?.extract()?,
            terminal: definition.getattr("terminal")?.extract()?,
            transitions,
            sla_seconds,
        }))
    }

    fn allows(&self, source: &str, target: &str) -> bool {
        self.transitions.get(source).is_some_and(|targets| targets.contains(target))
    }
}

/// The envelope fields the core reads, borrowed from the record's bytes.
struct Envelope<'a> {
    id: &'a str,
    kind: &'a str,
    tenant: &'a str,
    key: &'a str,
    ts: i128,
    data: Data<'a>,
}

/// The `data` fields the two event types read; each at most once in the map.
#[derive(Default)]
struct Data<'a> {
    workflow: Option<Head<'a>>,
    to: Option<Head<'a>>,
    expected_version: Option<Head<'a>>,
    reason: Option<Head<'a>>,
    actor: Option<Head<'a>>,
    attrs: Option<(usize, usize)>, // where the value starts and ends in the record
    attrs_head: Option<Head<'a>>,
}

/// An item row of the current schema, its maps and recent ids kept as bytes.
struct Row<'a> {
    tenant: &'a str,
    key: &'a str,
    workflow: &'a str,
    state: &'a str,
    condition: &'a str,
    version: i128,
    attempt: i128,
    created_at: i128,
    attrs: &'a [u8],
    error: &'a [u8],
    ids: &'a [u8],
    offsets: &'a [u8],
    deadline: Option<i128>,
    purge_at: Option<i128>,
}

fn int(head: Head<'_>) -> Read<i128> {
    match head {
        Head::Int(v) => Ok(v),
        _ => Err(Unsupported),
    }
}

fn text(head: Head<'_>) -> Read<&str> {
    match head {
        Head::Str(s) => Ok(s),
        _ => Err(Unsupported),
    }
}

fn opt_int(head: Head<'_>) -> Read<Option<i128>> {
    match head {
        Head::Nil => Ok(None),
        Head::Int(v) => Ok(Some(v)),
        _ => Err(Unsupported),
    }
}

/// A non-empty str of at most `max` characters (Python's len).
fn short_text(head: Head<'_>, max: usize) -> Read<&str> {
    let s = text(head)?;
    let chars = s.chars().count();
    if chars == 0 || chars > max {
        return Err(Unsupported);
    }
    Ok(s)
}

/// `[a-z0-9][a-z0-9_-]{0,63}`, matched whole.
fn valid_tenant(tenant: &str) -> bool {
    let bytes = tenant.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

/// Read the map of `data`: the fields the core uses, every other value skipped (checked).
fn read_data<'a>(reader: &mut Reader<'a>, entries: usize) -> Read<Data<'a>> {
    let mut data = Data::default();
    let depth = MAX_DEPTH - 2; // data's own level is one of MAX_DEPTH - 1
    for _ in 0..entries {
        let name = text(reader.head()?)?;
        let start = reader.pos;
        let head = reader.head()?;
        reader.skip_rest(head, depth)?;
        let slot = match name {
            "workflow" => &mut data.workflow,
            "to" => &mut data.to,
            "expected_version" => &mut data.expected_version,
            "reason" => &mut data.reason,
            "actor" => &mut data.actor,
            "attrs" => {
                if data.attrs.is_some() {
                    return Err(Unsupported); // a repeated field: Python keeps the last
                }
                data.attrs = Some((start, reader.pos));
                data.attrs_head = Some(head);
                continue;
            }
            _ => continue,
        };
        if slot.is_some() {
            return Err(Unsupported);
        }
        *slot = Some(head);
    }
    Ok(data)
}

/// The envelope when it is the common case Python's `_quick` takes; else Unsupported.
fn read_envelope(raw: &[u8]) -> Read<Envelope<'_>> {
    let mut reader = Reader::new(raw);
    let Head::Map(entries) = reader.head()? else {
        return Err(Unsupported);
    };
    if entries > 7 {
        return Err(Unsupported);
    }
    let (mut v, mut id, mut kind, mut tenant, mut key, mut ts) = (None, None, None, None, None, None);
    let mut data: Option<Data<'_>> = None;
    for _ in 0..entries {
        let name = text(reader.head()?)?;
        if name == "data" {
            if data.is_some() {
                return Err(Unsupported);
            }
            let Head::Map(n) = reader.head()? else {
                return Err(Unsupported);
            };
            data = Some(read_data(&mut reader, n)?);
            continue;
        }
        let head = reader.head()?;
        let slot = match name {
            "v" => &mut v,
            "id" => &mut id,
            "type" => &mut kind,
            "tenant" => &mut tenant,
            "key" => &mut key,
            "ts" => &mut ts,
            _ => return Err(Unsupported), // another field: the Python path judges it
        };
        if slot.is_some() {
            return Err(Unsupported);
        }
        if matches!(head, Head::Array(_) | Head::Map(_)) {
            return Err(Unsupported);
        }
        *slot = Some(head);
    }
    if !reader.at_end() {
        return Err(Unsupported);
    }
    let (Some(v), Some(id), Some(kind), Some(tenant), Some(key), Some(ts)) =
        (v, id, kind, tenant, key, ts)
    else {
        return Err(Unsupported);
    };
    if int(v)? != ENVELOPE_VERSION {
        return Err(Unsupported);
    }
    let id = short_text(id, MAX_ID_CHARS)?;
    let kind = short_text(kind, MAX_TYPE_CHARS)?;
    let tenant = text(tenant)?;
    let key = text(key)?;
    let ts = int(ts)?;
    if !valid_tenant(tenant)
        || key.is_empty()
        || key.len() > MAX_KEY_BYTES
        || !key.bytes().all(|b| b.is_ascii() && b >= 0x20)
        || ts < 0
    {
        return Err(Unsupported);
    }
    Ok(Envelope { id, kind, tenant, key, ts, data: data.unwrap_or_default() })
}

/// A stored item row of the current schema; Unsupported for anything else.
fn read_row(raw: &[u8]) -> Read<Row<'_>> {
    let mut r = Reader::new(raw);
    if r.head()? != Head::Array(ROW_FIELDS) || int(r.head()?)? != STORE_VERSION {
        return Err(Unsupported);
    }
    let tenant = text(r.head()?)?;
    let key = text(r.head()?)?;
    let workflow = text(r.head()?)?;
    let state = text(r.head()?)?;
    let condition = text(r.head()?)?;
    let version = int(r.head()?)?;
    let attempt = int(r.head()?)?;
    let created_at = int(r.head()?)?;
    let _entered_at = int(r.head()?)?; // a transition enters anew
    let _updated_at = int(r.head()?)?;
    let start = r.pos;
    let Head::Map(_) = r.head()? else { return Err(Unsupported) };
    r.pos = start;
    r.skip(MAX_DEPTH)?;
    let attrs = &raw[start..r.pos];
    let start = r.pos;
    match r.head()? {
        Head::Nil => {}
        head @ Head::Map(_) => r.skip_rest(head, MAX_DEPTH)?,
        _ => return Err(Unsupported),
    }
    let error = &raw[start..r.pos];
    if r.head()? != Head::Array(2) {
        return Err(Unsupported);
    }
    let (Head::Bin(ids), Head::Bin(offsets)) = (r.head()?, r.head()?) else {
        return Err(Unsupported);
    };
    let deadline = opt_int(r.head()?)?;
    let purge_at = opt_int(r.head()?)?;
    if !r.at_end() || offsets.len() % 8 != 0 {
        return Err(Unsupported);
    }
    Ok(Row {
        tenant, key, workflow, state, condition, version, attempt, created_at,
        attrs, error, ids, offsets, deadline, purge_at,
    })
}

/// The recent (id, offset) entries as (id bytes, offset), oldest first.
fn recent_entries<'a>(ids: &'a [u8], offsets: &'a [u8]) -> Read<Vec<(&'a [u8], i64)>> {
    let mut entries = Vec::with_capacity(offsets.len() / 8);
    let mut at = 0usize;
    for chunk in offsets.chunks_exact(8) {
        if at + 2 > ids.len() {
            return Err(Unsupported);
        }
        let size = usize::from(u16::from_be_bytes([ids[at], ids[at + 1]]));
        at += 2;
        if at + size > ids.len() {
            return Err(Unsupported);
        }
        entries.push((&ids[at..at + size], i64::from_be_bytes(chunk.try_into().unwrap())));
        at += size;
    }
    if at != ids.len() {
        return Err(Unsupported);
    }
    Ok(entries)
}

/// Validate `attrs` as Python's `_attrs` does, and write them as Python would re-pack them.
fn write_attrs(raw: &[u8], out: &mut Writer) -> Read<()> {
    let mut r = Reader::new(raw);
    let Head::Map(n) = r.head()? else { return Err(Unsupported) };
    if n > MAX_ATTRS {
        return Err(Unsupported);
    }
    let mut names: Vec<&str> = Vec::with_capacity(n);
    out.map(n);
    for _ in 0..n {
        let name = text(r.head()?)?;
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_ATTR_NAME || names.contains(&name) {
            return Err(Unsupported);
        }
        names.push(name);
        out.str(name);
        match r.head()? {
            Head::Nil => out.nil(),
            Head::Bool(b) => out.bool(b),
            Head::Int(v) => out.int(v),
            Head::Float(f) if !f.is_nan() => out.float(f),
            Head::Str(s) if s.chars().count() <= MAX_ATTR_TEXT => out.str(s),
            _ => return Err(Unsupported),
        }
    }
    Ok(())
}

/// Kafka's default partitioner: murmur2 of the key, positive, modulo the partitions.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let length = data.len() as u32;
    let mut h: u32 = 0x9747_b28c ^ length;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().unwrap());
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

fn deadline_key(deadline: i128, record_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + record_key.len());
    key.extend_from_slice(&(deadline.max(0) as u64).to_be_bytes());
    key.extend_from_slice(record_key);
    key
}

/// Fits the int range the Python packer takes for the values we compute.
fn checked(value: i128) -> Read<i128> {
    if (i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(&value) {
        Ok(value)
    } else {
        Err(Unsupported)
    }
}

/// What one applied event stages, computed before anything is staged.
struct Outcome<'a> {
    kind: &'static str,
    status: Vec<u8>,
    row: Vec<u8>,
    version: i128,
    tenant: &'a str,
    workflow: &'a str,
    before: Option<(&'a str, &'a str)>,
    state: String,
    condition: &'static str,
    old_deadline: Option<i128>,
    deadline: Option<i128>,
    old_purge: Option<i128>,
    purge_at: Option<i128>,
}

/// The Python objects a batch is staged into (see `statekeeper.stores.staged.Staging`).
struct Targets {
    items: PyObject,
    history: PyObject,
    counts: PyObject,
    deadlines: PyObject,
    retention: PyObject,
    status_topic: PyObject,
    no_headers: PyObject,
    decode_counts: PyObject,
    metrics: PyObject,
    record_overhead: i64,
}

/// The workflow item event path (see the module's documentation).
#[pyclass(module = "statekeeper_native")]
struct WorkflowCore {
    definitions: Py<PyDict>,
    retention: PyObject,
    partitions: u32,
    max_bytes: usize,
    keep: usize,
    targets: Targets,
    compiled: HashMap<usize, (PyObject, Option<Arc<Definition>>)>,
}

#[pymethods]
impl WorkflowCore {
    /// `definitions`: the registry's own dict, (tenant, name) -> (definition, source), read
    /// live. `retention(tenant)`: ms a finished item is kept, or None. `tables`: the items,
    /// history, counts, SLA index and purge index tables; `decode_counts`:
    /// ``Counts.from_bytes``; `metrics`: the worker's counters (``applied`` by type, ``native``).
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        definitions, retention, partitions, max_bytes, keep, tables, status_topic, no_headers,
        decode_counts, metrics, record_overhead
    ))]
    fn new(
        definitions: Py<PyDict>,
        retention: PyObject,
        partitions: u32,
        max_bytes: usize,
        keep: usize,
        tables: (PyObject, PyObject, PyObject, PyObject, PyObject),
        status_topic: PyObject,
        no_headers: PyObject,
        decode_counts: PyObject,
        metrics: PyObject,
        record_overhead: i64,
    ) -> Self {
        let (items, history, counts, deadlines, purges) = tables;
        WorkflowCore {
            definitions,
            retention,
            partitions,
            max_bytes,
            keep,
            targets: Targets {
                items,
                history,
                counts,
                deadlines,
                retention: purges,
                status_topic,
                no_headers,
                decode_counts,
                metrics,
                record_overhead,
            },
            compiled: HashMap::new(),
        }
    }

    /// Apply `record` (an aiokafka ConsumerRecord, at `batch.offset`) into `batch` as the
    /// Python path would; False, with nothing staged, when the Python path must handle it.
    fn stage(
        &mut self,
        py: Python<'_>,
        batch: &Bound<'_, PyAny>,
        record: &Bound<'_, PyAny>,
        now: i64,
    ) -> PyResult<bool> {
        let key_object = record.getattr(intern!(py, "key"))?;
        let value_object = record.getattr(intern!(py, "value"))?;
        let (Ok(record_key), Ok(raw)) =
            (key_object.downcast::<PyBytes>(), value_object.downcast::<PyBytes>())
        else {
            return Ok(false);
        };
        let (record_key, raw) = (record_key.as_bytes(), raw.as_bytes());
        if raw.len() > self.max_bytes {
            return Ok(false);
        }
        let partition: u32 = record.getattr(intern!(py, "partition"))?.extract()?;
        let offset: i64 = batch.getattr(intern!(py, "offset"))?.extract()?;
        let Some(stored) = self.read(py, batch, &key_object)? else {
            return Ok(false);
        };
        let stored = stored.as_ref().map(|b| b.bind(py).as_bytes());
        let Some(o) =
            self.outcome(py, raw, record_key, partition, stored, offset, i128::from(now))?
        else {
            return Ok(false);
        };
        // The counts row first: decoding it (Python) is the one step here that could fail.
        let counts_row = match counts_move(&o) {
            Some(before) => {
                let mut key = Vec::with_capacity(o.tenant.len() + o.workflow.len() + 1);
                key.extend_from_slice(o.tenant.as_bytes());
                key.push(0);
                key.extend_from_slice(o.workflow.as_bytes());
                let key = PyBytes::new(py, &key);
                let counts = self.targets.counts.bind(py);
                // kept for this batch already (most records), else Staging.kept_row decodes it
                let kept = batch.getattr(intern!(py, "kept"))?.downcast_into::<PyDict>()?;
                let held = match kept.get_item(counts)? {
                    Some(rows) => rows.downcast_into::<PyDict>()?.get_item(&key)?,
                    None => None,
                };
                let row = match held {
                    Some(row) => row,
                    None => batch.call_method1(
                        intern!(py, "kept_row"),
                        (counts, &key, &self.targets.decode_counts),
                    )?,
                };
                let states = row.getattr(intern!(py, "states"))?.downcast_into::<PyDict>()?;
                let conditions =
                    row.getattr(intern!(py, "conditions"))?.downcast_into::<PyDict>()?;
                Some((before, states, conditions))
            }
            None => None,
        };
        // Nothing is staged above this line; below it only dict and list operations.
        let t = &self.targets;
        let writes = batch.getattr(intern!(py, "writes"))?.downcast_into::<PyDict>()?;
        let sizes = batch.getattr(intern!(py, "sizes"))?.downcast_into::<PyDict>()?;
        let mut largest: i64 = batch.getattr(intern!(py, "largest"))?.extract()?;
        let mut write = |table: &PyObject, key: &[u8], value: Option<&[u8]>| -> PyResult<()> {
            let table = table.bind(py);
            let pending = match writes.get_item(table)? {
                Some(rows) => rows.downcast_into::<PyDict>()?,
                None => {
                    let rows = PyDict::new(py);
                    writes.set_item(table, &rows)?;
                    rows
                }
            };
            pending.set_item(PyBytes::new(py, key), value.map(|v| PyBytes::new(py, v)))?;
            let size = (key.len() + value.map_or(0, <[u8]>::len)) as i64;
            count(&sizes, table, size + t.record_overhead, &mut largest)
        };
        batch
            .getattr(intern!(py, "notes"))?
            .call_method1(intern!(py, "add"), ((o.tenant, o.workflow),))?;
        write(&t.items, record_key, Some(&o.row))?;
        write(&t.history, &history_key(record_key, o.version), Some(&o.status))?;
        if let Some(((state_before, condition_before), states, conditions)) = counts_row {
            match (state_before, condition_before) {
                (Some(state_before), Some(condition_before)) => {
                    if state_before != o.state {
                        bump(&states, state_before, -1)?;
                        bump(&states, &o.state, 1)?;
                    }
                    if condition_before != o.condition {
                        bump(&conditions, condition_before, -1)?;
                        bump(&conditions, o.condition, 1)?;
                    }
                }
                _ => {
                    bump(&states, &o.state, 1)?;
                    bump(&conditions, o.condition, 1)?;
                }
            }
        }
        if o.old_deadline != o.deadline {
            if let Some(old) = o.old_deadline {
                write(&t.deadlines, &deadline_key(old, record_key), None)?;
            }
            if let Some(new) = o.deadline {
                let mut value = Writer::with_capacity(o.state.len() + 4);
                value.array(2);
                value.str(&o.state);
                value.bool(false);
                write(&t.deadlines, &deadline_key(new, record_key), Some(&value.out))?;
            }
        }
        if o.old_purge != o.purge_at {
            if let Some(old) = o.old_purge {
                write(&t.retention, &deadline_key(old, record_key), None)?;
            }
            if let Some(new) = o.purge_at {
                let mut value = Writer::with_capacity(12);
                value.array(1);
                value.int(o.version);
                write(&t.retention, &deadline_key(new, record_key), Some(&value.out))?;
            }
        }
        let status = PyBytes::new(py, &o.status);
        batch.getattr(intern!(py, "outputs"))?.downcast_into::<PyList>()?.append((
            &t.status_topic,
            &key_object,
            &status,
            &t.no_headers,
        ))?;
        let size = (o.status.len() + record_key.len()) as i64 + t.record_overhead;
        count(&sizes, t.status_topic.bind(py), size, &mut largest)?;
        batch.setattr(intern!(py, "largest"), largest)?;
        let metrics = t.metrics.bind(py);
        let applied = metrics.getattr(intern!(py, "applied"))?.downcast_into::<PyDict>()?;
        let kind = PyString::new(py, o.kind);
        let so_far: i64 = match applied.get_item(&kind)? {
            Some(n) => n.extract()?,
            None => 0,
        };
        applied.set_item(&kind, so_far + 1)?;
        let native: i64 = metrics.getattr(intern!(py, "native"))?.extract()?;
        metrics.setattr(intern!(py, "native"), native + 1)?;
        Ok(true)
    }
}

/// (state, condition) before, when the counts move: (None, None) for a new item.
fn counts_move<'a>(o: &Outcome<'a>) -> Option<(Option<&'a str>, Option<&'a str>)> {
    match o.before {
        Some((state, condition)) if state == o.state && condition == o.condition => None,
        Some((state, condition)) => Some((Some(state), Some(condition))),
        None => Some((None, None)),
    }
}

fn history_key(record_key: &[u8], version: i128) -> Vec<u8> {
    let mut key = Vec::with_capacity(record_key.len() + 9);
    key.extend_from_slice(record_key);
    key.push(0);
    key.extend_from_slice(&(version as u64).to_be_bytes());
    key
}

/// `Staging._count`: bytes staged per destination, and the largest of them.
fn count(
    sizes: &Bound<'_, PyDict>,
    destination: &Bound<'_, PyAny>,
    size: i64,
    largest: &mut i64,
) -> PyResult<()> {
    let total = match sizes.get_item(destination)? {
        Some(n) => n.extract::<i64>()?,
        None => 0,
    } + size;
    sizes.set_item(destination, total)?;
    if total > *largest {
        *largest = total;
    }
    Ok(())
}

/// `stores.workflow._bump`: a counter moved by `delta`, dropped at zero.
fn bump(counter: &Bound<'_, PyDict>, name: &str, delta: i64) -> PyResult<()> {
    let value = match counter.get_item(name)? {
        Some(n) => n.extract::<i64>()?,
        None => 0,
    } + delta;
    if value != 0 {
        counter.set_item(name, value)
    } else {
        if counter.contains(name)? {
            counter.del_item(name)?;
        }
        Ok(())
    }
}

impl WorkflowCore {
    /// `Staging.read` of the items table: Some(row or None), or None to hand the record back.
    fn read(
        &self,
        py: Python<'_>,
        batch: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Option<Py<PyBytes>>>> {
        let items = self.targets.items.bind(py);
        let row = |value: Bound<'_, PyAny>| -> Option<Option<Py<PyBytes>>> {
            if value.is_none() {
                return Some(None);
            }
            value.downcast_into::<PyBytes>().ok().map(|b| Some(b.unbind()))
        };
        let kept = batch.getattr(intern!(py, "kept"))?.downcast_into::<PyDict>()?;
        if kept.get_item(items)?.is_some() {
            return Ok(None); // items are never kept as objects: not a batch the core knows
        }
        let mut batches = vec![batch.clone()];
        let behind = batch.getattr(intern!(py, "behind"))?;
        if !behind.is_none() {
            batches.push(behind);
        }
        for staged in batches {
            let writes = staged.getattr(intern!(py, "writes"))?.downcast_into::<PyDict>()?;
            if let Some(pending) = writes.get_item(items)? {
                if let Some(value) = pending.downcast_into::<PyDict>()?.get_item(key)? {
                    return Ok(row(value));
                }
            }
        }
        let databases = batch.getattr(intern!(py, "databases"))?.downcast_into::<PyDict>()?;
        let db = match databases.get_item(items)? {
            Some(db) => db,
            None => {
                let db = batch.call_method1(intern!(py, "database"), (items,))?;
                databases.set_item(items, &db)?;
                db
            }
        };
        Ok(row(db.call_method1(intern!(py, "get"), (key,))?))
    }
}
impl WorkflowCore {
    #[allow(clippy::too_many_arguments)]
    fn outcome<'a>(
        &mut self,
        py: Python<'_>,
        raw: &'a [u8],
        record_key: &[u8],
        partition: u32,
        stored: Option<&'a [u8]>,
        offset: i64,
        now: i128,
    ) -> PyResult<Option<Outcome<'a>>> {
        let Ok(event) = read_envelope(raw) else { return Ok(None) };
        // in place: under its envelope's key, on that key's partition
        let wanted_len = event.tenant.len() + 1 + event.key.len();
        if record_key.len() != wanted_len
            || &record_key[..event.tenant.len()] != event.tenant.as_bytes()
            || record_key[event.tenant.len()] != b'/'
            || &record_key[event.tenant.len() + 1..] != event.key.as_bytes()
            || (murmur2(record_key) & 0x7fff_ffff) % self.partitions != partition
        {
            return Ok(None);
        }
        let row = match stored {
            Some(bytes) => match read_row(bytes) {
                Ok(row) => Some(row),
                Err(_) => return Ok(None),
            },
            None => None,
        };
        let workflow = match &row {
            Some(row) => row.workflow,
            None => match event.data.workflow {
                Some(Head::Str(name)) => name,
                _ => return Ok(None),
            },
        };
        // recent ids: a redelivery, a replay or a stale replay is the Python path's
        let mut entries = match &row {
            Some(row) => match recent_entries(row.ids, row.offsets) {
                Ok(entries) => entries,
                Err(_) => return Ok(None),
            },
            None => Vec::new(),
        };
        let id = event.id.as_bytes();
        if entries.iter().any(|(seen, _)| *seen == id) {
            return Ok(None);
        }
        if let Some(highest) = entries.iter().map(|(_, o)| *o).max() {
            if offset >= 0 && offset < highest {
                return Ok(None);
            }
        }
        if id.len() > usize::from(u16::MAX) {
            return Ok(None);
        }
        entries.push((id, offset));
        let drop = entries.len().saturating_sub(self.keep);
        let entries = &entries[drop..];
        let Some(definition) = self.definition(py, event.tenant, workflow)? else {
            return Ok(None);
        };
        let Ok(plan) = plan(&event, row.as_ref(), &definition, workflow, now) else {
            return Ok(None);
        };
        let Plan { kind, state, condition, version, attempt, created_at, entered_at } = plan;
        let finished = condition == COMPLETED || condition == CANCELLED;
        let deadline = if finished {
            None
        } else {
            match definition.sla_seconds.get(&state) {
                Some(&seconds) if seconds != 0 => match checked(entered_at + seconds * 1000) {
                    Ok(at) => Some(at),
                    Err(_) => return Ok(None),
                },
                _ => None,
            }
        };
        let purge_at = if finished {
            let kept = self.retention.call1(py, (event.tenant,))?;
            match kept.extract::<Option<i64>>(py) {
                Ok(None) => None,
                Ok(Some(max_age)) => match row.as_ref().and_then(|r| r.purge_at) {
                    Some(at) => Some(at),
                    None => match checked(now + i128::from(max_age)) {
                        Ok(at) => Some(at),
                        Err(_) => return Ok(None),
                    },
                },
                Err(_) => return Ok(None),
            }
        } else {
            None
        };

        let (tenant, key) = match &row {
            Some(row) => (row.tenant, row.key),
            None => (event.tenant, event.key),
        };
        let mut w = Writer::with_capacity(raw.len() + 160 + 10 * entries.len());
        w.array(ROW_FIELDS);
        w.int(STORE_VERSION);
        w.str(tenant);
        w.str(key);
        w.str(workflow);
        w.str(&state);
        w.str(condition);
        w.int(version);
        w.int(attempt);
        w.int(created_at);
        w.int(entered_at);
        w.int(now);
        match &row {
            Some(row) => {
                w.raw(row.attrs);
                w.raw(row.error);
            }
            None => {
                match event.data.attrs {
                    Some((start, end)) => {
                        if write_attrs(&raw[start..end], &mut w).is_err() {
                            return Ok(None);
                        }
                    }
                    None => w.map(0),
                }
                w.nil();
            }
        }
        w.array(2);
        let ids_len: usize = entries.iter().map(|(id, _)| 2 + id.len()).sum();
        let mut ids = Vec::with_capacity(ids_len);
        let mut offsets = Vec::with_capacity(8 * entries.len());
        for (id, at) in entries {
            ids.extend_from_slice(&(id.len() as u16).to_be_bytes());
            ids.extend_from_slice(id);
            offsets.extend_from_slice(&at.to_be_bytes());
        }
        w.bin(&ids);
        w.bin(&offsets);
        w.opt_int(deadline);
        w.opt_int(purge_at);

        let reason = note_text(event.data.reason);
        let actor = note_text(event.data.actor);
        let mut s = Writer::with_capacity(200);
        s.map(13 + usize::from(reason.is_some()) + usize::from(actor.is_some()));
        s.str("v");
        s.int(1);
        s.str("tenant");
        s.str(tenant);
        s.str("key");
        s.str(key);
        s.str("workflow");
        s.str(workflow);
        s.str("type");
        s.str(kind);
        s.str("from");
        match &row {
            Some(row) => s.str(row.state),
            None => s.nil(),
        }
        s.str("to");
        s.str(&state);
        s.str("condition");
        s.str(condition);
        s.str("version");
        s.int(version);
        s.str("attempt");
        s.int(attempt);
        s.str("event_id");
        s.str(event.id);
        s.str("event_ts");
        s.int(event.ts);
        s.str("ts");
        s.int(now);
        if let Some(reason) = reason {
            s.str("reason");
            s.str(reason);
        }
        if let Some(actor) = actor {
            s.str("actor");
            s.str(actor);
        }
        Ok(Some(Outcome {
            kind,
            status: s.out,
            row: w.out,
            version,
            tenant,
            workflow,
            before: row.as_ref().map(|r| (r.state, r.condition)),
            state,
            condition,
            old_deadline: row.as_ref().and_then(|r| r.deadline),
            deadline,
            old_purge: row.as_ref().and_then(|r| r.purge_at),
            purge_at,
        }))
    }

    /// The registry's definition of (tenant, workflow), compiled once per definition object.
    fn definition(
        &mut self,
        py: Python<'_>,
        tenant: &str,
        workflow: &str,
    ) -> PyResult<Option<Arc<Definition>>> {
        let definitions = self.definitions.bind(py);
        let Some(held) = definitions.get_item((tenant, workflow))? else {
            return Ok(None);
        };
        let object = held.downcast::<PyTuple>()?.get_item(0)?;
        let id = object.as_ptr() as usize;
        if !self.compiled.contains_key(&id) {
            if self.compiled.len() >= 4096 {
                self.compiled.clear(); // redefinitions only: a new object each time
            }
            // a definition the core cannot read is the Python path's, every time
            let compiled = Definition::from_python(&object).ok().flatten().map(Arc::new);
            self.compiled.insert(id, (object.unbind(), compiled));
        }
        // the map holds the object, so its address is not reused while the entry lives
        Ok(self.compiled.get(&id).and_then(|(_, d)| d.clone()))
    }
}

/// The item's new fields.
struct Plan {
    kind: &'static str,
    state: String,
    condition: &'static str,
    version: i128,
    attempt: i128,
    created_at: i128,
    entered_at: i128,
}

/// The state machine's common case: a start or a legal transition, or Unsupported.
fn plan(
    event: &Envelope<'_>,
    row: Option<&Row<'_>>,
    definition: &Definition,
    workflow: &str,
    now: i128,
) -> Read<Plan> {
    let condition_of = |state: &str| {
        if definition.terminal.contains(state) {
            COMPLETED
        } else {
            ACTIVE
        }
    };
    match (event.kind, row) {
        (START, None) => {
            if workflow.is_empty() {
                return Err(Unsupported);
            }
            if let Some(head) = event.data.attrs_head {
                if !matches!(head, Head::Map(_)) {
                    return Err(Unsupported);
                }
            }
            let state = definition.initial.clone();
            Ok(Plan {
                kind: START,
                condition: condition_of(&state),
                state,
                version: 1,
                attempt: 1,
                created_at: now,
                entered_at: now,
            })
        }
        (TRANSITION, Some(row)) => {
            match event.data.expected_version {
                None | Some(Head::Nil) => {}
                Some(Head::Int(expected)) if expected == row.version => {}
                _ => return Err(Unsupported),
            }
            let Some(Head::Str(target)) = event.data.to else { return Err(Unsupported) };
            if target.is_empty() || row.condition != ACTIVE {
                return Err(Unsupported);
            }
            if !definition.allows(row.state, target) {
                return Err(Unsupported);
            }
            Ok(Plan {
                kind: TRANSITION,
                state: target.to_owned(),
                condition: condition_of(target),
                version: checked(row.version + 1)?,
                attempt: row.attempt,
                created_at: row.created_at,
                entered_at: now,
            })
        }
        _ => Err(Unsupported),
    }
}

/// A reason or actor as the status record holds it: a non-empty str, at most 2,048 chars.
fn note_text(head: Option<Head<'_>>) -> Option<&str> {
    match head {
        Some(Head::Str(s)) if !s.is_empty() => match s.char_indices().nth(MAX_NOTE_TEXT) {
            Some((cut, _)) => Some(&s[..cut]),
            None => Some(s),
        },
        _ => None,
    }
}

/// Kafka's default partition of `key` among `partitions` (for tests against aiokafka's).
#[pyfunction]
fn partition_of(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[pymodule]
fn statekeeper_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WorkflowCore>()?;
    m.add_function(wrap_pyfunction!(partition_of, m)?)?;
    Ok(())
}
