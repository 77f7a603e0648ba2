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

/// A Python `Staging` batch as one `stage_many` call sees it: its attributes looked up once
/// per call instead of once per record. The dicts, the set and the list are the batch's own,
/// changed in place as its methods change them (no method replaces them while the core
/// runs). `largest` and the metrics counts are kept here: `push_largest` writes the former
/// back before a Python method that reads or raises it (`Staging.kept_row`), `pull_largest`
/// reads it after, and `sync` writes both back when the call ends.
pub(crate) struct View<'py> {
    pub(crate) batch: Bound<'py, PyAny>,
    writes: Bound<'py, PyDict>,
    kept: Bound<'py, PyDict>,
    sizes: Bound<'py, PyDict>,
    databases: Bound<'py, PyDict>,
    outputs: Bound<'py, PyList>,
    notes: Bound<'py, PyAny>,
    behind_writes: Option<Bound<'py, PyDict>>,
    pub(crate) largest: i64,
    /// The batch's pending dict per table (by the table object's address), once it has one.
    pending: Vec<(usize, Bound<'py, PyDict>)>,
    last_note: Option<(String, String)>,
    applied: Vec<(&'static str, i64)>,
}

impl<'py> View<'py> {
    pub(crate) fn new(batch: &Bound<'py, PyAny>) -> PyResult<Self> {
        let py = batch.py();
        let behind = batch.getattr(intern!(py, "behind"))?;
        let behind_writes = if behind.is_none() {
            None
        } else {
            Some(dict_attr(&behind, intern!(py, "writes"))?)
        };
        Ok(View {
            batch: batch.clone(),
            writes: dict_attr(batch, intern!(py, "writes"))?,
            kept: dict_attr(batch, intern!(py, "kept"))?,
            sizes: dict_attr(batch, intern!(py, "sizes"))?,
            databases: dict_attr(batch, intern!(py, "databases"))?,
            outputs: batch
                .getattr(intern!(py, "outputs"))?
                .downcast_into::<PyList>()?,
            notes: batch.getattr(intern!(py, "notes"))?,
            behind_writes,
            largest: batch.getattr(intern!(py, "largest"))?.extract()?,
            pending: Vec::with_capacity(4),
            last_note: None,
            applied: Vec::with_capacity(4),
        })
    }

    /// The batch's pending writes to `table`, if it has any yet.
    fn staged(&mut self, table: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let id = table.as_ptr() as usize;
        if let Some((_, rows)) = self.pending.iter().find(|(t, _)| *t == id) {
            return Ok(Some(rows.clone()));
        }
        let Some(rows) = self.writes.get_item(table)? else {
            return Ok(None);
        };
        let rows = rows.downcast_into::<PyDict>()?;
        self.pending.push((id, rows.clone()));
        Ok(Some(rows))
    }

    /// `Staging.write`: stage `key` = `value` (None: a delete) and count its bytes.
    fn write(
        &mut self,
        table: &Bound<'py, PyAny>,
        key: &[u8],
        value: Option<&[u8]>,
        overhead: i64,
    ) -> PyResult<()> {
        let py = table.py();
        let rows = match self.staged(table)? {
            Some(rows) => rows,
            None => {
                let rows = PyDict::new(py);
                self.writes.set_item(table, &rows)?;
                self.pending.push((table.as_ptr() as usize, rows.clone()));
                rows
            }
        };
        rows.set_item(PyBytes::new(py, key), value.map(|v| PyBytes::new(py, v)))?;
        let size = (key.len() + value.map_or(0, <[u8]>::len)) as i64;
        count(&self.sizes, table, size + overhead, &mut self.largest)
    }

    /// `batch.notes.add((tenant, workflow))`, skipped when it is the pair added last.
    fn note(&mut self, tenant: &str, workflow: &str) -> PyResult<()> {
        if let Some((t, w)) = &self.last_note {
            if t == tenant && w == workflow {
                return Ok(());
            }
        }
        self.notes
            .call_method1(intern!(self.notes.py(), "add"), ((tenant, workflow),))?;
        self.last_note = Some((tenant.to_owned(), workflow.to_owned()));
        Ok(())
    }

    fn count_applied(&mut self, kind: &'static str) {
        match self.applied.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.applied.push((kind, 1)),
        }
    }

    fn push_largest(&self) -> PyResult<()> {
        self.batch
            .setattr(intern!(self.batch.py(), "largest"), self.largest)
    }

    fn pull_largest(&mut self) -> PyResult<()> {
        self.largest = self
            .batch
            .getattr(intern!(self.batch.py(), "largest"))?
            .extract()?;
        Ok(())
    }

    /// Write `largest` and the metrics counts back (the end of a `stage_many` call).
    pub(crate) fn sync(&mut self, metrics: &Bound<'py, PyAny>) -> PyResult<()> {
        self.push_largest()?;
        for (kind, n) in std::mem::take(&mut self.applied) {
            count_applied(metrics, kind, n)?;
        }
        Ok(())
    }
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
        view: &mut View<'py>,
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
        let held = match view.kept.get_item(counts)? {
            Some(rows) => rows.downcast_into::<PyDict>()?.get_item(&key)?,
            None => None,
        };
        let row = match held {
            Some(row) => row,
            None => {
                view.push_largest()?; // Staging.keep counts the row's bytes
                let row = view.batch.call_method1(
                    intern!(py, "kept_row"),
                    (counts, &key, &self.targets.decode_counts),
                )?;
                view.pull_largest()?;
                row
            }
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
    pub(crate) fn write_outcome<'py>(
        &self,
        py: Python<'py>,
        view: &mut View<'py>,
        o: &Outcome<'_>,
        key_object: &Bound<'py, PyAny>,
        record_key: &[u8],
        counts: CountsPlan<'_>,
    ) -> PyResult<()> {
        let t = &self.targets;
        let overhead = t.record_overhead;
        view.note(o.tenant, o.workflow)?;
        view.write(t.items.bind(py), record_key, Some(&o.row), overhead)?;
        view.write(
            t.history.bind(py),
            &history_key(record_key, o.version),
            Some(&o.status),
            overhead,
        )?;
        for (counter, name, value) in counts {
            if value != 0 {
                counter.set_item(name, value)?;
            } else if counter.contains(&name)? {
                counter.del_item(name)?;
            }
        }
        if o.old_deadline != o.deadline {
            let deadlines = t.deadlines.bind(py);
            if let Some(old) = o.old_deadline {
                view.write(deadlines, &deadline_key(old, record_key), None, overhead)?;
            }
            if let Some(new) = o.deadline {
                let mut value = Writer::with_capacity(o.state.len() + 4);
                value.array(2);
                value.str(&o.state);
                value.bool(false);
                let key = deadline_key(new, record_key);
                view.write(deadlines, &key, Some(&value.out), overhead)?;
            }
        }
        if o.old_purge != o.purge_at {
            let retention = t.retention.bind(py);
            if let Some(old) = o.old_purge {
                view.write(retention, &deadline_key(old, record_key), None, overhead)?;
            }
            if let Some(new) = o.purge_at {
                let mut value = Writer::with_capacity(12);
                value.array(1);
                value.int(o.version);
                let key = deadline_key(new, record_key);
                view.write(retention, &key, Some(&value.out), overhead)?;
            }
        }
        let status = PyBytes::new(py, &o.status);
        view.outputs
            .append((&t.status_topic, key_object, &status, &t.no_headers))?;
        let size = (o.status.len() + record_key.len()) as i64 + overhead;
        count(
            &view.sizes,
            t.status_topic.bind(py),
            size,
            &mut view.largest,
        )?;
        view.count_applied(o.kind);
        Ok(())
    }

    /// `Staging.read` of the items table: Some(row or None), or None to hand the record back.
    pub(crate) fn read<'py>(
        &self,
        py: Python<'py>,
        view: &mut View<'py>,
        key: &Bound<'py, PyAny>,
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
        if view.kept.get_item(items)?.is_some() {
            return Ok(None); // items are never kept as objects: not a batch the core knows
        }
        if let Some(pending) = view.staged(items)? {
            if let Some(value) = pending.get_item(key)? {
                return Ok(row(value));
            }
        }
        if let Some(writes) = &view.behind_writes {
            if let Some(pending) = writes.get_item(items)? {
                if let Some(value) = pending.downcast_into::<PyDict>()?.get_item(key)? {
                    return Ok(row(value));
                }
            }
        }
        let db = match view.databases.get_item(items)? {
            Some(db) => db,
            None => {
                let db = view.batch.call_method1(intern!(py, "database"), (items,))?;
                view.databases.set_item(items, &db)?;
                db
            }
        };
        Ok(row(db.call_method1(intern!(py, "get"), (key,))?))
    }
}

/// The pipeline's `metrics.applied[type] += n`, and `metrics.native += n`.
pub(crate) fn count_applied(metrics: &Bound<'_, PyAny>, kind: &str, n: i64) -> PyResult<()> {
    let py = metrics.py();
    let applied = dict_attr(metrics, intern!(py, "applied"))?;
    let kind = PyString::new(py, kind);
    let so_far: i64 = match applied.get_item(&kind)? {
        Some(n) => n.extract()?,
        None => 0,
    };
    applied.set_item(&kind, so_far + n)?;
    let native: i64 = metrics.getattr(intern!(py, "native"))?.extract()?;
    metrics.setattr(intern!(py, "native"), native + n)
}

/// The dict held in `object`'s attribute `name` (a TypeError if it is no dict).
pub(crate) fn dict_attr<'py>(
    object: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyDict>> {
    Ok(object.getattr(name)?.downcast_into::<PyDict>()?)
}
