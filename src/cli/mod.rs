//! The command line: flags as typed (clap), then the commands. Errors are typed here and
//! only `main` turns them into text and exit codes.

mod apply;
mod events;
mod fleet;
mod fmt;
mod init;
mod lock;
pub(crate) mod observe;
mod progress;
mod proof;
pub mod signals;

use crate::config::{self, Config, ConfigError, VarInputs};
use clap::{Parser, Subcommand};
use lock::LockArgs;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "immune",
    version,
    about = "Immutable VM fleets on AWS with canary rollouts and automatic rollback"
)]
pub struct Cli {
    /// The configuration directory.
    #[arg(long, global = true, default_value = ".")]
    pub chdir: PathBuf,
    /// Set a variable: NAME=VALUE (repeatable).
    #[arg(long = "var", global = true, value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Read variables from a file of `name = value` lines, or a JSON object when it ends
    /// in .json (repeatable).
    #[arg(long = "var-file", global = true, value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
    /// The AWS region of fleets that name none (overrides AWS_REGION and the profile's;
    /// a fleet's own `region` wins).
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new(), global = true)]
    pub region: Option<String>,
    /// Plain output without colour.
    #[arg(long, global = true)]
    pub no_color: bool,
    /// More detail (repeat for debug logs).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration offline; every problem is reported at once.
    Validate,
    /// Check the configuration and its backend and say what was found; with
    /// --migrate-state, move the state to the configured backend.
    Init {
        /// Move this directory's state from where it lives to the configured backend,
        /// keeping its lineage and serial.
        #[arg(long)]
        migrate_state: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Rewrite the directory's *.hcl files in the canonical layout.
    Fmt(fmt::FmtArgs),
    /// Show what apply would do.
    Plan {
        /// Exit 2 when apply would change something, 4 when it would not because a fleet
        /// is locked, 0 when there is nothing to do.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Save the plan for `immune apply FILE`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Print the plan as JSON (schema: docs/plan.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Plan, ask for `yes`, and carry the plan out; or carry out a saved plan as it is.
    Apply {
        /// A plan saved by `immune plan --out FILE`: applied without asking, refused when
        /// the state or configuration moved on since.
        plan: Option<PathBuf>,
        /// Do not ask for confirmation.
        #[arg(long)]
        auto_approve: bool,
        /// One JSON event per line on stdout (schema: docs/events.schema.json); needs
        /// --auto-approve or a saved plan, since nobody answers a prompt.
        #[arg(long)]
        json: bool,
        /// How many fleets are released side by side. A fleet that runs `after` others
        /// waits for them whatever this is.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
        parallelism: u16,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Each fleet: active group, weights (workers: capacity), health, lock, rollout in progress.
    Status {
        /// Only this fleet.
        fleet: Option<String>,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Past rollouts of a fleet with every decision and its evidence.
    History {
        fleet: String,
        /// Print the history as JSON, every decision with its evidence.
        #[arg(long)]
        json: bool,
    },
    /// How each gate judged the releases it watched, from history: fired, flapped, no
    /// data, false alarms, missed problems; which dry-run gates look ready to enforce.
    Gates {
        fleet: Option<String>,
        /// Print the report as JSON, one object per gate.
        #[arg(long)]
        json: bool,
    },
    /// The configuration's outputs with what runs now (`fleet.NAME.group` and the like);
    /// a sensitive one is shown only when asked for by name.
    Output {
        /// Only this output, printed as its bare value (a string without quotes).
        name: Option<String>,
        /// Print the outputs as one JSON object (sensitive values are null).
        #[arg(long)]
        json: bool,
    },
    /// Go back to the previous group now: traffic (or, for workers, capacity) first.
    Rollback {
        fleet: String,
        /// Roll back an irreversible release (`irreversible = true`), knowing what it
        /// changed (a schema, say) stays changed. Needs --reason.
        #[arg(long)]
        force: bool,
        /// Why, kept in the fleet's history.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Let a release go on past a manual gate that is waiting.
    Approve { fleet: String },
    /// Roll a release back at a manual gate that is waiting.
    Reject { fleet: String },
    /// Hold a running rollout at its current step: the gates are still watched, but the
    /// step does not pass until `immune resume` (or `immune promote`).
    Pause { fleet: String },
    /// Let a paused rollout go on.
    Resume { fleet: String },
    /// Pass the current step now, without waiting out its pause, once its gates allow;
    /// a pause (`immune pause`) is lifted.
    Promote {
        fleet: String,
        /// Every remaining step too: each passes as soon as its gates allow.
        #[arg(long)]
        full: bool,
    },
    /// Lift the lock an automatic rollback left on a fleet.
    Unlock {
        fleet: String,
        /// Why the fleet may be released again (kept in its history).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Inspect the state, break a stale state lock.
    #[command(subcommand)]
    State(StateCommand),
    /// Print a shell's completion script: `immune completions bash > /etc/bash_completion.d/immune`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `immune man > immune.1`.
    Man,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Each fleet in the state: active group, release, rollout in progress, lock.
    List,
    /// Everything the state records of one fleet (history: `immune history FLEET`).
    Show {
        fleet: String,
        #[arg(long)]
        json: bool,
    },
    /// Break the state lock left by a process that is gone.
    ForceUnlock {
        /// The lock's ID, as shown when a command was refused; `corrupt` for a lock
        /// that cannot be read.
        id: String,
    },
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    if name.is_empty() {
        return Err(format!("`{text}` has no variable name"));
    }
    Ok((name.to_string(), value.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Message(String),
    #[error("{0}")]
    RolledBack(String),
    #[error("{0}")]
    Locked(String),
    #[error("Apply cancelled.")]
    Cancelled,
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::RolledBack(_) => 3,
            CliError::Locked(_) => 4,
            _ => 1,
        }
    }
}

/// What a successful command asks `main` to exit with.
pub enum Success {
    Done,
    /// `plan --detailed-exitcode` found changes.
    Changes,
    /// `plan --detailed-exitcode` found nothing apply would change, but a locked fleet.
    LockedOnly,
}

impl Cli {
    fn inputs(&self) -> VarInputs {
        VarInputs {
            saved: Vec::new(),
            cli: self.vars.clone(),
            files: self.var_files.clone(),
            env: VarInputs::from_env(),
        }
    }

    fn load(&self) -> Result<Config, CliError> {
        Ok(config::load(&self.chdir, &self.inputs())?)
    }

    /// For `apply FILE`: the values the saved plan carries, under any given now.
    fn load_saved(&self, saved: Vec<(String, hcl::Value)>) -> Result<Config, CliError> {
        let inputs = VarInputs {
            saved,
            ..self.inputs()
        };
        Ok(config::load(&self.chdir, &inputs)?)
    }

    /// For commands about what already runs (status, approve, rollback, ...): an operator
    /// answering a gate from another terminal should not have to repeat `--var release=`.
    /// Variables without a value stay unknown, as in `validate`.
    fn load_known(&self) -> Result<Config, CliError> {
        Ok(config::load_with(
            &self.chdir,
            &self.inputs(),
            config::Mode::Running,
        )?)
    }

    fn color(&self) -> bool {
        !self.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
    }
}

/// `immune output [NAME] [--json]`: the outputs, from the configuration (variables that
/// have no value leave what uses them out) and the state.
async fn output(cli: &Cli, name: Option<&str>, json: bool) -> Result<Success, CliError> {
    let config = cli.load_known()?;
    let state = apply::read_state(cli, &config).await?;
    let outputs = crate::outputs::resolve(&config, &state);
    if let Some(name) = name {
        let Some(found) = outputs.iter().find(|o| o.name == name) else {
            let known: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(CliError::Message(format!(
                "error: no output `{name}`{}",
                match known.is_empty() {
                    true => " (the configuration has none whose value is known)".to_string(),
                    false => format!("; the outputs are: {}", known.join(", ")),
                }
            )));
        };
        let Some(value) = &found.value else {
            return Err(CliError::Message(format!(
                "error: output `{name}` is known only once the fleets it shows were applied"
            )));
        };
        // Asked for by name: shown as it is, as Terraform's `output NAME` does.
        match (json, value) {
            (false, serde_json::Value::String(text)) => println!("{text}"),
            (false, other) => println!("{}", crate::outputs::show(other)),
            (true, other) => println!("{other}"),
        }
        return Ok(Success::Done);
    }
    if json {
        let document: serde_json::Map<String, serde_json::Value> = outputs
            .iter()
            .map(|o| {
                (
                    o.name.clone(),
                    serde_json::json!({ "value": o.shown(), "sensitive": o.sensitive }),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&document).expect("outputs serialize")
        );
    } else {
        print!("{}", crate::outputs::render(&outputs));
    }
    Ok(Success::Done)
}

pub async fn run(cli: Cli) -> Result<Success, CliError> {
    match &cli.command {
        Command::Fmt(args) => fmt::run(&cli.chdir, args),
        Command::Validate => {
            let config = config::load_with(&cli.chdir, &cli.inputs(), config::Mode::Validate)?;
            println!(
                "The configuration is valid: {} fleet{}.",
                config.fleets.len(),
                if config.fleets.len() == 1 { "" } else { "s" }
            );
            Ok(Success::Done)
        }
        Command::Init {
            migrate_state,
            lock,
        } => init::init(&cli, *migrate_state, lock.lock_timeout).await,
        Command::Plan {
            detailed_exitcode,
            out,
            json,
        } => {
            let config = cli.load()?;
            let state = apply::read_state(&cli, &config).await?;
            init::check_location(&cli, &config, &state).await?;
            let cloud = observe::connect(&cli, &config, &state).await?;
            let unproven = proof::unproven(&cli, &config).await;
            let plan = observe::plan(&cloud, &config, &state, &unproven).await?;
            let document = crate::plan::Document::new(&plan, &state, &config);
            if *json {
                println!("{}", document.to_json());
            } else {
                print!("{}", crate::plan::render(&plan, cli.color()));
                if plan.has_changes() {
                    print!("{}", crate::notify::describe(&config));
                }
            }
            if let Some(path) = out {
                document
                    .write(path)
                    .map_err(|e| CliError::Message(format!("error: {e}")))?;
                if !*json {
                    println!(
                        "\nSaved the plan to {}. `immune apply {}` carries out exactly this plan.",
                        path.display(),
                        path.display()
                    );
                }
            }
            // One preflight: what apply would refuse, plan refuses first, with the fix.
            let blocked: Vec<String> = plan
                .changes
                .iter()
                .filter(|c| matches!(c.action, crate::plan::Action::Blocked { .. }))
                .map(|c| format!("error: {}", c.reason))
                .collect();
            if !blocked.is_empty() {
                return Err(CliError::Message(blocked.join("\n\n")));
            }
            // 2: apply would change something; 4: it would not, because a fleet is
            // locked (apply would exit 4 too); 0: nothing to do.
            Ok(match (*detailed_exitcode, plan.acts(), plan.has_locked()) {
                (false, _, _) => Success::Done,
                (true, true, _) => Success::Changes,
                (true, false, true) => Success::LockedOnly,
                (true, false, false) => Success::Done,
            })
        }
        Command::Apply {
            plan,
            auto_approve,
            json,
            parallelism,
            lock,
        } => {
            let options = |view| apply::Options {
                auto_approve: *auto_approve,
                lock_timeout: lock.lock_timeout,
                view,
                parallelism: usize::from(*parallelism),
            };
            if !*json {
                let view = apply::View::Text { color: cli.color() };
                return apply::apply(&cli, plan.as_deref(), options(view)).await;
            }
            let result = match (*auto_approve, plan) {
                (false, None) => Err(CliError::Message(
                    "error: apply --json does not ask for confirmation: pass --auto-approve, or a plan saved with `immune plan --out FILE`".into(),
                )),
                _ => {
                    apply::apply(&cli, plan.as_deref(), options(apply::View::Json)).await
                }
            };
            // The last lines say how it ended, for a program that reads only stdout.
            let exit_code = match &result {
                Ok(_) => 0,
                Err(e) => {
                    events::emit(&events::ApplyEvent::Error {
                        message: e.to_string(),
                        exit_code: e.exit_code(),
                    });
                    e.exit_code()
                }
            };
            events::emit(&events::ApplyEvent::Done { exit_code });
            result
        }
        Command::Status { fleet: only, json } => fleet::status(&cli, only.as_deref(), *json).await,
        Command::History { fleet: name, json } => fleet::history(&cli, name, *json).await,
        Command::Gates { fleet: only, json } => fleet::gates(&cli, only.as_deref(), *json).await,
        Command::Output { name, json } => output(&cli, name.as_deref(), *json).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "immune",
                &mut std::io::stdout(),
            );
            Ok(Success::Done)
        }
        Command::Man => {
            use clap::CommandFactory;
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                // `immune man | head`: the reader had enough.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Message(
                    format!("error: cannot write the manual page: {e}"),
                )),
                _ => Ok(Success::Done),
            }
        }
        Command::Rollback {
            fleet: name,
            force,
            reason,
            lock,
        } => {
            let asked = fleet::RollbackAsk {
                force: *force,
                reason: reason.clone(),
            };
            fleet::rollback(&cli, name, &asked, lock.lock_timeout).await
        }
        Command::Approve { fleet: name } => {
            fleet::answer(&cli, name, crate::state::AnswerKind::Approve).await
        }
        Command::Pause { fleet: name } => {
            fleet::control(&cli, name, crate::state::AnswerKind::Pause).await
        }
        Command::Resume { fleet: name } => {
            fleet::control(&cli, name, crate::state::AnswerKind::Resume).await
        }
        Command::Promote { fleet: name, full } => {
            let kind = match full {
                true => crate::state::AnswerKind::PromoteFull,
                false => crate::state::AnswerKind::Promote,
            };
            fleet::control(&cli, name, kind).await
        }
        Command::Reject { fleet: name } => {
            fleet::answer(&cli, name, crate::state::AnswerKind::Reject).await
        }
        Command::Unlock {
            fleet: name,
            reason,
            lock,
        } => fleet::unlock(&cli, name, reason, lock.lock_timeout).await,
        Command::State(StateCommand::List) => {
            let config = cli.load_known()?;
            let state = apply::read_state(&cli, &config).await?;
            if state.fleets.is_empty() {
                println!("The state is empty: nothing has been applied yet.");
            }
            for (name, fleet) in &state.fleets {
                let active = fleet
                    .active
                    .as_ref()
                    .map_or("no active group".to_string(), |g| {
                        format!("{} (release {})", g.name, g.release)
                    });
                let mut line = format!("fleet.{name}: {active}");
                if let Some(r) = &fleet.rollout {
                    line += &format!(
                        ", unfinished rollout of {} (at {})",
                        r.group,
                        r.phase.name()
                    );
                }
                if let Some(lock) = &fleet.lock {
                    line += &format!(", LOCKED: {}", lock.reason);
                }
                println!("{line}");
            }
            Ok(Success::Done)
        }
        Command::State(StateCommand::Show { fleet: name, json }) => {
            fleet::state_show(&cli, name, *json).await
        }
        Command::State(StateCommand::ForceUnlock { id }) => {
            let config = cli.load_known()?;
            let backend = apply::backend(&cli, &config).await?;
            backend
                .force_unlock(id)
                .await
                .map_err(|e| CliError::Message(format!("error: {e}")))?;
            println!("State lock {id} of {} broken.", backend.describe());
            Ok(Success::Done)
        }
    }
}
