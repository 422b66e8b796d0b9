//! `immune apply`: lock the state, plan, confirm, carry out each fleet's change.

use super::events::{emit, ApplyEvent, JsonLines, OutputValue, Result as Ended};
use super::signals::Interrupts;
use super::{lock, observe, Cli, CliError, Success};
use crate::config::Config;
use crate::config::NoticeKind;
use crate::engine::{Engine, EngineError, Outcome, Reporter, Signals, Stdout};
use crate::notify::{Notice, Notifier};
use crate::plan::{Action, Document};
use crate::state::{LockGuard, Shared};
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

/// The configured state backend.
pub async fn backend(
    cli: &Cli,
    config: &Config,
) -> Result<Box<dyn crate::state::Backend>, CliError> {
    super::init::open(cli, &config.backend).await
}

/// The state as the configured backend holds it, for commands that only read it.
pub async fn read_state(cli: &Cli, config: &Config) -> Result<crate::state::State, CliError> {
    backend(cli, config)
        .await?
        .load()
        .await
        .map_err(|e| CliError::Message(format!("error: {e}")))
}

/// Gives the state lock back, saying what to do when that fails: the command's own
/// result matters more, so this only warns.
pub async fn release(lock: LockGuard) {
    let id = lock.id().to_string();
    if let Err(e) = lock.release().await {
        eprintln!("warning: could not release the state lock: {e}\n  run `immune state force-unlock {id}`");
    }
}

/// The view's reporter, which also hands the engine's notices to the notifier.
pub struct Notifying<'a> {
    pub view: View,
    pub notifier: &'a Notifier,
    /// The fleets whose changes are being carried out: an apply that stops at once
    /// tells of them.
    pub running: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// The live rows, when the text view is on a terminal.
    pub progress: Option<super::progress::Progress>,
}

impl<'a> Notifying<'a> {
    pub fn new(view: View, notifier: &'a Notifier) -> Self {
        let progress = match view {
            View::Text { color } if std::io::stdout().is_terminal() => {
                Some(super::progress::Progress::new(color))
            }
            _ => None,
        };
        Notifying {
            view,
            notifier,
            running: Default::default(),
            progress,
        }
    }

    /// Where lines go: above the live rows, or straight to the view.
    fn lines(&self) -> &dyn Reporter {
        match &self.progress {
            Some(progress) => progress,
            None => self.view.reporter(),
        }
    }

    /// The fleet's live row goes (before its outcome, or a question, is printed).
    pub fn finish(&self, fleet: &str) {
        if let Some(progress) = &self.progress {
            progress.finish(fleet);
        }
    }

    fn working_on(&self, fleet: &str, running: bool) {
        let mut set = self.running.lock().expect("not poisoned");
        match running {
            true => set.insert(fleet.to_string()),
            false => set.remove(fleet),
        };
    }
}

impl Reporter for Notifying<'_> {
    fn line(&self, fleet: &str, message: &str) {
        self.lines().line(fleet, message);
    }

    fn decision(&self, fleet: &str, what: &str) {
        self.lines().decision(fleet, what);
    }

    fn watch(&self, fleet: &str, watch: &crate::engine::Watch) {
        if let Some(progress) = &self.progress {
            progress.watch(fleet, watch);
        }
    }

    fn notice(&self, notice: Notice) {
        self.notifier.send(notice);
    }
}

/// A notice about a fleet, with the release its history names last.
pub fn notice(
    state: &crate::state::State,
    kind: NoticeKind,
    fleet: &str,
    text: String,
    group: Option<&str>,
    locked: bool,
) -> Notice {
    let recorded = state.fleets.get(fleet);
    let release = recorded
        .and_then(|f| f.history.last())
        .map(|h| h.release.clone());
    // What runs now: the group named, else the fleet's active one (after a rollback,
    // the group it went back to).
    let group = group.map(str::to_string).or_else(|| {
        recorded
            .and_then(|f| f.active.as_ref())
            .map(|a| a.name.clone())
    });
    Notice {
        kind,
        fleet: fleet.to_string(),
        // One line: a chat shows it as it is.
        text: text.replace("\n  ", "; ").replace('\n', " "),
        release,
        group,
        locked,
    }
}

/// How apply speaks: text for a person, or one JSON event per line (`--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Text { color: bool },
    Json,
}

impl View {
    fn reporter(self) -> &'static dyn Reporter {
        match self {
            View::Text { .. } => &Stdout,
            View::Json => &JsonLines,
        }
    }

    /// A fleet left as it is, as an event: the text view says why in the summary.
    fn blocked(self, fleet: &str, reason: &str) {
        if self == View::Json {
            self.ended(
                fleet,
                String::new(),
                Ended::Blocked,
                None,
                Some(reason),
                false,
            );
        }
    }

    /// A fleet's end, in words or as an event.
    fn ended(
        self,
        fleet: &str,
        text: String,
        result: Ended,
        group: Option<&str>,
        reason: Option<&str>,
        locked: bool,
    ) {
        match self {
            View::Text { .. } => println!("{text}\n"),
            View::Json => emit(&ApplyEvent::Outcome {
                fleet: fleet.to_string(),
                result,
                group: group.map(str::to_string),
                reason: reason.map(str::to_string),
                locked,
            }),
        }
    }
}

/// How apply runs, from its flags.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub auto_approve: bool,
    pub lock_timeout: Duration,
    pub view: View,
    /// At most this many fleets' changes at once.
    pub parallelism: usize,
}

pub async fn apply(cli: &Cli, saved: Option<&Path>, options: Options) -> Result<Success, CliError> {
    let message = |e: &dyn std::fmt::Display| CliError::Message(format!("error: {e}"));
    // A saved plan carries the variable values it was made with, but none of the
    // sensitive ones: those are given again.
    let document = match saved {
        Some(path) => Some((Document::read(path).map_err(|e| message(&e))?, path)),
        None => None,
    };
    let config = match &document {
        Some((document, path)) => cli.load_saved(document.saved_values()).inspect_err(|_| {
            let sensitive = document.sensitive_names();
            if !sensitive.is_empty() {
                eprintln!(
                    "note: {} holds no sensitive values: give {} again (--var NAME=VALUE, IMMUNE_VAR_NAME or --var-file)",
                    path.display(),
                    sensitive.join(", ")
                );
            }
        })?,
        None => cli.load()?,
    };
    let backend = backend(cli, &config).await?;
    let lock = lock::take(backend.as_ref(), "apply", options.lock_timeout)
        .await
        .map_err(|e| CliError::Message(format!("error: {e}")))?;
    let notifier = Notifier::new(&config).await;
    let result = apply_locked(cli, &config, backend.as_ref(), document, options, &notifier).await;
    release(lock).await;
    notifier.flush().await;
    result
}

async fn apply_locked(
    cli: &Cli,
    config: &Config,
    backend: &dyn crate::state::Backend,
    saved: Option<(Document, &Path)>,
    options: Options,
    notifier: &Notifier,
) -> Result<Success, CliError> {
    let Options {
        auto_approve,
        view,
        parallelism,
        ..
    } = options;
    let message = |e: &dyn std::fmt::Display| CliError::Message(format!("error: {e}"));
    let mut state = backend.load().await.map_err(|e| message(&e))?;
    super::init::check_location(cli, config, &state).await?;
    // A saved plan was read and approved already: it runs as it is, or not at all.
    let document = match saved {
        Some((document, path)) => {
            if let Some(why) = document.stale(&state, config) {
                return Err(CliError::Message(format!(
                    "error: saved plan is stale: {why}\n  make a new one with `immune plan --out {}` (and the variables it was made with)",
                    path.display()
                )));
            }
            state.lineage = document.lineage.clone();
            Some(document)
        }
        None => None,
    };
    // Heard from here on, while the lock is held; until the engine starts nothing
    // changes, so an interrupt simply cancels (and the caller releases the lock).
    let mut interrupts = Interrupts::new();
    let prepared = async {
        let cloud = observe::connect(cli, config, &state).await?;
        let plan = match &document {
            Some(document) => document.plan(),
            None => {
                let unproven = super::proof::unproven(cli, config).await;
                observe::plan(&cloud, config, &state, &unproven).await?
            }
        };
        match view {
            View::Text { color } => {
                print!("{}", crate::plan::render(&plan, color));
                if plan.has_changes() {
                    print!("{}", crate::notify::describe(config));
                }
            }
            View::Json => {
                let shown = Document::new(&plan, &state, config);
                emit(&ApplyEvent::Plan {
                    plan: serde_json::to_value(&shown).expect("plans serialize"),
                });
            }
        }
        if !plan.has_changes() {
            return Ok(None);
        }
        let only_locked = plan.changes.iter().all(|c| {
            matches!(
                c.action,
                Action::Locked { .. } | Action::Blocked { .. } | Action::NoOp
            )
        });
        if document.is_none() && !only_locked && !auto_approve && !ask_to_confirm().await? {
            return Err(CliError::Cancelled);
        }
        Ok(Some((cloud, plan)))
    };
    let prepared = tokio::select! {
        prepared = prepared => prepared?,
        _ = interrupts.next() => return Err(CliError::Cancelled),
    };
    let Some((cloud, plan)) = prepared else {
        return Ok(Success::Done);
    };

    let signals = Signals {
        // JSON lines are for a program: nobody answers a prompt on them.
        interactive: view != View::Json
            && std::io::stdin().is_terminal()
            && std::io::stdout().is_terminal(),
        ..Signals::default()
    };
    // The first Ctrl-C (or SIGTERM, SIGHUP) asks the engine to stop at the next safe
    // point (and offers a rollback there); the second stops at once. Either way state
    // holds the last transition and the caller releases the lock on the way out.
    let interrupts = async {
        let name = interrupts.next().await;
        signals.interrupt();
        eprintln!(
            "\nInterrupted ({name}): stopping at the next safe point. Press Ctrl-C again to stop at once."
        );
        interrupts.next().await;
    };
    let reporter = Notifying::new(view, notifier);
    let shared = Shared::new(backend, state);
    let result = tokio::select! {
        result = run(config, &cloud, &shared, &plan, &signals, &reporter, parallelism) => result,
        _ = interrupts => Err(CliError::Message(
            "error: stopped at once; state records the last completed step: run `immune apply` to resume the rollout or `immune rollback FLEET` to roll it back".into(),
        )),
    };
    if let Some(progress) = &reporter.progress {
        progress.clear();
    }
    // Fleets still on their way when the apply stopped at once are left for the next
    // one to finish: their teams hear so.
    let running = std::mem::take(&mut *reporter.running.lock().expect("not poisoned"));
    if let Err(CliError::Message(why)) = &result {
        let state = shared.snapshot().await;
        let why = why.strip_prefix("error: ").unwrap_or(why);
        for fleet in running {
            let text = format!("apply stopped: {why}");
            notifier.send(notice(
                &state,
                NoticeKind::Stopped,
                &fleet,
                text,
                None,
                false,
            ));
        }
    }
    result
}

/// What one apply shares between the fleets it carries out side by side.
struct Run<'a> {
    config: &'a Config,
    /// Each fleet is carried out in the region its resources are in.
    regions: BTreeMap<String, &'a dyn crate::cloud::Cloud>,
    shared: &'a Shared<'a>,
    signals: &'a Signals,
    reporter: &'a Notifying<'a>,
}

/// How the apply ended for one fleet, for the summary and the fleets that run after it.
#[derive(Debug, Default)]
struct End {
    /// What became of the fleet, for the summary: `released`, `rolled back`...; none
    /// when nothing was to be done.
    label: Option<&'static str>,
    /// Why a fleet that runs after this one is not started.
    unwell: Option<&'static str>,
    /// What the summary says of it, when it did not end well.
    said: Option<(Worst, String)>,
}

/// The kinds of ends, the worst first: the exit code is the worst one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Worst {
    RolledBack,
    Locked,
    /// Stopped on an error (AWS past its budget, the state, Ctrl-C): resumable.
    Failed,
    Blocked,
    /// Undone without a lock: the release was never to blame (a gate already failing, a
    /// name held by someone else, a refusal by AWS).
    Undone,
}

impl End {
    fn well(label: &'static str) -> Self {
        End {
            label: Some(label),
            ..End::default()
        }
    }

    fn unwell(why: &'static str, worst: Worst, said: String) -> Self {
        let label = match (worst, why) {
            (Worst::RolledBack, _) => "rolled back",
            (Worst::Locked, "is held") => "held",
            (Worst::Locked, _) => "locked",
            (Worst::Failed, _) => "stopped",
            (Worst::Blocked, "is blocked") => "blocked",
            (Worst::Blocked, _) => "not started",
            (Worst::Undone, _) => "undone",
        };
        End {
            label: Some(label),
            unwell: Some(why),
            said: Some((worst, said)),
        }
    }
}

/// Carries out the plan, at most `parallelism` fleets at a time. A fleet starts once
/// the fleets it runs `after` have ended, and not at all when one of them did not end
/// well; one fleet's rollback stops no other. State holds every fleet's last transition.
async fn run(
    config: &Config,
    clouds: &crate::cloud::Clouds,
    shared: &Shared<'_>,
    plan: &crate::plan::Plan,
    signals: &Signals,
    reporter: &Notifying<'_>,
    parallelism: usize,
) -> Result<Success, CliError> {
    let view = reporter.view;
    let recorded = shared.snapshot().await;
    let regions = plan
        .changes
        .iter()
        .map(|c| {
            let cloud = observe::cloud_of(clouds, config, &recorded, &c.fleet);
            (c.fleet.clone(), cloud)
        })
        .collect();
    let run = Run {
        config,
        regions,
        shared,
        signals,
        reporter,
    };
    let after = |name: &str| -> Vec<String> {
        config
            .fleets
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.rollout.after.clone())
            .unwrap_or_default()
    };
    // The plan lists fleets after the fleets they run after.
    let mut waiting: Vec<&crate::plan::Change> = plan.changes.iter().collect();
    let mut running = futures_util::stream::FuturesUnordered::new();
    let mut ended: BTreeMap<String, End> = BTreeMap::new();
    let mut order = Vec::new();
    loop {
        let mut i = 0;
        while i < waiting.len() && running.len() < parallelism.max(1) {
            let change = waiting[i];
            let name = &change.fleet;
            let after = after(name);
            let unfinished =
                |a: &String| !ended.contains_key(a) && plan.changes.iter().any(|c| &c.fleet == a);
            if after.iter().any(unfinished) && !running.is_empty() {
                i += 1;
                continue;
            }
            waiting.remove(i);
            order.push(name.clone());
            let first_unwell = after.iter().find_map(|a| Some((a, ended.get(a)?.unwell?)));
            let end = match (first_unwell, &change.action) {
                (_, Action::NoOp) => Some(End::default()),
                (Some((first, why)), _) => {
                    let reason = format!(
                        "not started: it runs after fleet {first}, which {why} in this apply"
                    );
                    Some(not_started(view, name, reason))
                }
                (None, _) if signals.is_interrupted() => Some(not_started(
                    view,
                    name,
                    "not started: the apply was interrupted".into(),
                )),
                (None, _) => None,
            };
            match end {
                Some(end) => {
                    ended.insert(name.clone(), end);
                }
                None => {
                    reporter.working_on(name, true);
                    running.push(async {
                        let end = run.carry_out(change).await;
                        (change.fleet.clone(), end)
                    });
                }
            }
        }
        use futures_util::StreamExt;
        match running.next().await {
            Some((name, end)) => {
                reporter.working_on(&name, false);
                ended.insert(name, end);
            }
            None if waiting.is_empty() => break,
            None => continue,
        }
    }
    drop(running);
    // Every fleet's end in one line, for whoever reads the interleaved lines above.
    if let View::Text { .. } = view {
        let mut by_label: Vec<(&str, Vec<&str>)> = Vec::new();
        for name in &order {
            let Some(label) = ended.get(name).and_then(|e| e.label) else {
                continue;
            };
            match by_label.iter_mut().find(|(l, _)| *l == label) {
                Some((_, names)) => names.push(name),
                None => by_label.push((label, vec![name])),
            }
        }
        if !by_label.is_empty() {
            let parts: Vec<String> = by_label
                .iter()
                .map(|(label, names)| format!("{label} {}", names.join(", ")))
                .collect();
            println!("Summary: {}.", parts.join("; "));
        }
    }
    let state = shared.snapshot().await;
    // What runs now, for whoever applied: even after a rollback the outputs name it.
    let outputs = crate::outputs::resolve(config, &state);
    match view {
        View::Text { .. } if !outputs.is_empty() => {
            println!("Outputs:\n\n{}", crate::outputs::render(&outputs))
        }
        View::Json if !outputs.is_empty() => emit(&ApplyEvent::Outputs {
            outputs: outputs
                .iter()
                .map(|o| {
                    let shown = OutputValue {
                        value: o.shown(),
                        sensitive: o.sensitive,
                    };
                    (o.name.clone(), shown)
                })
                .collect(),
        }),
        _ => {}
    }
    // The exit code is the worst outcome's; every fleet's outcome is said, the worst
    // first, each kind in the plan's order.
    let mut said: Vec<(Worst, String)> = order
        .iter()
        .filter_map(|name| ended.remove(name)?.said)
        .collect();
    said.sort_by_key(|(worst, _)| *worst);
    let text = said
        .iter()
        .map(|(_, text)| text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    match said.first().map(|(worst, _)| *worst) {
        Some(Worst::RolledBack) => Err(CliError::RolledBack(text)),
        Some(Worst::Locked) => Err(CliError::Locked(text)),
        Some(_) => Err(CliError::Message(format!("error: {text}"))),
        None => {
            if let View::Text { .. } = view {
                println!("Apply complete.");
            }
            Ok(Success::Done)
        }
    }
}

/// A fleet the apply did not start.
fn not_started(view: View, name: &str, reason: String) -> End {
    view.blocked(name, &reason);
    End::unwell(
        "was not started",
        Worst::Blocked,
        format!("fleet {name} was {reason}"),
    )
}

impl Run<'_> {
    /// One fleet's change, carried out by its own engine on its own copy of the state,
    /// which saves only this fleet's record.
    async fn carry_out(&self, change: &crate::plan::Change) -> End {
        let name = &change.fleet;
        let backend = self.shared.fleet(name);
        let mut state = self.shared.snapshot().await;
        let mut engine = Engine::new(
            self.regions[name],
            &backend,
            &mut state,
            self.reporter,
            self.signals,
        );
        let end = self.drive(&mut engine, change).await;
        self.reporter.finish(name);
        match end {
            Ok(end) => end,
            // Stopped on its way: state records where, and the next apply goes on.
            Err(why) => {
                let shown = why.strip_prefix("error: ").unwrap_or(&why).to_string();
                self.reporter.notifier.send(notice(
                    engine.state,
                    NoticeKind::Stopped,
                    name,
                    format!("apply stopped: {shown}"),
                    None,
                    false,
                ));
                End::unwell("stopped on an error", Worst::Failed, shown)
            }
        }
    }

    async fn drive(
        &self,
        engine: &mut Engine<'_>,
        change: &crate::plan::Change,
    ) -> Result<End, String> {
        let name = &change.fleet;
        let view = self.reporter.view;
        let message = |e: &dyn std::fmt::Display| e.to_string();
        // A retired fleet is the one without a configuration.
        let configured = || {
            self.config
                .fleets
                .iter()
                .find(|f| &f.name == name)
                .expect("the plan is made from the config")
        };
        let fleet = match &change.action {
            Action::Retire(retire) => {
                engine.retire(name, retire).await.map_err(|e| message(&e))?;
                let text = format!("fleet.{name}: retired");
                view.ended(name, text, Ended::Retired, None, None, false);
                return Ok(End::well("retired"));
            }
            Action::Blocked { .. } => {
                view.blocked(name, &change.reason);
                return Ok(End::unwell(
                    "is blocked",
                    Worst::Blocked,
                    format!("fleet {name}: {}", change.reason),
                ));
            }
            Action::Locked { reason, held } => {
                if view == View::Json {
                    view.ended(name, String::new(), Ended::Locked, None, Some(reason), true);
                }
                let said = match held {
                    true => format!("fleet {name}: {}\n  {}", change.reason, held_hint(name)),
                    false => format!(
                        "fleet {name} is locked: {reason}\n  run `immune unlock {name} --reason TEXT` once the cause is understood"
                    ),
                };
                return Ok(End::unwell("is locked", Worst::Locked, said));
            }
            Action::NoOp => return Ok(End::default()),
            Action::Update(update) => {
                engine
                    .update(configured(), update)
                    .await
                    .map_err(|e| message(&e))?;
                let text = format!("fleet.{name}: updated in place");
                view.ended(name, text, Ended::Updated, Some(&update.group), None, false);
                return Ok(End::well("updated"));
            }
            Action::Release(_) | Action::Resume { .. } => configured(),
        };
        let outcome = match &change.action {
            Action::Release(release) => engine.release(fleet, release).await,
            _ => engine.resume(fleet).await,
        };
        self.reporter.finish(name);
        let outcome = match outcome {
            Err(EngineError::Interrupted { group, phase, .. }) => {
                // An irreversible release that traffic reached is rolled back only on
                // purpose (`--force --reason`), never by a yes to a question.
                let irreversible = engine
                    .state
                    .fleets
                    .get(name)
                    .and_then(|f| f.rollout.as_ref())
                    .is_some_and(|r| r.irreversibly_reached());
                let rollback_hint = match irreversible {
                    true => format!("`immune rollback {} --force --reason TEXT` (the release is irreversible) to roll it back", fleet.name),
                    false => format!("`immune rollback {}` to roll it back", fleet.name),
                };
                if !self.signals.interactive
                    || irreversible
                    || !offer_rollback(&fleet.name, &group, &phase).await
                {
                    return Err(format!(
                        "fleet {name}: interrupted during {phase} of {group}; state records where the rollout stopped\n  run `immune apply` to resume it, or {rollback_hint}"
                    ));
                }
                let by = format!("{} after Ctrl-C", crate::state::operator());
                engine.roll_back(fleet, &by).await
            }
            other => other,
        };
        let outcome = outcome.map_err(|e| message(&e))?;
        let said = |kind, text: String, group: Option<&str>, locked| {
            notice(engine.state, kind, name, text, group, locked)
        };
        let notice = match &outcome {
            // The engine told of the hold when it saved it.
            Outcome::Held { .. } => None,
            Outcome::Released { group } => Some(said(
                NoticeKind::Released,
                format!("release complete on {group}"),
                Some(group),
                false,
            )),
            Outcome::Restored { group } => Some(said(
                NoticeKind::RolledBack,
                format!("rolled back by a person: back on {group}; the fleet is locked"),
                Some(group),
                true,
            )),
            Outcome::RolledBack {
                reason,
                locked: false,
            } => Some(said(
                NoticeKind::Stopped,
                format!("not released, everything it created undone, not locked: {reason}"),
                None,
                false,
            )),
            Outcome::RolledBack { reason, locked } => Some(said(
                NoticeKind::RolledBack,
                format!(
                    "ROLLED BACK: {reason}{}",
                    if *locked { "; the fleet is locked" } else { "" }
                ),
                None,
                *locked,
            )),
        };
        if let Some(notice) = notice {
            self.reporter.notifier.send(notice);
        }
        Ok(match outcome {
            Outcome::Held { reason, group } => {
                let text = format!(
                    "fleet.{}: HELD: irreversible release on {group}: {reason}",
                    fleet.name
                );
                view.ended(name, text, Ended::Held, Some(&group), Some(&reason), true);
                End::unwell(
                    "is held",
                    Worst::Locked,
                    format!(
                        "fleet {} holds its irreversible release on {group}, which failed: {reason}\n  {}",
                        fleet.name,
                        held_hint(&fleet.name)
                    ),
                )
            }
            Outcome::Released { group } => {
                let on = match fleet.is_worker() {
                    true => "all capacity",
                    false => "all traffic",
                };
                let text = format!("fleet.{}: release complete: {on} on {group}", fleet.name);
                view.ended(name, text, Ended::Released, Some(&group), None, false);
                End::well("released")
            }
            Outcome::Restored { group } => {
                let text = format!("fleet.{}: back on {group}", fleet.name);
                view.ended(name, text, Ended::Restored, Some(&group), None, true);
                End::well("restored")
            }
            Outcome::RolledBack {
                reason,
                locked: false,
            } => {
                let text = format!("fleet.{}: stopped and undone: {reason}", fleet.name);
                view.ended(name, text, Ended::Undone, None, Some(&reason), false);
                End::unwell(
                    "was rolled back",
                    Worst::Undone,
                    format!(
                        "fleet {} was not released: {reason}\n  everything it had created is undone and the fleet is not locked: run `immune apply` again once the cause is fixed",
                        fleet.name
                    ),
                )
            }
            Outcome::RolledBack { reason, locked } => {
                let text = format!("fleet.{}: ROLLED BACK: {reason}", fleet.name);
                view.ended(name, text, Ended::RolledBack, None, Some(&reason), locked);
                End::unwell(
                    "was rolled back",
                    Worst::RolledBack,
                    format!(
                        "fleet {} rolled back: {reason}{}",
                        fleet.name,
                        if locked {
                            format!(
                                "\n  the fleet is locked; run `immune unlock {} --reason TEXT` once the cause is understood",
                                fleet.name
                            )
                        } else {
                            String::new()
                        }
                    ),
                )
            }
        })
    }
}

/// What a person does about a held irreversible release.
pub fn held_hint(fleet: &str) -> String {
    format!("nothing is rolled back on its own: run `immune promote {fleet}` to go on with the release, or `immune rollback {fleet} --force --reason TEXT` to undo it")
}

/// At a safe point after Ctrl-C: roll back now, or leave the rollout for later? Fleets
/// that stopped side by side ask one after another.
async fn offer_rollback(fleet: &str, group: &str, phase: &str) -> bool {
    let answer = loop {
        match crate::terminal::ask_line() {
            Some(answer) => break answer,
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    println!(
        "\nfleet.{fleet}: stopped during {phase} of {group}. Roll it back now? Only 'yes' rolls back; anything else leaves it for `immune apply` to resume."
    );
    answer.await.is_ok_and(|line| line == "yes")
}

/// Asks on a blocking thread, so that Ctrl-C at the prompt is heard and cancels.
async fn ask_to_confirm() -> Result<bool, CliError> {
    tokio::task::spawn_blocking(confirm)
        .await
        .unwrap_or(Ok(false))
}

fn confirm() -> Result<bool, CliError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() && std::env::var_os("IMMUNE_CONFIRM_FROM_PIPE").is_none() {
        return Err(CliError::Message(
            "error: apply needs confirmation but standard input is not a terminal\n  pass --auto-approve to apply without asking".into(),
        ));
    }
    print!(
        "\nDo you want to perform these actions? Only 'yes' will be accepted.\n  Enter a value: "
    );
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Message(format!("error: reading the answer: {e}")))?;
    Ok(answer.trim() == "yes")
}
