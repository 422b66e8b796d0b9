//! Starts LocalStack once per run (when it is not already up), gives each test its own
//! name prefix and surroundings, and runs the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const ENDPOINT: &str = "http://127.0.0.1:4566";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `localstack/start.sh` once: it returns at once when LocalStack is already healthy.
pub fn localstack() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo().join("localstack/start.sh"))
            .status()
            .expect("run localstack/start.sh");
        assert!(
            status.success(),
            "localstack/start.sh failed; see its output above"
        );
    });
}

/// Runs `localstack/surroundings.py` for `prefix` in `region`.
pub fn surroundings(prefix: &str, region: &str) -> Surroundings {
    let out = Command::new(python())
        .arg(repo().join("localstack/surroundings.py"))
        .args(["--prefix", prefix, "--region", region])
        .env("AWS_ENDPOINT_URL", ENDPOINT)
        .output()
        .expect("run surroundings.py");
    if !out.status.success() {
        // The exception's own line first: a long traceback gets cut in the middle.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        panic!(
            "surroundings.py failed: {}\n{stderr}",
            last.unwrap_or("(no output)")
        );
    }
    serde_json::from_slice(&out.stdout).expect("surroundings JSON")
}

fn python() -> PathBuf {
    let home = std::env::var_os("IMMUNE_LOCALSTACK_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/immune-localstack")
        });
    home.join("venv/bin/python")
}

/// What `localstack/surroundings.py` made for one test.
#[derive(Debug, serde::Deserialize)]
pub struct Surroundings {
    pub load_balancer: String,
    pub load_balancer_arn: String,
    pub listener_arn: String,
    pub subnets: Vec<String>,
    pub vpc_id: String,
    pub security_group: String,
    pub source_ami: String,
    pub alarm: String,
    pub placeholder_target_group: String,
    pub instance_profile: String,
    pub key_pair: String,
}

impl Surroundings {
    /// The `LoadBalancer` dimension of ELB metrics: `app/<name>/<id>`.
    pub fn load_balancer_dimension(&self) -> String {
        self.load_balancer_arn
            .split_once("loadbalancer/")
            .unwrap()
            .1
            .to_string()
    }

    pub fn placeholder_target_group_name(&self) -> String {
        self.placeholder_target_group
            .split('/')
            .nth(1)
            .unwrap()
            .to_string()
    }
}

/// A test's own corner of the cloud and of the disk.
pub struct World {
    pub prefix: String,
    pub dir: PathBuf,
    pub surroundings: Surroundings,
}

impl World {
    /// LocalStack up, surroundings made under a fresh prefix, and an empty config dir.
    pub fn new() -> World {
        localstack();
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let surroundings = surroundings(&prefix, "us-east-1");
        let dir = std::env::temp_dir().join(format!("immune-it-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        World {
            prefix,
            dir,
            surroundings,
        }
    }

    /// A fleet named after the prefix, with `extra` HCL inside its rollout block.
    pub fn fleet_config(
        &self,
        source_ami: &str,
        load_balancer: &str,
        rollout_extra: &str,
    ) -> String {
        let s = &self.surroundings;
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
    instance_type   = "t3.micro"
    subnets         = {subnets:?}
    security_groups = ["{sg}"]
    capacity {{
      min     = 1
      max     = 2
      desired = 1
    }}
  }}
  traffic {{
    load_balancer        = "{load_balancer}"
    listener_port        = 80
    port                 = 8080
    deregistration_delay = "0s"
  }}
  rollout {{
    steps          = [50, 100]
    pause          = "1s"
    healthy_within = "1m"
    poll_interval  = "200ms"
    {rollout_extra}
  }}
}}
"##,
            prefix = self.prefix,
            subnets = s.subnets,
            sg = s.security_group,
        )
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join(name), text).unwrap();
    }

    pub fn immune(&self, args: &[&str]) -> Run {
        immune_in(&self.dir, args, ENDPOINT)
    }

    pub fn group(&self, seq: u32) -> String {
        format!("{}-v{seq:03}", self.prefix)
    }

    pub fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.join(".immune/state.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    pub async fn sdk(&self) -> Sdk {
        Sdk::new().await
    }

    /// A source image of this test's own whose builders' provision script `goes`
    /// (`succeeds`, `hangs` or `fails`): LocalStack plays the builder by it (see
    /// localstack/plugin/immune_localstack_plugin/builders.py).
    pub async fn source_image_whose_provision(&self, goes: &str) -> String {
        let sdk = self.sdk().await;
        let image = sdk
            .ec2
            .register_image()
            .name(format!("{}-source-{goes}", self.prefix))
            .root_device_name("/dev/xvda")
            .send()
            .await
            .unwrap()
            .image_id
            .unwrap();
        sdk.ec2
            .create_tags()
            .resources(&image)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("immune-localstack:provision")
                    .value(goes)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        image
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `immune --chdir DIR ARGS` with LocalStack's endpoint and test credentials.
pub fn immune_command(dir: &Path, args: &[&str], endpoint: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_immune"));
    command
        .arg("--chdir")
        .arg(dir)
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("NO_COLOR", "1");
    command
}

pub fn immune_in(dir: &Path, args: &[&str], endpoint: &str) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = immune_command(dir, args, endpoint)
        .output()
        .expect("run immune");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Asks `shows` every 100 ms until it says yes, for at most 10 s.
async fn until_shows<F, Fut>(what: &str, mut shows: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if shows().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what} never showed");
}

/// SDK clients for checking what immune did, independently of immune's own cloud layer.
pub struct Sdk {
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub s3: aws_sdk_s3::Client,
}

impl Sdk {
    pub async fn new() -> Sdk {
        Sdk::in_region("us-east-1").await
    }

    pub async fn in_region(region: &str) -> Sdk {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(ENDPOINT)
            .region(aws_config::Region::new(region.to_string()))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .load()
            .await;
        Sdk {
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            autoscaling: aws_sdk_autoscaling::Client::new(&config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&config),
            ec2: aws_sdk_ec2::Client::new(&config),
            // LocalStack serves buckets by path: `bucket.127.0.0.1` does not resolve.
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&config)
                    .force_path_style(true)
                    .build(),
            ),
        }
    }

    /// A fresh bucket for one test's remote state.
    /// Puts an alarm into `state` as SetAlarmState does (LocalStack re-evaluates it about
    /// every 10 s from its data).
    pub async fn set_alarm(&self, alarm: &str, state: aws_sdk_cloudwatch::types::StateValue) {
        self.cloudwatch
            .set_alarm_state()
            .alarm_name(alarm)
            .state_value(state)
            .state_reason("set by a test")
            .send()
            .await
            .expect("SetAlarmState");
    }

    pub async fn bucket(&self, name: &str) {
        self.s3
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .expect("CreateBucket");
    }

    /// An object's text, or `None` when there is none.
    pub async fn object(&self, bucket: &str, key: &str) -> Option<String> {
        match self.s3.get_object().bucket(bucket).key(key).send().await {
            Ok(out) => {
                let bytes = out.body.collect().await.unwrap().into_bytes();
                Some(String::from_utf8(bytes.to_vec()).unwrap())
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
            Err(e) => panic!("GetObject {bucket}/{key}: {e:?}"),
        }
    }

    /// One HTTPCode_Target_5XX_Count datum of 5 for the load balancer (its `app/name/id`
    /// dimension), dated `at`: enough to put the surroundings' 5xx alarm in ALARM.
    pub async fn put_5xx(&self, load_balancer: &str, at: std::time::SystemTime) {
        use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
        self.cloudwatch
            .put_metric_data()
            .namespace("AWS/ApplicationELB")
            .metric_data(
                MetricDatum::builder()
                    .metric_name("HTTPCode_Target_5XX_Count")
                    .dimensions(
                        Dimension::builder()
                            .name("LoadBalancer")
                            .value(load_balancer)
                            .build(),
                    )
                    .value(5.0)
                    .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from(at))
                    .build(),
            )
            .send()
            .await
            .expect("PutMetricData");
    }

    /// (target group name, weight) of the listener's forward action.
    pub async fn weights(&self, listener_arn: &str) -> Vec<(String, i32)> {
        let out = self
            .elb
            .describe_listeners()
            .listener_arns(listener_arn)
            .send()
            .await
            .unwrap();
        forward_weights(&out.listeners()[0].default_actions()[0])
    }

    /// (target group name, weight) of a listener rule's forward action.
    pub async fn rule_weights(&self, rule_arn: &str) -> Vec<(String, i32)> {
        let out = self
            .elb
            .describe_rules()
            .rule_arns(rule_arn)
            .send()
            .await
            .unwrap();
        forward_weights(&out.rules()[0].actions()[0])
    }

    /// [`Sdk::until_target_group_shows`] for an Auto Scaling group.
    pub async fn until_group_shows(&self, name: &str) {
        until_shows(&format!("Auto Scaling group {name}"), || {
            self.group_exists(name)
        })
        .await
    }

    /// [`Sdk::until_target_group_shows`] for a launch template.
    pub async fn until_launch_template_shows(&self, name: &str) {
        until_shows(&format!("launch template {name}"), || async {
            self.ec2
                .describe_launch_templates()
                .launch_template_names(name)
                .send()
                .await
                .is_ok_and(|o| !o.launch_templates().is_empty())
        })
        .await
    }

    pub async fn group_exists(&self, name: &str) -> bool {
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .unwrap();
        !out.auto_scaling_groups().is_empty()
    }

    /// Waits until ELB shows a target group a test just made: it is eventually
    /// consistent, as the emulator is, and an operator would not have run immune within
    /// that moment.
    pub async fn until_target_group_shows(&self, name: &str) {
        until_shows(&format!("target group {name}"), || {
            self.target_group_exists(name)
        })
        .await
    }

    pub async fn target_group_exists(&self, name: &str) -> bool {
        self.elb
            .describe_target_groups()
            .names(name)
            .send()
            .await
            .is_ok_and(|o| !o.target_groups().is_empty())
    }

    /// Groups whose names start with `prefix`: what a test run created.
    pub async fn groups_with_prefix(&self, prefix: &str) -> Vec<String> {
        // Every page: other tests' groups share the emulator.
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .autoscaling
                .describe_auto_scaling_groups()
                .set_next_token(token)
                .send()
                .await
                .unwrap();
            names.extend(
                out.auto_scaling_groups()
                    .iter()
                    .filter_map(|g| g.auto_scaling_group_name())
                    .filter(|n| n.starts_with(prefix))
                    .map(str::to_string),
            );
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return names;
            }
        }
    }

    /// Instances tagged for the fleet that are not terminated.
    pub async fn live_instances(&self, fleet: &str) -> usize {
        let out = self
            .ec2
            .describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:immune:fleet")
                    .values(fleet)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| {
                !matches!(
                    i.state().and_then(|s| s.name()),
                    Some(aws_sdk_ec2::types::InstanceStateName::Terminated)
                        | Some(aws_sdk_ec2::types::InstanceStateName::ShuttingDown)
                )
            })
            .count()
    }
}

/// An `immune` command running in the background, its output going to files in the
/// test's directory (no pipe can fill up while the test polls).
pub struct Background {
    child: std::process::Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl World {
    /// Starts `immune ARGS` without waiting for it; stdin is closed, so it is never
    /// interactive.
    pub fn spawn(&self, args: &[&str]) -> Background {
        self.spawn_at(args, ENDPOINT)
    }

    /// [`World::spawn`] with AWS at `endpoint` (a gateway in front of LocalStack).
    pub fn spawn_at(&self, args: &[&str], endpoint: &str) -> Background {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let stdout = std::env::temp_dir().join(format!("immune-it-{}-{id}.out", self.prefix));
        let stderr = std::env::temp_dir().join(format!("immune-it-{}-{id}.err", self.prefix));
        let child = immune_command(&self.dir, args, endpoint)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start immune");
        Background {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits until the fleet's recorded rollout is in `phase` (`observe`, `drain`, ...).
    pub fn wait_for_phase(&self, phase: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        while self.fleet_state()["rollout"]["phase"]["name"] != phase {
            assert!(
                std::time::Instant::now() < deadline,
                "the rollout never reached {phase}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The fleet's recorded state (`fleets.<prefix>`), or null before the first save.
    pub fn fleet_state(&self) -> serde_json::Value {
        std::fs::read_to_string(self.dir.join(".immune/state.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .map(|state| state["fleets"][&self.prefix].clone())
            .unwrap_or_default()
    }
}

impl Background {
    fn output(&self, code: i32) -> Run {
        Run {
            code,
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ctrl-C, as an operator's terminal sends it.
    pub fn interrupt(&self) {
        interrupt(self.pid());
    }

    /// Another signal by name (`TERM`, `KILL`).
    pub fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// Its output so far with exit code -1, or everything once it has exited.
    pub fn peek(&mut self) -> (bool, Run) {
        match self.child.try_wait().expect("poll immune") {
            Some(status) => (true, self.output(status.code().unwrap_or(-1))),
            None => (false, self.output(-1)),
        }
    }

    /// Waits for it to exit; kills it and panics after `timeout`.
    pub fn wait(mut self, timeout: std::time::Duration) -> Run {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let (true, run) = self.peek() {
                return run;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "immune did not finish within {timeout:?}; killed it\n{:?}",
                    self.output(-1)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // A test that panicked must not leave an apply running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.stdout);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// (target group name, weight) of a forward action, weighted or plain.
fn forward_weights(action: &aws_sdk_elasticloadbalancingv2::types::Action) -> Vec<(String, i32)> {
    // ARNs read targetgroup/<name>/<id>.
    let name = |arn: &str| arn.split('/').nth(1).unwrap().to_string();
    let weighted: Vec<(String, i32)> = action
        .forward_config()
        .map(|f| f.target_groups())
        .unwrap_or_default()
        .iter()
        .map(|t| (name(t.target_group_arn().unwrap()), t.weight().unwrap_or(1)))
        .collect();
    match action.target_group_arn() {
        Some(arn) if weighted.is_empty() => vec![(name(arn), 100)],
        _ => weighted,
    }
}

/// Sends SIGINT (Ctrl-C) to a process.
pub fn interrupt(pid: u32) {
    signal(pid, "INT");
}

/// Sends a signal by name (`TERM`, `KILL`) to a process.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}
