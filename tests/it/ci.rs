//! The example CI pipeline (examples/ci): its jobs' scripts run in the workflow's order on
//! this machine, LocalStack standing in for the account, the plan handed from the plan
//! job to the apply job as an artifact would be.

use crate::harness::{surroundings, World, ENDPOINT};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the quickstart with its own namespace, so that its names are this test's.
fn quickstart(dir: &Path, namespace: &str) {
    std::fs::create_dir_all(dir).unwrap();
    for file in ["bake.sh", "boot.sh"] {
        std::fs::copy(
            repo().join("examples/quickstart").join(file),
            dir.join(file),
        )
        .unwrap();
    }
    // Image names are the account's: the rehearsal's and the account's share one here.
    let main = std::fs::read_to_string(repo().join("examples/quickstart/main.hcl")).unwrap();
    let named = main.replace("\"quickstart-web-", &format!("\"{namespace}-web-"));
    assert_ne!(main, named, "the quickstart names its image");
    std::fs::write(dir.join("main.hcl"), named).unwrap();
    std::fs::write(
        dir.join("namespace.hcl"),
        format!("immune {{\n  namespace = \"{namespace}\"\n}}\n"),
    )
    .unwrap();
}

/// Runs one job's script as the workflow does, in `cwd`.
fn job(script: &str, cwd: &Path, env: &[(&str, String)]) -> (i32, String) {
    let mut command = Command::new("bash");
    command
        .arg(repo().join("examples/ci").join(script))
        .current_dir(cwd)
        .env("IMMUNE", env!("CARGO_BIN_EXE_immune"))
        .env("NO_COLOR", "1");
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().expect("run the job's script");
    let text = format!(
        "{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_pipeline_rehearses_plans_and_applies_the_saved_plan_in_another_job() {
    let w = World::new();
    let workflow = std::fs::read_to_string(repo().join("examples/ci/deploy.yml")).unwrap();
    let order: Vec<usize> = [
        "rehearse.sh",
        "plan.sh",
        "upload-artifact",
        "download-artifact",
        "apply.sh",
    ]
    .iter()
    .map(|step| {
        workflow
            .find(step)
            .unwrap_or_else(|| panic!("deploy.yml lacks {step}"))
    })
    .collect();
    assert!(
        order.windows(2).all(|p| p[0] < p[1]),
        "the jobs' order changed"
    );

    // Job 1: the rehearsal on LocalStack, in a throwaway copy.
    let rehearsed: PathBuf = w.dir.join("rehearsed");
    quickstart(&rehearsed, &format!("{}r", w.prefix));
    let (code, out) = job(
        "rehearse.sh",
        &w.dir,
        &[
            ("RELEASE", "v1".into()),
            ("IMMUNE_CONFIG", rehearsed.display().to_string()),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("release complete"), "{out}");
    assert!(
        !rehearsed.join(".immune").exists(),
        "the rehearsal never writes the configuration's state"
    );

    // Job 2: the plan against "the account" (LocalStack here), saved as the artifact.
    let config = w.dir.join("config");
    quickstart(&config, &format!("{}a", w.prefix));
    let account = surroundings(&format!("{}a", w.prefix), "us-east-1");
    let vars = w.dir.join("production.tfvars");
    std::fs::write(
        &vars,
        format!(
            "subnets = {:?}\nsecurity_groups = [\"{}\"]\nsource_ami = \"{}\"\nload_balancer = \"{}\"\nalarm = \"{}\"\n",
            account.subnets, account.security_group, account.source_ami, account.load_balancer, account.alarm
        ),
    )
    .unwrap();
    let plan_job = w.dir.join("plan-job");
    std::fs::create_dir_all(&plan_job).unwrap();
    let outputs = plan_job.join("github-output");
    let aws = |extra: Vec<(&'static str, String)>| {
        let mut env = vec![
            ("AWS_ENDPOINT_URL", ENDPOINT.to_string()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("IMMUNE_CONFIG", config.display().to_string()),
        ];
        env.extend(extra);
        env
    };
    let (code, out) = job(
        "plan.sh",
        &plan_job,
        &aws(vec![
            ("RELEASE", "v1".into()),
            ("VAR_FILE", vars.display().to_string()),
            ("GITHUB_OUTPUT", outputs.display().to_string()),
        ]),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("AWS us-east-1 (1 fleet): account"),
        "init ran: {out}"
    );
    assert!(out.contains("first release v1"), "{out}");
    assert_eq!(std::fs::read_to_string(&outputs).unwrap(), "changes=true\n");

    // Job 3: on another machine, the downloaded plan, with no variables given again.
    let apply_job = w.dir.join("apply-job");
    std::fs::create_dir_all(&apply_job).unwrap();
    std::fs::copy(plan_job.join("immune.plan"), apply_job.join("immune.plan")).unwrap();
    let (code, out) = job("apply.sh", &apply_job, &aws(Vec::new()));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("release complete"), "{out}");
    let outputs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(apply_job.join("outputs.json")).unwrap())
            .unwrap();
    assert!(outputs.is_object(), "{outputs}");
    let sdk = w.sdk().await;
    assert!(sdk.group_exists(&format!("{}a-web-v001", w.prefix)).await);

    // The next run of the pipeline: nothing to do, so no apply job.
    std::fs::remove_file(plan_job.join("github-output")).unwrap();
    let (code, out) = job(
        "plan.sh",
        &plan_job,
        &aws(vec![
            ("RELEASE", "v1".into()),
            ("VAR_FILE", vars.display().to_string()),
            (
                "GITHUB_OUTPUT",
                plan_job.join("github-output").display().to_string(),
            ),
        ]),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::read_to_string(plan_job.join("github-output")).unwrap(),
        "changes=false\n"
    );

    // A plan that went stale between the jobs (someone applied meanwhile): the apply job
    // says to plan anew, not to resume.
    let (code, out) = job(
        "plan.sh",
        &plan_job,
        &aws(vec![
            ("RELEASE", "v2".into()),
            ("VAR_FILE", vars.display().to_string()),
        ]),
    );
    assert_eq!(code, 0, "{out}");
    std::fs::copy(plan_job.join("immune.plan"), apply_job.join("immune.plan")).unwrap();
    let meanwhile = crate::harness::immune_in(
        &config,
        &[
            "apply",
            "--auto-approve",
            "--var",
            "release=v3",
            "--var-file",
            &vars.display().to_string(),
        ],
        ENDPOINT,
    );
    assert_eq!(meanwhile.code, 0, "{meanwhile:?}");
    let (code, out) = job("apply.sh", &apply_job, &aws(Vec::new()));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("saved plan is stale"), "{out}");
    assert!(
        out.contains("::error::the saved plan cannot be applied as it is"),
        "{out}"
    );
}
