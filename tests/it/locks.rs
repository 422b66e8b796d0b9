//! The state lock and the state's files from the command line, offline: a lock whose
//! process is gone is taken over, a corrupt one has a working recovery, `--lock-timeout`
//! waits, and a reader that closes stdout early ends a command quietly (issue 10).

use crate::harness::{immune_command, Run};
use serde_json::json;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Nothing listens on port 9: a command that tried to reach AWS would fail.
const OFFLINE: &str = "http://127.0.0.1:9";

/// A directory with the quickstart configuration (fleet `web`) and a state in which
/// `web` is locked after a rollback, with `decisions` lines of history.
fn locked_fleet(decisions: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("immune-locks-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join(".immune")).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart");
    for name in ["main.hcl", "bake.sh", "boot.sh"] {
        std::fs::copy(example.join(name), dir.join(name)).unwrap();
    }
    let decisions: Vec<_> = (0..decisions)
        .map(|i| json!({"at": "2026-01-01T00:00:00Z", "what": format!("decision {i} of a long rollout, with its words")}))
        .collect();
    let state = json!({
        "version": 2,
        "lineage": uuid::Uuid::new_v4().to_string(),
        "serial": 1,
        "fleets": {"web": {
            "seq": 1,
            "active": null,
            "rollout": null,
            "lock": {"reason": "gate errors in ALARM", "release": "v1", "at": "2026-01-01T00:00:00Z"},
            "history": [{
                "group": "web-v001",
                "release": "v1",
                "started_at": "2026-01-01T00:00:00Z",
                "finished_at": "2026-01-01T00:10:00Z",
                "outcome": "rolled_back",
                "decisions": decisions,
            }],
        }},
    });
    std::fs::write(dir.join(".immune/state.json"), state.to_string()).unwrap();
    dir
}

fn immune(dir: &Path, args: &[&str]) -> Run {
    crate::harness::immune_in(dir, args, OFFLINE)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// A lock file as an apply with this pid on this host leaves it.
fn leave_lock(dir: &Path, pid: u32) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let lock = json!({
        "id": id,
        "operation": "apply",
        "who": "ops@ci",
        "pid": pid,
        "host": hostname(),
        "created": "2026-01-01T00:00:00Z",
    });
    std::fs::write(dir.join(".immune/state.lock"), lock.to_string()).unwrap();
    id
}

/// The pid of a process that has exited and been reaped.
fn gone_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn unlock(dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["unlock", "web", "--reason", "alarm understood"];
    args.extend_from_slice(extra);
    immune(dir, &args)
}

fn fleet_is_locked(dir: &Path) -> bool {
    let text = std::fs::read_to_string(dir.join(".immune/state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    !state["fleets"]["web"]["lock"].is_null()
}

#[test]
fn a_lock_left_by_a_process_gone_from_this_host_is_taken_over_with_a_notice() {
    let dir = locked_fleet(1);
    let pid = gone_pid();
    let id = leave_lock(&dir, pid);

    let run = unlock(&dir, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let notice = format!(
        "note: took over the state lock {id} left by ops@ci (apply since 2026-01-01T00:00:00Z, pid {pid} on {}), whose process is gone",
        hostname()
    );
    assert!(run.stderr.contains(&notice), "{run:?}");
    assert!(!fleet_is_locked(&dir), "the command ran: {run:?}");
    assert!(!dir.join(".immune/state.lock").exists(), "and released it");
    let backup = std::fs::read_to_string(dir.join(".immune/state.json.backup")).unwrap();
    assert!(
        backup.contains("gate errors in ALARM"),
        "the previous state is kept"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_lock_of_a_live_process_or_another_host_is_refused_as_before() {
    let dir = locked_fleet(1);
    let mut live = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let id = leave_lock(&dir, live.id());
    let run = unlock(&dir, &[]);
    live.kill().unwrap();
    live.wait().unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("state is locked by ops@ci"), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("run `immune state force-unlock {id}`")),
        "{run:?}"
    );

    let text = std::fs::read_to_string(dir.join(".immune/state.lock")).unwrap();
    let elsewhere = text.replace(&hostname(), "another-host");
    std::fs::write(dir.join(".immune/state.lock"), elsewhere).unwrap();
    let run = unlock(&dir, &[]);
    assert_eq!(run.code, 1, "the dead pid is another host's: {run:?}");
    assert!(run.stderr.contains("on another-host)"), "{run:?}");
    assert!(fleet_is_locked(&dir));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_corrupt_lock_names_a_recovery_that_works() {
    let dir = locked_fleet(1);
    std::fs::write(dir.join(".immune/state.lock"), "{\"id\": \"abc\", \"pi").unwrap();
    let run = unlock(&dir, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("state.lock cannot be read"), "{run:?}");
    assert!(
        run.stderr
            .contains("run `immune state force-unlock corrupt` to remove it"),
        "{run:?}"
    );

    let broken = immune(&dir, &["state", "force-unlock", "corrupt"]);
    assert_eq!(broken.code, 0, "{broken:?}");
    assert!(!dir.join(".immune/state.lock").exists());
    let run = unlock(&dir, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn lock_timeout_waits_for_a_held_lock_and_gives_up_when_it_stays() {
    let dir = locked_fleet(1);
    let mut live = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    leave_lock(&dir, live.id());

    let start = Instant::now();
    let run = unlock(&dir, &["--lock-timeout", "2s"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(start.elapsed() >= Duration::from_secs(2), "it waited");
    assert!(
        run.stderr
            .contains("waiting up to 2s for the state lock held by ops@ci"),
        "{run:?}"
    );
    assert!(run.stderr.contains("state is locked by"), "{run:?}");

    // The holder ends while the next command waits: its lock is then taken over.
    let waiting = immune_command(
        &dir,
        &["unlock", "web", "--reason", "r", "--lock-timeout", "1m"],
        OFFLINE,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    live.kill().unwrap();
    live.wait().unwrap();
    let out = waiting.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("waiting up to 1m"), "{stderr}");
    assert!(stderr.contains("took over the state lock"), "{stderr}");
    assert!(!fleet_is_locked(&dir));
    std::fs::remove_dir_all(dir).unwrap();
}

/// `immune history web | head -1` panicked on the broken pipe.
#[test]
fn a_reader_that_closes_stdout_early_ends_history_quietly() {
    // Far more than a pipe holds, so the writer is still writing when the reader goes.
    let dir = locked_fleet(5000);
    let mut child = immune_command(&dir, &["history", "web"], OFFLINE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.contains("release v1 (web-v001)"), "{first}");
    drop(reader);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert_eq!(stderr, "", "no panic report");
    std::fs::remove_dir_all(dir).unwrap();
}
