//! What a real AWS account does that a lenient emulator did not, on the LocalStack test
//! ground that now answers as AWS documents (see localstack/README.md): target groups
//! health-checked only once a route forwards to them, creates that show a moment later,
//! action lists replaced whole, composite alarms, and 5xx answers without an error code.

use crate::harness::{Run, Sdk, World, ENDPOINT};
use aws_sdk_cloudwatch::types::StateValue;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, AuthenticateOidcActionConfig, ForwardActionConfig, ProtocolEnum,
    TargetGroupStickinessConfig, TargetGroupTuple,
};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const APPLY: Duration = Duration::from_secs(120);

/// The target health states (with reasons) the new release's target group went through
/// while `apply` ran, in the order first seen.
async fn health_seen_during(
    w: &World,
    sdk: &Sdk,
    release: &str,
    group: &str,
) -> (Run, Vec<String>) {
    let apply = w.spawn(&[
        "apply",
        "--auto-approve",
        "--var",
        &format!("release={release}"),
    ]);
    let mut seen: Vec<String> = Vec::new();
    let mut arn = None;
    let deadline = Instant::now() + APPLY;
    let mut apply = apply;
    while Instant::now() < deadline && !apply.peek().0 {
        if arn.is_none() {
            arn = sdk
                .elb
                .describe_target_groups()
                .names(group)
                .send()
                .await
                .ok()
                .and_then(|o| {
                    o.target_groups()
                        .first()?
                        .target_group_arn()
                        .map(str::to_string)
                });
        }
        if let Some(arn) = &arn {
            if let Ok(out) = sdk
                .elb
                .describe_target_health()
                .target_group_arn(arn)
                .send()
                .await
            {
                for d in out.target_health_descriptions() {
                    let Some(h) = d.target_health() else { continue };
                    let state = format!(
                        "{}/{}",
                        h.state().map_or("", |s| s.as_str()),
                        h.reason().map_or("", |r| r.as_str())
                    );
                    if !seen.contains(&state) {
                        seen.push(state);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (apply.wait(APPLY), seen)
}

fn health_checked(w: &World) -> String {
    let s = &w.surroundings;
    // One health check interval of 10 s reads `initial` for 2 s at this time scale.
    format!(
        "immune {{\n  default_tags = {{ \"immune-localstack:time-scale\" = \"0.2\" }}\n}}\n{}",
        w.fleet_config(&s.source_ami, &s.load_balancer, "").replace(
            "    port                 = 8080\n",
            "    port                 = 8080\n    health_check {\n      path     = \"/healthz\"\n      interval = \"10s\"\n    }\n",
        )
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_releases_in_a_row_are_health_checked_once_they_join_the_forward_at_weight_0() {
    let w = World::new();
    let sdk = w.sdk().await;
    w.write("main.hcl", &health_checked(&w));
    for (seq, release) in [(1, "v1"), (2, "v2")] {
        let (run, seen) = health_seen_during(&w, &sdk, release, &w.group(seq)).await;
        assert_eq!(run.code, 0, "{release}: {run:?}\nhealth seen: {seen:?}");
        let at = |state: &str| seen.iter().position(|s| s.starts_with(state));
        let initial = at("initial/Elb.InitialHealthChecking")
            .unwrap_or_else(|| panic!("{release}: never health-checked: {seen:?}"));
        let healthy = at("healthy/").expect("healthy in the end");
        assert!(
            initial < healthy,
            "{release}: initial before healthy: {seen:?}"
        );
        if let Some(unused) = at("unused/") {
            assert!(
                unused < initial,
                "{release}: unused only before the join: {seen:?}"
            );
            assert!(seen[unused].ends_with("Target.NotInUse"), "{seen:?}");
        }
        assert!(
            run.stdout
                .contains("target group joined the route at weight 0"),
            "{run:?}"
        );
        assert_eq!(
            sdk.weights(&w.surroundings.listener_arn).await,
            [(w.group(seq), 100)]
        );
    }
    assert_eq!(
        sdk.groups_with_prefix(&w.prefix).await,
        [w.group(2).as_str()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_goes_out_when_every_create_takes_two_seconds_to_show() {
    let w = World::new();
    let sdk = w.sdk().await;
    let s = &w.surroundings;
    w.write(
        "main.hcl",
        &format!(
            "immune {{\n  default_tags = {{ \"immune-localstack:propagation\" = \"2\" }}\n}}\n{}",
            w.fleet_config(&s.source_ami, &s.load_balancer, "")
        ),
    );
    for (seq, release) in [(1, "v1"), (2, "v2")] {
        let run = w.immune(&[
            "apply",
            "--auto-approve",
            "--var",
            &format!("release={release}"),
        ]);
        assert_eq!(run.code, 0, "{release}: {run:?}");
        assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(seq), 100)]);
    }
    assert_eq!(
        sdk.groups_with_prefix(&w.prefix).await,
        [w.group(2).as_str()]
    );
    assert_eq!(sdk.live_instances(&w.prefix).await, 1, "no builder is left");
}

/// A listener on port 8443 that authenticates with OIDC, then forwards to the
/// placeholder with stickiness: a site behind a login. (AWS takes authenticate actions on
/// HTTPS listeners only; the emulator has no certificate to give one, and what is tested
/// here is the action list, which is the same on either.)
async fn oidc_listener(w: &World, sdk: &Sdk) -> String {
    let s = &w.surroundings;
    let oidc = AuthenticateOidcActionConfig::builder()
        .issuer("https://login.example.com")
        .authorization_endpoint("https://login.example.com/authorize")
        .token_endpoint("https://login.example.com/token")
        .user_info_endpoint("https://login.example.com/userinfo")
        .client_id("immune-test")
        .client_secret("not-shown-again")
        .build();
    let forward = ForwardActionConfig::builder()
        .target_groups(
            TargetGroupTuple::builder()
                .target_group_arn(&s.placeholder_target_group)
                .weight(1)
                .build(),
        )
        .target_group_stickiness_config(
            TargetGroupStickinessConfig::builder()
                .enabled(true)
                .duration_seconds(3600)
                .build(),
        )
        .build();
    let out = sdk
        .elb
        .create_listener()
        .load_balancer_arn(&s.load_balancer_arn)
        .protocol(ProtocolEnum::Http)
        .port(8443)
        .default_actions(
            Action::builder()
                .r#type(ActionTypeEnum::AuthenticateOidc)
                .order(1)
                .authenticate_oidc_config(oidc)
                .build(),
        )
        .default_actions(
            Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .order(2)
                .forward_config(forward)
                .build(),
        )
        .send()
        .await
        .expect("CreateListener");
    out.listeners()[0].listener_arn().unwrap().to_string()
}

/// The listener still authenticates first, then forwards to `group` alone, sticky.
async fn assert_authenticates_then_forwards(sdk: &Sdk, listener: &str, group: &str, when: &str) {
    let out = sdk
        .elb
        .describe_listeners()
        .listener_arns(listener)
        .send()
        .await
        .unwrap();
    let actions = out.listeners()[0].default_actions().to_vec();
    let mut actions: Vec<&Action> = actions.iter().collect();
    actions.sort_by_key(|a| a.order());
    assert_eq!(actions.len(), 2, "{when}: {actions:?}");
    assert_eq!(
        actions[0].r#type(),
        Some(&ActionTypeEnum::AuthenticateOidc),
        "{when}: {actions:?}"
    );
    let oidc = actions[0].authenticate_oidc_config().unwrap();
    assert_eq!(oidc.issuer(), Some("https://login.example.com"), "{when}");
    assert_eq!(oidc.client_id(), Some("immune-test"), "{when}");
    assert_eq!(
        actions[1].r#type(),
        Some(&ActionTypeEnum::Forward),
        "{when}: {actions:?}"
    );
    let forward = actions[1].forward_config().unwrap();
    let stickiness = forward
        .target_group_stickiness_config()
        .expect("stickiness kept");
    assert_eq!(
        (stickiness.enabled(), stickiness.duration_seconds()),
        (Some(true), Some(3600)),
        "{when}"
    );
    let groups: Vec<(String, i32)> = forward
        .target_groups()
        .iter()
        .filter(|t| t.weight().unwrap_or(1) > 0)
        .map(|t| {
            let arn = t.target_group_arn().unwrap();
            (
                arn.split('/').nth(1).unwrap_or(arn).to_string(),
                t.weight().unwrap_or(1),
            )
        })
        .collect();
    assert_eq!(groups, [(group.to_string(), 100)], "{when}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_behind_oidc_still_authenticates_after_a_release_and_after_a_rollback() {
    let w = World::new();
    let sdk = w.sdk().await;
    let s = &w.surroundings;
    let listener = oidc_listener(&w, &sdk).await;
    sdk.set_alarm(&s.alarm, StateValue::Ok).await;
    let gate = format!("gate \"errors\" {{\n      alarm = \"{}\"\n    }}", s.alarm);
    let config = w
        .fleet_config(&s.source_ami, &s.load_balancer, &gate)
        .replace("listener_port        = 80", "listener_port        = 8443")
        .replace("pause          = \"1s\"", "pause          = \"20s\"");
    w.write(
        "main.hcl",
        &config.replace("pause          = \"20s\"", "pause          = \"1s\""),
    );
    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");
    assert_authenticates_then_forwards(&sdk, &listener, &w.group(1), "after v1").await;

    w.write("main.hcl", &config);
    let v2 = w.spawn(&["apply", "--auto-approve", "--var", "release=v2"]);
    w.wait_for_phase("observe");
    sdk.set_alarm(&s.alarm, StateValue::Alarm).await;
    let v2 = v2.wait(APPLY);
    assert_eq!(v2.code, 3, "rolled back: {v2:?}");
    assert_authenticates_then_forwards(&sdk, &listener, &w.group(1), "after the rollback").await;
    assert!(!sdk.target_group_exists(&w.group(2)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn traffic_stickiness_keeps_users_on_one_release_through_the_canary() {
    let w = World::new();
    let sdk = w.sdk().await;
    let s = &w.surroundings;
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, "").replace(
            "    deregistration_delay = \"0s\"\n",
            "    deregistration_delay = \"0s\"\n    stickiness           = \"1h\"\n",
        ),
    );
    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");
    let out = sdk
        .elb
        .describe_listeners()
        .listener_arns(&s.listener_arn)
        .send()
        .await
        .unwrap();
    let forward = out.listeners()[0].default_actions()[0]
        .forward_config()
        .cloned()
        .expect("a forward");
    let stickiness = forward
        .target_group_stickiness_config()
        .expect("group-level stickiness");
    assert_eq!(
        (stickiness.enabled(), stickiness.duration_seconds()),
        (Some(true), Some(3600))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_composite_alarm_gate_passes_a_good_release_and_rolls_back_a_bad_one() {
    let w = World::new();
    let sdk = w.sdk().await;
    let s = &w.surroundings;
    sdk.set_alarm(&s.alarm, StateValue::Ok).await;
    let composite = format!("{}-any", w.prefix);
    sdk.cloudwatch
        .put_composite_alarm()
        .alarm_name(&composite)
        .alarm_rule(format!("ALARM(\"{}\")", s.alarm))
        .send()
        .await
        .expect("PutCompositeAlarm");
    let gate = format!("gate \"errors\" {{\n      alarm = \"{composite}\"\n    }}");
    let config = w.fleet_config(&s.source_ami, &s.load_balancer, &gate);
    w.write("main.hcl", &config);
    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "a composite alarm is found and passes: {v1:?}");

    w.write(
        "main.hcl",
        &config.replace("pause          = \"1s\"", "pause          = \"20s\""),
    );
    let v2 = w.spawn(&["apply", "--auto-approve", "--var", "release=v2"]);
    w.wait_for_phase("observe");
    sdk.set_alarm(&s.alarm, StateValue::Alarm).await;
    let v2 = v2.wait(APPLY);
    assert_eq!(v2.code, 3, "its child's ALARM fails the gate: {v2:?}");
    assert!(v2.stdout.contains(&composite), "{v2:?}");
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(1), 100)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_composite_alarm_gate_watches_each_step_as_long_as_its_slowest_child_needs() {
    let w = World::new();
    let sdk = w.sdk().await;
    let s = &w.surroundings;
    // A child on ALB's own metric, a minute a period, two to alarm: 2m, plus the minute
    // ELB takes to publish.
    let child = format!("{}-slow", w.prefix);
    sdk.cloudwatch
        .put_metric_alarm()
        .alarm_name(&child)
        .namespace("AWS/ApplicationELB")
        .metric_name("HTTPCode_Target_5XX_Count")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
        .period(60)
        .evaluation_periods(2)
        .datapoints_to_alarm(2)
        .threshold(1.0)
        .comparison_operator(
            aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanOrEqualToThreshold,
        )
        .send()
        .await
        .expect("PutMetricAlarm");
    let composite = format!("{}-any-slow", w.prefix);
    sdk.cloudwatch
        .put_composite_alarm()
        .alarm_name(&composite)
        .alarm_rule(format!("ALARM(\"{}\") OR ALARM(\"{child}\")", s.alarm))
        .send()
        .await
        .expect("PutCompositeAlarm");
    let gate = format!("gate \"errors\" {{\n      alarm = \"{composite}\"\n    }}");
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, &gate),
    );
    let plan = w.immune(&["plan", "--var", "release=v1"]);
    assert!(
        plan.stdout
            .contains("gate errors: its alarm needs 3m of data")
            && plan.stdout.contains("each step is watched for 3m"),
        "{plan:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_finishes_through_a_burst_of_503s_without_an_error_code() {
    let w = World::new();
    let sdk = w.sdk().await;
    let s = &w.surroundings;
    sdk.set_alarm(&s.alarm, StateValue::Ok).await;
    let gate = format!("gate \"errors\" {{\n      alarm = \"{}\"\n    }}", s.alarm);
    let config = w.fleet_config(&s.source_ami, &s.load_balancer, &gate);
    w.write("main.hcl", &config);
    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");

    let gateway = Gateway::start();
    w.write(
        "main.hcl",
        &config.replace("pause          = \"1s\"", "pause          = \"20s\""),
    );
    let v2 = w.spawn_at(
        &["apply", "--auto-approve", "--var", "release=v2"],
        &gateway.endpoint,
    );
    w.wait_for_phase("observe");
    // Every ELB call answers 503 with an empty body, eight in a row (the SDK tries each
    // call 4 times): what a gateway in front of AWS answers when it is overloaded.
    gateway.fail_next(8, "elasticloadbalancing");
    sdk.set_alarm(&s.alarm, StateValue::Alarm).await;
    let v2 = v2.wait(APPLY);
    let text = format!("{}\n{}", v2.stdout, v2.stderr);
    assert_eq!(v2.code, 3, "rolled back all the way: {text}");
    assert!(
        gateway.failed() >= 8,
        "the burst was served: {}",
        gateway.failed()
    );
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(1), 100)]);
    assert!(!sdk.group_exists(&w.group(2)).await, "{text}");
    assert!(!sdk.target_group_exists(&w.group(2)).await, "{text}");
}

/// A gateway in front of LocalStack on 127.0.0.1 that passes every request on, except
/// that it can answer the next few of one service with `503 Service Unavailable` and an
/// empty body, as a load balancer or proxy in front of an AWS endpoint does.
struct Gateway {
    endpoint: String,
    failing: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    service: Arc<std::sync::Mutex<String>>,
}

impl Gateway {
    fn start() -> Gateway {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let failing = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let service = Arc::new(std::sync::Mutex::new(String::new()));
        let (f, d, s) = (failing.clone(), failed.clone(), service.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (f, d, s) = (f.clone(), d.clone(), s.clone());
                std::thread::spawn(move || {
                    let _ = Gateway::serve(client, &f, &d, &s);
                });
            }
        });
        Gateway {
            endpoint,
            failing,
            failed,
            service,
        }
    }

    fn fail_next(&self, n: usize, service: &str) {
        *self.service.lock().unwrap() = service.to_string();
        self.failing.store(n, Ordering::SeqCst);
    }

    fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// One request per connection: read it, answer it, close.
    fn serve(
        mut client: std::net::TcpStream,
        failing: &AtomicUsize,
        failed: &AtomicUsize,
        service: &std::sync::Mutex<String>,
    ) -> std::io::Result<()> {
        let request = read_message(&mut client)?;
        let head = String::from_utf8_lossy(&request).to_lowercase();
        // SigV4 names the service in the credential scope: `.../us-east-1/elasticloadbalancing/aws4_request`.
        let wanted = service.lock().unwrap().clone();
        let hit = !wanted.is_empty() && head.contains(&format!("/{wanted}/aws4_request"));
        if hit
            && failing
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            failed.fetch_add(1, Ordering::SeqCst);
            client.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
            return Ok(());
        }
        let mut upstream = std::net::TcpStream::connect(ENDPOINT.trim_start_matches("http://"))?;
        upstream.write_all(&with_close(&request))?;
        // Asked to close: the answer is everything up to the end of the stream.
        let mut response = Vec::new();
        upstream.read_to_end(&mut response)?;
        client.write_all(&with_close(&response))?;
        Ok(())
    }
}

/// One HTTP/1.1 message: its head, and a body of its content-length.
fn read_message(stream: &mut std::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return Ok(data);
            }
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(data);
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// The message with `connection: close`: each connection carries one exchange.
fn with_close(message: &[u8]) -> Vec<u8> {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    let head = String::from_utf8_lossy(&message[..end]);
    let mut lines: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.to_lowercase().starts_with("connection:"))
        .collect();
    lines.push("connection: close");
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(&message[end.min(message.len())..]);
    out
}
