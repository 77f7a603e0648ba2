//! The state machine's common case: definitions as the core reads them, a start or a legal
//! transition, and the new item's fields.

use super::*;

/// A definition as the core reads it (built once per definition object).
pub(crate) struct Definition {
    pub(crate) initial: String,
    pub(crate) terminal: HashSet<String>,
    pub(crate) transitions: HashMap<String, HashSet<String>>, // source -> targets
    pub(crate) sla_seconds: HashMap<String, i128>,
}

impl Definition {
    /// None when the definition holds something the core does not read (an SLA that is
    /// not an int): the Python path then handles that workflow's events.
    pub(crate) fn from_python(definition: &Bound<'_, PyAny>) -> PyResult<Option<Definition>> {
        let mut sla_seconds = HashMap::new();
        for (state, seconds) in definition
            .getattr("sla_seconds")?
            .downcast::<PyDict>()?
            .iter()
        {
            let Ok(seconds) = seconds.extract::<i64>() else {
                return Ok(None);
            };
            sla_seconds.insert(state.extract::<String>()?, i128::from(seconds));
        }
        let mut transitions: HashMap<String, HashSet<String>> = HashMap::new();
        for (source, target) in definition
            .getattr("transitions")?
            .extract::<HashSet<(String, String)>>()?
        {
            transitions.entry(source).or_default().insert(target);
        }
        Ok(Some(Definition {
            initial: definition.getattr("initial")?.extract()?,
            terminal: definition.getattr("terminal")?.extract()?,
            transitions,
            sla_seconds,
        }))
    }

    pub(crate) fn allows(&self, source: &str, target: &str) -> bool {
        self.transitions
            .get(source)
            .is_some_and(|targets| targets.contains(target))
    }
}

/// The item's new fields.
pub(crate) struct Plan {
    pub(crate) kind: &'static str,
    pub(crate) state: String,
    pub(crate) condition: &'static str,
    pub(crate) version: i128,
    pub(crate) attempt: i128,
    pub(crate) created_at: i128,
    pub(crate) entered_at: i128,
}

/// The state machine's common case: a start or a legal transition, or Unsupported.
pub(crate) fn plan(
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
            let Some(Head::Str(target)) = event.data.to else {
                return Err(Unsupported);
            };
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

/// Fits the int range the Python packer takes for the values we compute.
pub(crate) fn checked(value: i128) -> Read<i128> {
    if (i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(&value) {
        Ok(value)
    } else {
        Err(Unsupported)
    }
}
