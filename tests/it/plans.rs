//! Plans you can trust, on LocalStack: drift made through the AWS SDK shows in the plan
//! and apply repairs it; `--json` follows its schema; a saved plan runs as it is or is
//! refused as stale; a fleet removed from the configuration is retired.

use crate::harness::World;
use crate::schema::plan_schema_errors as schema_errors;
use serde_json::Value;

fn config(w: &World) -> String {
    let s = &w.surroundings;
    w.fleet_config(&s.source_ami, &s.load_balancer, "")
}

#[tokio::test(flavor = "multi_thread")]
async fn capacity_changed_by_hand_is_reported_as_drift_and_apply_sets_it_back() {
    let w = World::new();
    let sdk = w.sdk().await;
    w.write("main.hcl", &config(&w));
    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");

    // An operator scales the group by hand, outside immune.
    sdk.autoscaling
        .update_auto_scaling_group()
        .auto_scaling_group_name(w.group(1))
        .desired_capacity(2)
        .send()
        .await
        .expect("UpdateAutoScalingGroup");

    let plan = w.immune(&["plan", "--detailed-exitcode", "--var", "release=v1"]);
    assert_eq!(plan.code, 2, "drift is a change: {plan:?}");
    assert!(
        plan.stdout.contains(&format!(
            "fleet.{}: group {} desired capacity 1 -> 2 changed outside immune",
            w.prefix,
            w.group(1)
        )),
        "{plan:?}"
    );
    assert!(plan.stdout.contains("apply sets it back"), "{plan:?}");

    let json = w.immune(&["plan", "--json", "--var", "release=v1"]);
    assert_eq!(json.code, 0, "{json:?}");
    let document: Value = serde_json::from_str(&json.stdout).expect("plan --json is JSON");
    assert_eq!(
        schema_errors(&document),
        Vec::<String>::new(),
        "{document:#}"
    );
    let change = &document["changes"][0];
    assert_eq!(change["action"]["kind"], "update", "{change:#}");
    assert_eq!(change["action"]["capacity"]["to"]["desired"], 1);
    assert_eq!(
        change["drift"][0]["change"],
        "desired capacity 1 -> 2 changed outside immune"
    );

    let fix = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(fix.code, 0, "{fix:?}");
    let group = sdk
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(w.group(1))
        .send()
        .await
        .unwrap();
    assert_eq!(group.auto_scaling_groups()[0].desired_capacity(), Some(1));
    assert!(sdk.group_exists(&w.group(1)).await, "repaired in place");
    assert_eq!(w.fleet_state()["seq"], 1, "no new release");
    let clean = w.immune(&["plan", "--detailed-exitcode", "--var", "release=v1"]);
    assert_eq!(clean.code, 0, "{clean:?}");

    let show = w.immune(&["state", "show", &w.prefix]);
    assert_eq!(show.code, 0, "{show:?}");
    assert!(
        show.stdout
            .contains(&format!("active:        {} (release v1)", w.group(1))),
        "{show:?}"
    );
    assert!(
        show.stdout.contains("capacity min 1, max 2, desired 1"),
        "{show:?}"
    );
    assert!(show.stdout.contains("before immune: "), "{show:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saved_plan_runs_without_asking_and_an_older_one_is_refused_as_stale() {
    let w = World::new();
    let sdk = w.sdk().await;
    let s = &w.surroundings;
    w.write("main.hcl", &config(&w));
    let plan_file = w.dir.join("v1.plan");
    let stale_file = w.dir.join("stale.plan");
    let saved = w.immune(&[
        "plan",
        "--out",
        plan_file.to_str().unwrap(),
        "--var",
        "release=v1",
    ]);
    assert_eq!(saved.code, 0, "{saved:?}");
    std::fs::copy(&plan_file, &stale_file).unwrap();

    // No --auto-approve and no terminal: only a saved plan runs without asking.
    let applied = w.immune(&["apply", plan_file.to_str().unwrap(), "--var", "release=v1"]);
    assert_eq!(applied.code, 0, "{applied:?}");
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(1), 100)]);

    let again = w.immune(&["apply", stale_file.to_str().unwrap(), "--var", "release=v1"]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("saved plan is stale"), "{again:?}");
    assert!(
        again.stderr.contains("the state changed since it was made"),
        "{again:?}"
    );
    assert_eq!(w.fleet_state()["seq"], 1, "a stale plan changes nothing");

    let v2_file = w.dir.join("v2.plan");
    let v2 = w.immune(&[
        "plan",
        "--out",
        v2_file.to_str().unwrap(),
        "--var",
        "release=v2",
    ]);
    assert_eq!(v2.code, 0, "{v2:?}");
    let other_vars = w.immune(&["apply", v2_file.to_str().unwrap(), "--var", "release=v3"]);
    assert_eq!(other_vars.code, 1, "{other_vars:?}");
    assert!(
        other_vars
            .stderr
            .contains("a variable value given now (--var, --var-file, IMMUNE_VAR_), differs"),
        "{other_vars:?}"
    );
    assert!(!sdk.group_exists(&w.group(2)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saved_plan_carries_its_values_but_asks_for_sensitive_ones_again() {
    let w = World::new();
    let sdk = w.sdk().await;
    let s = &w.surroundings;
    // A sensitive variable, used by the instances' user data.
    let config = config(&w)
        .replace(
            "variable \"release\" { type = string }",
            "variable \"release\" { type = string }\nvariable \"token\" {\n  type      = string\n  sensitive = true\n}",
        )
        .replace(
            "    security_groups = [",
            "    user_data       = \"TOKEN=${var.token}\"\n    security_groups = [",
        );
    let outputs = format!(
        "output \"group\" {{ value = fleet.{p}.group }}\noutput \"image\" {{ value = fleet.{p}.image }}\noutput \"token\" {{\n  value     = var.token\n  sensitive = true\n}}\n",
        p = w.prefix
    );
    w.write("main.hcl", &format!("{config}\n{outputs}"));
    let plan_file = w.dir.join("ci.plan");
    let plan = w.immune(&[
        "plan",
        "--out",
        plan_file.to_str().unwrap(),
        "--var",
        "release=v1",
        "--var",
        "token=s3cret-value",
    ]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let text = std::fs::read_to_string(&plan_file).unwrap();
    assert!(
        !text.contains("s3cret-value"),
        "a sensitive value is never written"
    );
    let document: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(document["variables"]["release"]["value"], "v1");
    assert_eq!(document["variables"]["token"]["sensitive"], true);
    assert_eq!(schema_errors(&document), Vec::<String>::new());

    // Another job, another shell: no --var for release, the token must come again.
    let without = w.immune(&["apply", plan_file.to_str().unwrap()]);
    assert_eq!(without.code, 1, "{without:?}");
    assert!(
        without
            .stderr
            .contains("no value for required variable `token`")
            && without
                .stderr
                .contains("holds no sensitive values: give token again"),
        "{without:?}"
    );
    let wrong = w.immune(&["apply", plan_file.to_str().unwrap(), "--var", "token=other"]);
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(
        wrong.stderr.contains(
            "the sensitive variable `token` is not given the value the plan was made with"
        ),
        "{wrong:?}"
    );
    assert!(!wrong.stderr.contains("other"), "{wrong:?}");
    // The token from the environment, as a CI secret would come.
    let applied = crate::harness::immune_command(
        &w.dir,
        &["apply", plan_file.to_str().unwrap()],
        crate::harness::ENDPOINT,
    )
    .env("IMMUNE_VAR_token", "s3cret-value")
    .output()
    .unwrap();
    assert!(applied.status.success(), "{applied:?}");
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(1), 100)]);

    // The outputs after apply, and from `immune output`, name what runs.
    let stdout = String::from_utf8_lossy(&applied.stdout);
    assert!(
        stdout.contains(&format!("group = \"{}\"", w.group(1)))
            && stdout.contains("token = (sensitive)")
            && !stdout.contains("s3cret-value"),
        "{stdout}"
    );
    let json = w.immune(&["output", "--json"]);
    assert_eq!(json.code, 0, "{json:?}");
    let outputs: Value = serde_json::from_str(&json.stdout).unwrap();
    let active = &w.state()["fleets"][&w.prefix]["active"];
    assert_eq!(outputs["group"]["value"], active["name"]);
    assert_eq!(outputs["image"]["value"], active["image"]);
    assert!(outputs["image"]["value"]
        .as_str()
        .unwrap()
        .starts_with("ami-"));
    // Without the token given, the sensitive output is not known; it is never printed.
    assert!(!json.stdout.contains("s3cret-value"));
    let bare = w.immune(&["output", "group"]);
    assert_eq!(bare.stdout.trim(), w.group(1), "{bare:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_removed_from_the_configuration_is_retired_to_its_original_traffic() {
    let w = World::new();
    let sdk = w.sdk().await;
    let s = &w.surroundings;
    let placeholder = sdk.weights(&s.listener_arn).await;
    assert_eq!(placeholder, [(s.placeholder_target_group_name(), 100)]);
    w.write("main.hcl", &config(&w));
    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");

    // The fleet leaves the configuration; another stays so the directory is not empty.
    w.write("main.hcl", "variable \"release\" { type = string }\n");
    let plan = w.immune(&["plan", "--detailed-exitcode", "--var", "release=v1"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(
        plan.stdout.contains(&format!(
            "- fleet.{}: fleet {} is no longer in the configuration",
            w.prefix, w.prefix
        )),
        "{plan:?}"
    );
    let retire = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(retire.code, 0, "{retire:?}");
    assert_eq!(sdk.weights(&s.listener_arn).await, placeholder);
    assert!(!sdk.group_exists(&w.group(1)).await);
    assert!(!sdk.target_group_exists(&w.group(1)).await);
    let done = w.immune(&["plan", "--detailed-exitcode", "--var", "release=v1"]);
    assert_eq!(done.code, 0, "{done:?}");
}
