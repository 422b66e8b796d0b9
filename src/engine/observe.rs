//! Observing one canary step, or the drain of the replaced group: every gate and the new
//! group's health at each poll, the decision table applied (rollout::gates), dry-run
//! findings recorded, manual gates waiting for a person, and answers from `immune
//! approve`, `reject` and `rollback`. A gate is judged on everything its alarm did in the
//! window, read from the alarm's history, not only on the state seen at a poll: an
//! ALARM that came and went between two polls fails it too.

use super::actions::health;
use super::{Engine, Halt, Watch};
use crate::cloud::{AlarmReading, AlarmState, AlarmTransition};
use crate::config::{show_duration, Fleet};
use crate::rollout::gates::{
    self, decide, shown, step_state, Evidence, Reading, StepState, Verdict,
};
use crate::rollout::pace::{self, Pace};
use crate::rollout::{Awaiting, Event};
use crate::state::{now, AnswerKind};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// The reads of one step (alarms, health, answers) share one budget for transient
/// faults: a streak of failed polls longer than it stops the rollout resumably.
struct Faults {
    since: Option<Instant>,
    budget: Duration,
}

impl Faults {
    fn hit(&mut self, message: String) -> Result<(), Halt> {
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.budget {
            return Err(Halt::Fault(format!(
                "reads kept failing for {}: {message}",
                show_duration(since.elapsed())
            )));
        }
        tracing::info!("transient fault while observing: {message}");
        Ok(())
    }
}

/// How often a step reads the new group's health at the most (the gates are read at every
/// poll): ELB health-checks a target every 5 s at the most often, so reading it every
/// 200 ms poll only loads the API.
const HEALTH_EVERY: Duration = Duration::from_secs(2);

/// What is being observed: a canary step, or the drain after the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Window {
    Step(usize),
    Drain,
}

impl Engine<'_> {
    pub(super) async fn observe(&mut self, fleet: &Fleet, window: Window) -> Result<Event, Halt> {
        let rollout = self.rollout(&fleet.name).clone();
        let spec = &fleet.rollout;
        let mut watch = Watch {
            during: String::new(),
            share: String::new(),
            elapsed: Duration::ZERO,
            pause: Duration::ZERO,
            gates: Vec::new(),
            held_by: None,
        };
        // With a rate, the step's pause is the one the last step's readings set.
        let paced = match window {
            Window::Step(_) => spec.rate,
            Window::Drain => None,
        };
        let step_pause = match paced {
            Some(rate) => rate.clamp(rollout.pace_ms.map_or(spec.pause, Duration::from_millis)),
            None => spec.pause,
        };
        let (mut pause, during, passed) = match window {
            Window::Step(step) => {
                let share = match rollout.workers {
                    Some(workers) => {
                        let (new, _) =
                            crate::rollout::capacity_at(workers.full, rollout.steps[step]);
                        format!("{} of {} instances", new.desired, workers.full.desired)
                    }
                    // What the route gives it: all of it from a route that shared none.
                    None => format!("{}%", rollout.weight.max(rollout.steps[step])),
                };
                watch.during = format!("step {}/{}", step + 1, rollout.steps.len());
                watch.share = format!("{share} on {}", rollout.group);
                self.reporter.line(
                    &fleet.name,
                    &format!(
                        "step {}/{}: {share} on {}, observing for {}",
                        step + 1,
                        rollout.steps.len(),
                        rollout.group,
                        show_duration(step_pause)
                    ),
                );
                (step_pause, format!("step {}", step + 1), Event::StepPassed)
            }
            Window::Drain => {
                // Only a web fleet drains: its worker groups never reach this phase.
                let drain = fleet
                    .traffic
                    .as_ref()
                    .map_or(Duration::ZERO, |t| t.deregistration_delay);
                let previous = rollout.previous.as_ref().map_or("", |p| p.group.as_str());
                watch.during = "drain".into();
                watch.share = format!("{previous} draining, all on {}", rollout.group);
                self.reporter.line(
                    &fleet.name,
                    &format!(
                        "draining {previous} for {}, the gates still watched",
                        show_duration(drain)
                    ),
                );
                (drain, format!("the drain of {previous}"), Event::Drained)
            }
        };
        let step = match window {
            Window::Step(step) => step,
            Window::Drain => rollout.steps.len().saturating_sub(1),
        };
        // The window opened at the shift (or the drain's start) as recorded; a resumed
        // observation keeps judging everything since then.
        let since = rollout.window_from.clone().unwrap_or_else(now);
        let alarms: Vec<String> = spec
            .gates
            .iter()
            .map(|g| g.alarm_name(&rollout.group))
            .collect();
        let target_group = rollout.target_group.clone();
        // A worker fleet's step also waits for the old group's leaving workers, watched
        // like the rest of the step: the group, and how many instances it keeps.
        let leaving = match (window, rollout.workers, &rollout.previous) {
            (Window::Step(step), Some(workers), Some(previous)) if workers.previous.is_some() => {
                let (_, old) = crate::rollout::capacity_at(workers.full, rollout.steps[step]);
                Some((previous.group.clone(), old.desired as usize))
            }
            _ => None,
        };
        let grace = fleet.instances.termination_grace;
        let mut said_waiting = false;
        // `immune promote`: this step passes at the next poll whose gates allow it.
        let mut promote_now = false;
        let started = Instant::now();
        let mut unreadable = vec![0u32; spec.gates.len()];
        // What was last recorded per gate, so a finding is written once, not every poll.
        let mut recorded: Vec<Option<String>> = vec![None; spec.gates.len()];
        // Manual gates a person let through: they pass for the rest of this step (and,
        // after the last one, through the drain), also across a resumed apply.
        let mut approved: Vec<bool> = spec
            .gates
            .iter()
            .map(|g| rollout.approved.contains(&g.name))
            .collect();
        let mut terminal: Option<crate::terminal::Answer> = None;
        // The worst share of its threshold each paced gate read in this step.
        let mut peaks: Vec<Option<f64>> = vec![None; spec.gates.len()];
        let mut faults = Faults {
            since: None,
            budget: self.retry_budget,
        };
        let mut poll_started;
        let mut last_health: Option<Instant> = None;
        loop {
            // Polls keep a fixed schedule: the interval counts from the previous poll's
            // start, not from the end of its work.
            poll_started = Instant::now();
            let poll_time = now();
            let next_poll = poll_started + spec.poll_interval;
            if self.signals.is_interrupted() {
                return Err(Halt::Interrupted);
            }
            let readings = match self.read_gates(&alarms, &since).await {
                Ok(readings) => readings,
                Err(fault) => {
                    self.rollback_asked(fleet, &rollout.group).await?;
                    faults.hit(fault)?;
                    sleep_until(next_poll).await;
                    continue;
                }
            };
            // A step lasts at least as long as its enforce gates need to be able to fail.
            if let Window::Step(_) = window {
                if let (longer, Some(gate)) = gates::watch_for(pause, &spec.gates, &readings) {
                    self.reporter.line(
                        &fleet.name,
                        &format!(
                            "{during} is watched for {}, not {}: gate {gate}'s alarm needs that long before it can go into ALARM",
                            show_duration(longer),
                            show_duration(pause)
                        ),
                    );
                    pause = longer;
                }
            }
            let mut verdicts = Vec::new();
            for (i, gate) in spec.gates.iter().enumerate() {
                unreadable[i] = match readings[i] {
                    Reading::Unreadable(_) => unreadable[i] + 1,
                    Reading::Alarm(_) => 0,
                };
                let verdict = if approved[i] {
                    Verdict::Pass
                } else {
                    decide(gate, &readings[i], unreadable[i])
                };
                if verdict == Verdict::WouldFail {
                    let evidence = Evidence::of(gate, &alarms[i], &readings[i]);
                    if recorded[i].as_deref() != Some(&evidence.state) {
                        recorded[i] = Some(evidence.state.clone());
                        self.note(
                            &fleet.name,
                            format!("dry-run: would roll back: {}", evidence.summary()),
                            Some(evidence),
                        );
                        self.save().await?;
                    }
                }
                verdicts.push(verdict);
            }
            if paced.is_some() {
                self.read_pressures(fleet, &rollout.group, &since, &mut peaks)
                    .await;
            }
            // The gates decide first: a failing one needs no slower health read.
            let mut state = step_state(&verdicts, started.elapsed(), pause);
            // A person's hold keeps a step from passing; a promote passes it early. Neither
            // overrides a failing gate or one waiting for a person.
            let current = self.rollout(&fleet.name).clone();
            if let (StepState::Passed, Some(_)) = (&state, &current.held_by) {
                state = StepState::Observing;
            }
            if (promote_now || current.promoted)
                && matches!(state, StepState::Observing | StepState::HeldTooLong(_))
            {
                state = StepState::Passed;
            }
            // Health changes no faster than ELB checks it (every 5 s at the most): read
            // every few seconds, and always before a step passes.
            let health_due = last_health.is_none_or(|at: Instant| at.elapsed() >= HEALTH_EVERY)
                || matches!(state, StepState::Passed);
            if !matches!(state, StepState::Failed(_)) && health_due {
                last_health = Some(Instant::now());
                let (healthy, wanted) =
                    match health(self.cloud, &rollout.group, target_group.as_deref()).await {
                        Ok(counts) => counts,
                        Err(Halt::Fault(fault)) => {
                            self.rollback_asked(fleet, &rollout.group).await?;
                            faults.hit(fault)?;
                            sleep_until(next_poll).await;
                            continue;
                        }
                        Err(halt) => return Err(halt),
                    };
                if healthy < wanted {
                    return Err(Halt::Failed(format!(
                        "only {healthy} of {wanted} new instances are healthy during {during}"
                    )));
                }
            }
            // The pace: a step near a threshold is watched longer; one far below all of
            // them makes the next one shorter. A person's promote is not second-guessed.
            if let (StepState::Passed, Some(rate), false) =
                (&state, paced, promote_now || current.promoted)
            {
                // Each gate by its worst reading in the step: polls before its first
                // datapoint arrived do not count as no data.
                let worst = spec
                    .gates
                    .iter()
                    .zip(&peaks)
                    .filter_map(|(g, peak)| Some(pace::pressure(*peak, g.slow_at?)))
                    .max();
                let last = matches!(window, Window::Step(s) if s + 1 == rollout.steps.len());
                match pace::at_end(&rate, pause, worst) {
                    Pace::Stretch { pause: longer } => {
                        self.rollout(&fleet.name).pace_ms = Some(longer.as_millis() as u64);
                        self.note(
                            &fleet.name,
                            format!(
                                "pace: {}: {during} stretched to {} (max_pause {})",
                                pace_readings(spec, &peaks),
                                show_duration(longer),
                                show_duration(rate.max_pause)
                            ),
                            None,
                        );
                        self.save().await?;
                        pause = longer;
                        state = StepState::Observing;
                    }
                    Pace::Pass { next } if next != pause && !last => {
                        self.rollout(&fleet.name).pace_ms = Some(next.as_millis() as u64);
                        self.note(
                            &fleet.name,
                            format!(
                                "pace: {} for all of {during}: the next step is watched for {} (was {}, min_pause {})",
                                pace_readings(spec, &peaks),
                                show_duration(next),
                                show_duration(pause),
                                show_duration(rate.min_pause)
                            ),
                            None,
                        );
                    }
                    Pace::Pass { .. } => {}
                }
            }
            // The step ends only once the old group's leaving workers are gone.
            if let (StepState::Passed, Some((old, keep))) = (&state, &leaving) {
                let count = match self.cloud.group(old).await {
                    Ok(status) => status.map_or(0, |g| g.instances.len()),
                    Err(e) if e.is_transient() => {
                        faults.hit(e.to_string())?;
                        sleep_until(next_poll).await;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                if count > *keep {
                    state = StepState::Observing;
                    let limit = pause + grace + super::actions::DRAIN_MARGIN;
                    if started.elapsed() >= limit {
                        return Err(Halt::Fault(format!(
                            "{old} still runs {count} instances {} into {during}, where it keeps {keep} (termination_grace {}): Auto Scaling has not terminated its leaving instances",
                            show_duration(started.elapsed()),
                            show_duration(grace)
                        )));
                    }
                    if !said_waiting {
                        said_waiting = true;
                        self.reporter.line(
                            &fleet.name,
                            &format!(
                                "{during}: waiting for {} leaving worker{} of {old} to finish (within {}), the gates still watched",
                                count - keep,
                                super::plural((count - keep) as u32),
                                show_duration(grace)
                            ),
                        );
                    }
                }
            }
            self.tally(fleet, &readings, spec.poll_interval);
            watch.pause = pause;
            watch.elapsed = started.elapsed().min(pause);
            watch.held_by = self.rollout(&fleet.name).held_by.clone();
            watch.gates = spec
                .gates
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    (
                        g.name.clone(),
                        shown(&verdicts[i], &readings[i], approved[i]),
                    )
                })
                .collect();
            self.reporter.watch(&fleet.name, &watch);
            match state {
                StepState::Passed => {
                    self.clear_awaiting(fleet).await?;
                    // The next window starts where this poll looked from.
                    self.rollout(&fleet.name).window_from = Some(poll_time);
                    let summary = passed_summary(spec, &readings, &verdicts);
                    let what = match window {
                        Window::Step(_) => format!("step passed: {summary}"),
                        Window::Drain => format!("drained: {summary}"),
                    };
                    self.note(&fleet.name, what, None);
                    return Ok(passed);
                }
                StepState::Failed(i) => {
                    self.tally_failed(fleet, i);
                    let evidence = Evidence::of(&spec.gates[i], &alarms[i], &readings[i]);
                    return Err(Halt::GateFailed(
                        format!("gate {} failed: {}", spec.gates[i].name, evidence.detail()),
                        Box::new(evidence),
                    ));
                }
                StepState::HeldTooLong(i) => {
                    self.tally_failed(fleet, i);
                    let evidence = Evidence::of(&spec.gates[i], &alarms[i], &readings[i]);
                    return Err(Halt::GateFailed(
                        format!(
                            "gate {} had no data for {} (insufficient_data = \"hold\"): {}",
                            spec.gates[i].name,
                            show_duration(started.elapsed()),
                            evidence.detail()
                        ),
                        Box::new(evidence),
                    ));
                }
                StepState::AwaitingPerson(i) => {
                    if self.rollout(&fleet.name).awaiting.is_none() {
                        let evidence = Evidence::of(&spec.gates[i], &alarms[i], &readings[i]);
                        self.rollout(&fleet.name).awaiting = Some(Awaiting {
                            gate: spec.gates[i].name.clone(),
                            step,
                            evidence: evidence.summary(),
                            since: now(),
                        });
                        // A reject holds an irreversible release that traffic reached.
                        let reject = match rollout.irreversibly_reached() {
                            true => "to stop it (irreversible: it is held, not rolled back)",
                            false => "to roll back",
                        };
                        self.note(
                            &fleet.name,
                            format!(
                                "waiting for a person: {}; run `immune approve {name}` to go on or `immune reject {name}` {reject}",
                                evidence.summary(),
                                name = fleet.name
                            ),
                            Some(evidence.clone()),
                        );
                        self.save().await?;
                        self.reporter.notice(crate::notify::Notice {
                            kind: crate::config::NoticeKind::AwaitingApproval,
                            fleet: fleet.name.clone(),
                            text: format!(
                                "waiting for a person during {during} of {}: {}; run `immune approve {name}` to go on or `immune reject {name}` {reject}",
                                rollout.group,
                                evidence.summary(),
                                name = fleet.name
                            ),
                            release: Some(rollout.release.clone()),
                            group: Some(rollout.group.clone()),
                            locked: false,
                        });
                    }
                    // Asked at the terminal when no other fleet's question is open there;
                    // else on a later poll, and `immune approve` answers meanwhile.
                    if self.signals.interactive && terminal.is_none() {
                        if let Some(answer) = crate::terminal::ask_yes_no() {
                            self.reporter.line(
                                &fleet.name,
                                &format!("gate {} needs a person. Go on with the release? Only 'yes' goes on, 'no' rolls back.", spec.gates[i].name),
                            );
                            terminal = Some(answer);
                        }
                    }
                }
                StepState::Observing => {}
            }
            // Answers: from the terminal, or left by `immune approve/reject/rollback`.
            let answer = match self
                .backend
                .pending_answer(&fleet.name, &rollout.group)
                .await
            {
                Ok(answer) => answer,
                Err(e) => {
                    faults.hit(format!("reading answers: {e}"))?;
                    sleep_until(next_poll).await;
                    continue;
                }
            };
            faults.since = None;
            let from_terminal = terminal
                .as_mut()
                .and_then(|rx| rx.try_recv().ok())
                .map(|line| line == "yes");
            let (kind, by) = match (answer, from_terminal) {
                (Some(answer), _) => {
                    let _ = self.backend.clear_answer(&fleet.name).await;
                    (answer.kind, answer.by)
                }
                (None, Some(yes)) => (
                    if yes {
                        AnswerKind::Approve
                    } else {
                        AnswerKind::Reject
                    },
                    format!("{} at the terminal", crate::state::operator()),
                ),
                (None, None) => {
                    sleep_until(next_poll).await;
                    continue;
                }
            };
            let awaiting = self.rollout(&fleet.name).awaiting.clone();
            match (kind, awaiting) {
                (AnswerKind::Rollback, _) => return Err(Halt::RollbackAsked(by)),
                (AnswerKind::Reject, Some(waiting)) => {
                    return Err(Halt::Failed(format!(
                        "gate {} rejected by {by}: {}",
                        waiting.gate, waiting.evidence
                    )))
                }
                (AnswerKind::Approve, Some(waiting)) => {
                    if let Some(i) = spec.gates.iter().position(|g| g.name == waiting.gate) {
                        approved[i] = true;
                        self.rollout(&fleet.name)
                            .approved
                            .push(waiting.gate.clone());
                    }
                    terminal = None;
                    self.rollout(&fleet.name).awaiting = None;
                    self.note(
                        &fleet.name,
                        format!("gate {} approved by {by}; going on", waiting.gate),
                        None,
                    );
                    self.save().await?;
                }
                (AnswerKind::Pause, _) => {
                    self.rollout(&fleet.name).held_by = Some(by.clone());
                    self.note(
                        &fleet.name,
                        format!(
                            "paused by {by}: {during} holds until `immune resume {}` (the gates are still watched)",
                            fleet.name
                        ),
                        None,
                    );
                    self.save().await?;
                }
                (AnswerKind::Resume, _) => {
                    if self.rollout(&fleet.name).held_by.take().is_some() {
                        self.note(&fleet.name, format!("resumed by {by}"), None);
                        self.save().await?;
                    }
                }
                (AnswerKind::Promote, _) => {
                    promote_now = true;
                    let was_held = self.rollout(&fleet.name).held_by.take().is_some();
                    self.note(
                        &fleet.name,
                        format!(
                            "promoted by {by}: {during} passes now if its gates allow{}",
                            if was_held {
                                " (the pause is lifted)"
                            } else {
                                ""
                            }
                        ),
                        None,
                    );
                    self.save().await?;
                }
                (AnswerKind::PromoteFull, _) => {
                    let rollout = self.rollout(&fleet.name);
                    rollout.promoted = true;
                    let was_held = rollout.held_by.take().is_some();
                    self.note(
                        &fleet.name,
                        format!(
                            "promoted in full by {by}: every remaining step passes as soon as its gates allow{}",
                            if was_held { " (the pause is lifted)" } else { "" }
                        ),
                        None,
                    );
                    self.save().await?;
                }
                (kind, None) => self.note(
                    &fleet.name,
                    format!("ignored {kind:?} from {by}: no gate is waiting for a person"),
                    None,
                ),
            }
        }
    }

    /// Every gate's reading over the window since `since`, or the transient fault that
    /// kept them from being read. An alarm that is not in ALARM now but went into it
    /// since `since` reads as ALARM at that time. An error that asking again will not
    /// change (access denied) is a reading of its own, judged by the decision table.
    async fn read_gates(&self, alarms: &[String], since: &str) -> Result<Vec<Reading>, String> {
        if alarms.is_empty() {
            return Ok(Vec::new());
        }
        let found = match self.cloud.alarms(alarms).await {
            Ok(found) => found,
            Err(e) if e.is_transient() => return Err(e.to_string()),
            Err(e) => {
                return Ok(alarms
                    .iter()
                    .map(|_| Reading::Unreadable(e.to_string()))
                    .collect())
            }
        };
        // Only an alarm out of ALARM now whose state changed in the window (or about
        // then: the clocks may differ) can have gone into ALARM and out again between
        // two polls: only those cost a history call. A steady alarm costs none.
        let window = crate::state::parse_time(since).map(|at| at - time::Duration::minutes(5));
        let changed: BTreeSet<String> = alarms
            .iter()
            .filter(|name| match found.get(*name) {
                Some(r) if r.state == AlarmState::Alarm => false,
                Some(r) => match (
                    r.since.as_deref().and_then(crate::state::parse_time),
                    window,
                ) {
                    (Some(at), Some(window)) => at >= window,
                    _ => true,
                },
                None => false,
            })
            .cloned()
            .collect();
        // An alarm whose state has not changed since its history was last read in this
        // window has no new history: every transition moves its state's timestamp, which
        // comes from AWS's clock, so no margin is needed. What that read found stands.
        let mut transitions = Vec::new();
        let mut unread = Vec::new();
        {
            let read = self.histories.lock().unwrap();
            for name in changed {
                let alarm_since = found.get(&name).and_then(|r| r.since.clone());
                match read.get(&name) {
                    Some(h)
                        if h.window == since
                            && alarm_since.is_some()
                            && h.alarm_since == alarm_since =>
                    {
                        transitions.extend(h.transitions.iter().cloned())
                    }
                    _ => unread.push(name),
                }
            }
        }
        if !unread.is_empty() {
            // The states alone still decide when the history cannot be read: an alarm in
            // ALARM now fails its gate whatever the history call does. Only a pulse
            // between two polls goes unseen until the history answers again.
            match self.cloud.alarm_transitions(&unread, since).await {
                Ok(read) => {
                    let mut histories = self.histories.lock().unwrap();
                    for name in unread {
                        let alarm_since = found.get(&name).and_then(|r| r.since.clone());
                        let of_alarm: Vec<AlarmTransition> =
                            read.iter().filter(|t| t.alarm == name).cloned().collect();
                        histories.insert(
                            name,
                            History {
                                window: since.to_string(),
                                alarm_since,
                                transitions: of_alarm,
                            },
                        );
                    }
                    transitions.extend(read);
                }
                Err(e) => {
                    tracing::warn!(
                        "alarm history unreadable, judging the alarms by their state: {e}"
                    );
                }
            }
        }
        Ok(alarms
            .iter()
            .map(|name| in_window(reading(&found, name), name, &transitions))
            .collect())
    }

    /// Adds one poll to each gate's tally in the release's history entry (saved with
    /// the next decision), for `immune gates`.
    fn tally(&mut self, fleet: &Fleet, readings: &[Reading], poll: Duration) {
        let Some(entry) = self
            .state
            .fleets
            .get_mut(&fleet.name)
            .and_then(|f| f.history.last_mut())
        else {
            return;
        };
        let poll_ms = poll.as_millis() as u64;
        for (gate, reading) in fleet.rollout.gates.iter().zip(readings) {
            let tally = entry.gates.entry(gate.name.clone()).or_default();
            tally.mode = crate::plan::word(&gate.mode);
            tally.polls += 1;
            tally.watched_ms += poll_ms;
            match reading {
                Reading::Alarm(r) if r.state == AlarmState::Alarm => {
                    tally.fired = true;
                    tally.flapped |= r.reason.starts_with(BETWEEN_POLLS);
                }
                Reading::Alarm(r) if r.state == AlarmState::InsufficientData => {
                    tally.no_data_ms += poll_ms
                }
                Reading::Unreadable(_) => tally.no_data_ms += poll_ms,
                Reading::Alarm(_) => {}
            }
        }
    }

    fn tally_failed(&mut self, fleet: &Fleet, gate: usize) {
        let name = &fleet.rollout.gates[gate].name;
        if let Some(tally) = self
            .state
            .fleets
            .get_mut(&fleet.name)
            .and_then(|f| f.history.last_mut())
            .and_then(|e| e.gates.get_mut(name))
        {
            tally.failed = true;
        }
    }

    /// Reads the metric of every gate with `slow_at` over the step so far; keeps each
    /// one's worst share of its threshold in `peaks`.
    async fn read_pressures(
        &self,
        fleet: &Fleet,
        group: &str,
        since: &str,
        peaks: &mut [Option<f64>],
    ) {
        for (i, gate) in fleet.rollout.gates.iter().enumerate() {
            if gate.slow_at.is_none() {
                continue;
            }
            let share = match self
                .cloud
                .alarm_metric_peak(&gate.alarm_name(group), since)
                .await
            {
                Ok(Some(peak)) => peak
                    .value
                    .map(|v| pace::share(v, peak.threshold, peak.comparison)),
                // Unreadable now: no data, which changes no pace; the alarm still judges.
                Ok(None) | Err(_) => None,
            };
            if let Some(share) = share {
                peaks[i] = Some(peaks[i].map_or(share, |p: f64| p.max(share)));
            }
        }
    }

    /// While reads fail: a rollback asked for by `immune rollback` is still heard.
    async fn rollback_asked(&self, fleet: &Fleet, group: &str) -> Result<(), Halt> {
        match self.backend.pending_answer(&fleet.name, group).await {
            Ok(Some(answer)) if answer.kind == AnswerKind::Rollback => {
                let _ = self.backend.clear_answer(&fleet.name).await;
                Err(Halt::RollbackAsked(answer.by))
            }
            _ => Ok(()),
        }
    }

    async fn clear_awaiting(&mut self, fleet: &Fleet) -> Result<(), Halt> {
        if self.rollout(&fleet.name).awaiting.take().is_some() {
            self.save().await?;
        }
        Ok(())
    }
}

/// What one alarm's history held over a step's window when it was last read, and the
/// state timestamp the alarm had then: while that timestamp stays, nothing was added.
#[derive(Debug)]
pub(super) struct History {
    window: String,
    alarm_since: Option<String>,
    transitions: Vec<AlarmTransition>,
}

/// How a reading starts when the alarm's history, not its state, showed the ALARM.
const BETWEEN_POLLS: &str = "went into ALARM at";

/// The reading over the window: the state now, or the first ALARM the window saw when
/// the alarm has left it again.
fn in_window(now: Reading, alarm: &str, transitions: &[AlarmTransition]) -> Reading {
    let Reading::Alarm(current) = &now else {
        return now;
    };
    if current.state == AlarmState::Alarm {
        return now;
    }
    match transitions.iter().find(|t| t.alarm == alarm) {
        Some(t) => Reading::Alarm(AlarmReading {
            state: AlarmState::Alarm,
            reason: format!(
                "{BETWEEN_POLLS} {} ({}) and is {} again",
                t.at,
                t.reason,
                match current.state {
                    AlarmState::Ok => "OK",
                    _ => "INSUFFICIENT_DATA",
                }
            ),
            since: Some(t.at.clone()),
            needs: current.needs,
        }),
        None => now,
    }
}

/// What a passed step saw, truthfully: "every gate OK" only when every gate was OK.
fn passed_summary(
    spec: &crate::config::RolloutSpec,
    readings: &[Reading],
    verdicts: &[Verdict],
) -> String {
    let mut notes = Vec::new();
    for ((gate, reading), verdict) in spec.gates.iter().zip(readings).zip(verdicts) {
        let state = match reading {
            Reading::Alarm(r) => r.state,
            Reading::Unreadable(_) => AlarmState::InsufficientData,
        };
        match (verdict, state) {
            (Verdict::Pass, AlarmState::Ok) => {}
            (Verdict::WouldFail, _) => notes.push(format!(
                "gate {} would have rolled back (dry-run)",
                gate.name
            )),
            (Verdict::Pass, AlarmState::InsufficientData) => notes.push(format!(
                "gate {} had no data (insufficient_data = \"pass\")",
                gate.name
            )),
            (Verdict::Pass, AlarmState::Alarm) => {
                notes.push(format!("gate {} was let through by a person", gate.name))
            }
            _ => {}
        }
    }
    match (spec.gates.is_empty(), notes.is_empty()) {
        (true, _) => "no gates to watch".into(),
        (false, true) => "every gate OK".into(),
        (false, false) => notes.join("; "),
    }
}

fn reading(found: &BTreeMap<String, AlarmReading>, name: &str) -> Reading {
    // Not taken out: two gates may watch one alarm (an enforce gate and a dry-run one).
    match found.get(name).cloned() {
        Some(alarm) => Reading::Alarm(alarm),
        None => Reading::Unreadable(format!("alarm {name} does not exist")),
    }
}

/// The readings behind a change of pace: each paced gate's worst share of its threshold.
fn pace_readings(spec: &crate::config::RolloutSpec, peaks: &[Option<f64>]) -> String {
    let read: Vec<String> = spec
        .gates
        .iter()
        .zip(peaks)
        .filter_map(|(g, peak)| {
            let slow_at = g.slow_at?;
            Some(match peak {
                Some(share) => format!(
                    "gate {} read {:.0}% of its threshold (slow_at {:.0}%)",
                    g.name,
                    share * 100.0,
                    slow_at * 100.0
                ),
                None => format!("gate {} had no data", g.name),
            })
        })
        .collect();
    read.join(", ")
}
