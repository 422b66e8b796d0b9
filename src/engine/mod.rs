//! Carries out rollouts: asks the pure state machine for the next action, performs it
//! through the cloud, records the outcome and saves state after every transition.

mod actions;
mod keep;
mod observe;

use observe::Window;
mod update;

use crate::cloud::survey::listener_not_found;
use crate::cloud::{Cloud, CloudError, RouteRef, StandIn, Weight};
use crate::config::{Fleet, Traffic};
use crate::plan::{self, Release};
use crate::rollout::gates::Evidence;
use crate::rollout::{Action, Event, Found, Identity, Kind, Phase, Rollout, Workers};
use crate::state::{now, Answer, AnswerKind, Backend, Decision, State, StateError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where progress lines go: the terminal, or a buffer in tests.
pub trait Reporter: Send + Sync {
    /// What a running action is doing.
    fn line(&self, fleet: &str, message: &str);
    /// A decision, said once the state that records it is saved.
    fn decision(&self, fleet: &str, what: &str) {
        self.line(fleet, what);
    }
    /// An event a team hears of (`notify` blocks), told once its state is saved.
    fn notice(&self, _notice: crate::notify::Notice) {}
    /// Where an observed step stands, after each poll: for a progress view.
    fn watch(&self, _fleet: &str, _watch: &Watch) {}
}

/// An observed step (or drain) after one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    /// `step 2/4` or `drain`.
    pub during: String,
    /// `50% on web-v002` or `2 of 4 instances on worker-v002`.
    pub share: String,
    pub elapsed: std::time::Duration,
    pub pause: std::time::Duration,
    /// Each gate's name and state (`OK`, `ALARM (dry-run)`, `waiting for a person`...).
    pub gates: Vec<(String, &'static str)>,
    /// `immune pause` holds the step: by whom.
    pub held_by: Option<String>,
}

pub struct Stdout;

impl Reporter for Stdout {
    fn line(&self, fleet: &str, message: &str) {
        println!("fleet.{fleet}: {message}");
    }
}

/// What reaches a running rollout from outside the process's own work.
#[derive(Debug, Default)]
pub struct Signals {
    /// Set by the first Ctrl-C: stop at the next safe point.
    pub interrupted: AtomicBool,
    /// A person is at the terminal and can answer a manual gate there.
    pub interactive: bool,
}

impl Signals {
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
    }

    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}

pub use crate::rollout::Outcome;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("fleet {fleet}: {message}")]
    Cloud { fleet: String, message: String },
    /// AWS kept failing past the retry budget: the rollout stopped where it can go on,
    /// traffic back on the previous groups if it had moved, and the fleet is not locked.
    #[error("fleet {fleet}: AWS kept failing, so the rollout stopped where it can go on: {message}\n  {undone}the fleet is not locked: run `immune apply` again to resume")]
    Fault {
        fleet: String,
        message: String,
        /// What was put back before stopping, as a sentence, or empty.
        undone: String,
    },
    /// The release did not start: a gate was already failing. Nothing changed.
    #[error("fleet {fleet}: not released: {message}")]
    NotStarted { fleet: String, message: String },
    /// A step that cannot be undone by rolling back failed; the next apply retries it.
    #[error("fleet {fleet}: {message}\n  state records where it stopped: run `immune apply` again to finish")]
    Unfinished { fleet: String, message: String },
    /// Ctrl-C: stopped at a safe point, state saved.
    #[error("fleet {fleet}: stopped at a safe point during {phase} of {group}")]
    Interrupted {
        fleet: String,
        group: String,
        phase: String,
    },
}

/// Why an action did not produce its event. Each kind has one policy: the release's own
/// failures roll back and lock, refusals roll back without locking, faults are retried
/// and then stop resumably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    /// The release failed its health (or its bake).
    Failed(String),
    /// Failed with the gate reading behind it.
    GateFailed(String, Box<Evidence>),
    /// AWS said no for good: a name held by someone else, a parameter it rejects.
    Refused(String),
    /// What this rollout was about to create already exists with this state's lineage,
    /// though this rollout never asked for it: a stale copy of the state.
    NotMine(String),
    /// Throttling, a 5xx, a timeout: asked again within the retry budget.
    Fault(String),
    /// The state could not be saved: nothing more may be done that it would not record.
    State(String),
    Interrupted,
    /// `immune rollback` asked the running apply to roll back.
    /// By whom.
    RollbackAsked(String),
}

impl From<CloudError> for Halt {
    fn from(e: CloudError) -> Self {
        if e.is_transient() {
            Halt::Fault(e.to_string())
        } else {
            Halt::Refused(e.to_string())
        }
    }
}

impl From<StateError> for Halt {
    fn from(e: StateError) -> Self {
        Halt::State(e.to_string())
    }
}

impl Halt {
    /// The halt in words, for history and errors.
    pub fn message(&self) -> String {
        match self {
            Halt::Failed(m)
            | Halt::GateFailed(m, _)
            | Halt::Refused(m)
            | Halt::NotMine(m)
            | Halt::Fault(m)
            | Halt::State(m) => m.clone(),
            Halt::Interrupted => "interrupted".into(),
            Halt::RollbackAsked(by) => format!("rollback asked by {by}"),
        }
    }
}

/// How long one action may keep meeting transient AWS faults before the rollout stops
/// (resumably): `IMMUNE_RETRY_BUDGET` (`90s`, `5m`), 2 minutes by default.
pub fn retry_budget() -> Duration {
    std::env::var("IMMUNE_RETRY_BUDGET")
        .ok()
        .and_then(|text| crate::config::parse_duration(&text).ok())
        .unwrap_or(Duration::from_secs(120))
}

/// The wait before the next try: the poll interval, doubling, at most 15 seconds.
pub(crate) fn backoff(poll: Duration, attempt: u32) -> Duration {
    let poll = poll.max(Duration::from_millis(1));
    poll.saturating_mul(1 << attempt.min(10))
        .min(Duration::from_secs(15))
}

pub struct Engine<'a> {
    pub cloud: &'a dyn Cloud,
    pub backend: &'a dyn Backend,
    pub state: &'a mut State,
    pub reporter: &'a dyn Reporter,
    pub signals: &'a Signals,
    /// How long an action may meet transient faults before the rollout stops.
    pub retry_budget: Duration,
    /// Decisions recorded but not yet saved: they are said only once saved.
    unsaid: Vec<(String, String)>,
    /// Each gate alarm's history as last read in its step (see `read_gates`).
    histories: std::sync::Mutex<std::collections::BTreeMap<String, observe::History>>,
}

impl<'a> Engine<'a> {
    pub fn new(
        cloud: &'a dyn Cloud,
        backend: &'a dyn Backend,
        state: &'a mut State,
        reporter: &'a dyn Reporter,
        signals: &'a Signals,
    ) -> Self {
        Engine {
            cloud,
            backend,
            state,
            reporter,
            signals,
            retry_budget: retry_budget(),
            unsaid: Vec::new(),
            histories: Default::default(),
        }
    }
}

impl Engine<'_> {
    /// Starts a planned release of `fleet` and drives it to its end.
    pub async fn release(
        &mut self,
        fleet: &Fleet,
        release: &Release,
    ) -> Result<Outcome, EngineError> {
        // A worker fleet has no route: its canary moves capacity.
        let (listener_arn, previous_weights, stand_in) = match &fleet.traffic {
            Some(traffic) => self.live_weights(fleet, traffic).await?,
            None => (String::new(), Vec::new(), None),
        };
        // Baseline: a gate failing before anything starts is not this release's doing.
        let failing = self
            .gates_already_failing(fleet, &release.group, true)
            .await
            .map_err(|halt| self.not_started(fleet, halt))?;
        if let Some(why) = failing {
            return Err(EngineError::NotStarted {
                fleet: fleet.name.clone(),
                message: format!(
                    "{why} before release {} started; it is not the release's fault, so nothing was launched, no traffic moved and the fleet is not locked\n  run `immune apply` again once the alarm is OK",
                    release.release
                ),
            });
        }
        let replaced = self
            .state
            .fleets
            .get(&fleet.name)
            .and_then(|f| f.replaced());
        let workers = match fleet.is_worker() {
            true => {
                let group = replaced.as_ref().map(|p| p.group.clone());
                Some(self.worker_capacities(fleet, group).await?)
            }
            false => None,
        };
        let recorded = self.state.fleets.entry(fleet.name.clone()).or_default();
        let mut rollout = Rollout::new(
            Identity {
                group: release.group.clone(),
                seq: release.seq,
                release: release.release.clone(),
                fingerprint: release.fingerprint.clone(),
                bake: release.bake.clone(),
            },
            fleet.rollout.steps.clone(),
            listener_arn,
            previous_weights,
            replaced,
        );
        rollout.keep_previous = fleet.rollout.keep_previous > 0;
        rollout.stand_in = stand_in;
        rollout.workers = workers;
        rollout.irreversible = fleet.irreversible;
        rollout.image_spec = plan::image_spec(fleet);
        recorded.start_release(rollout, &now());
        recorded.region = Some(self.cloud.region());
        self.note(
            &fleet.name,
            format!(
                "starting {}release {} as {}",
                if fleet.irreversible {
                    "irreversible "
                } else {
                    ""
                },
                release.release,
                release.group
            ),
            None,
        );
        self.save().await?;
        self.drive(fleet).await
    }

    /// What a worker fleet's canary shares out: the fleet's capacity (with scaling
    /// policies, as large as the replaced group runs now) and the replaced group's
    /// capacity, which a rollback gives back. Read through transient faults.
    async fn worker_capacities(
        &self,
        fleet: &Fleet,
        replaced: Option<String>,
    ) -> Result<Workers, EngineError> {
        let configured = fleet.instances.capacity;
        let Some(replaced) = replaced else {
            return Ok(Workers {
                full: configured,
                previous: None,
            });
        };
        let read = || async { Ok::<_, Halt>(self.cloud.group(&replaced).await?) };
        let running = actions::with_retries(fleet.rollout.poll_interval, self.retry_budget, read)
            .await
            .map_err(|halt| self.not_started(fleet, halt))?
            .map(|g| g.capacity);
        let scaled = !fleet.instances.scaling.is_empty();
        let full = running.map_or(configured, |running| {
            plan::scaled_desired(configured, running, scaled)
        });
        Ok(Workers {
            full,
            previous: running,
        })
    }

    /// The listener and the weights traffic goes back to, read through transient faults.
    /// A listener that forwards nowhere is refused: a rollback would have nowhere to send
    /// traffic.
    async fn live_weights(
        &self,
        fleet: &Fleet,
        traffic: &Traffic,
    ) -> Result<(String, Vec<Weight>, Option<StandIn>), EngineError> {
        // The batched read a plan makes, for one route. After the plan in this process
        // found it, its rule (or listener) is read by ARN and checked: two small calls
        // where looking for it reads every rule of the listener.
        let wanted: RouteRef = (traffic.listener.clone(), traffic.rule_priority);
        let read = || async {
            let route = self
                .cloud
                .routes(std::slice::from_ref(&wanted))
                .await?
                .remove(&wanted)
                .unwrap_or_else(|| Err(listener_not_found(&traffic.listener)))?;
            // Target groups at weight 0 included: they stay in the forward as they are.
            let weights = route.weights;
            // A fresh load balancer answers with a fixed response (or a redirect) until
            // something is deployed: a valid start, put back if the release is undone.
            // The read has it exactly when no target group has weight.
            Ok::<_, Halt>((route.arn, weights, route.stand_in))
        };
        let (route, weights, stand_in) =
            actions::with_retries(fleet.rollout.poll_interval, self.retry_budget, read)
                .await
                .map_err(|halt| self.not_started(fleet, halt))?;
        if weights.iter().all(|w| w.weight == 0) && stand_in.is_none() {
            let action = match traffic.rule_priority {
                Some(_) => "the rule's action",
                None => "its default action",
            };
            return Err(EngineError::Cloud {
                fleet: fleet.name.clone(),
                message: format!(
                    "{} neither forwards to a target group nor answers with a fixed response or a redirect, so there would be nothing to send traffic back to; point {action} at a target group, a fixed response or a redirect first",
                    traffic.route()
                ),
            });
        }
        Ok((route, weights, stand_in))
    }

    /// A read before a rollout started failed: nothing to undo, nothing locked.
    fn not_started(&self, fleet: &Fleet, halt: Halt) -> EngineError {
        match halt {
            Halt::Fault(message) => EngineError::Fault {
                fleet: fleet.name.clone(),
                message,
                undone: "nothing was started; ".into(),
            },
            other => EngineError::Cloud {
                fleet: fleet.name.clone(),
                message: other.message(),
            },
        }
    }

    /// The target groups the route sends traffic to now, with their weights.
    async fn forwarding(&self, fleet: &Fleet, route_arn: &str) -> Result<Vec<Weight>, EngineError> {
        let read = || async { Ok::<_, Halt>(self.cloud.listener_weights(route_arn).await?) };
        actions::with_retries(fleet.rollout.poll_interval, self.retry_budget, read)
            .await
            .map_err(|halt| self.not_started(fleet, halt))
    }

    /// Continues the fleet's unfinished rollout from its recorded phase.
    pub async fn resume(&mut self, fleet: &Fleet) -> Result<Outcome, EngineError> {
        let rollout = self.rollout(&fleet.name).clone();
        let wanted = (plan::release_name(fleet), plan::fingerprint(fleet));
        let changed = (rollout.release.clone(), rollout.fingerprint.clone()) != wanted;
        if rollout.kind == Kind::Release
            && changed
            && !matches!(rollout.phase, Phase::RollBack { .. } | Phase::Retire)
        {
            // Nothing went wrong with the release itself: undo it without locking the fleet.
            self.record(
                fleet,
                Event::Refused(
                    "the configuration changed while this release was unfinished".into(),
                ),
            )
            .await?;
        }
        self.reporter.line(
            &fleet.name,
            &format!("resuming release {} ({})", rollout.release, rollout.group),
        );
        self.drive(fleet).await
    }

    /// `immune rollback`: rolls an unfinished release back, or, after a finished one,
    /// brings the newest kept group back.
    pub async fn roll_back(&mut self, fleet: &Fleet, by: &str) -> Result<Outcome, EngineError> {
        let recorded = self.state.fleets.entry(fleet.name.clone()).or_default();
        if let Some(rollout) = &recorded.rollout {
            if rollout.phase == Phase::Retire && rollout.kind == Kind::Release {
                return Err(EngineError::Cloud {
                    fleet: fleet.name.clone(),
                    message: format!(
                        "release {} passed every step and is retiring {}; run `immune apply` to finish, then `immune rollback {}` to bring a kept group back",
                        rollout.release,
                        rollout.previous.as_ref().map_or("nothing", |p| p.group.as_str()),
                        fleet.name
                    ),
                });
            }
            // An `immune rollback` that was cut off is finished, not undone: undoing it
            // would put the release it rolls back from in place again.
            if rollout.kind == Kind::Restore && !rollout.phase.is_finished() {
                self.reporter.line(
                    &fleet.name,
                    &format!(
                        "resuming the rollback to {} (release {}) that an earlier `immune rollback` started",
                        rollout.group, rollout.release
                    ),
                );
                return self.drive(fleet).await;
            }
            if !rollout.phase.is_finished() {
                self.record(fleet, Event::RollbackAsked(by.to_string()))
                    .await?;
                return self.drive(fleet).await;
            }
        }
        let recorded = self.state.fleets.entry(fleet.name.clone()).or_default();
        let nothing_kept = || {
            EngineError::Cloud {
            fleet: fleet.name.clone(),
            message: "there is no previous group to go back to: set `keep_previous = 1` in the rollout block so that the next release keeps the one it replaces".into(),
        }
        };
        let (route, active) = match (&recorded.active, recorded.previous.first()) {
            (Some(active), Some(_)) => (active.listener_arn.clone(), active.name.clone()),
            _ => return Err(nothing_kept()),
        };
        // A web fleet's kept group takes the traffic back; a worker fleet's takes the
        // capacity back, as configured, from the active group as it runs now.
        let (weights, workers) = match route {
            Some(route) => (self.forwarding(fleet, &route).await?, None),
            None => {
                let mut workers = self.worker_capacities(fleet, Some(active)).await?;
                workers.full = fleet.instances.capacity;
                (Vec::new(), Some(workers))
            }
        };
        let recorded = self.state.fleets.entry(fleet.name.clone()).or_default();
        let (active, kept) = recorded
            .start_restore(weights, workers, by, &now())
            .ok_or_else(nothing_kept)?;
        self.note(
            &fleet.name,
            format!(
                "rollback requested by {by}: bringing back {} (release {}) in place of {} (release {})",
                kept.name, kept.release, active.name, active.release
            ),
            None,
        );
        self.save().await?;
        self.drive(fleet).await
    }

    fn rollout(&mut self, fleet: &str) -> &mut Rollout {
        self.state
            .fleets
            .get_mut(fleet)
            .and_then(|f| f.rollout.as_mut())
            .expect("a rollout in progress")
    }

    /// Records a decision in the fleet's history. It is said (printed) by the next
    /// [`Engine::save`], never before: a line on the terminal is never ahead of the
    /// state that backs it.
    fn note(&mut self, fleet: &str, what: String, evidence: Option<Evidence>) {
        if let Some(entry) = self
            .state
            .fleets
            .get_mut(fleet)
            .and_then(|f| f.history.last_mut())
        {
            entry.decisions.push(Decision {
                at: now(),
                what: what.clone(),
                evidence,
            });
        }
        self.unsaid.push((fleet.to_string(), what));
    }

    /// Saves the state, then says what was decided since the last save.
    async fn save(&mut self) -> Result<(), StateError> {
        self.backend.save(self.state).await?;
        for (fleet, line) in self.unsaid.drain(..) {
            self.reporter.decision(&fleet, &line);
        }
        Ok(())
    }

    /// Records an action's outcome: the rollout moves on, the decision is saved, then said.
    async fn record(&mut self, fleet: &Fleet, event: Event) -> Result<(), EngineError> {
        let mut what = match (&event, &self.rollout(&fleet.name).previous) {
            // A first release replaces nothing: there is nothing to say.
            (Event::PreviousRetired, None) => None,
            (Event::PreviousRetired, Some(previous)) => {
                Some(format!("previous group {} retired", previous.group))
            }
            _ => describe(&event),
        };
        let was_held = matches!(self.rollout(&fleet.name).phase, Phase::Held { .. });
        // Saved with the event: a NotFound for it soon after means "not yet".
        if let Some(key) = self.rollout(&fleet.name).created_by(&event) {
            self.rollout(&fleet.name).created.insert(key, now());
        }
        self.rollout(&fleet.name).record(event);
        let rollout = self.rollout(&fleet.name);
        if let (Phase::Held { reason, .. }, false) = (&rollout.phase, was_held) {
            let on = match rollout.workers {
                Some(_) => "of the capacity",
                None => "of the traffic",
            };
            what = Some(format!(
                "FAILED: {reason}; the release is irreversible: it keeps {}% {on} and is held, nothing is rolled back on its own",
                rollout.weight
            ));
            // The lock goes into the same save as the hold: no crash between them.
            if let Some(recorded) = self.state.fleets.get_mut(&fleet.name) {
                recorded.hold(&now());
            }
        }
        if let Some(what) = what {
            self.note(&fleet.name, what, None);
        }
        self.save().await?;
        Ok(())
    }

    /// Looks at every poll for a request to roll back left by `immune rollback` for this
    /// rollout, and leaves it in `asked` for the action's next safe point: reading the
    /// backend is async, an action's `stop` check is not. Never ends by itself.
    async fn watch_rollback_asked(
        backend: &dyn Backend,
        fleet: &Fleet,
        group: &str,
        asked: &std::sync::Mutex<Option<Answer>>,
    ) {
        loop {
            if let Ok(Some(answer)) = backend.pending_answer(&fleet.name, group).await {
                if answer.kind == AnswerKind::Rollback {
                    *asked.lock().unwrap_or_else(|e| e.into_inner()) = Some(answer);
                }
            }
            tokio::time::sleep(fleet.rollout.poll_interval).await;
        }
    }

    async fn drive(&mut self, fleet: &Fleet) -> Result<Outcome, EngineError> {
        // When the current action first met a transient fault, and how often since.
        let mut faults: Option<(tokio::time::Instant, u32)> = None;
        let budget = self.retry_budget;
        loop {
            let rollout = self.rollout(&fleet.name).clone();
            let action = rollout.next_action();
            if let (Action::Finished, Phase::Held { .. }) = (&action, &rollout.phase) {
                return self.held(fleet).await;
            }
            if action == Action::Finished {
                return self.finish(fleet).await;
            }
            let rolling_back = matches!(rollout.phase, Phase::RollBack { .. });
            // Safe point: the last transition is saved. A rollback is already the safe
            // direction, so it runs on; the second Ctrl-C still stops the process.
            if !rolling_back && self.signals.is_interrupted() {
                return Err(self.interrupted(fleet, &rollout).await);
            }
            // The gates' window opens just before traffic first moves; each passed step
            // moves it on to the poll that passed it, so no moment goes unjudged.
            if matches!(
                action,
                Action::SetWeights { .. } | Action::SetCapacity { .. }
            ) && self.rollout(&fleet.name).window_from.is_none()
            {
                self.rollout(&fleet.name).window_from = Some(now());
            }
            // Save, then act: what the call may create is in the state before the call,
            // so a crash in between leaves a rollout that finds it again.
            let first_attempt = self.rollout(&fleet.name).begin(&action);
            if first_attempt {
                self.save().await?;
            }
            let rollout = self.rollout(&fleet.name).clone();
            // Just before traffic first moves, the gates are read once more: one that is
            // already failing stops the release, which is not to blame for it.
            let first_shift = rollout.kind == Kind::Release
                && rollout.phase == Phase::Shift { step: 0 }
                && rollout.weight == 0;
            let baseline = match first_shift {
                true => {
                    self.gates_already_failing(fleet, &rollout.group, false)
                        .await
                }
                false => Ok(None),
            };
            let result = match (baseline, &action) {
                (Err(halt), _) => Err(halt),
                (Ok(Some(why)), _) => Err(Halt::Refused(format!(
                    "{why} before any traffic moved to {}: the release is not to blame",
                    rollout.group
                ))),
                (Ok(None), Action::Observe { step }) => {
                    self.observe(fleet, Window::Step(*step)).await
                }
                (Ok(None), Action::Drain) => self.observe(fleet, Window::Drain).await,
                (Ok(None), _) => {
                    let asked = std::sync::Mutex::new(None);
                    let stop = || {
                        if rolling_back {
                            None
                        } else if self.signals.is_interrupted() {
                            Some(Halt::Interrupted)
                        } else {
                            let asked = asked.lock().unwrap_or_else(|e| e.into_inner());
                            asked.clone().map(|a: Answer| Halt::RollbackAsked(a.by))
                        }
                    };
                    let context = actions::Context {
                        cloud: self.cloud,
                        fleet,
                        lineage: &self.state.lineage,
                        first_attempt,
                        rollout: &rollout,
                        reporter: self.reporter,
                        stop: &stop,
                    };
                    let watch =
                        Self::watch_rollback_asked(self.backend, fleet, &rollout.group, &asked);
                    tokio::select! {
                        result = actions::perform(&context, &action) => result,
                        () = watch, if !rolling_back => unreachable!("the watch never ends"),
                    }
                }
            };
            let halt = match result {
                Ok(event) => {
                    faults = None;
                    self.record(fleet, event).await?;
                    continue;
                }
                Err(halt) => halt,
            };
            match halt {
                Halt::Interrupted => return Err(self.interrupted(fleet, &rollout).await),
                Halt::RollbackAsked(by) => {
                    let _ = self.backend.clear_answer(&fleet.name).await;
                    self.record(fleet, Event::RollbackAsked(by)).await?;
                }
                Halt::State(message) => {
                    return Err(EngineError::Unfinished {
                        fleet: fleet.name.clone(),
                        message: format!("the state could not be saved: {message}"),
                    })
                }
                Halt::Fault(message) => {
                    let (since, attempt) = faults.get_or_insert((tokio::time::Instant::now(), 0));
                    *attempt += 1;
                    // A step's observation keeps its own budget for the reads it makes.
                    let observing = matches!(action, Action::Observe { .. } | Action::Drain);
                    if !observing && since.elapsed() < budget {
                        tracing::info!(fleet = %fleet.name, "retrying after a transient fault: {message}");
                        tokio::time::sleep(backoff(fleet.rollout.poll_interval, *attempt)).await;
                        continue;
                    }
                    return Err(self.suspend(fleet, message).await);
                }
                halt if matches!(rollout.phase, Phase::Retire | Phase::RollBack { .. }) => {
                    let message = halt.message();
                    self.note(&fleet.name, format!("failed: {message}"), None);
                    self.save().await?;
                    return Err(EngineError::Unfinished {
                        fleet: fleet.name.clone(),
                        message,
                    });
                }
                Halt::Refused(message) => self.record(fleet, Event::Refused(message)).await?,
                Halt::NotMine(message) => {
                    // Nothing was made by this rollout: the rollback must not go looking
                    // for it under that name, where it would find the other one.
                    self.rollout(&fleet.name).intent = None;
                    self.record(fleet, Event::Refused(message)).await?
                }
                Halt::Failed(message) => self.record(fleet, Event::Failed(message)).await?,
                Halt::GateFailed(message, evidence) => {
                    self.note(
                        &fleet.name,
                        format!("gate failed: {}", evidence.summary()),
                        Some(*evidence),
                    );
                    self.record(fleet, Event::Failed(message)).await?;
                }
            }
        }
    }

    /// The first enforce gate whose alarm is in ALARM now, in words, if any. Before the
    /// release started only the operator's alarms exist (`existing_only`); before the
    /// first shift the release's own metric alarms are read too.
    async fn gates_already_failing(
        &self,
        fleet: &Fleet,
        group: &str,
        existing_only: bool,
    ) -> Result<Option<String>, Halt> {
        use crate::config::{GateCheck, GateMode};
        let gates: Vec<(&str, String)> = fleet
            .rollout
            .gates
            .iter()
            .filter(|g| g.mode == GateMode::Enforce)
            .filter(|g| !existing_only || matches!(g.check, GateCheck::Alarm(_)))
            .map(|g| (g.name.as_str(), g.alarm_name(group)))
            .collect();
        if gates.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = gates.iter().map(|(_, alarm)| alarm.clone()).collect();
        let read = || async { Ok::<_, Halt>(self.cloud.alarms(&names).await?) };
        let found =
            actions::with_retries(fleet.rollout.poll_interval, self.retry_budget, read).await?;
        Ok(gates.iter().find_map(|(gate, alarm)| {
            let reading = found.get(alarm)?;
            (reading.state == crate::cloud::AlarmState::Alarm).then(|| {
                let since = reading
                    .since
                    .as_ref()
                    .map(|s| format!(" since {s}"))
                    .unwrap_or_default();
                format!(
                    "gate {gate}: alarm {alarm} is ALARM ({}){since}",
                    reading.reason
                )
            })
        }))
    }

    /// AWS kept failing past the retry budget: the rollout stops where the next apply can
    /// go on, and the fleet is not locked, since nothing says the release is bad. Traffic
    /// that had moved to the new group goes back first.
    async fn suspend(&mut self, fleet: &Fleet, message: String) -> EngineError {
        let rollout = self.rollout(&fleet.name).clone();
        // A worker fleet's capacity stays where the step left it: giving it back would
        // take workers' jobs away, and the next apply moves it on from there.
        // An irreversible release keeps what reached it: the next apply goes on from there.
        let moved = rollout.kind == Kind::Release
            && !rollout.irreversible
            && rollout.workers.is_none()
            && matches!(rollout.phase, Phase::Shift { .. } | Phase::Observe { .. })
            && (rollout.weight > 0 || matches!(rollout.phase, Phase::Shift { .. }));
        self.note(
            &fleet.name,
            format!("stopped: AWS kept failing: {message}"),
            None,
        );
        let mut undone = String::new();
        if moved {
            let poll = fleet.rollout.poll_interval;
            let back = actions::with_retries(poll, self.retry_budget, || async {
                match (&rollout.stand_in, rollout.previous_weights.is_empty()) {
                    (Some(stand_in), true) => {
                        actions::set_stand_in(self.cloud, &rollout.listener_arn, stand_in).await
                    }
                    _ => {
                        actions::set_weights(
                            self.cloud,
                            &rollout.listener_arn,
                            &rollout.previous_weights,
                            None,
                        )
                        .await
                    }
                }
            })
            .await;
            match back {
                Ok(()) => {
                    self.rollout(&fleet.name).record(Event::Suspended);
                    undone = "traffic is back on the previous groups; ".into();
                    self.note(
                        &fleet.name,
                        "traffic put back on the previous groups; the next apply shifts this step again".into(),
                        None,
                    );
                }
                Err(halt) => {
                    undone = format!(
                        "traffic could not be put back ({}) and stays at {}% on {}; ",
                        halt.message(),
                        rollout.weight,
                        rollout.group
                    );
                    self.note(
                        &fleet.name,
                        format!("could not put traffic back: {}", halt.message()),
                        None,
                    );
                }
            }
        }
        if let (Some(builder), Phase::Bake) = (&rollout.builder, &rollout.phase) {
            // Terminating it would throw the bake away; the next apply finishes with it.
            undone += &format!(
                "builder {builder} keeps running until the next apply finishes the bake (or `immune rollback {}` stops it); ",
                fleet.name
            );
        }
        let _ = self.save().await;
        EngineError::Fault {
            fleet: fleet.name.clone(),
            message,
            undone,
        }
    }

    async fn interrupted(&mut self, fleet: &Fleet, rollout: &Rollout) -> EngineError {
        let phase = rollout.phase.name();
        self.note(
            &fleet.name,
            format!("interrupted: stopped at a safe point during {phase}"),
            None,
        );
        let _ = self.save().await;
        EngineError::Interrupted {
            fleet: fleet.name.clone(),
            group: rollout.group.clone(),
            phase,
        }
    }

    /// A held irreversible release: the fleet is locked with what failed, saved, then
    /// said and told; traffic stays where it is.
    async fn held(&mut self, fleet: &Fleet) -> Result<Outcome, EngineError> {
        let recorded = self.state.fleets.get_mut(&fleet.name).expect("fleet state");
        let outcome = recorded.hold(&now()).expect("a held rollout");
        self.save().await?;
        let rollout = self.rollout(&fleet.name).clone();
        let Outcome::Held { reason, group } = &outcome else {
            unreachable!("hold gives a held outcome")
        };
        self.reporter.notice(crate::notify::Notice {
            kind: crate::config::NoticeKind::Held,
            fleet: fleet.name.clone(),
            text: format!(
                "HELD: irreversible release {} failed with {}% on {group}: {reason}; nothing is rolled back on its own: `immune promote {name}` goes on, `immune rollback {name} --force --reason TEXT` undoes it",
                rollout.release,
                rollout.weight,
                name = fleet.name
            ),
            release: Some(rollout.release.clone()),
            group: Some(group.clone()),
            locked: true,
        });
        Ok(outcome)
    }

    /// `immune promote` of a held irreversible release: the lock goes (recorded), and
    /// the rollout goes on as if the step that failed had passed.
    pub async fn promote_held(
        &mut self,
        fleet: &Fleet,
        by: &str,
        full: bool,
    ) -> Result<Outcome, EngineError> {
        let recorded = self.state.fleets.get_mut(&fleet.name).expect("fleet state");
        let what = recorded
            .promote_held(by, full, &now())
            .ok_or_else(|| EngineError::Cloud {
                fleet: fleet.name.clone(),
                message: "no release is held".into(),
            })?;
        // What held it was seen by the person who promoted it: the gates judge what
        // happens from now on, not the failure again.
        self.rollout(&fleet.name).window_from = Some(now());
        // Recorded in history by promote_held; said once saved.
        self.unsaid.push((fleet.name.clone(), what));
        self.save().await?;
        self.drive(fleet).await
    }

    async fn finish(&mut self, fleet: &Fleet) -> Result<Outcome, EngineError> {
        let recorded = self.state.fleets.get_mut(&fleet.name).expect("fleet state");
        let outcome = recorded
            .finish(fleet.instances.capacity, &now())
            .expect("drive finishes a rollout that has ended");
        self.save().await?;
        // Housekeeping after the fleet is safe: a failure here is reported and retried by
        // the next apply, it does not undo the release.
        // Images are pruned when a release is promoted, never during a rollback.
        let promoted = matches!(outcome, Outcome::Released { .. });
        if let Err(message) = self.tidy(fleet, promoted).await {
            self.note(&fleet.name, format!("tidying up failed: {message}"), None);
            self.save().await?;
        }
        Ok(outcome)
    }
}

pub(crate) fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The decision an event records, in words; `None` for bookkeeping nobody needs to read.
fn describe(event: &Event) -> Option<String> {
    Some(match event {
        Event::BuilderLaunched(id) => format!("builder instance {id} launched"),
        Event::ImageReady(id) => format!("image {id} available"),
        Event::BuilderTerminated => "builder terminated".into(),
        Event::LaunchTemplateCreated(lt) => {
            format!("launch template {} version {}", lt.id, lt.version)
        }
        Event::TargetGroupCreated(arn) => format!("target group {arn} created"),
        Event::AlarmsCreated(names) if names.is_empty() => "no metric gates to create".into(),
        Event::AlarmsCreated(names) => format!("gate alarms created: {}", names.join(", ")),
        Event::GroupCreated => "Auto Scaling group created".into(),
        Event::ScaledUp => "kept group scaled back up".into(),
        Event::HealthRuleAdded(rule) => format!(
            "health rule {rule} added: the load balancer health-checks the target group, no traffic yet"
        ),
        Event::HealthRuleDeleted => "health rule deleted".into(),
        Event::Joined => {
            "target group joined the route at weight 0: the load balancer health-checks it, no traffic yet".into()
        }
        Event::Healthy => "all instances InService and healthy".into(),
        Event::WeightsSet(p) => format!("listener weights set and verified: {p}% on the new group"),
        Event::CapacitySet {
            percent,
            instances,
            left,
        } => {
            let on = format!("{instances} instance{}", plural(*instances));
            match left {
                Some((group, kept)) => format!(
                    "capacity set ({percent}%): {on} on the new group, {kept} kept on {group}, whose leaving workers finish their jobs"
                ),
                None => format!("capacity set ({percent}%): {on} on the new group"),
            }
        }
        // Observing says what the gates saw.
        Event::StepPassed | Event::Drained => return None,
        Event::PreviousRetired => "previous group retired".into(), // said by `record`
        Event::Failed(reason) => format!("FAILED: {reason}; rolling back"),
        Event::RollbackAsked(by) => {
            format!("rollback asked by {by} (immune rollback): rolling back")
        }
        Event::Refused(reason) => {
            format!("stopped: {reason}; rolling back (the fleet is not locked)")
        }
        Event::Suspended => return None,
        // Said by `promote_held`, with who and why.
        Event::Promoted { .. } => return None,
        Event::Adopted(found) => match found {
            Found::Builder(id) => format!("found builder {id} made by an earlier attempt"),
            Found::LaunchTemplate(lt) => format!(
                "found launch template {} version {} made by an earlier attempt",
                lt.id, lt.version
            ),
            Found::TargetGroup(arn) => {
                format!("found target group {arn} made by an earlier attempt")
            }
            Found::Alarms(names) if names.is_empty() => return None,
            Found::Alarms(names) => format!("gate alarms to delete: {}", names.join(", ")),
            Found::Group => "found the Auto Scaling group made by an earlier attempt".into(),
            Found::HealthRule(rule) => format!("found health rule {rule} made by an earlier attempt"),
            Found::Nothing => return None,
        },
        Event::WeightsRestored => "traffic restored to the previous group".into(),
        Event::CapacityRestored => "the previous group has its capacity back".into(),
        Event::GroupDeleted => "new Auto Scaling group deleted".into(),
        Event::ScaledToZero => "kept group scaled back to zero".into(),
        Event::AlarmsDeleted => "gate alarms deleted".into(),
        Event::TargetGroupDeleted => "new target group deleted".into(),
        Event::LaunchTemplateDeleted => "launch template version deleted".into(),
    })
}

#[cfg(test)]
mod tests;
