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

mod machine;
mod msgpack;
mod outcome;
mod partition;
mod produce;
mod records;
mod stage;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use machine::{checked, plan, Definition, Plan};
use msgpack::{Head, Read, Reader, Unsupported, Writer};
use outcome::{
    encode_row, encode_status, in_place, purge_deadline, recent_after, sla_deadline, Fields,
};
use partition::murmur2;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use records::{
    note_text, read_envelope, read_row, recent_entries, recode, write_attrs, Envelope, Row,
};
use stage::{counts_move, View};

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

    /// Apply `records[start:stop]` (a list of aiokafka ConsumerRecords of `batch`'s
    /// partition, in offset order) into `batch` as the Python path would, with no Python call
    /// per record: (index of the first record not staged, the error that stopped there or
    /// None). It stops at `stop`; after the record that fills the batch (`batch.largest`
    /// reaching `flush_bytes`, as `Staging.full`); at a record the Python path must handle;
    /// and at a record it failed on (an error, a panic), of which nothing is staged: that
    /// record is the Python path's. `PartiallyStaged` (a record staged in part) is raised.
    /// `batch.offset` and `batch.timestamp_ms` are left at the last record staged.
    #[allow(clippy::too_many_arguments)]
    fn stage_many(
        &mut self,
        py: Python<'_>,
        batch: &Bound<'_, PyAny>,
        records: &Bound<'_, PyList>,
        start: usize,
        stop: usize,
        now: i64,
        flush_bytes: i64,
    ) -> PyResult<(usize, Option<PyObject>)> {
        let stop = stop.min(records.len());
        let mut view = View::new(batch)?;
        let mut at = start;
        let mut last: Option<(Bound<'_, PyAny>, i64)> = None;
        let mut failure = None;
        let mut partial = None;
        while at < stop {
            let record = records.get_item(at)?;
            let offset: i64 = record.getattr(intern!(py, "offset"))?.extract()?;
            let staged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.stage_at(py, &mut view, &record, offset, now)
            }));
            match staged {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => break,
                Ok(Err(err)) if err.is_instance_of::<PartiallyStaged>(py) => {
                    partial = Some(err);
                    break;
                }
                Ok(Err(err)) => {
                    failure = Some(err.into_value(py).into_any());
                    break;
                }
                Err(panic) => {
                    let text = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    let err = PyRuntimeError::new_err(format!("compiled core panicked: {text}"));
                    failure = Some(err.into_value(py).into_any());
                    break;
                }
            }
            at += 1;
            last = Some((record, offset));
            if view.largest >= flush_bytes {
                break;
            }
        }
        view.sync(self.targets.metrics.bind(py))?;
        if let Some(err) = partial {
            return Err(err);
        }
        if let Some((record, offset)) = last {
            batch.setattr(intern!(py, "offset"), offset)?;
            batch.setattr(
                intern!(py, "timestamp_ms"),
                record.getattr(intern!(py, "timestamp"))?,
            )?;
        }
        Ok((at, failure))
    }
}

impl WorkflowCore {
    /// Stage `record` (at `offset`); false, with nothing staged, when the Python path must
    /// handle it.
    fn stage_at<'py>(
        &mut self,
        py: Python<'py>,
        view: &mut View<'py>,
        record: &Bound<'py, PyAny>,
        offset: i64,
        now: i64,
    ) -> PyResult<bool> {
        let key_object = record.getattr(intern!(py, "key"))?;
        let value_object = record.getattr(intern!(py, "value"))?;
        let (Ok(record_key), Ok(raw)) = (
            key_object.downcast::<PyBytes>(),
            value_object.downcast::<PyBytes>(),
        ) else {
            return Ok(false);
        };
        let (record_key, raw) = (record_key.as_bytes(), raw.as_bytes());
        if raw.len() > self.max_bytes {
            return Ok(false);
        }
        let partition: u32 = record.getattr(intern!(py, "partition"))?.extract()?;
        let Some(stored) = self.read(py, view, &key_object)? else {
            return Ok(false);
        };
        let stored = stored.as_ref().map(|b| b.bind(py).as_bytes());
        let Some(o) = self.outcome(
            py,
            raw,
            record_key,
            partition,
            stored,
            offset,
            i128::from(now),
        )?
        else {
            return Ok(false);
        };
        // Everything that can refuse comes first: the counts row (decoded by Python) and
        // its current values. Staging::kept_row, if it runs, keeps the row as the Python
        // path would (it is idempotent), so a hand-back after it changes nothing.
        let counts = match counts_move(&o) {
            Some(before) => match self.counts_plan(py, view, &o, before)? {
                Some(plan) => plan,
                None => return Ok(false),
            },
            None => Vec::new(),
        };
        // Below, only dict and list stores: if one fails anyway, the record is half staged
        // and the Python path must not take it (it would see its own id: a replay).
        self.write_outcome(py, view, &o, &key_object, record_key, counts)
            .map_err(|err| PartiallyStaged::new_err(format!("record staged in part: {err}")))?;
        Ok(true)
    }
}

pyo3::create_exception!(
    statekeeper_native,
    PartiallyStaged,
    pyo3::exceptions::PyRuntimeError,
    "The core failed after it began staging a record: the batch must not be applied."
);

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
        let Ok(event) = read_envelope(raw) else {
            return Ok(None);
        };
        if !in_place(&event, record_key, partition, self.partitions) {
            return Ok(None);
        }
        let row = match stored.map(read_row) {
            Some(Ok(row)) => Some(row),
            Some(Err(_)) => return Ok(None),
            None => None,
        };
        let workflow = match (&row, event.data.workflow) {
            (Some(row), _) => row.workflow,
            (None, Some(Head::Str(name))) => name,
            (None, _) => return Ok(None),
        };
        let Ok(recent) = recent_after(row.as_ref(), event.id, offset, self.keep) else {
            return Ok(None);
        };
        let Some(definition) = self.definition(py, event.tenant, workflow)? else {
            return Ok(None);
        };
        let Ok(plan) = plan(&event, row.as_ref(), &definition, workflow, now) else {
            return Ok(None);
        };
        let finished = plan.condition == COMPLETED || plan.condition == CANCELLED;
        let Ok(deadline) = sla_deadline(&definition, &plan, finished) else {
            return Ok(None);
        };
        let purge_at = if finished {
            let kept = self.retention.call1(py, (event.tenant,))?;
            let Ok(max_age) = kept.extract::<Option<i64>>(py) else {
                return Ok(None);
            };
            match purge_deadline(row.as_ref(), max_age, now) {
                Ok(at) => at,
                Err(_) => return Ok(None),
            }
        } else {
            None
        };
        let fields = Fields {
            event: &event,
            row: row.as_ref(),
            workflow,
            plan: &plan,
            now,
        };
        let Ok(item_row) = encode_row(&fields, raw, &recent, deadline, purge_at) else {
            return Ok(None);
        };
        let status = encode_status(&fields);
        let (tenant, _) = fields.names();
        Ok(Some(Outcome {
            kind: plan.kind,
            status,
            row: item_row,
            version: plan.version,
            tenant,
            workflow,
            before: row.as_ref().map(|r| (r.state, r.condition)),
            condition: plan.condition,
            state: plan.state,
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
            let compiled = Definition::from_python(&object)
                .ok()
                .flatten()
                .map(Arc::new);
            self.compiled.insert(id, (object.unbind(), compiled));
        }
        // the map holds the object, so its address is not reused while the entry lives
        Ok(self.compiled.get(&id).and_then(|(_, d)| d.clone()))
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
    m.add_class::<produce::ProduceBatch>()?;
    m.add("PartiallyStaged", m.py().get_type::<PartiallyStaged>())?;
    m.add_function(wrap_pyfunction!(partition_of, m)?)?;
    Ok(())
}
