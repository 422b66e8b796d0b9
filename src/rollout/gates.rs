//! The decision table of a rollout step (DESIGN.md, "Decide"): what one reading of a gate
//! means under its mode and `insufficient_data` policy, and whether the step as a whole
//! goes on, passes, fails or waits for a person. Pure, so every cell is tested.

use crate::cloud::{AlarmReading, AlarmState};
use crate::config::{Gate, GateMode, OnInsufficientData};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Consecutive polls a gate may be unreadable before enforce mode treats it as failed.
pub const UNREADABLE_BUDGET: u32 = 4;

/// What one poll saw of a gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    Alarm(AlarmReading),
    /// The alarm could not be read (API error) or does not exist.
    Unreadable(String),
}

/// The evidence behind a decision, kept in history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub gate: String,
    pub alarm: String,
    /// `OK`, `ALARM`, `INSUFFICIENT_DATA` or `UNREADABLE`.
    pub state: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

impl Evidence {
    pub fn of(gate: &Gate, alarm: &str, reading: &Reading) -> Self {
        let (state, reason, since) = match reading {
            Reading::Alarm(r) => (
                match r.state {
                    AlarmState::Ok => "OK",
                    AlarmState::Alarm => "ALARM",
                    AlarmState::InsufficientData => "INSUFFICIENT_DATA",
                },
                r.reason.clone(),
                r.since.clone(),
            ),
            Reading::Unreadable(why) => ("UNREADABLE", why.clone(), None),
        };
        Evidence {
            gate: gate.name.clone(),
            alarm: alarm.to_string(),
            state: state.into(),
            reason,
            since,
        }
    }

    /// One line for logs: `gate errors: alarm web-5xx is ALARM (Threshold Crossed ...)`.
    pub fn summary(&self) -> String {
        let mut text = format!("gate {}: alarm {} is {}", self.gate, self.alarm, self.state);
        if !self.reason.is_empty() {
            text += &format!(" ({})", self.reason);
        }
        if let Some(since) = &self.since {
            text += &format!(" since {since}");
        }
        text
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The step cannot end yet: no data under `hold`, or an unreadable gate being retried.
    Hold,
    /// Roll back.
    Fail,
    /// Dry-run: record what enforce would have done, and go on.
    WouldFail,
    /// Manual: wait for `immune approve` or `immune reject`.
    AskPerson,
}

/// One gate reading under the decision table. `unreadable_polls` counts this poll too.
pub fn decide(gate: &Gate, reading: &Reading, unreadable_polls: u32) -> Verdict {
    let failed = match gate.mode {
        GateMode::Enforce => Verdict::Fail,
        GateMode::DryRun => Verdict::WouldFail,
        GateMode::Manual => Verdict::AskPerson,
    };
    match reading {
        Reading::Alarm(r) => match r.state {
            AlarmState::Ok => Verdict::Pass,
            AlarmState::Alarm => failed,
            AlarmState::InsufficientData => match (gate.insufficient_data, gate.mode) {
                (OnInsufficientData::Pass, _) => Verdict::Pass,
                // Dry-run never holds a rollout up: it records and goes on.
                (_, GateMode::DryRun) => Verdict::WouldFail,
                (OnInsufficientData::Hold, _) => Verdict::Hold,
                (OnInsufficientData::Fail, _) => failed,
            },
        },
        Reading::Unreadable(_) => match gate.mode {
            GateMode::DryRun => Verdict::WouldFail,
            GateMode::Manual => Verdict::AskPerson,
            GateMode::Enforce if unreadable_polls >= UNREADABLE_BUDGET => Verdict::Fail,
            GateMode::Enforce => Verdict::Hold,
        },
    }
}

/// Where a step stands after one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepState {
    /// Keep observing.
    Observing,
    Passed,
    /// Roll back; the index is the verdict that failed.
    Failed(usize),
    /// Wait for a person about the gate at this index.
    AwaitingPerson(usize),
    /// A gate held the step for a whole extra pause without data.
    HeldTooLong(usize),
}

/// Combines one poll's verdicts with the time the step has been observed. A holding gate
/// may extend the step by at most one more `pause`.
pub fn step_state(verdicts: &[Verdict], observed: Duration, pause: Duration) -> StepState {
    if let Some(i) = verdicts.iter().position(|v| *v == Verdict::Fail) {
        return StepState::Failed(i);
    }
    if let Some(i) = verdicts.iter().position(|v| *v == Verdict::AskPerson) {
        return StepState::AwaitingPerson(i);
    }
    if observed < pause {
        return StepState::Observing;
    }
    match verdicts.iter().position(|v| *v == Verdict::Hold) {
        Some(i) if observed >= pause * 2 => StepState::HeldTooLong(i),
        Some(_) => StepState::Observing,
        None => StepState::Passed,
    }
}
