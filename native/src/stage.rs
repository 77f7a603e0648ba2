//! Staging into a Python `statekeeper.stores.staged.Staging` batch as its own methods do:
//! the same dicts, the same byte accounting (`Staging._count`), the same counters.

use super::*;

pub(crate) fn deadline_key(deadline: i128, record_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + record_key.len());
    key.extend_from_slice(&(deadline.max(0) as u64).to_be_bytes());
    key.extend_from_slice(record_key);
    key
}

/// (state, condition) before, when the counts move: (None, None) for a new item.
pub(crate) fn counts_move<'a>(o: &Outcome<'a>) -> Option<(Option<&'a str>, Option<&'a str>)> {
    match o.before {
        Some((state, condition)) if state == o.state && condition == o.condition => None,
        Some((state, condition)) => Some((Some(state), Some(condition))),
        None => Some((None, None)),
    }
}

pub(crate) fn history_key(record_key: &[u8], version: i128) -> Vec<u8> {
    let mut key = Vec::with_capacity(record_key.len() + 9);
    key.extend_from_slice(record_key);
    key.push(0);
    key.extend_from_slice(&(version as u64).to_be_bytes());
    key
}

/// `Staging._count`: bytes staged per destination, and the largest of them.
pub(crate) fn count(
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

/// New values for a counts row's dicts: (dict, name, value; 0 drops the name), as
/// `stores.workflow._bump` leaves them.
pub(crate) type CountsPlan<'py> = Vec<(Bound<'py, PyDict>, String, i64)>;

/// The current count of `name`, when it is a plain int (else the Python path's).
fn current(counter: &Bound<'_, PyDict>, name: &str) -> PyResult<Option<i64>> {
    Ok(match counter.get_item(name)? {
        Some(n) => n.extract::<i64>().ok(),
        None => Some(0),
    })
}

impl WorkflowCore {
    /// The counts moves of `o` against the batch's counts row; None to hand the record back.
    pub(crate) fn counts_plan<'py>(
        &self,
        py: Python<'py>,
        batch: &Bound<'py, PyAny>,
        o: &Outcome<'_>,
        before: (Option<&str>, Option<&str>),
    ) -> PyResult<Option<CountsPlan<'py>>> {
        let mut key = Vec::with_capacity(o.tenant.len() + o.workflow.len() + 1);
        key.extend_from_slice(o.tenant.as_bytes());
        key.push(0);
        key.extend_from_slice(o.workflow.as_bytes());
        let key = PyBytes::new(py, &key);
        let counts = self.targets.counts.bind(py);
        // kept for this batch already (most records), else Staging.kept_row decodes it
        let kept = dict_attr(batch, intern!(py, "kept"))?;
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
        let states = dict_attr(&row, intern!(py, "states"))?;
        let conditions = dict_attr(&row, intern!(py, "conditions"))?;
        let mut moves: Vec<(&Bound<'py, PyDict>, &str, i64)> = Vec::with_capacity(4);
        match before {
            (Some(state_before), Some(condition_before)) => {
                if state_before != o.state {
                    moves.push((&states, state_before, -1));
                    moves.push((&states, &o.state, 1));
                }
                if condition_before != o.condition {
                    moves.push((&conditions, condition_before, -1));
                    moves.push((&conditions, o.condition, 1));
                }
            }
            _ => {
                moves.push((&states, &o.state, 1));
                moves.push((&conditions, o.condition, 1));
            }
        }
        let mut plan = Vec::with_capacity(moves.len());
        for (counter, name, delta) in moves {
            let Some(now) = current(counter, name)? else {
                return Ok(None);
            };
            let Some(value) = now.checked_add(delta) else {
                return Ok(None);
            };
            plan.push((counter.clone(), name.to_owned(), value));
        }
        Ok(Some(plan))
    }

    /// Stage `o` into `batch`: rows, counts, index entries, the status record, notes and
    /// metrics, with `Staging._count`'s byte accounting.
    pub(crate) fn write_outcome(
        &self,
        py: Python<'_>,
        batch: &Bound<'_, PyAny>,
        o: &Outcome<'_>,
        key_object: &Bound<'_, PyAny>,
        record_key: &[u8],
        counts: CountsPlan<'_>,
    ) -> PyResult<()> {
        let t = &self.targets;
        let writes = dict_attr(batch, intern!(py, "writes"))?;
        let sizes = dict_attr(batch, intern!(py, "sizes"))?;
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
        write(
            &t.history,
            &history_key(record_key, o.version),
            Some(&o.status),
        )?;
        for (counter, name, value) in counts {
            if value != 0 {
                counter.set_item(name, value)?;
            } else if counter.contains(&name)? {
                counter.del_item(name)?;
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
                write(
                    &t.deadlines,
                    &deadline_key(new, record_key),
                    Some(&value.out),
                )?;
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
                write(
                    &t.retention,
                    &deadline_key(new, record_key),
                    Some(&value.out),
                )?;
            }
        }
        let status = PyBytes::new(py, &o.status);
        batch
            .getattr(intern!(py, "outputs"))?
            .downcast_into::<PyList>()?
            .append((&t.status_topic, key_object, &status, &t.no_headers))?;
        let size = (o.status.len() + record_key.len()) as i64 + t.record_overhead;
        count(&sizes, t.status_topic.bind(py), size, &mut largest)?;
        batch.setattr(intern!(py, "largest"), largest)?;
        count_applied(t.metrics.bind(py), o.kind)
    }

    /// `Staging.read` of the items table: Some(row or None), or None to hand the record back.
    pub(crate) fn read(
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
            value
                .downcast_into::<PyBytes>()
                .ok()
                .map(|b| Some(b.unbind()))
        };
        let kept = dict_attr(batch, intern!(py, "kept"))?;
        if kept.get_item(items)?.is_some() {
            return Ok(None); // items are never kept as objects: not a batch the core knows
        }
        let mut batches = vec![batch.clone()];
        let behind = batch.getattr(intern!(py, "behind"))?;
        if !behind.is_none() {
            batches.push(behind);
        }
        for staged in batches {
            let writes = dict_attr(&staged, intern!(py, "writes"))?;
            if let Some(pending) = writes.get_item(items)? {
                if let Some(value) = pending.downcast_into::<PyDict>()?.get_item(key)? {
                    return Ok(row(value));
                }
            }
        }
        let databases = dict_attr(batch, intern!(py, "databases"))?;
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

/// The pipeline's `metrics.applied[type] += 1`, and `metrics.native += 1`.
pub(crate) fn count_applied(metrics: &Bound<'_, PyAny>, kind: &str) -> PyResult<()> {
    let py = metrics.py();
    let applied = dict_attr(metrics, intern!(py, "applied"))?;
    let kind = PyString::new(py, kind);
    let so_far: i64 = match applied.get_item(&kind)? {
        Some(n) => n.extract()?,
        None => 0,
    };
    applied.set_item(&kind, so_far + 1)?;
    let native: i64 = metrics.getattr(intern!(py, "native"))?.extract()?;
    metrics.setattr(intern!(py, "native"), native + 1)
}

/// The dict held in `object`'s attribute `name` (a TypeError if it is no dict).
pub(crate) fn dict_attr<'py>(
    object: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyDict>> {
    Ok(object.getattr(name)?.downcast_into::<PyDict>()?)
}
