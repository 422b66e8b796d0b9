//! The plan document's schema check, shared by the planner's unit tests (which include
//! this file) and the LocalStack tests of `plan --json`.

/// Problems of `document` against docs/plan.schema.json, one per line.
pub fn plan_schema_errors(document: &serde_json::Value) -> Vec<String> {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/plan.schema.json"))
            .expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the schema is valid");
    validator
        .iter_errors(document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}
