//! The state document: what immune created and where each fleet's rollout stands. It is
//! saved after every transition, so an interrupted apply can be finished by the next one.

mod answers;
mod local;
mod lock;
mod process;
mod record;
mod s3;
mod shared;
mod upgrade;

pub use answers::{Answer, AnswerKind};
pub use local::LocalBackend;
pub use lock::{Holder, LockGuard, LockInfo, CORRUPT_ID};
pub use s3::S3Backend;
pub use shared::{FleetRecord, Shared};

use crate::cloud::{LaunchTemplateRef, StandIn, Weight};
use crate::config::Capacity;
use crate::rollout::gates::Evidence;
use crate::rollout::Rollout;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version 2 added each group's capacity and the fleet's traffic before immune; version
/// 3 ownership by lineage.
pub const VERSION: u32 = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub lineage: String,
    pub serial: u64,
    #[serde(default)]
    pub fleets: BTreeMap<String, FleetState>,
    /// Upgraded from a version before lineage tags with fleets in it: resources tagged
    /// `immune:managed` without any lineage are this state's too (an older immune made
    /// them for it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub legacy_ownership: bool,
}

impl State {
    pub fn new() -> Self {
        State {
            version: VERSION,
            lineage: uuid::Uuid::new_v4().to_string(),
            serial: 0,
            fleets: BTreeMap::new(),
            legacy_ownership: false,
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

/// Where state is kept: a local file, or an S3 object for a team. Every command that
/// writes state holds the lock while it runs; answers to a running apply travel through
/// the backend too, since the operator who approves may be on another machine.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Where the state lives, for messages: a path or `s3://bucket/key`.
    fn describe(&self) -> String;
    /// The state, or a new empty one when nothing has been saved yet.
    async fn load(&self) -> Result<State, StateError>;
    /// Writes the next serial of `state`. A reader sees the old document or the new one,
    /// never a torn write.
    async fn save(&self, state: &mut State) -> Result<(), StateError>;
    /// Takes the lock for `operation` or says who holds it. A lock whose holder is a
    /// process gone from this machine is taken over (see [`LockGuard::taken_over`]).
    async fn lock(&self, operation: &str) -> Result<LockGuard, StateError>;
    /// Who holds the lock now, without taking it: `None` when nobody does.
    async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError>;
    /// Breaks a lock left by a process that is gone. The ID must match, so that a lock
    /// taken since the operator looked is not broken by mistake; [`CORRUPT_ID`] breaks
    /// a lock that cannot be read.
    async fn force_unlock(&self, id: &str) -> Result<(), StateError>;
    /// Leaves an answer for the apply that runs the fleet's rollout; a newer answer
    /// replaces an older one.
    async fn post_answer(&self, fleet: &str, answer: &Answer) -> Result<(), StateError>;
    /// The fleet's pending answer about `group`, if any. An answer about another group
    /// is stale and dropped.
    async fn pending_answer(&self, fleet: &str, group: &str) -> Result<Option<Answer>, StateError>;
    /// Marks the pending answer as acted on.
    async fn clear_answer(&self, fleet: &str) -> Result<(), StateError>;
}

/// Reads a state document, whichever backend it came from. Refusing a newer version
/// here, in one place, is also where upgrading an older one will go.
pub fn decode(text: &str, shown: &str) -> Result<State, StateError> {
    let invalid = |message: String| StateError::Read {
        path: shown.to_string(),
        message: format!("not a valid state document ({message})"),
    };
    let document: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let found = document["version"].as_u64().unwrap_or(0);
    if found > u64::from(VERSION) {
        return Err(StateError::TooNew {
            path: shown.to_string(),
            found: found as u32,
        });
    }
    // Older documents are brought up to date on read; the next save writes them so.
    let document = upgrade::upgrade(document, VERSION).map_err(invalid)?;
    let mut state: State = serde_json::from_value(document).map_err(|e| invalid(e.to_string()))?;
    for (name, fleet) in &mut state.fleets {
        if let Some(rollout) = fleet.rollout.as_mut() {
            rollout.check().map_err(|problem| StateError::Read {
                path: shown.to_string(),
                message: format!(
                    "fleet {name}: {problem}, which no rollout can reach; the document was changed by hand or by another tool\n  restore the previous document (a local state keeps it as state.json.backup) or fix the fleet's `rollout`"
                ),
            })?;
        }
    }
    Ok(state)
}

/// The document as written by every backend.
pub fn encode(state: &State) -> String {
    let text = serde_json::to_string_pretty(state).expect("state serializes");
    format!("{text}\n")
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
    /// What the route answered with before the fleet's first release when it forwarded
    /// nowhere (a fresh load balancer's fixed response or redirect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_stand_in: Option<StandIn>,
    /// The region the fleet's resources live in, recorded at its first release: a fleet
    /// no longer in the configuration is retired there. `None` in state written before
    /// regions were recorded: the default region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub seq: u32,
    pub release: String,
    pub fingerprint: String,
    pub image: String,
    pub launch_template: LaunchTemplateRef,
    /// The target group and the route (listener or rule) that sends it traffic; a worker
    /// fleet's group has neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_arn: Option<String>,
    pub created_at: String,
    /// Per-release alarms of metric gates, deleted with the group.
    #[serde(default)]
    pub alarms: Vec<String>,
    /// The capacity immune last gave the group; the plan reports a different live
    /// capacity as drift. Unknown in state written before version 2.
    #[serde(default)]
    pub capacity: Option<Capacity>,
    /// Released as irreversible: `immune rollback` away from it needs `--force`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub irreversible: bool,
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
    /// The release's image spec (`plan::image_spec`), for `promote_after` elsewhere.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_spec: String,
    /// The release's fingerprint: a release tried again unchanged has the same one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
    /// What each gate saw while it watched this release, for `immune gates`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gates: BTreeMap<String, GateTally>,
    pub decisions: Vec<Decision>,
}

/// What one gate saw of one release, over every poll of its steps and drain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateTally {
    /// `enforce`, `dry-run` or `manual` while it watched.
    pub mode: String,
    pub polls: u32,
    /// Time it was watched, and of that the time its alarm had no data.
    pub watched_ms: u64,
    pub no_data_ms: u64,
    /// Its alarm was in ALARM at a poll, or went there between two.
    pub fired: bool,
    /// It went into ALARM and was out of it again by the next poll.
    pub flapped: bool,
    /// It rolled the release back (or held an irreversible one).
    pub failed: bool,
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
    let host = hostname();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

/// This machine's name, or empty when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// An RFC 3339 time, as `now` writes it and AWS answers.
pub fn parse_time(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
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
    #[error("state is locked by {}\n  run `immune state force-unlock {}` if that process is gone", .0.describe(), .0.id)]
    Locked(Box<LockInfo>),
    /// Something stands where the lock is kept but it is not a lock immune wrote (or its
    /// write was cut short): it names no holder, so it is broken by a fixed ID.
    #[error("the state lock {path} cannot be read, so it names no holder\n  if no immune command is running on this state, run `immune state force-unlock {}` to remove it", lock::CORRUPT_ID)]
    CorruptLock { path: String },
    /// A conditional write found a different document than the one this process read:
    /// another writer got there first (possibly after breaking this process's lock).
    #[error("state {path} was changed by another process since this one read it; nothing was written\n  check `immune status` and whether someone ran `immune state force-unlock`, then run the command again")]
    Conflict { path: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_round_trips_and_a_newer_version_is_refused() {
        let mut state = State::new();
        state.serial = 7;
        assert_eq!(decode(&encode(&state), "s").unwrap(), state);

        state.version = VERSION + 1;
        let err = decode(&encode(&state), "s3://b/k").unwrap_err();
        assert!(matches!(err, StateError::TooNew { .. }), "{err}");
        assert!(err.to_string().contains("s3://b/k"), "{err}");
        assert!(err.to_string().contains("upgrade immune"), "{err}");
    }

    #[test]
    fn a_rollout_edited_out_of_shape_is_refused_with_the_fleet_named() {
        let mut state = State::new();
        let mut rollout = crate::rollout::Rollout::new(
            crate::rollout::Identity {
                group: "web-v002".into(),
                seq: 2,
                release: "v2".into(),
                fingerprint: "f".into(),
                bake: "b".into(),
            },
            vec![50, 100],
            "arn:listener".into(),
            Vec::new(),
            None,
        );
        rollout.phase = crate::rollout::Phase::Observe { step: 5 };
        state.fleets.insert(
            "web".into(),
            FleetState {
                rollout: Some(rollout.clone()),
                ..FleetState::default()
            },
        );
        let err = decode(&encode(&state), "state.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fleet web: the rollout of web-v002 is at step 6 of 2"),
            "{err}"
        );
        assert!(err.contains("state.json.backup"), "{err}");

        rollout.phase = crate::rollout::Phase::Launch;
        state.fleets.get_mut("web").unwrap().rollout = Some(rollout);
        let err = decode(&encode(&state), "state.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("launch without an image"), "{err}");
    }

    #[test]
    fn a_broken_document_is_named_not_dumped() {
        let err = decode("{\"version\": 1,", "state.json").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read state state.json: not a valid state document"),
            "{err}"
        );
    }
}
