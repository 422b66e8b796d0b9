//! Gate quality, from history: how each gate judged the releases it watched, and what
//! happened to them after. It shows the false alarms to fix and the problems a gate
//! missed, and which dry-run gates look ready to enforce: the brownfield path of trying
//! candidate metrics in dry-run first, then promoting the stable ones. Pure.

use crate::engine::plural;
use crate::state::{FleetState, HistoryEntry};
use schemars::JsonSchema;
use serde::Serialize;
use std::collections::BTreeMap;

/// Releases a dry-run gate watches before it can be called ready to enforce.
pub const READY_AFTER: u32 = 3;

/// One gate over a fleet's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct GateQuality {
    pub fleet: String,
    pub gate: String,
    /// Its mode at the last release it watched.
    pub mode: String,
    /// Releases it watched.
    pub watched: u32,
    /// Releases it failed in enforce mode: rolled back, or held when irreversible.
    pub fired_enforce: u32,
    /// Releases it would have rolled back in dry-run.
    pub fired_dry_run: u32,
    /// Releases it stopped for a person in manual mode.
    pub asked: u32,
    /// Releases during which its alarm went into ALARM and out again between two polls.
    pub flapping: u32,
    /// Share of its watching time its alarm had no data, in percent.
    pub no_data_percent: u32,
    /// Releases it let through that a person rolled back afterwards: a missed problem.
    pub missed: u32,
    /// Releases it failed that went out unchanged later: likely false alarms.
    pub false_alarms: u32,
    /// Dry-run findings on releases that went well: it would have stopped them.
    pub noise: u32,
    /// What to do about it, in words.
    pub advice: String,
    /// A dry-run gate that looks ready to enforce.
    pub ready_to_enforce: bool,
}

/// Every gate of one fleet, by name, from its history.
pub fn of_fleet(name: &str, fleet: &FleetState) -> Vec<GateQuality> {
    let history = &fleet.history;
    let mut gates: BTreeMap<&str, GateQuality> = BTreeMap::new();
    let mut watched_ms: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (k, entry) in history.iter().enumerate() {
        let undone_by_hand =
            by_hand(entry) || history.get(k + 1).is_some_and(|n| n.outcome == "restored");
        let went_well = entry.outcome == "done" && !undone_by_hand;
        for (gate, tally) in &entry.gates {
            let q = gates.entry(gate).or_insert_with(|| GateQuality {
                fleet: name.to_string(),
                gate: gate.clone(),
                mode: String::new(),
                watched: 0,
                fired_enforce: 0,
                fired_dry_run: 0,
                asked: 0,
                flapping: 0,
                no_data_percent: 0,
                missed: 0,
                false_alarms: 0,
                noise: 0,
                advice: String::new(),
                ready_to_enforce: false,
            });
            q.mode = tally.mode.clone();
            q.watched += 1;
            let time = watched_ms.entry(gate).or_default();
            time.0 += tally.watched_ms;
            time.1 += tally.no_data_ms;
            q.flapping += u32::from(tally.flapped);
            match tally.mode.as_str() {
                "dry-run" if tally.fired => {
                    q.fired_dry_run += 1;
                    q.noise += u32::from(went_well);
                }
                "manual" if tally.fired => q.asked += 1,
                _ if tally.failed => q.fired_enforce += 1,
                _ => {}
            }
            if !tally.fired && undone_by_hand {
                q.missed += 1;
            }
            // Failed, then released unchanged later, or promoted past it by a person (an
            // irreversible release held, then let go on): likely a false alarm.
            if tally.failed
                && (entry.outcome == "done" || released_unchanged_later(entry, &history[k + 1..]))
            {
                q.false_alarms += 1;
            }
        }
    }
    gates
        .into_iter()
        .map(|(gate, mut q)| {
            let (watched, no_data) = watched_ms[gate];
            q.no_data_percent = match watched {
                0 => 0,
                w => (no_data * 100 / w) as u32,
            };
            (q.advice, q.ready_to_enforce) = advise(&q);
            q
        })
        .collect()
}

/// A person rolled the release back because of it (`immune rollback` while it ran); a
/// Ctrl-C's rollback says nothing of the release.
fn by_hand(entry: &HistoryEntry) -> bool {
    entry.outcome == "rolled_back"
        && entry
            .decisions
            .iter()
            .any(|d| d.what.starts_with("rollback asked by") && !d.what.contains("after Ctrl-C"))
}

/// The same release (name and fingerprint) finished later: what failed it was likely
/// not the release.
fn released_unchanged_later(entry: &HistoryEntry, later: &[HistoryEntry]) -> bool {
    !entry.fingerprint.is_empty()
        && later.iter().any(|l| {
            l.outcome == "done" && l.release == entry.release && l.fingerprint == entry.fingerprint
        })
}

fn advise(q: &GateQuality) -> (String, bool) {
    let mut problems = Vec::new();
    if q.flapping > 0 {
        problems.push(format!(
            "its alarm flapped (into ALARM and out between two polls) during {} release{}: give it more datapoints to alarm",
            q.flapping,
            plural(q.flapping)
        ));
    }
    if q.no_data_percent >= 50 {
        problems.push(format!(
            "its alarm had no data {}% of the time: check its metric, or set insufficient_data",
            q.no_data_percent
        ));
    }
    if q.false_alarms > 0 {
        problems.push(format!(
            "{} release{} it failed went out unchanged later: likely false alarms, check its threshold",
            q.false_alarms,
            plural(q.false_alarms)
        ));
    }
    if q.missed > 0 {
        problems.push(format!(
            "it let {} release{} through that a person rolled back: a missed problem, tighten it or add a gate",
            q.missed,
            plural(q.missed)
        ));
    }
    if q.mode == "dry-run" {
        if q.noise > 0 {
            problems.push(format!(
                "it would have stopped {} release{} that went well",
                q.noise,
                plural(q.noise)
            ));
        }
        if problems.is_empty() && q.watched >= READY_AFTER {
            let caught = q.fired_dry_run;
            let note = match caught {
                0 => String::new(),
                n => format!(", and it would have caught {n} bad release{}", plural(n)),
            };
            return (
                format!(
                    "ready to enforce: {} releases watched without a false alarm{note}; set mode = \"enforce\"",
                    q.watched
                ),
                true,
            );
        }
        if problems.is_empty() {
            return (
                format!(
                    "keep watching in dry-run: {} of {READY_AFTER} releases so far",
                    q.watched
                ),
                false,
            );
        }
    }
    match problems.is_empty() {
        true => ("no problems seen".into(), false),
        false => (problems.join("; "), false),
    }
}

/// The report as text, one gate per paragraph.
pub fn render(report: &[GateQuality]) -> String {
    let mut out = String::new();
    for q in report {
        out += &format!(
            "fleet.{} gate {} ({}): watched {} release{}",
            q.fleet,
            q.gate,
            q.mode,
            q.watched,
            plural(q.watched)
        );
        let mut counts = Vec::new();
        for (n, what) in [
            (q.fired_enforce, "failed (rolled back or held)"),
            (q.fired_dry_run, "would have rolled back"),
            (q.asked, "asked a person"),
            (q.flapping, "flapped"),
            (q.missed, "missed"),
            (q.false_alarms, "likely false alarms"),
        ] {
            if n > 0 {
                counts.push(format!("{what} {n}"));
            }
        }
        if q.no_data_percent > 0 {
            counts.push(format!("no data {}% of the time", q.no_data_percent));
        }
        if !counts.is_empty() {
            out += &format!("; {}", counts.join(", "));
        }
        out += &format!("\n  {}\n", q.advice);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Decision, GateTally};

    /// A tally as a test writes it.
    fn tally(mode: &str, fired: bool, failed: bool, flapped: bool) -> GateTally {
        GateTally {
            mode: mode.into(),
            polls: 10,
            watched_ms: 10_000,
            no_data_ms: 0,
            fired,
            flapped,
            failed,
        }
    }

    fn entry(release: &str, outcome: &str, gates: &[(&str, GateTally)]) -> HistoryEntry {
        HistoryEntry {
            group: format!("web-{release}"),
            release: release.into(),
            started_at: "t".into(),
            finished_at: Some("t".into()),
            outcome: outcome.into(),
            image_spec: String::new(),
            fingerprint: format!("f-{release}"),
            gates: gates
                .iter()
                .map(|(name, t)| (name.to_string(), t.clone()))
                .collect(),
            decisions: Vec::new(),
        }
    }

    #[test]
    fn a_quiet_dry_run_gate_is_ready_after_enough_releases_and_a_noisy_one_is_not() {
        let mut fleet = FleetState::default();
        for release in ["v1", "v2", "v3"] {
            fleet.history.push(entry(
                release,
                "done",
                &[
                    ("latency", tally("dry-run", false, false, false)),
                    ("cpu", tally("dry-run", release == "v2", false, false)),
                ],
            ));
        }
        let report = of_fleet("web", &fleet);
        let latency = report.iter().find(|q| q.gate == "latency").unwrap();
        assert!(latency.ready_to_enforce, "{latency:?}");
        assert_eq!(latency.watched, 3);
        let cpu = report.iter().find(|q| q.gate == "cpu").unwrap();
        assert!(!cpu.ready_to_enforce);
        assert_eq!((cpu.fired_dry_run, cpu.noise), (1, 1));
        assert!(cpu
            .advice
            .contains("would have stopped 1 release that went well"));
    }

    #[test]
    fn false_alarms_misses_and_flapping_are_counted_from_what_came_after() {
        let mut fleet = FleetState::default();
        // v2 failed by the gate, then released unchanged: a likely false alarm.
        fleet.history.push(entry(
            "v1",
            "done",
            &[("errors", tally("enforce", false, false, false))],
        ));
        fleet.history.push(entry(
            "v2",
            "rolled_back",
            &[("errors", tally("enforce", true, true, true))],
        ));
        fleet.history.push(entry(
            "v2",
            "done",
            &[("errors", tally("enforce", false, false, false))],
        ));
        // v3 let through, then restored by hand: missed.
        fleet.history.push(entry(
            "v3",
            "done",
            &[("errors", tally("enforce", false, false, false))],
        ));
        fleet.history.push(entry("v2", "restored", &[]));
        // v4 rolled back by a person while it ran: missed too.
        let mut v4 = entry(
            "v4",
            "rolled_back",
            &[("errors", tally("enforce", false, false, false))],
        );
        v4.decisions.push(Decision {
            at: "t".into(),
            what: "rollback asked by ops (immune rollback): rolling back".into(),
            evidence: None,
        });
        fleet.history.push(v4);
        let report = of_fleet("web", &fleet);
        let errors = &report[0];
        assert_eq!(errors.watched, 5);
        assert_eq!(errors.fired_enforce, 1);
        assert_eq!(errors.false_alarms, 1);
        assert_eq!(errors.flapping, 1);
        assert_eq!(errors.missed, 2);
        assert!(
            errors.advice.contains("likely false alarms"),
            "{}",
            errors.advice
        );
        assert!(
            errors.advice.contains("missed problem"),
            "{}",
            errors.advice
        );
        let text = render(&report);
        assert!(
            text.contains("fleet.web gate errors (enforce): watched 5 releases"),
            "{text}"
        );
    }

    #[test]
    fn time_without_data_is_a_share_of_the_time_watched() {
        let mut fleet = FleetState::default();
        let mut t = tally("dry-run", false, false, false);
        t.no_data_ms = 6_000;
        for release in ["v1", "v2", "v3"] {
            fleet
                .history
                .push(entry(release, "done", &[("queue", t.clone())]));
        }
        let q = &of_fleet("web", &fleet)[0];
        assert_eq!(q.no_data_percent, 60);
        assert!(!q.ready_to_enforce, "{q:?}");
    }
}
