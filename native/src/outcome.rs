//! One applied event's outcome, piece by piece: whether the record sits where it belongs, the
//! item's recent ids after it, its SLA and purge deadlines, and the item row and status
//! record as Python's msgpack packer writes them (`Item.to_bytes`, `_status`).

use super::*;

/// Under its envelope's key (`{tenant}/{key}`), on that key's partition.
pub(crate) fn in_place(
    event: &Envelope<'_>,
    record_key: &[u8],
    partition: u32,
    partitions: u32,
) -> bool {
    let tenant = event.tenant.as_bytes();
    record_key.len() == tenant.len() + 1 + event.key.len()
        && record_key.starts_with(tenant)
        && record_key[tenant.len()] == b'/'
        && record_key.ends_with(event.key.as_bytes())
        && (murmur2(record_key) & 0x7fff_ffff) % partitions == partition
}

/// The recent (id, offset) entries with this event's added, at most `keep`, oldest first.
/// Unsupported when the id was seen (a redelivery or a replay) or the offset is behind the
/// newest entry (a stale replay): the Python path handles those.
pub(crate) fn recent_after<'a>(
    row: Option<&Row<'a>>,
    id: &'a str,
    offset: i64,
    keep: usize,
) -> Read<Vec<(&'a [u8], i64)>> {
    let mut entries = match row {
        Some(row) => recent_entries(row.ids, row.offsets)?,
        None => Vec::new(),
    };
    let id = id.as_bytes();
    if entries.iter().any(|(seen, _)| *seen == id) || id.len() > usize::from(u16::MAX) {
        return Err(Unsupported);
    }
    if let Some(highest) = entries.iter().map(|(_, o)| *o).max() {
        if offset >= 0 && offset < highest {
            return Err(Unsupported);
        }
    }
    entries.push((id, offset));
    let drop = entries.len().saturating_sub(keep);
    entries.drain(..drop);
    Ok(entries)
}

/// `sla_deadline`: when the item becomes stuck in its new state, if that state has an SLA.
pub(crate) fn sla_deadline(
    definition: &Definition,
    plan: &Plan,
    finished: bool,
) -> Read<Option<i128>> {
    if finished {
        return Ok(None);
    }
    match definition.sla_seconds.get(&plan.state) {
        Some(&seconds) if seconds != 0 => Ok(Some(checked(plan.entered_at + seconds * 1000)?)),
        _ => Ok(None),
    }
}

/// `purge_deadline` of a finished item: kept from before, else `max_age` from now.
pub(crate) fn purge_deadline(
    row: Option<&Row<'_>>,
    max_age: Option<i64>,
    now: i128,
) -> Read<Option<i128>> {
    let Some(max_age) = max_age else {
        return Ok(None);
    };
    match row.and_then(|r| r.purge_at) {
        Some(at) => Ok(Some(at)),
        None => Ok(Some(checked(now + i128::from(max_age))?)),
    }
}

/// What the new item and its status record are made of.
pub(crate) struct Fields<'e, 'a> {
    pub(crate) event: &'e Envelope<'a>,
    pub(crate) row: Option<&'e Row<'a>>,
    pub(crate) workflow: &'a str,
    pub(crate) plan: &'e Plan,
    pub(crate) now: i128,
}

impl<'a> Fields<'_, 'a> {
    /// (tenant, key): the stored item's, or for a new one the envelope's.
    pub(crate) fn names(&self) -> (&'a str, &'a str) {
        match self.row {
            Some(row) => (row.tenant, row.key),
            None => (self.event.tenant, self.event.key),
        }
    }
}

/// The item row (`Item.to_bytes`: schema version, then the 15 fields in order).
pub(crate) fn encode_row(
    f: &Fields<'_, '_>,
    raw: &[u8],
    recent: &[(&[u8], i64)],
    deadline: Option<i128>,
    purge_at: Option<i128>,
) -> Read<Vec<u8>> {
    let (tenant, key) = f.names();
    let plan = f.plan;
    let mut w = Writer::with_capacity(raw.len() + 160 + 10 * recent.len());
    w.array(ROW_FIELDS);
    w.int(STORE_VERSION);
    for text in [tenant, key, f.workflow, &plan.state, plan.condition] {
        w.str(text);
    }
    for number in [
        plan.version,
        plan.attempt,
        plan.created_at,
        plan.entered_at,
        f.now,
    ] {
        w.int(number);
    }
    match f.row {
        Some(row) => {
            recode(&mut Reader::new(row.attrs), &mut w, MAX_DEPTH)?;
            recode(&mut Reader::new(row.error), &mut w, MAX_DEPTH)?;
        }
        None => {
            match f.event.data.attrs {
                Some((start, end)) => write_attrs(&raw[start..end], &mut w)?,
                None => w.map(0),
            }
            w.nil();
        }
    }
    w.array(2);
    let mut ids = Vec::with_capacity(recent.iter().map(|(id, _)| 2 + id.len()).sum());
    let mut offsets = Vec::with_capacity(8 * recent.len());
    for (id, at) in recent {
        ids.extend_from_slice(&(id.len() as u16).to_be_bytes());
        ids.extend_from_slice(id);
        offsets.extend_from_slice(&at.to_be_bytes());
    }
    w.bin(&ids);
    w.bin(&offsets);
    w.opt_int(deadline);
    w.opt_int(purge_at);
    Ok(w.out)
}

/// The status record (`stores.workflow._status`), its optional fields last.
pub(crate) fn encode_status(f: &Fields<'_, '_>) -> Vec<u8> {
    let (tenant, key) = f.names();
    let (plan, event) = (f.plan, f.event);
    let reason = note_text(event.data.reason);
    let actor = note_text(event.data.actor);
    let mut s = Writer::with_capacity(200);
    s.map(13 + usize::from(reason.is_some()) + usize::from(actor.is_some()));
    s.str("v");
    s.int(1);
    for (name, text) in [
        ("tenant", tenant),
        ("key", key),
        ("workflow", f.workflow),
        ("type", plan.kind),
    ] {
        s.str(name);
        s.str(text);
    }
    s.str("from");
    match f.row {
        Some(row) => s.str(row.state),
        None => s.nil(),
    }
    for (name, text) in [("to", plan.state.as_str()), ("condition", plan.condition)] {
        s.str(name);
        s.str(text);
    }
    for (name, number) in [("version", plan.version), ("attempt", plan.attempt)] {
        s.str(name);
        s.int(number);
    }
    s.str("event_id");
    s.str(event.id);
    for (name, number) in [("event_ts", event.ts), ("ts", f.now)] {
        s.str(name);
        s.int(number);
    }
    for (name, text) in [("reason", reason), ("actor", actor)] {
        if let Some(text) = text {
            s.str(name);
            s.str(text);
        }
    }
    s.out
}
