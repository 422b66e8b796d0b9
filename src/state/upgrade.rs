//! State documents written by older versions of immune, brought up to this one's step by
//! step before they are read. Each step is a function of the JSON document, so an old
//! state never has to be deserialized into types that no longer exist.

use serde_json::{json, Value};

/// Upgrades `document` from its `version` to `to`, one version at a time.
pub fn upgrade(mut document: Value, to: u32) -> Result<Value, String> {
    loop {
        let version = document["version"]
            .as_u64()
            .ok_or("the document has no version")? as u32;
        if version >= to {
            return Ok(document);
        }
        document = match version {
            1 => v1_to_v2(document),
            2 => v2_to_v3(document),
            other => return Err(format!("no upgrade from version {other}")),
        };
    }
}

/// Version 2 records each group's capacity (drift is reported against it) and the
/// traffic before the fleet's first release (a retired fleet gives it back). Version 1
/// knew neither: capacity stays unknown, so the first plan compares the live capacity
/// with the configuration only, and a fleet without its original traffic can only be
/// retired once its route sends it nothing.
fn v1_to_v2(mut document: Value) -> Value {
    if let Some(fleets) = document["fleets"].as_object_mut() {
        for fleet in fleets.values_mut() {
            for group in groups(fleet) {
                group
                    .as_object_mut()
                    .map(|g| g.entry("capacity").or_insert(Value::Null));
            }
            if let Some(f) = fleet.as_object_mut() {
                f.entry("original_weights").or_insert(json!([]));
            }
        }
    }
    document["version"] = json!(2);
    document
}

/// Version 3 tags everything immune creates with the state's lineage and owns only
/// that. What an older immune made carries `immune:managed` alone, so a state that
/// already released something keeps owning such resources (`legacy_ownership`): an
/// upgrade must not leave a live fleet behind as someone else's.
fn v2_to_v3(mut document: Value) -> Value {
    let released = document["fleets"]
        .as_object()
        .is_some_and(|fleets| !fleets.is_empty());
    document["legacy_ownership"] = json!(released);
    document["version"] = json!(3);
    document
}

fn groups(fleet: &mut Value) -> Vec<&mut Value> {
    let Some(f) = fleet.as_object_mut() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (key, value) in f.iter_mut() {
        match key.as_str() {
            "active" if value.is_object() => found.push(value),
            "previous" => found.extend(value.as_array_mut().into_iter().flatten()),
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_state_reads_as_version_2_with_nothing_lost() {
        let v1: Value = serde_json::from_str(include_str!("../../tests/state/v1.json")).unwrap();
        let v2 = upgrade(v1.clone(), 2).unwrap();
        assert_eq!(
            upgrade(v2.clone(), 3).unwrap()["legacy_ownership"],
            true,
            "what the older immune made stays this state's"
        );
        assert_eq!(v2["version"], 2);
        assert_eq!(v2["lineage"], v1["lineage"]);
        assert_eq!(v2["serial"], v1["serial"]);
        let web = &v2["fleets"]["web"];
        assert_eq!(web["active"]["capacity"], Value::Null);
        assert_eq!(web["previous"][0]["capacity"], Value::Null);
        assert_eq!(web["original_weights"], json!([]));
        assert_eq!(web["history"], v1["fleets"]["web"]["history"]);
        let state: super::super::State = serde_json::from_value(v2).unwrap();
        assert_eq!(
            state.fleets["web"].active.as_ref().unwrap().name,
            "web-v002"
        );
    }

    #[test]
    fn decoding_upgrades_and_refuses_what_is_newer() {
        let state =
            super::super::decode(include_str!("../../tests/state/v1.json"), "v1.json").unwrap();
        assert_eq!(state.version, super::super::VERSION);
        assert_eq!(state.serial, 27);
        let newer = json!({"version": 99, "lineage": "x", "serial": 1, "fleets": {}});
        assert!(matches!(
            super::super::decode(&newer.to_string(), "s"),
            Err(super::super::StateError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn a_current_document_is_left_as_it_is_and_an_unknown_one_is_refused() {
        let v3 = json!({"version": 3, "lineage": "x", "serial": 1, "fleets": {}});
        assert_eq!(upgrade(v3.clone(), 3).unwrap(), v3);
        let empty_v2 = json!({"version": 2, "lineage": "x", "serial": 1, "fleets": {}});
        assert_eq!(upgrade(empty_v2, 3).unwrap()["legacy_ownership"], false);
        assert!(upgrade(json!({"version": 0}), 2).is_err());
        assert!(upgrade(json!({}), 2).is_err());
    }
}
