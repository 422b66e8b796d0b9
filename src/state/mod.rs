//! The state document: what immune created and where each fleet's rollout stands. It is
//! saved after every transition, so an interrupted apply can be finished by the next one.

mod answers;
mod local;

pub use answers::{Answer, AnswerKind};
pub use local::{LocalBackend, LockGuard};

use crate::cloud::{LaunchTemplateRef, Weight};
use crate::config::Capacity;
use crate::rollout::gates::Evidence;
use crate::rollout::Rollout;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub lineage: String,
    pub serial: u64,
    #[serde(default)]
    pub fleets: BTreeMap<String, FleetState>,
}

impl State {
    pub fn new() -> Self {
        State {
            version: VERSION,
            lineage: uuid::Uuid::new_v4().to_string(),
            serial: 0,
            fleets: BTreeMap::new(),
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetState {
    /// The sequence number of the last release started (`web-v003` -> 3).
    pub seq: u32,
    /// The group that carries the fleet's traffic.
    pub active: Option<Group>,
    /// Earlier groups kept scaled to zero for `immune rollback` (`keep_previous`), newest
    /// first.
    #[serde(default)]
    pub previous: Vec<Group>,
    /// A rollout that has not finished: resumed by the next apply.
    pub rollout: Option<Rollout>,
    /// Set by an automatic rollback; `apply` refuses the fleet until it is lifted.
    pub lock: Option<FleetLock>,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// Where the route sent traffic before the fleet's first release: a retired fleet
    /// gives its traffic back there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub original_weights: Vec<Weight>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub seq: u32,
    pub release: String,
    pub fingerprint: String,
    pub image: String,
    pub launch_template: LaunchTemplateRef,
    pub target_group: String,
    pub listener_arn: String,
    pub created_at: String,
    /// Per-release alarms of metric gates, deleted with the group.
    #[serde(default)]
    pub alarms: Vec<String>,
    /// The capacity immune last gave the group; the plan reports a different live
    /// capacity as drift. Unknown in state written before version 2.
    #[serde(default)]
    pub capacity: Option<Capacity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetLock {
    pub reason: String,
    pub release: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub group: String,
    pub release: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `done`, `rolled_back` or `in_progress`.
    pub outcome: String,
    pub decisions: Vec<Decision>,
}

/// One thing the engine decided or observed, with when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub at: String,
    pub what: String,
    /// The gate reading behind a gate decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

/// Who runs this command, for locks, answers and history: `$IMMUNE_OPERATOR`, else the
/// login name and host.
pub fn operator() -> String {
    if let Ok(name) = std::env::var("IMMUNE_OPERATOR") {
        return name;
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

/// RFC 3339 time now, for state and history.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot write state {path}: {message}")]
    Write { path: String, message: String },
    #[error("state {path} has version {found}, newer than this immune understands ({VERSION}); upgrade immune")]
    TooNew { path: String, found: u32 },
    #[error("the state is not locked")]
    NotLocked,
    #[error("the state lock is held with ID {held}, not {given}; nothing was unlocked")]
    WrongLockId { given: String, held: String },
    #[error("state is locked by {holder}\n  run `immune state force-unlock {id}` if that process is gone")]
    Locked { holder: String, id: String },
}
