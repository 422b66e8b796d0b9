//! `promote_after`: a fleet's release must have finished in another environment first
//! (staging before production). That environment's state is read, never written, and
//! never locked: a plan here must not wait for, or hold up, an apply there.

use super::Cli;
use crate::config::{Config, Mode, Upstream, VarInputs};
use crate::state::State;
use std::collections::BTreeMap;

/// Why each fleet with `promote_after` may not take its configured release yet, by fleet
/// name; fleets whose release is proven (or that have no `promote_after`) are absent.
pub async fn unproven(cli: &Cli, config: &Config) -> BTreeMap<String, String> {
    let mut states: BTreeMap<String, Result<State, String>> = BTreeMap::new();
    let mut why = BTreeMap::new();
    for fleet in &config.fleets {
        let Some(after) = &fleet.promote_after else {
            continue;
        };
        let place = after.place.shown();
        if let Upstream::Dir(dir) = &after.place {
            let same = |p: &std::path::Path| std::fs::canonicalize(p).ok();
            if same(dir).is_some() && same(dir) == same(&config.dir) {
                why.insert(
                    fleet.name.clone(),
                    format!("promote_after names this configuration's own directory ({place}): point it at the environment that must go first"),
                );
                continue;
            }
        }
        if !states.contains_key(&place) {
            let read = read(cli, &after.place).await;
            states.insert(place.clone(), read);
        }
        let release = crate::plan::release_name(fleet);
        let spec = crate::plan::image_spec(fleet);
        let verdict = match &states[&place] {
            Ok(upstream) => crate::plan::proven(upstream, &place, &after.fleet, &release, &spec),
            Err(e) => Err(format!(
                "the state of {place} cannot be read, so release {release} cannot be shown to have finished there: {e}"
            )),
        };
        if let Err(reason) = verdict {
            why.insert(fleet.name.clone(), reason);
        }
    }
    why
}

/// The other environment's state, through the backend its configuration names.
async fn read(cli: &Cli, place: &Upstream) -> Result<State, String> {
    let backend = match place {
        Upstream::Backend(backend) => backend.clone(),
        Upstream::Dir(dir) => {
            // Only its backend is wanted: its variables may be unset here.
            let config = crate::config::load_with(dir, &VarInputs::default(), Mode::Running)
                .map_err(|e| format!("its configuration does not load:\n{e}"))?;
            // A backend block whose values come from variables falls back to the default
            // file without them: that would read some other state. Refused instead.
            let default = dir.join(".immune/state.json");
            let written = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "hcl"))
                .any(|e| {
                    std::fs::read_to_string(e.path()).is_ok_and(|t| {
                        t.contains("backend \"s3\"")
                            || (t.contains("backend \"local\"") && t.contains("path"))
                    })
                });
            if written && config.backend == (crate::config::Backend::Local { path: default }) {
                return Err("its backend block could not be read without its variables: write the backend out in promote_after { backend \"...\" { ... } } instead".into());
            }
            config.backend
        }
    };
    let opened = super::init::open(cli, &backend)
        .await
        .map_err(|e| e.to_string().trim_start_matches("error: ").to_string())?;
    opened.load().await.map_err(|e| e.to_string())
}
