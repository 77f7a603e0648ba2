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

/// `stores.workflow._bump`: a counter moved by `delta`, dropped at zero.
pub(crate) fn bump(counter: &Bound<'_, PyDict>, name: &str, delta: i64) -> PyResult<()> {
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
        let kept = batch
            .getattr(intern!(py, "kept"))?
            .downcast_into::<PyDict>()?;
        if kept.get_item(items)?.is_some() {
            return Ok(None); // items are never kept as objects: not a batch the core knows
        }
        let mut batches = vec![batch.clone()];
        let behind = batch.getattr(intern!(py, "behind"))?;
        if !behind.is_none() {
            batches.push(behind);
        }
        for staged in batches {
            let writes = staged
                .getattr(intern!(py, "writes"))?
                .downcast_into::<PyDict>()?;
            if let Some(pending) = writes.get_item(items)? {
                if let Some(value) = pending.downcast_into::<PyDict>()?.get_item(key)? {
                    return Ok(row(value));
                }
            }
        }
        let databases = batch
            .getattr(intern!(py, "databases"))?
            .downcast_into::<PyDict>()?;
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
    let applied = metrics
        .getattr(intern!(py, "applied"))?
        .downcast_into::<PyDict>()?;
    let kind = PyString::new(py, kind);
    let so_far: i64 = match applied.get_item(&kind)? {
        Some(n) => n.extract()?,
        None => 0,
    };
    applied.set_item(&kind, so_far + 1)?;
    let native: i64 = metrics.getattr(intern!(py, "native"))?.extract()?;
    metrics.setattr(intern!(py, "native"), native + 1)
}
