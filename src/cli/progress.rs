//! The progress view, on a terminal: one live row per fleet being observed (its step, its
//! share, the time left in the pause and each gate's state), with the text view's lines
//! printed above the rows. Without a terminal the text view prints its lines alone.

use crate::config::show_duration;
use crate::engine::{Reporter, Watch};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::sync::Mutex;

pub struct Progress {
    multi: MultiProgress,
    rows: Mutex<BTreeMap<String, ProgressBar>>,
    style: ProgressStyle,
}

impl Progress {
    pub fn new(color: bool) -> Progress {
        let template = match color {
            true => "{prefix:.bold} [{bar:24.cyan/blue}] {msg}",
            false => "{prefix} [{bar:24}] {msg}",
        };
        Progress {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            rows: Mutex::new(BTreeMap::new()),
            style: ProgressStyle::with_template(template)
                .expect("the template is valid")
                .progress_chars("=> "),
        }
    }

    /// The fleet's row goes: its change has ended (or stopped).
    pub fn finish(&self, fleet: &str) {
        if let Some(row) = self.rows.lock().expect("not poisoned").remove(fleet) {
            row.finish_and_clear();
            self.multi.remove(&row);
        }
    }

    /// Every row goes, before a prompt or the end of the command.
    pub fn clear(&self) {
        let rows: Vec<String> = self
            .rows
            .lock()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect();
        for fleet in rows {
            self.finish(&fleet);
        }
    }
}

/// The row's words after the bar: time left, then each gate.
pub fn describe(watch: &Watch) -> (String, String) {
    let prefix = format!("{} {}", watch.during, watch.share);
    // Whole seconds, rounded up: "1m20s left" until the pause is over.
    let left = watch.pause.saturating_sub(watch.elapsed);
    let left = std::time::Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0));
    let time = match &watch.held_by {
        Some(by) => format!("PAUSED by {by}"),
        None if left.is_zero() => "pause over".to_string(),
        None => format!("{} left", show_duration(left)),
    };
    let gates: Vec<String> = watch
        .gates
        .iter()
        .map(|(name, state)| format!("{name} {state}"))
        .collect();
    let message = match gates.is_empty() {
        true => format!("{time} · no gates"),
        false => format!("{time} · {}", gates.join(", ")),
    };
    (prefix, message)
}

impl Reporter for Progress {
    fn line(&self, fleet: &str, message: &str) {
        // The rows step aside for a real line (MultiProgress::println would pad it to
        // the terminal's width instead of ending it, which copies and resizes badly).
        self.multi.suspend(|| println!("fleet.{fleet}: {message}"));
    }

    /// A decision ends what the row showed (a step passed or failed, a gate waits): the
    /// row goes, and the next poll brings it back.
    fn decision(&self, fleet: &str, what: &str) {
        self.finish(fleet);
        self.line(fleet, what);
    }

    fn watch(&self, fleet: &str, watch: &Watch) {
        let mut rows = self.rows.lock().expect("not poisoned");
        let (during, message) = describe(watch);
        let row = rows.entry(fleet.to_string()).or_insert_with(|| {
            let row = ProgressBar::new(1).with_style(self.style.clone());
            let row = self.multi.add(row);
            // Redrawn on its own too: an update dropped by the draw rate (a busy
            // machine) is shown at the next tick.
            row.enable_steady_tick(std::time::Duration::from_millis(250));
            row
        });
        row.set_length(watch.pause.as_millis().max(1) as u64);
        row.set_position(watch.elapsed.as_millis() as u64);
        row.set_message(message);
        row.set_prefix(format!("fleet.{fleet} {during}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn watch() -> Watch {
        Watch {
            during: "step 2/4".into(),
            share: "50% on web-v002".into(),
            elapsed: Duration::from_secs(40),
            pause: Duration::from_secs(120),
            gates: vec![
                ("errors".into(), "OK"),
                ("latency".into(), "ALARM (dry-run)"),
            ],
            held_by: None,
        }
    }

    #[test]
    fn a_row_says_the_step_the_time_left_and_every_gate() {
        let (prefix, message) = describe(&watch());
        assert_eq!(prefix, "step 2/4 50% on web-v002");
        assert_eq!(message, "1m20s left · errors OK, latency ALARM (dry-run)");
    }

    #[test]
    fn a_paused_step_says_who_holds_it() {
        let held = Watch {
            held_by: Some("ops".into()),
            gates: Vec::new(),
            ..watch()
        };
        assert_eq!(describe(&held).1, "PAUSED by ops · no gates");
        let over = Watch {
            elapsed: Duration::from_secs(200),
            ..watch()
        };
        assert!(describe(&over).1.starts_with("pause over"));
    }
}
