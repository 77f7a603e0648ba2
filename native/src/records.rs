//! Reading what the core takes: the envelope of a record and an item's stored row, each
//! from its bytes; anything else is `Unsupported` (the Python path's to judge).

use super::*;

/// The envelope fields the core reads, borrowed from the record's bytes.
pub(crate) struct Envelope<'a> {
    pub(crate) id: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) tenant: &'a str,
    pub(crate) key: &'a str,
    pub(crate) ts: i128,
    pub(crate) data: Data<'a>,
}

/// The `data` fields the two event types read; each at most once in the map.
#[derive(Default)]
pub(crate) struct Data<'a> {
    pub(crate) workflow: Option<Head<'a>>,
    pub(crate) to: Option<Head<'a>>,
    pub(crate) expected_version: Option<Head<'a>>,
    pub(crate) reason: Option<Head<'a>>,
    pub(crate) actor: Option<Head<'a>>,
    pub(crate) attrs: Option<(usize, usize)>, // where the value starts and ends in the record
}

/// An item row of the current schema, its maps and recent ids kept as bytes.
pub(crate) struct Row<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) key: &'a str,
    pub(crate) workflow: &'a str,
    pub(crate) state: &'a str,
    pub(crate) condition: &'a str,
    pub(crate) version: i128,
    pub(crate) attempt: i128,
    pub(crate) created_at: i128,
    pub(crate) attrs: &'a [u8],
    pub(crate) error: &'a [u8],
    pub(crate) ids: &'a [u8],
    pub(crate) offsets: &'a [u8],
    pub(crate) deadline: Option<i128>,
    pub(crate) purge_at: Option<i128>,
}

pub(crate) fn int(head: Head<'_>) -> Read<i128> {
    match head {
        Head::Int(v) => Ok(v),
        _ => Err(Unsupported),
    }
}

pub(crate) fn text(head: Head<'_>) -> Read<&str> {
    match head {
        Head::Str(s) => Ok(s),
        _ => Err(Unsupported),
    }
}

pub(crate) fn opt_int(head: Head<'_>) -> Read<Option<i128>> {
    match head {
        Head::Nil => Ok(None),
        Head::Int(v) => Ok(Some(v)),
        _ => Err(Unsupported),
    }
}

/// A non-empty str of at most `max` characters (Python's len).
pub(crate) fn short_text(head: Head<'_>, max: usize) -> Read<&str> {
    let s = text(head)?;
    let chars = s.chars().count();
    if chars == 0 || chars > max {
        return Err(Unsupported);
    }
    Ok(s)
}

/// `[a-z0-9][a-z0-9_-]{0,63}`, matched whole.
pub(crate) fn valid_tenant(tenant: &str) -> bool {
    let bytes = tenant.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

/// Read the map of `data`: the fields the core uses, every other value skipped (checked).
pub(crate) fn read_data<'a>(reader: &mut Reader<'a>, entries: usize) -> Read<Data<'a>> {
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
pub(crate) fn read_envelope(raw: &[u8]) -> Read<Envelope<'_>> {
    let mut reader = Reader::new(raw);
    let Head::Map(entries) = reader.head()? else {
        return Err(Unsupported);
    };
    if entries > 7 {
        return Err(Unsupported);
    }
    let (mut v, mut id, mut kind, mut tenant, mut key, mut ts) =
        (None, None, None, None, None, None);
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
    Ok(Envelope {
        id,
        kind,
        tenant,
        key,
        ts,
        data: data.unwrap_or_default(),
    })
}

/// A stored item row of the current schema; Unsupported for anything else.
pub(crate) fn read_row(raw: &[u8]) -> Read<Row<'_>> {
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
    if version < 1 {
        return Err(Unsupported); // never written by us: the Python path reports it
    }
    let attempt = int(r.head()?)?;
    let created_at = int(r.head()?)?;
    let _entered_at = int(r.head()?)?; // a transition enters anew
    let _updated_at = int(r.head()?)?;
    let start = r.pos;
    let Head::Map(_) = r.head()? else {
        return Err(Unsupported);
    };
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
        tenant,
        key,
        workflow,
        state,
        condition,
        version,
        attempt,
        created_at,
        attrs,
        error,
        ids,
        offsets,
        deadline,
        purge_at,
    })
}

/// The recent (id, offset) entries as (id bytes, offset), oldest first.
pub(crate) fn recent_entries<'a>(ids: &'a [u8], offsets: &'a [u8]) -> Read<Vec<(&'a [u8], i64)>> {
    let mut entries = Vec::with_capacity(offsets.len() / 8);
    let mut at = 0usize;
    for chunk in offsets.chunks_exact(8) {
        if at + 2 > ids.len() {
            return Err(Unsupported);
        }
        let size = usize::from(u16::from_be_bytes([ids[at], ids[at + 1]]));
        at += 2;
        if at + size > ids.len() || std::str::from_utf8(&ids[at..at + size]).is_err() {
            return Err(Unsupported); // Python decodes the ids it compares
        }
        entries.push((
            &ids[at..at + size],
            i64::from_be_bytes(chunk.try_into().unwrap()),
        ));
        at += size;
    }
    if at != ids.len() {
        return Err(Unsupported);
    }
    Ok(entries)
}

/// Validate `attrs` as Python's `_attrs` does, and write them as Python would re-pack them.
pub(crate) fn write_attrs(raw: &[u8], out: &mut Writer) -> Read<()> {
    let mut r = Reader::new(raw);
    let Head::Map(n) = r.head()? else {
        return Err(Unsupported);
    };
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

/// A reason or actor as the status record holds it: a non-empty str, at most 2,048 chars.
pub(crate) fn note_text(head: Option<Head<'_>>) -> Option<&str> {
    match head {
        Some(Head::Str(s)) if !s.is_empty() => match s.char_indices().nth(MAX_NOTE_TEXT) {
            Some((cut, _)) => Some(&s[..cut]),
            None => Some(s),
        },
        _ => None,
    }
}

/// Write one stored value as Python writes it back after decoding it (`Item.from_bytes`
/// then `to_bytes`): the smallest forms, floats as doubles. Unsupported where decoding
/// would change it (a map with a repeated key keeps its last value) or Python would not
/// decode it as we read it (ext types, a NaN single-precision float).
pub(crate) fn recode(r: &mut Reader<'_>, w: &mut Writer, depth: usize) -> Read<()> {
    match r.head()? {
        Head::Nil => w.nil(),
        Head::Bool(b) => w.bool(b),
        Head::Int(v) => w.int(v),
        Head::Float(f) if !f.is_nan() => w.float(f),
        Head::Float(_) => return Err(Unsupported),
        Head::Str(s) => w.str(s),
        Head::Bin(b) => w.bin(b),
        Head::Array(n) => {
            if depth == 0 {
                return Err(Unsupported);
            }
            w.array(n);
            for _ in 0..n {
                recode(r, w, depth - 1)?;
            }
        }
        Head::Map(n) => {
            if depth == 0 {
                return Err(Unsupported);
            }
            w.map(n);
            let mut keys: Vec<Head<'_>> = Vec::with_capacity(n);
            for _ in 0..n {
                let key = r.head()?;
                match key {
                    Head::Str(s) => w.str(s),
                    Head::Bin(b) => w.bin(b),
                    _ => return Err(Unsupported),
                }
                if keys.contains(&key) {
                    return Err(Unsupported);
                }
                keys.push(key);
                recode(r, w, depth - 1)?;
            }
        }
    }
    Ok(())
}
