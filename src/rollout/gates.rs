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
        format!("gate {}: {}", self.gate, self.detail())
    }

    /// The reading without the gate's name: `alarm web-5xx is ALARM (...) since ...`.
    pub fn detail(&self) -> String {
        let mut text = format!("alarm {} is {}", self.alarm, self.state);
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
    /// No data under `hold`: the step cannot end yet, for at most another pause.
    Hold,
    /// The gate could not be read; asked again next poll, within the retry budget.
    Retry,
    /// Roll back.
    Fail,
    /// Dry-run: record what enforce would have done, and go on.
    WouldFail,
    /// Manual: wait for `immune approve` or `immune reject`.
    AskPerson,
}

/// A gate's state in a word or two, as a progress view shows it after a poll.
pub fn shown(verdict: &Verdict, reading: &Reading, approved: bool) -> &'static str {
    match (verdict, reading) {
        _ if approved => "approved",
        (Verdict::Fail, _) => "ALARM",
        (Verdict::WouldFail, _) => "ALARM (dry-run)",
        (Verdict::AskPerson, _) => "waiting for a person",
        (Verdict::Hold, _) => "no data (holding)",
        (Verdict::Retry, _) => "unreadable",
        (Verdict::Pass, Reading::Alarm(r)) if r.state == AlarmState::InsufficientData => "no data",
        (Verdict::Pass, Reading::Unreadable(_)) => "unreadable",
        (Verdict::Pass, _) => "OK",
    }
}

/// One gate reading under the decision table. `unreadable_polls` counts this poll too.
/// How long a step must be watched so that each enforce gate could have failed in it:
/// the pause, or the longest time an enforce gate's alarm needs before it can go into
/// ALARM (its period times the datapoints to alarm, plus the time its metric takes to
/// be published), with that gate's name. A step shorter than that could pass on a bad
/// release before its gate had data enough to see it.
pub fn watch_for(
    pause: Duration,
    gates: &[Gate],
    readings: &[Reading],
) -> (Duration, Option<String>) {
    gates
        .iter()
        .zip(readings)
        .filter(|(gate, _)| gate.mode == GateMode::Enforce)
        .filter_map(|(gate, reading)| match reading {
            Reading::Alarm(r) => Some((r.needs?, Some(gate.name.clone()))),
            Reading::Unreadable(_) => None,
        })
        .fold((pause, None), |longest, this| match this.0 > longest.0 {
            true => this,
            false => longest,
        })
}

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
            GateMode::Enforce => Verdict::Retry,
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
    if observed < pause || verdicts.contains(&Verdict::Retry) {
        return StepState::Observing;
    }
    match verdicts.iter().position(|v| *v == Verdict::Hold) {
        Some(i) if observed >= pause * 2 => StepState::HeldTooLong(i),
        Some(_) => StepState::Observing,
        None => StepState::Passed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GateCheck;

    fn gate(mode: GateMode, insufficient_data: OnInsufficientData) -> Gate {
        Gate {
            name: "errors".into(),
            check: GateCheck::Alarm("web-5xx".into()),
            insufficient_data,
            mode,
            slow_at: None,
        }
    }

    fn alarm(state: AlarmState) -> Reading {
        Reading::Alarm(AlarmReading {
            state,
            reason: String::new(),
            since: None,
            needs: None,
        })
    }

    /// DESIGN.md's decision table, row by row.
    #[test]
    fn the_decision_table() {
        use AlarmState::*;
        use GateMode::*;
        use OnInsufficientData as D;
        use Verdict::*;
        let unreadable = Reading::Unreadable("throttled".into());
        let cases = [
            (Enforce, D::Pass, alarm(Ok), 0, Pass),
            (DryRun, D::Pass, alarm(Ok), 0, Pass),
            (Manual, D::Pass, alarm(Ok), 0, Pass),
            (Enforce, D::Pass, alarm(Alarm), 0, Fail),
            (DryRun, D::Pass, alarm(Alarm), 0, WouldFail),
            (Manual, D::Pass, alarm(Alarm), 0, AskPerson),
            (Enforce, D::Hold, alarm(InsufficientData), 0, Hold),
            (Enforce, D::Pass, alarm(InsufficientData), 0, Pass),
            (Enforce, D::Fail, alarm(InsufficientData), 0, Fail),
            (DryRun, D::Fail, alarm(InsufficientData), 0, WouldFail),
            (DryRun, D::Pass, alarm(InsufficientData), 0, Pass),
            (Manual, D::Hold, alarm(InsufficientData), 0, Hold),
            (Manual, D::Fail, alarm(InsufficientData), 0, AskPerson),
            (Enforce, D::Pass, unreadable.clone(), 1, Retry),
            (
                Enforce,
                D::Pass,
                unreadable.clone(),
                UNREADABLE_BUDGET,
                Fail,
            ),
            (
                DryRun,
                D::Pass,
                unreadable.clone(),
                UNREADABLE_BUDGET,
                WouldFail,
            ),
            (Manual, D::Pass, unreadable, 1, AskPerson),
        ];
        for (mode, insufficient, reading, polls, expected) in cases {
            assert_eq!(
                decide(&gate(mode, insufficient), &reading, polls),
                expected,
                "{mode:?} {insufficient:?} {reading:?} after {polls} unreadable polls"
            );
        }
    }

    #[test]
    fn a_step_passes_after_its_pause_unless_held_and_holds_at_most_one_more_pause() {
        let pause = Duration::from_secs(60);
        let secs = Duration::from_secs;
        use Verdict::*;
        assert_eq!(step_state(&[Pass], secs(30), pause), StepState::Observing);
        assert_eq!(step_state(&[Pass], secs(60), pause), StepState::Passed);
        assert_eq!(
            step_state(&[Pass, Fail], secs(1), pause),
            StepState::Failed(1)
        );
        assert_eq!(
            step_state(&[AskPerson, Fail], secs(1), pause),
            StepState::Failed(1),
            "a failing enforce gate does not wait for a person"
        );
        assert_eq!(
            step_state(&[AskPerson], secs(1), pause),
            StepState::AwaitingPerson(0)
        );
        assert_eq!(step_state(&[Hold], secs(90), pause), StepState::Observing);
        assert_eq!(
            step_state(&[Hold], secs(120), pause),
            StepState::HeldTooLong(0)
        );
        assert_eq!(
            step_state(&[Retry], secs(600), pause),
            StepState::Observing,
            "retries are bounded by the budget, not the clock"
        );
        assert_eq!(step_state(&[WouldFail], secs(60), pause), StepState::Passed);
    }

    #[test]
    fn a_step_is_watched_as_long_as_its_slowest_enforce_gate_needs() {
        let gate = |name: &str, mode: GateMode| Gate {
            name: name.into(),
            check: crate::config::GateCheck::Alarm(format!("{name}-alarm")),
            insufficient_data: OnInsufficientData::Pass,
            mode,
            slow_at: None,
        };
        let needs = |secs: u64| {
            Reading::Alarm(AlarmReading {
                state: AlarmState::Ok,
                reason: String::new(),
                since: None,
                needs: Some(Duration::from_secs(secs)),
            })
        };
        let pause = Duration::from_secs(3);
        let gates = [
            gate("errors", GateMode::Enforce),
            gate("latency", GateMode::Enforce),
            gate("trial", GateMode::DryRun),
        ];
        assert_eq!(
            watch_for(pause, &gates, &[needs(70), needs(20), needs(600)]),
            (Duration::from_secs(70), Some("errors".into())),
            "the longest enforce gate; a dry-run gate lengthens nothing"
        );
        assert_eq!(
            watch_for(pause, &gates, &[needs(2), needs(1), needs(600)]),
            (pause, None),
            "gates that fit the pause leave it as it is"
        );
        let unknown = Reading::Unreadable("gone".into());
        assert_eq!(
            watch_for(pause, &gates[..1], std::slice::from_ref(&unknown)),
            (pause, None)
        );
    }
}
