//! Worker fleets on LocalStack (issue 13): a fleet without a traffic block is released by
//! capacity, and leaving workers finish their jobs through the groups' termination
//! lifecycle hook. The test plays the workers: it completes the lifecycle actions of the
//! instances that wait in `Terminating:Wait` (LocalStack runs the hooks: see
//! localstack/plugin/immune_localstack_plugin/lifecycle.py).

use crate::harness::{Sdk, World};
use aws_sdk_autoscaling::types::LifecycleState;
use aws_sdk_cloudwatch::types::StateValue;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A worker fleet named after the prefix: 2 workers (min 1, max 4), released 50% then
/// 100%, leaving workers given 30 s (the least AWS allows).
fn worker_config(w: &World, rollout_extra: &str, steps: &str) -> String {
    let s = &w.surroundings;
    format!(
        r##"
variable "release" {{ type = string }}

fleet "{prefix}" {{
  release = var.release
  image {{
    source_ami    = "{source_ami}"
    instance_type = "t3.micro"
    provision     = "#!/bin/sh\necho baked"
  }}
  instances {{
    instance_type     = "t3.micro"
    subnets           = {subnets:?}
    security_groups   = ["{sg}"]
    termination_grace = "30s"
    capacity {{
      min     = 1
      max     = 4
      desired = 2
    }}
  }}
  rollout {{
    steps          = {steps}
    pause          = "1s"
    healthy_within = "1m"
    poll_interval  = "200ms"
    {rollout_extra}
  }}
}}
"##,
        prefix = w.prefix,
        source_ami = s.source_ami,
        subnets = s.subnets,
        sg = s.security_group,
    )
}

/// The test playing the fleet's workers: each instance that waits to leave finishes its
/// job and completes its lifecycle action, unless the workers `hang`.
struct Workers {
    /// Instances whose lifecycle action was completed, with the group they left.
    done: Arc<Mutex<Vec<(String, String)>>>,
    /// Calls that failed: a group deleted under a worker still finishing would show here.
    errors: Arc<Mutex<Vec<String>>>,
    hang: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Workers {
    fn play(prefix: &str, hang: bool) -> Workers {
        let done = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let hang = Arc::new(AtomicBool::new(hang));
        let (prefix, d, e, h) = (
            prefix.to_string(),
            done.clone(),
            errors.clone(),
            hang.clone(),
        );
        let task = tokio::spawn(async move {
            let sdk = Sdk::new().await;
            loop {
                tokio::time::sleep(Duration::from_millis(150)).await;
                if h.load(Ordering::SeqCst) {
                    continue;
                }
                for (group, instance) in waiting(&sdk, &prefix).await {
                    let completed = sdk
                        .autoscaling
                        .complete_lifecycle_action()
                        .auto_scaling_group_name(&group)
                        .lifecycle_hook_name("immune-termination")
                        .instance_id(&instance)
                        .lifecycle_action_result("CONTINUE")
                        .send()
                        .await;
                    match completed {
                        Ok(_) => d.lock().unwrap().push((group, instance)),
                        Err(err) => e.lock().unwrap().push(format!("{err:?}")),
                    }
                }
            }
        });
        Workers {
            done,
            errors,
            hang,
            task,
        }
    }

    fn finished_in(&self, group: &str) -> usize {
        self.done
            .lock()
            .unwrap()
            .iter()
            .filter(|(g, _)| g == group)
            .count()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// (group, instance) of every instance of the test's groups waiting to leave.
async fn waiting(sdk: &Sdk, prefix: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for group in sdk.groups_with_prefix(prefix).await {
        let Ok(out) = sdk
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&group)
            .send()
            .await
        else {
            continue;
        };
        for g in out.auto_scaling_groups() {
            for i in g.instances() {
                if i.lifecycle_state() == Some(&LifecycleState::TerminatingWait) {
                    found.push((group.clone(), i.instance_id().unwrap_or_default().into()));
                }
            }
        }
    }
    found
}

/// (min, max, desired, instances InService) of a group, if it exists.
async fn capacity(sdk: &Sdk, group: &str) -> Option<(i32, i32, i32, usize)> {
    let out = sdk
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .unwrap();
    out.auto_scaling_groups().first().map(|g| {
        let in_service = g
            .instances()
            .iter()
            .filter(|i| i.lifecycle_state() == Some(&LifecycleState::InService))
            .count();
        (
            g.min_size().unwrap_or(-1),
            g.max_size().unwrap_or(-1),
            g.desired_capacity().unwrap_or(-1),
            in_service,
        )
    })
}

fn apply(w: &World, release: &str) -> crate::harness::Run {
    w.immune(&[
        "apply",
        "--auto-approve",
        "--var",
        &format!("release={release}"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_releases_move_all_capacity_and_delete_the_old_group_after_its_workers_finished()
{
    let w = World::new();
    let sdk = w.sdk().await;
    let workers = Workers::play(&w.prefix, false);
    w.write("main.hcl", &worker_config(&w, "", "[50, 100]"));

    let plan = w.immune(&["plan", "--var", "release=v1"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout
            .contains(&format!("capacity 1 -> 2 of 2 instances on {}", w.group(1))),
        "the plan shows the steps as capacity: {plan:?}"
    );
    assert!(
        !plan.stdout.contains("target "),
        "no target group: {plan:?}"
    );

    let v1 = apply(&w, "v1");
    assert_eq!(v1.code, 0, "{v1:?}");
    assert!(v1.stdout.contains("all capacity on"), "{v1:?}");
    assert_eq!(capacity(&sdk, &w.group(1)).await, Some((1, 4, 2, 2)));
    let hooks = sdk
        .autoscaling
        .describe_lifecycle_hooks()
        .auto_scaling_group_name(w.group(1))
        .send()
        .await
        .unwrap();
    let hook = &hooks.lifecycle_hooks()[0];
    assert_eq!(hook.lifecycle_hook_name(), Some("immune-termination"));
    assert_eq!(
        hook.lifecycle_transition(),
        Some("autoscaling:EC2_INSTANCE_TERMINATING")
    );
    assert_eq!(hook.heartbeat_timeout(), Some(30));
    assert_eq!(hook.default_result(), Some("CONTINUE"));

    let plan = w.immune(&["plan", "--var", "release=v2"]);
    assert!(
        plan.stdout.contains(&format!(
            "{} (release v1) loses its capacity step by step",
            w.group(1)
        )),
        "{plan:?}"
    );
    let v2 = apply(&w, "v2");
    assert_eq!(v2.code, 0, "{v2:?}");
    assert_eq!(
        sdk.groups_with_prefix(&w.prefix).await,
        [w.group(2)],
        "the first group is deleted"
    );
    assert_eq!(capacity(&sdk, &w.group(2)).await, Some((1, 4, 2, 2)));
    assert_eq!(
        workers.finished_in(&w.group(1)),
        2,
        "both old workers finished their jobs before their group went"
    );
    assert!(
        workers.errors.lock().unwrap().is_empty(),
        "no worker was cut off: {:?}",
        workers.errors.lock().unwrap()
    );
    assert_eq!(sdk.live_instances(&w.prefix).await, 2);
    let state = w.state();
    let active = &state["fleets"][&w.prefix]["active"];
    assert_eq!(active["name"], w.group(2));
    assert!(active["target_group"].is_null() && active["listener_arn"].is_null());
    // The load balancer the surroundings made is left alone.
    assert_eq!(
        sdk.weights(&w.surroundings.listener_arn).await,
        [(w.surroundings.placeholder_target_group_name(), 100)]
    );

    // The fleet leaves the configuration: its workers finish their jobs, then it goes.
    w.write("main.hcl", "variable \"release\" { type = string }\n");
    let retire = apply(&w, "v2");
    assert_eq!(retire.code, 0, "{retire:?}");
    assert!(sdk.groups_with_prefix(&w.prefix).await.is_empty());
    assert_eq!(
        workers.finished_in(&w.group(2)),
        2,
        "retired through the hook"
    );
    assert_eq!(sdk.live_instances(&w.prefix).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_worker_release_gives_the_old_group_its_capacity_back_and_locks() {
    let w = World::new();
    let sdk = w.sdk().await;
    let _workers = Workers::play(&w.prefix, false);
    let alarm = w.surroundings.alarm.clone();
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    let gate = format!("gate \"failures\" {{\n      alarm = \"{alarm}\"\n    }}");
    let config = worker_config(&w, &gate, "[50, 100]");
    w.write("main.hcl", &config);
    assert_eq!(apply(&w, "v1").code, 0);
    // Long enough to be watching when the alarm fires.
    w.write(
        "main.hcl",
        &config.replace("pause          = \"1s\"", "pause = \"30s\""),
    );

    let v2 = w.spawn(&["apply", "--auto-approve", "--var", "release=v2"]);
    w.wait_for_phase("observe");
    // The new group holds half of the capacity, the old one the other half.
    assert_eq!(capacity(&sdk, &w.group(2)).await, Some((1, 1, 1, 1)));
    assert_eq!(capacity(&sdk, &w.group(1)).await, Some((1, 1, 1, 1)));
    sdk.set_alarm(&alarm, StateValue::Alarm).await;
    let out = v2.wait(Duration::from_secs(90));
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    assert_eq!(out.code, 3, "rolled back: {out:?}");
    assert!(out.stdout.contains("gate failures failed"), "{out:?}");
    assert_eq!(
        capacity(&sdk, &w.group(1)).await,
        Some((1, 4, 2, 2)),
        "the old group has its capacity back"
    );
    assert_eq!(sdk.groups_with_prefix(&w.prefix).await, [w.group(1)]);
    let state = w.state();
    assert!(state["fleets"][&w.prefix]["lock"]["reason"]
        .as_str()
        .unwrap()
        .contains("failures"));
    // Apply would do nothing but refuse: the detailed exit code says so with apply's 4.
    let plan = w.immune(&["plan", "--detailed-exitcode", "--var", "release=v3"]);
    assert!(plan.stdout.contains("locked"), "{plan:?}");
    assert_eq!(plan.code, 4, "{plan:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_worker_that_never_finishes_is_terminated_after_its_grace() {
    let w = World::new();
    let sdk = w.sdk().await;
    let workers = Workers::play(&w.prefix, true);
    w.write("main.hcl", &worker_config(&w, "", "[100]"));
    assert_eq!(apply(&w, "v1").code, 0);
    let started = Instant::now();
    let v2 = apply(&w, "v2");
    assert_eq!(v2.code, 0, "{v2:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "immune waited out the grace: {:?}",
        started.elapsed()
    );
    assert!(workers.done.lock().unwrap().is_empty());
    assert_eq!(sdk.groups_with_prefix(&w.prefix).await, [w.group(2)]);
    assert_eq!(sdk.live_instances(&w.prefix).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_capacity_step_resumes_correctly() {
    let w = World::new();
    let sdk = w.sdk().await;
    // The old workers hold on to their jobs while immune is killed.
    let workers = Workers::play(&w.prefix, true);
    w.write("main.hcl", &worker_config(&w, "", "[50, 100]"));
    assert_eq!(apply(&w, "v1").code, 0);

    let v2 = w.spawn(&["apply", "--auto-approve", "--var", "release=v2"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    while waiting(&sdk, &w.prefix).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the old group was never scaled in"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    v2.signal("KILL");
    let _ = v2.wait(Duration::from_secs(10));
    assert_eq!(w.fleet_state()["rollout"]["phase"]["name"], "observe");

    let plan = w.immune(&["plan", "--var", "release=v2"]);
    assert!(plan.stdout.contains("resume"), "{plan:?}");
    workers.hang.store(false, Ordering::SeqCst);
    let resumed = apply(&w, "v2");
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert!(
        resumed.stdout.contains("resuming release v2"),
        "{resumed:?}"
    );
    assert_eq!(sdk.groups_with_prefix(&w.prefix).await, [w.group(2)]);
    assert_eq!(capacity(&sdk, &w.group(2)).await, Some((1, 4, 2, 2)));
    assert_eq!(workers.finished_in(&w.group(1)), 2);
    assert!(w.state()["fleets"][&w.prefix]["rollout"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gates_are_watched_while_old_workers_finish_their_jobs() {
    let w = World::new();
    let sdk = w.sdk().await;
    let workers = Workers::play(&w.prefix, true);
    let alarm = w.surroundings.alarm.clone();
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    let gate = format!("gate \"failures\" {{\n      alarm = \"{alarm}\"\n    }}");
    w.write("main.hcl", &worker_config(&w, &gate, "[50, 100]"));
    assert_eq!(apply(&w, "v1").code, 0);

    // The old worker holds on to its job (for up to 30 s) when the alarm fires.
    let v2 = w.spawn(&["apply", "--auto-approve", "--var", "release=v2"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    while waiting(&sdk, &w.prefix).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the old group was never scaled in"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fired = Instant::now();
    sdk.set_alarm(&alarm, StateValue::Alarm).await;
    workers.hang.store(false, Ordering::SeqCst);
    let out = v2.wait(Duration::from_secs(90));
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    assert_eq!(out.code, 3, "rolled back: {out:?}");
    assert!(
        fired.elapsed() < Duration::from_secs(25),
        "caught while the workers were leaving, not after their grace: {:?}",
        fired.elapsed()
    );
    assert_eq!(capacity(&sdk, &w.group(1)).await, Some((1, 4, 2, 2)));
    assert_eq!(sdk.groups_with_prefix(&w.prefix).await, [w.group(1)]);
}
