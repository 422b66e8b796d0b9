//! The update rate: how long each canary step is watched, from what the gates' metrics
//! read (`rollout { rate { min_pause, max_pause } }` and a gate's `slow_at`). The alarms
//! still decide pass or fail; the pace only decides how long a step lasts:
//! - a reading between `slow_at` and the threshold at any poll stretches the current step
//!   (its pause doubles, up to `max_pause`) instead of letting it pass;
//! - every reading of every paced gate far from its threshold (under half of `slow_at`)
//!   for the whole step halves the next step's pause, down to `min_pause`;
//! - no data, or readings in between, change nothing.
//!
//! Pure and deterministic: the same readings give the same pace.

use crate::config::Comparison;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `rollout { rate { ... } }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rate {
    #[serde(with = "crate::config::secs")]
    pub min_pause: Duration,
    #[serde(with = "crate::config::secs")]
    pub max_pause: Duration,
}

impl Rate {
    pub fn clamp(&self, pause: Duration) -> Duration {
        pause.clamp(self.min_pause, self.max_pause)
    }
}

/// How close one reading came to its threshold, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pressure {
    /// Under half of `slow_at`.
    Far,
    /// The metric had no datapoints, or could not be read.
    NoData,
    /// Between half of `slow_at` and `slow_at`.
    Middle,
    /// Between `slow_at` and the threshold.
    Near,
    /// At or over the threshold (the alarm will judge it; the step waits for that).
    Over,
}

/// One reading's share of its threshold: 1.0 is at the threshold, whichever side of it
/// is the bad one.
pub fn share(value: f64, threshold: f64, comparison: Comparison) -> f64 {
    match comparison {
        Comparison::Greater | Comparison::GreaterOrEqual if threshold > 0.0 => value / threshold,
        Comparison::Greater | Comparison::GreaterOrEqual => {
            if value > threshold {
                f64::INFINITY
            } else {
                0.0
            }
        }
        // A floor (requests >= 10): the lower the value, the closer to the alarm.
        Comparison::Less | Comparison::LessOrEqual if value > 0.0 => threshold / value,
        Comparison::Less | Comparison::LessOrEqual => f64::INFINITY,
    }
}

/// Where a reading stands against a gate's `slow_at`.
pub fn pressure(reading: Option<f64>, slow_at: f64) -> Pressure {
    match reading {
        None => Pressure::NoData,
        Some(share) if share >= 1.0 => Pressure::Over,
        Some(share) if share >= slow_at => Pressure::Near,
        Some(share) if share >= slow_at / 2.0 => Pressure::Middle,
        Some(_) => Pressure::Far,
    }
}

/// What the end of a step's pause comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// The step passes; the next one is watched for `next`.
    Pass { next: Duration },
    /// The step goes on until `pause` (counted from its start).
    Stretch { pause: Duration },
}

/// At the end of a step watched for `pause`, with `worst` the worst pressure any paced
/// gate read during it (`None`: no paced gate).
pub fn at_end(rate: &Rate, pause: Duration, worst: Option<Pressure>) -> Pace {
    let pause = rate.clamp(pause);
    match worst {
        Some(Pressure::Near | Pressure::Over) if pause < rate.max_pause => Pace::Stretch {
            pause: rate.clamp(pause.saturating_mul(2)),
        },
        Some(Pressure::Far) => Pace::Pass {
            next: rate.clamp(pause / 2),
        },
        _ => Pace::Pass { next: pause },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rate() -> Rate {
        Rate {
            min_pause: Duration::from_secs(60),
            max_pause: Duration::from_secs(1200),
        }
    }

    #[test]
    fn readings_are_placed_against_slow_at() {
        assert_eq!(pressure(Some(0.1), 0.8), Pressure::Far);
        assert_eq!(pressure(Some(0.5), 0.8), Pressure::Middle);
        assert_eq!(pressure(Some(0.85), 0.8), Pressure::Near);
        assert_eq!(pressure(Some(1.2), 0.8), Pressure::Over);
        assert_eq!(pressure(None, 0.8), Pressure::NoData);
        // 8 errors against a threshold of 10; 40 requests against a floor of 10.
        assert_eq!(share(8.0, 10.0, Comparison::Greater), 0.8);
        assert_eq!(share(40.0, 10.0, Comparison::Less), 0.25);
        assert_eq!(share(0.0, 10.0, Comparison::Less), f64::INFINITY);
        assert_eq!(share(1.0, 0.0, Comparison::Greater), f64::INFINITY);
    }

    #[test]
    fn far_below_halves_the_next_pause_near_stretches_this_one_no_data_changes_nothing() {
        let r = rate();
        let m = |n: u64| Duration::from_secs(60 * n);
        assert_eq!(
            at_end(&r, m(8), Some(Pressure::Far)),
            Pace::Pass { next: m(4) }
        );
        assert_eq!(
            at_end(&r, m(1), Some(Pressure::Far)),
            Pace::Pass { next: m(1) }
        );
        assert_eq!(
            at_end(&r, m(8), Some(Pressure::Near)),
            Pace::Stretch { pause: m(16) }
        );
        assert_eq!(
            at_end(&r, m(16), Some(Pressure::Near)),
            Pace::Stretch { pause: m(20) }
        );
        // At max_pause, a step near its threshold whose alarm never fired passes.
        assert_eq!(
            at_end(&r, m(20), Some(Pressure::Near)),
            Pace::Pass { next: m(20) }
        );
        assert_eq!(
            at_end(&r, m(8), Some(Pressure::Over)),
            Pace::Stretch { pause: m(16) }
        );
        assert_eq!(
            at_end(&r, m(8), Some(Pressure::NoData)),
            Pace::Pass { next: m(8) }
        );
        assert_eq!(
            at_end(&r, m(8), Some(Pressure::Middle)),
            Pace::Pass { next: m(8) }
        );
        assert_eq!(at_end(&r, m(8), None), Pace::Pass { next: m(8) });
    }

    fn any_pressure() -> impl Strategy<Value = Option<Pressure>> {
        prop_oneof![
            Just(None),
            Just(Some(Pressure::Far)),
            Just(Some(Pressure::NoData)),
            Just(Some(Pressure::Middle)),
            Just(Some(Pressure::Near)),
            Just(Some(Pressure::Over)),
        ]
    }

    fn any_verdict() -> impl Strategy<Value = crate::rollout::gates::Verdict> {
        use crate::rollout::gates::Verdict;
        prop_oneof![
            4 => Just(Verdict::Pass),
            1 => Just(Verdict::Retry),
            1 => Just(Verdict::Hold),
            1 => Just(Verdict::WouldFail),
        ]
    }

    proptest! {
        /// A paced step, poll by poll as the engine runs it: it ends only on a poll at
        /// which every gate was read and let it pass, after its (possibly stretched)
        /// pause, and that pause never leaves min_pause..=max_pause.
        #[test]
        fn a_paced_step_ends_only_on_a_full_read_of_every_gate(
            polls in proptest::collection::vec(
                (proptest::collection::vec(any_verdict(), 2), any_pressure()),
                1..80,
            ),
        ) {
            use crate::rollout::gates::{step_state, StepState, Verdict};
            let rate = Rate { min_pause: Duration::from_secs(2), max_pause: Duration::from_secs(16) };
            let mut pause = rate.clamp(Duration::from_secs(4));
            let mut worst = None;
            for (n, (verdicts, pressure)) in polls.iter().enumerate() {
                let observed = Duration::from_secs(n as u64);
                worst = worst.max(*pressure);
                let mut state = step_state(verdicts, observed, pause);
                if state == StepState::Passed {
                    if let Pace::Stretch { pause: longer } = at_end(&rate, pause, worst) {
                        pause = longer;
                        state = StepState::Observing;
                    }
                }
                prop_assert!(pause >= rate.min_pause && pause <= rate.max_pause);
                if state == StepState::Passed {
                    prop_assert!(observed >= pause);
                    prop_assert!(verdicts.iter().all(|v| matches!(v, Verdict::Pass | Verdict::WouldFail)));
                    break;
                }
            }
        }

        /// Whatever the gates read, every pause stays within min_pause and max_pause, and
        /// a step is stretched only up to max_pause, so every step ends.
        #[test]
        fn pauses_stay_within_their_bounds_and_every_step_ends(
            start in 1u64..5000,
            min in 1u64..600,
            span in 0u64..3000,
            steps in proptest::collection::vec(proptest::collection::vec(any_pressure(), 1..8), 1..12),
        ) {
            let rate = Rate {
                min_pause: Duration::from_secs(min),
                max_pause: Duration::from_secs(min + span),
            };
            let mut pause = rate.clamp(Duration::from_secs(start));
            for ends in steps {
                // Each element: the worst reading up to one more end of the pause.
                let mut stretches = 0;
                let mut ended = false;
                for worst in ends.iter().copied().chain(std::iter::repeat_n(Some(Pressure::Near), 64)) {
                    prop_assert!(pause >= rate.min_pause && pause <= rate.max_pause);
                    match at_end(&rate, pause, worst) {
                        Pace::Stretch { pause: longer } => {
                            prop_assert!(longer > pause);
                            pause = longer;
                            stretches += 1;
                        }
                        Pace::Pass { next } => {
                            pause = next;
                            ended = true;
                            break;
                        }
                    }
                }
                prop_assert!(ended, "a step never ended");
                prop_assert!(stretches <= 64);
                prop_assert!(pause >= rate.min_pause && pause <= rate.max_pause);
            }
        }
    }
}
