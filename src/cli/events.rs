//! `apply --json`: what apply decides and does, one JSON object per line on stdout, each
//! with a `type`. The schema is generated from these types (docs/events.schema.json,
//! checked by a test), so it cannot drift from what is printed.

use crate::engine::Reporter;
use schemars::JsonSchema;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

/// One line of `immune apply --json`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ApplyEvent {
    /// The plan apply carries out: the document of `plan --json` (docs/plan.schema.json).
    Plan { plan: serde_json::Value },
    /// A decision, recorded in the fleet's history (and saved) before it is said.
    Decision {
        fleet: String,
        message: String,
        at: String,
    },
    /// What a running action is doing: waiting for instances, observing a step.
    Progress {
        fleet: String,
        message: String,
        at: String,
    },
    /// How one fleet's change ended.
    Outcome {
        fleet: String,
        result: Result,
        /// The group that runs now, when one does.
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The fleet is locked until `immune unlock`.
        locked: bool,
    },
    /// The configuration's outputs with what runs now; sensitive values are null.
    Outputs {
        outputs: BTreeMap<String, OutputValue>,
    },
    /// Why apply stopped, with the exit code it ends with.
    Error { message: String, exit_code: u8 },
    /// The last line: apply ended with this exit code.
    Done { exit_code: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Result {
    /// All traffic (or capacity) is on the new release.
    Released,
    /// A gate or health failed: everything is back on the previous group.
    RolledBack,
    /// Stopped and undone without blame (a gate already failing, a name held elsewhere).
    Undone,
    /// `immune rollback` brought a kept group back.
    Restored,
    /// Capacity or weights set in place.
    Updated,
    /// The fleet left the configuration and is gone.
    Retired,
    /// Locked by an earlier rollback: left as it is.
    Locked,
    /// An irreversible release failed after traffic reached it: held where it is, the
    /// fleet locked until `immune promote` or `immune rollback --force`.
    Held,
    /// Something must be done by a person first (see the reason).
    Blocked,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OutputValue {
    pub value: Option<serde_json::Value>,
    pub sensitive: bool,
}

/// Prints one event as a line.
pub fn emit(event: &ApplyEvent) {
    let line = serde_json::to_string(event).expect("events serialize");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The engine's decisions and progress as events.
pub struct JsonLines;

impl Reporter for JsonLines {
    fn line(&self, fleet: &str, message: &str) {
        emit(&ApplyEvent::Progress {
            fleet: fleet.to_string(),
            message: message.to_string(),
            at: crate::state::now(),
        });
    }

    fn decision(&self, fleet: &str, what: &str) {
        emit(&ApplyEvent::Decision {
            fleet: fleet.to_string(),
            message: what.to_string(),
            at: crate::state::now(),
        });
    }
}

#[cfg(test)]
mod tests {
    /// The schema of every line, as docs/events.schema.json holds it.
    fn schema() -> String {
        let schema = schemars::schema_for!(super::ApplyEvent);
        format!(
            "{}\n",
            serde_json::to_string_pretty(&schema).expect("the schema serializes")
        )
    }

    #[test]
    fn the_documented_schema_is_the_one_the_types_make() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/events.schema.json");
        let made = schema();
        if std::env::var_os("UPDATE_EXPECTED").is_some() {
            std::fs::write(&path, &made).unwrap();
        }
        let documented = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            documented, made,
            "docs/events.schema.json is out of date: run UPDATE_EXPECTED=1 cargo test --lib events"
        );
    }
}
