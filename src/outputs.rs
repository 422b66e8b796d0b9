//! The root configuration's outputs with what runs filled in: `fleet.NAME.group` and
//! friends are known only after apply, so evaluation leaves markers
//! (`${fleet.NAME.group}`) that are resolved here from the state. Printed after apply and
//! by `immune output`; a sensitive output is masked unless asked for by name.

use crate::config::{Config, Output};
use crate::state::State;
use serde::Serialize;

/// The fleet attributes only apply knows: the active group's.
pub const LIVE_ATTRIBUTES: [&str; 4] = ["group", "target_group", "image", "release"];

/// One output as it stands now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolved {
    pub name: String,
    pub sensitive: bool,
    /// `None` while something it shows is not applied yet.
    pub value: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Resolved {
    /// The value as a listing shows it: none for a sensitive output.
    pub fn shown(&self) -> Option<serde_json::Value> {
        self.value.clone().filter(|_| !self.sensitive)
    }
}

/// Every output of `config` with the live values of `state`.
pub fn resolve(config: &Config, state: &State) -> Vec<Resolved> {
    config
        .outputs
        .iter()
        .map(|output| resolve_one(output, state))
        .collect()
}

fn resolve_one(output: &Output, state: &State) -> Resolved {
    let json = serde_json::to_value(&output.value).unwrap_or(serde_json::Value::Null);
    Resolved {
        name: output.name.clone(),
        sensitive: output.sensitive,
        value: fill(json, state),
        description: output.description.clone(),
    }
}

/// Replaces each marker in the strings of `value`; `None` when one names a fleet that
/// has no active release yet.
fn fill(value: serde_json::Value, state: &State) -> Option<serde_json::Value> {
    use serde_json::Value;
    Some(match value {
        Value::String(text) => Value::String(fill_text(&text, state)?),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| fill(v, state))
                .collect::<Option<_>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| Some((k, fill(v, state)?)))
                .collect::<Option<_>>()?,
        ),
        other => other,
    })
}

fn fill_text(text: &str, state: &State) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${fleet.") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let marker = &rest[start + 2..start + len];
        let mut parts = marker.splitn(3, '.');
        let (_, fleet, attribute) = (parts.next(), parts.next()?, parts.next()?);
        let active = state.fleets.get(fleet)?.active.as_ref()?;
        let live = match attribute {
            "group" => active.name.clone(),
            "target_group" => active.target_group.clone().unwrap_or_default(),
            "image" => active.image.clone(),
            "release" => active.release.clone(),
            _ => return None,
        };
        out.push_str(&rest[..start]);
        out.push_str(&live);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// `name = value` lines, sensitive values masked; `None` values read as not applied yet.
pub fn render(outputs: &[Resolved]) -> String {
    let width = outputs.iter().map(|o| o.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for o in outputs {
        let shown = match (&o.value, o.sensitive) {
            (_, true) => "(sensitive)".to_string(),
            (Some(value), false) => show(value),
            (None, false) => "(known once the fleet runs a release)".to_string(),
        };
        out += &format!("{:width$} = {shown}\n", o.name);
    }
    out
}

/// A value as HCL writes it: strings quoted, lists and maps inline.
pub fn show(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(show).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k} = {}", show(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::LaunchTemplateRef;
    use crate::state::Group;

    fn state() -> State {
        let mut state = State::new();
        state.fleets.entry("web".into()).or_default().active = Some(Group {
            name: "web-v003".into(),
            seq: 3,
            release: "v3".into(),
            fingerprint: "f".into(),
            image: "ami-3".into(),
            launch_template: LaunchTemplateRef {
                id: "lt".into(),
                version: 3,
            },
            target_group: Some("arn:tg/web-v003".into()),
            listener_arn: Some("arn:l".into()),
            created_at: "now".into(),
            alarms: Vec::new(),
            capacity: None,
            irreversible: false,
        });
        state
    }

    #[test]
    fn markers_become_what_runs_and_an_unapplied_fleet_is_unknown() {
        let state = state();
        let value = serde_json::json!({
            "group": "${fleet.web.group}",
            "both": ["${fleet.web.image}", "release ${fleet.web.release} on ${fleet.web.target_group}"],
            "port": 8080,
        });
        assert_eq!(
            fill(value, &state),
            Some(serde_json::json!({
                "group": "web-v003",
                "both": ["ami-3", "release v3 on arn:tg/web-v003"],
                "port": 8080,
            }))
        );
        assert_eq!(fill("${fleet.api.group}".into(), &state), None);
        assert_eq!(fill("no markers".into(), &state), Some("no markers".into()));
    }

    #[test]
    fn sensitive_outputs_are_masked() {
        let outputs = [
            Resolved {
                name: "group".into(),
                sensitive: false,
                value: Some("web-v003".into()),
                description: None,
            },
            Resolved {
                name: "token".into(),
                sensitive: true,
                value: Some("s3cret".into()),
                description: None,
            },
            Resolved {
                name: "later".into(),
                sensitive: false,
                value: None,
                description: None,
            },
        ];
        let text = render(&outputs);
        assert_eq!(
            text,
            "group = \"web-v003\"\ntoken = (sensitive)\nlater = (known once the fleet runs a release)\n"
        );
        assert!(!text.contains("s3cret"));
    }
}
