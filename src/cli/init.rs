//! Where the state lives, and moving it. A configuration whose backend changed (an S3
//! block added beside `.immune/state.json`, or removed again) would otherwise read an
//! empty state and plan a first release over a live fleet, so `plan`, `apply` and
//! `rollback` refuse while another known place holds this directory's state, and
//! `immune init --migrate-state` moves it there, keeping its lineage and serial.
//!
//! The places known besides the configured backend: the default local file, and the
//! place a migration moved the state to, which it records in `.immune/moved.json`.

use super::apply::{backend, release};
use super::{lock, Cli, CliError, Success};
use crate::cloud::CloudError;
use crate::config::{Backend as Configured, Config};
use crate::state::{Backend, LocalBackend, S3Backend, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A backend as `moved.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
enum Place {
    Local {
        path: PathBuf,
    },
    S3 {
        bucket: String,
        key: String,
        region: Option<String>,
    },
}

impl Place {
    fn of(configured: &Configured) -> Place {
        match configured {
            Configured::Local { path } => Place::Local { path: path.clone() },
            Configured::S3 {
                bucket,
                key,
                region,
            } => Place::S3 {
                bucket: bucket.clone(),
                key: key.clone(),
                region: region.clone(),
            },
        }
    }

    fn configured(&self) -> Configured {
        match self.clone() {
            Place::Local { path } => Configured::Local { path },
            Place::S3 {
                bucket,
                key,
                region,
            } => Configured::S3 {
                bucket,
                key,
                region,
            },
        }
    }

    async fn open(&self, cli: &Cli) -> Result<Box<dyn Backend>, CliError> {
        open(cli, &self.configured()).await
    }
}

/// The backend a configuration (or a migration's record) names.
pub async fn open(cli: &Cli, backend: &Configured) -> Result<Box<dyn Backend>, CliError> {
    Ok(match backend {
        Configured::Local { path } => Box::new(LocalBackend::new(path)),
        Configured::S3 {
            bucket,
            key,
            region,
        } => Box::new(
            S3Backend::connect(bucket, key, region.clone(), cli.region.clone())
                .await
                .map_err(error)?,
        ),
    })
}

fn error(e: impl std::fmt::Display) -> CliError {
    CliError::Message(format!("error: {e}"))
}

fn default_path(config: &Config) -> PathBuf {
    config.dir.join(".immune/state.json")
}

fn marker_path(config: &Config) -> PathBuf {
    config.dir.join(".immune/moved.json")
}

fn read_marker(config: &Config) -> Option<Place> {
    let text = std::fs::read_to_string(marker_path(config)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The places other than the configured one where this directory's state may be.
fn other_places(config: &Config) -> Vec<Place> {
    let configured = Place::of(&config.backend);
    let mut places = vec![Place::Local {
        path: default_path(config),
    }];
    places.extend(read_marker(config));
    places.retain(|p| *p != configured);
    places.dedup();
    places
}

/// Why the state found elsewhere must be used instead of `here`, if it must.
pub fn misplaced(here: &State, elsewhere: &State) -> Option<&'static str> {
    if elsewhere.serial == 0 {
        None
    } else if here.serial == 0 {
        Some("holds no state")
    } else if here.lineage == elsewhere.lineage && elsewhere.serial > here.serial {
        Some("holds an older copy of it")
    } else {
        None
    }
}

/// Refuses a command while this directory's state lives somewhere other than where the
/// configuration keeps it.
pub async fn check_location(cli: &Cli, config: &Config, state: &State) -> Result<(), CliError> {
    let here = backend(cli, config).await?.describe();
    for place in other_places(config) {
        let other = place.open(cli).await?;
        let Ok(found) = other.load().await else {
            continue;
        };
        if let Some(why) = misplaced(state, &found) {
            return Err(CliError::Message(format!(
                "error: the configuration keeps its state in {here}, which {why}, but {} holds this directory's state (lineage {}, serial {}, {} fleet{})\n  run `immune init --migrate-state` to move it there, keeping its lineage and serial, or put the backend block back as it was",
                other.describe(),
                found.lineage,
                found.serial,
                found.fleets.len(),
                if found.fleets.len() == 1 { "" } else { "s" }
            )));
        }
    }
    Ok(())
}

/// `immune init [--migrate-state]`: reads the configuration and the backend, says what it
/// found, and moves the state to the configured backend when asked.
pub async fn init(cli: &Cli, migrate: bool, lock_timeout: Duration) -> Result<Success, CliError> {
    let config = cli.load_known()?;
    let destination = backend(cli, &config).await?;
    let state = destination.load().await.map_err(error)?;
    println!(
        "Configuration: {} fleet{} (in {}).",
        config.fleets.len(),
        if config.fleets.len() == 1 { "" } else { "s" },
        config.dir.display()
    );
    if let Some(namespace) = &config.namespace {
        println!("Namespace: {namespace} (every name starts with `{namespace}-`).");
    }
    println!(
        "Backend: {} ({}).",
        destination.describe(),
        describe_state(&state)
    );
    let aws = check_aws(cli, &config).await;
    if !config.notify.is_empty() {
        print!("{}", crate::notify::describe(&config));
    }
    let mut source = None;
    for place in other_places(&config) {
        let other = place.open(cli).await?;
        let Ok(found) = other.load().await else {
            continue;
        };
        if misplaced(&state, &found).is_some() {
            source = Some((place, other, found));
            break;
        }
    }
    let Some((place, other, found)) = source else {
        println!("The state is where the configuration keeps it: nothing to migrate.");
        return aws.map(|()| Success::Done);
    };
    if !migrate {
        return Err(CliError::Message(format!(
            "error: {} holds this directory's state ({}), not {}\n  run `immune init --migrate-state` to move it",
            other.describe(),
            describe_state(&found),
            destination.describe()
        )));
    }
    // Both locks: no apply may write either copy while it moves.
    let source_lock = lock::take(other.as_ref(), "migrate-state", lock_timeout)
        .await
        .map_err(error)?;
    let result = migrate_locked(
        &config,
        destination.as_ref(),
        &place,
        other.as_ref(),
        lock_timeout,
    )
    .await;
    release(source_lock).await;
    result
}

/// Says who the credentials are in each region the fleets run in. A region that does not
/// answer, or credentials it refuses, are an error (every plan would fail the same way),
/// said after everything else init found.
async fn check_aws(cli: &Cli, config: &Config) -> Result<(), CliError> {
    let default = match &cli.region {
        Some(region) => Some(region.clone()),
        None => crate::cloud::aws::default_region().await,
    }
    .or_else(|| config.fleets.iter().find_map(|f| f.region.clone()));
    let mut regions: BTreeMap<String, usize> = BTreeMap::new();
    let mut unplaced = 0;
    for fleet in &config.fleets {
        match fleet.region.clone().or_else(|| default.clone()) {
            Some(region) => *regions.entry(region).or_default() += 1,
            None => unplaced += 1,
        }
    }
    if let (Some(region), true) = (&default, regions.is_empty()) {
        regions.insert(region.clone(), 0);
    }
    let mut problems = Vec::new();
    if unplaced > 0 {
        problems.push(format!(
            "{unplaced} {} no region and there is no default: set `region` in the fleet, pass --region, or set AWS_REGION",
            if unplaced == 1 { "fleet names" } else { "fleets name" }
        ));
    }
    for (region, fleets) in &regions {
        let count = match fleets {
            0 => "no fleets yet".to_string(),
            1 => "1 fleet".to_string(),
            n => format!("{n} fleets"),
        };
        match crate::cloud::aws::identity(region).await {
            Ok((account, arn)) => {
                println!("AWS {region} ({count}): account {account} as {arn}.")
            }
            Err(e) => {
                println!("AWS {region} ({count}): not usable.");
                let hint = match e {
                    CloudError::Credentials { .. } => "immune takes AWS credentials from the standard chain: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), log in with `aws sso login`, or run where an instance or container role applies",
                    _ => "check the region's name, the network and AWS_ENDPOINT_URL",
                };
                problems.push(format!("{region}: {e}\n  {hint}"));
            }
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(error(problems.join("\n  "))),
    }
}

async fn migrate_locked(
    config: &Config,
    destination: &dyn Backend,
    place: &Place,
    source: &dyn Backend,
    lock_timeout: Duration,
) -> Result<Success, CliError> {
    let destination_lock = lock::take(destination, "migrate-state", lock_timeout)
        .await
        .map_err(error)?;
    let result = async {
        let mut moving = source.load().await.map_err(error)?;
        let there = destination.load().await.map_err(error)?;
        if there.serial > 0 && there.lineage != moving.lineage {
            return Err(error(format!(
                "{} already holds another state (lineage {}); immune will not overwrite it\n  point the backend elsewhere, or remove that state if it is not in use",
                destination.describe(),
                there.lineage
            )));
        }
        let (lineage, serial) = (moving.lineage.clone(), moving.serial);
        // `save` writes the next serial; the moved document keeps the one it had.
        moving.serial -= 1;
        destination.save(&mut moving).await.map_err(error)?;
        retire(config, place, destination)?;
        println!(
            "Moved the state from {} to {} (lineage {lineage}, serial {serial}).",
            source.describe(),
            destination.describe()
        );
        if let Place::S3 { .. } = place {
            println!(
                "The copy in {} is left as it was; delete it once you no longer need it.",
                source.describe()
            );
        }
        Ok(Success::Done)
    }
    .await;
    release(destination_lock).await;
    result
}

/// After a move: a local source is renamed `*.migrated`, and `moved.json` records where
/// the state went (or is removed when it came back to the default file).
fn retire(config: &Config, from: &Place, to: &dyn Backend) -> Result<(), CliError> {
    if let Place::Local { path } = from {
        let migrated = path.with_extension("json.migrated");
        std::fs::rename(path, &migrated)
            .map_err(|e| error(format!("renaming {}: {e}", path.display())))?;
    }
    let marker = marker_path(config);
    let configured = Place::of(&config.backend);
    if configured
        == (Place::Local {
            path: default_path(config),
        })
    {
        let _ = std::fs::remove_file(&marker);
    } else {
        let text = serde_json::to_string_pretty(&configured).expect("a place serializes");
        write_marker(&marker, &text).map_err(|e| {
            error(format!(
                "recording where the state went ({}): {e}",
                to.describe()
            ))
        })?;
    }
    Ok(())
}

fn write_marker(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, format!("{text}\n"))
}

fn describe_state(state: &State) -> String {
    if state.serial == 0 {
        "no state yet".into()
    } else {
        format!(
            "lineage {}, serial {}, {} fleet{}",
            state.lineage,
            state.serial,
            state.fleets.len(),
            if state.fleets.len() == 1 { "" } else { "s" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_elsewhere_wins_over_an_empty_or_older_copy_only() {
        let mut live = State::new();
        live.serial = 7;
        let empty = State::new();
        assert_eq!(misplaced(&empty, &live), Some("holds no state"));
        assert_eq!(misplaced(&live, &empty), None);
        let mut older = live.clone();
        older.serial = 3;
        assert_eq!(misplaced(&older, &live), Some("holds an older copy of it"));
        assert_eq!(misplaced(&live, &older), None);
        let mut other = State::new();
        other.serial = 9;
        assert_eq!(
            misplaced(&live, &other),
            None,
            "another lineage is another state"
        );
    }
}
