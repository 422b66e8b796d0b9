//! The plan as a document: `plan --json` prints it and `plan --out FILE` saves it for
//! `apply FILE`. Its schema is `docs/plan.schema.json`, versioned by `format_version`.

use super::{Action, Change, Plan};
use crate::config::Config;
use crate::state::State;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// Raised when the document changes incompatibly; `docs/plan.schema.json` follows it.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document {
    pub format_version: u32,
    pub immune_version: String,
    pub created_at: String,
    /// The state the plan was made from: `apply FILE` refuses the plan once it moved on.
    pub lineage: String,
    pub serial: u64,
    /// SHA-256 of the evaluated configuration, variables included (never the values).
    pub config_hash: String,
    pub has_changes: bool,
    pub summary: Summary,
    pub changes: Vec<Change>,
    /// The root variables the plan was made with, so that `apply FILE` needs no `--var`.
    /// A sensitive one is never written: only a salted hash of its value, and it must be
    /// given again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, SavedVariable>,
}

/// One root variable in a saved plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedVariable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
    /// For a sensitive variable: `salt:sha256(salt, value)`, to check the value given
    /// again without keeping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// `salt:hex` of SHA-256 over the salt and the value's JSON.
fn salted_hash(salt: &str, value: &hcl::Value) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0]);
    h.update(serde_json::to_string(value).unwrap_or_default().as_bytes());
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{salt}:{hex}")
}

fn saved_variables(config: &Config) -> BTreeMap<String, SavedVariable> {
    let salt = uuid::Uuid::new_v4().simple().to_string();
    config
        .variables
        .iter()
        .map(|v| {
            let saved = match v.sensitive {
                true => SavedVariable {
                    value: None,
                    sensitive: true,
                    hash: Some(salted_hash(&salt, &v.value)),
                },
                false => SavedVariable {
                    value: serde_json::to_value(&v.value).ok(),
                    sensitive: false,
                    hash: None,
                },
            };
            (v.name.clone(), saved)
        })
        .collect()
}

/// How many fleets get each kind of action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub release: usize,
    pub update: usize,
    pub retire: usize,
    pub resume: usize,
    pub blocked: usize,
    pub locked: usize,
    pub unchanged: usize,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for change in &self.changes {
            *match change.action {
                Action::Release(_) => &mut s.release,
                Action::Update(_) => &mut s.update,
                Action::Retire(_) => &mut s.retire,
                Action::Resume { .. } => &mut s.resume,
                Action::Blocked { .. } => &mut s.blocked,
                Action::Locked { .. } => &mut s.locked,
                Action::NoOp => &mut s.unchanged,
            } += 1;
        }
        s
    }
}

/// What the configuration asks for, as a hash: every fleet as evaluated, so a changed
/// file or variable changes it while formatting and comments do not. User data and the
/// bake script are left out of the serialized fleet (they may hold secrets), so their
/// hashes, the fingerprint and bake id, are added: they make the release too.
pub fn config_hash(config: &Config) -> String {
    let fleets = serde_json::to_string(&config.fleets).expect("fleets serialize");
    let mut hash = Sha256::new();
    hash.update(fleets.as_bytes());
    for fleet in &config.fleets {
        hash.update(super::fingerprint(fleet).as_bytes());
        hash.update(super::bake_id(fleet).as_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Document {
    pub fn new(plan: &Plan, state: &State, config: &Config) -> Self {
        Document {
            format_version: FORMAT_VERSION,
            immune_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: crate::state::now(),
            lineage: state.lineage.clone(),
            serial: state.serial,
            config_hash: config_hash(config),
            has_changes: plan.has_changes(),
            summary: plan.summary(),
            changes: plan.changes.clone(),
            variables: saved_variables(config),
        }
    }

    /// The non-sensitive values the plan carries, for loading the configuration again.
    pub fn saved_values(&self) -> Vec<(String, hcl::Value)> {
        self.variables
            .iter()
            .filter_map(|(name, v)| {
                let value = hcl::to_value(v.value.as_ref()?).ok()?;
                Some((name.clone(), value))
            })
            .collect()
    }

    /// The sensitive variables the plan was made with: they must be given again.
    pub fn sensitive_names(&self) -> Vec<String> {
        self.variables
            .iter()
            .filter(|(_, v)| v.sensitive)
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub fn plan(&self) -> Plan {
        Plan {
            changes: self.changes.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plan serializes")
    }

    pub fn write(&self, path: &Path) -> Result<(), String> {
        std::fs::write(path, format!("{}\n", self.to_json()))
            .map_err(|e| format!("cannot write the plan to {}: {e}", path.display()))
    }

    pub fn read(path: &Path) -> Result<Document, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the saved plan {shown}: {e}"))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{shown} is not a saved plan ({e})"))?;
        match value["format_version"].as_u64() {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "{shown} is a plan of format {v}; this immune reads format {FORMAT_VERSION}: make the plan again with this immune"
                ))
            }
            None => return Err(format!("{shown} is not a saved plan (no format_version)")),
        }
        serde_json::from_value(value).map_err(|e| format!("{shown} is not a saved plan ({e})"))
    }

    /// Why the saved plan may no longer be applied, if so: the state or the configuration
    /// (or its variables) moved on since it was made.
    pub fn stale(&self, state: &State, config: &Config) -> Option<String> {
        // A state never written gets a new lineage at every read: a plan made from nothing
        // applies to nothing, which then takes the plan's lineage.
        let both_empty = self.serial == 0 && state.serial == 0;
        if self.lineage != state.lineage && !both_empty {
            return Some(format!(
                "it was made for another state (lineage {}, now {})",
                self.lineage, state.lineage
            ));
        }
        if self.serial != state.serial {
            return Some(format!(
                "the state changed since it was made (serial {}, now {})",
                self.serial, state.serial
            ));
        }
        for (name, saved) in &self.variables {
            let Some(hash) = saved.hash.as_deref().filter(|_| saved.sensitive) else {
                continue;
            };
            let salt = hash.split_once(':').map_or("", |(salt, _)| salt);
            let now = config.variables.iter().find(|v| &v.name == name);
            if now.is_none_or(|v| salted_hash(salt, &v.value) != hash) {
                return Some(format!(
                    "the sensitive variable `{name}` is not given the value the plan was made with"
                ));
            }
        }
        if self.config_hash != config_hash(config) {
            return Some(
                "the configuration, or a variable value given now (--var, --var-file, IMMUNE_VAR_), differs from what the plan was made with; the plan carries its own values, so apply FILE needs none but the sensitive ones"
                    .into(),
            );
        }
        None
    }
}
