//! State backends on LocalStack: a release kept in an S3 bucket, the state lock refusing a
//! second apply on both backends and naming its holder, and writers racing on S3 where
//! exactly one wins. Outcomes are read back from the bucket or the file, not inferred
//! from exit codes.

use crate::harness::{immune_command, Sdk, World, ENDPOINT};
use immune::state::{Backend, S3Backend, State, StateError};
use serde_json::Value;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "team/web/state.json";

/// Where a test keeps its state.
enum Store {
    Local,
    S3 { bucket: String },
}

impl Store {
    /// An S3 store in a fresh bucket of the test's own.
    async fn s3(w: &World, sdk: &Sdk) -> Store {
        let bucket = format!("{}-state", w.prefix);
        sdk.bucket(&bucket).await;
        Store::S3 { bucket }
    }

    /// The `immune` block that selects this store.
    fn config(&self) -> String {
        match self {
            Store::Local => String::new(),
            Store::S3 { bucket } => format!(
                "immune {{\n  backend \"s3\" {{\n    bucket = \"{bucket}\"\n    key    = \"{KEY}\"\n    region = \"us-east-1\"\n  }}\n}}\n"
            ),
        }
    }

    /// The state document, or the lock's contents while someone holds it.
    async fn read(&self, w: &World, sdk: &Sdk, lock: bool) -> Option<Value> {
        let text = match self {
            Store::Local => {
                let name = if lock { "state.lock" } else { "state.json" };
                std::fs::read_to_string(w.dir.join(".immune").join(name)).ok()
            }
            Store::S3 { bucket } => {
                let key = if lock {
                    format!("{KEY}.lock")
                } else {
                    KEY.into()
                };
                sdk.object(bucket, &key).await
            }
        };
        text.map(|t| serde_json::from_str(&t).expect("a JSON document"))
    }

    async fn state(&self, w: &World, sdk: &Sdk) -> Option<Value> {
        self.read(w, sdk, false).await
    }

    async fn lock(&self, w: &World, sdk: &Sdk) -> Option<Value> {
        self.read(w, sdk, true).await
    }
}

fn write_config(w: &World, store: &Store, pause: &str) {
    let s = &w.surroundings;
    let fleet = w.fleet_config(&s.source_ami, &s.load_balancer, "").replace(
        "pause          = \"1s\"",
        &format!("pause          = \"{pause}\""),
    );
    w.write("main.hcl", &format!("{}{fleet}", store.config()));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_apply_with_the_s3_backend_keeps_state_in_the_bucket_and_reads_it_back() {
    let w = World::new();
    let sdk = w.sdk().await;
    let store = Store::s3(&w, &sdk).await;
    write_config(&w, &store, "1s");

    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");

    let state = store.state(&w, &sdk).await.expect("the state object");
    assert!(state["serial"].as_u64().unwrap() > 1, "{state}");
    assert_eq!(
        uuid::Uuid::parse_str(state["lineage"].as_str().unwrap())
            .unwrap()
            .get_version_num(),
        4,
        "{state}"
    );
    assert_eq!(state["fleets"][&w.prefix]["active"]["name"], w.group(1));
    assert!(store.lock(&w, &sdk).await.is_none(), "the lock is released");
    assert!(
        !w.dir.join(".immune").exists(),
        "nothing is written locally"
    );

    // The next commands read the state back from the bucket.
    let again = w.immune(&["plan", "--detailed-exitcode", "--var", "release=v1"]);
    assert_eq!(again.code, 0, "no changes after apply: {again:?}");
    let list = w.immune(&["state", "list"]);
    assert_eq!(list.code, 0, "{list:?}");
    assert!(list.stdout.contains(&w.group(1)), "{list:?}");
}

/// A first apply holds the lock while it observes a long step; a second is refused with
/// the holder's details; Ctrl-C on the first releases the lock.
async fn a_second_apply_is_refused_while_the_first_runs(w: &World, sdk: &Sdk, store: &Store) {
    write_config(w, store, "30s");
    let first = w.spawn(&["apply", "--auto-approve", "--var", "release=v1"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let state = store.state(w, sdk).await.unwrap_or_default();
        if state["fleets"][&w.prefix]["rollout"]["phase"]["name"] == "observe" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first apply never reached a step"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = store
        .lock(w, sdk)
        .await
        .expect("the first apply holds the lock");
    assert_eq!(held["operation"], "apply", "{held}");
    assert_eq!(held["pid"], first.pid(), "{held}");

    let second = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(second.code, 1, "{second:?}");
    let id = held["id"].as_str().unwrap();
    for shown in [
        "state is locked by".to_string(),
        "(apply since ".to_string(),
        format!("pid {}", first.pid()),
        format!("run `immune state force-unlock {id}`"),
    ] {
        assert!(second.stderr.contains(&shown), "{shown:?} in {second:?}");
    }
    assert_eq!(
        store.lock(w, sdk).await.unwrap()["id"],
        id,
        "the refused apply leaves the holder's lock alone"
    );

    first.interrupt();
    let out = first.wait(Duration::from_secs(60));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("interrupted"), "{out:?}");
    assert!(
        store.lock(w, sdk).await.is_none(),
        "Ctrl-C released the lock"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_apply_is_refused_with_the_holder_on_the_local_backend() {
    let w = World::new();
    let sdk = w.sdk().await;
    a_second_apply_is_refused_while_the_first_runs(&w, &sdk, &Store::Local).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_apply_is_refused_with_the_holder_on_the_s3_backend() {
    let w = World::new();
    let sdk = w.sdk().await;
    let store = Store::s3(&w, &sdk).await;
    a_second_apply_is_refused_while_the_first_runs(&w, &sdk, &store).await;
}

/// `immune apply` processes started together on one S3 state: the one that gets the lock
/// waits at the confirmation prompt, every other is refused naming it.
#[tokio::test(flavor = "multi_thread")]
async fn of_immune_processes_racing_for_the_s3_lock_exactly_one_gets_it() {
    const RACERS: usize = 6;
    let w = World::new();
    let sdk = w.sdk().await;
    let store = Store::s3(&w, &sdk).await;
    write_config(&w, &store, "1s");

    // Output goes to files, so the test can watch the winner reach its prompt.
    let output = |i: usize, stream: &str| w.dir.join(format!("racer-{i}.{stream}"));
    let read = |i: usize, stream: &str| std::fs::read_to_string(output(i, stream)).unwrap();
    let mut racers: Vec<Child> = (0..RACERS)
        .map(|i| {
            immune_command(&w.dir, &["apply", "--var", "release=v1"], ENDPOINT)
                .env("IMMUNE_CONFIRM_FROM_PIPE", "1")
                .stdin(Stdio::piped())
                .stdout(std::fs::File::create(output(i, "out")).unwrap())
                .stderr(std::fs::File::create(output(i, "err")).unwrap())
                .spawn()
                .expect("start immune")
        })
        .collect();

    // The refused exit at once; the winner plans and waits for an answer.
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = loop {
        let running: Vec<usize> = (0..RACERS)
            .filter(|&i| racers[i].try_wait().unwrap().is_none())
            .collect();
        if running.len() <= 1 {
            break running;
        }
        assert!(Instant::now() < deadline, "the refused racers did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        running.len(),
        1,
        "one racer holds the lock and waits; stderr: {:?}",
        (0..RACERS).map(|i| read(i, "err")).collect::<Vec<_>>()
    );
    let winner = running[0];
    let held = store.lock(&w, &sdk).await.expect("the winner's lock");
    assert_eq!(held["pid"], racers[winner].id(), "{held}");
    let id = held["id"].as_str().unwrap();
    for loser in (0..RACERS).filter(|&i| i != winner) {
        let code = racers[loser].wait().unwrap().code();
        let stderr = read(loser, "err");
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("state is locked by"), "{stderr}");
        assert!(
            stderr.contains(&format!("immune state force-unlock {id}")),
            "every loser names the winner's lock: {stderr}"
        );
    }

    // Ctrl-C at the prompt cancels, and the lock goes with it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read(winner, "out").contains("Enter a value") {
        assert!(
            racers[winner].try_wait().unwrap().is_none(),
            "the winner exited: {}",
            read(winner, "err")
        );
        assert!(Instant::now() < deadline, "the winner never asked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::harness::interrupt(racers[winner].id());
    let code = racers[winner].wait().unwrap().code();
    let stderr = read(winner, "err");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("Apply cancelled."), "{stderr}");
    assert!(store.lock(&w, &sdk).await.is_none(), "the lock is released");
    assert!(store.state(&w, &sdk).await.is_none(), "nothing was applied");
}

// ---------------------------------------------------------------------------------------
// The library's S3 backend, driven directly.

/// A bucket of the test's own and a backend over it; LocalStack needs no surroundings.
async fn s3_backend(sdk: &Sdk, bucket: &str) -> S3Backend {
    S3Backend::new(sdk.s3.clone(), bucket, KEY)
}

async fn fresh_bucket() -> (Sdk, String) {
    crate::harness::localstack();
    let sdk = Sdk::new().await;
    let bucket = format!("t{}-state", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    sdk.bucket(&bucket).await;
    (sdk, bucket)
}

/// A state with one fleet named `by`, so the stored document says who wrote it.
fn marked(mut state: State, by: &str) -> State {
    state.fleets.insert(by.to_string(), Default::default());
    state
}

#[tokio::test(flavor = "multi_thread")]
async fn two_s3_writers_that_read_the_same_serial_never_both_write() {
    let (sdk, bucket) = fresh_bucket().await;
    let a = s3_backend(&sdk, &bucket).await;
    let b = s3_backend(&sdk, &bucket).await;

    // Both read "no state yet": only one may create it.
    let mut first_a = marked(a.load().await.unwrap(), "a");
    let mut first_b = marked(b.load().await.unwrap(), "b");
    a.save(&mut first_a).await.unwrap();
    let err = b.save(&mut first_b).await.unwrap_err();
    assert!(matches!(err, StateError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("nothing was written"), "{err}");

    // Both read serial 1: the first to save wins, the other is refused.
    let mut from_a = marked(a.load().await.unwrap(), "a2");
    let mut from_b = marked(b.load().await.unwrap(), "b2");
    assert_eq!((from_a.serial, from_b.serial), (1, 1));
    a.save(&mut from_a).await.unwrap();
    let err = b.save(&mut from_b).await.unwrap_err();
    assert!(matches!(err, StateError::Conflict { .. }), "{err}");

    let stored: State = serde_json::from_str(&sdk.object(&bucket, KEY).await.unwrap()).unwrap();
    assert_eq!(stored, from_a, "the object holds the winner's document");
    assert!(!stored.fleets.contains_key("b2"));

    // A writer that reads again goes on from the winner's document.
    let mut again = b.load().await.unwrap();
    assert_eq!(again.serial, 2);
    b.save(&mut again).await.unwrap();
    assert_eq!(a.load().await.unwrap().serial, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn of_s3_writers_saving_at_once_exactly_one_wins() {
    const WRITERS: usize = 8;
    let (sdk, bucket) = fresh_bucket().await;
    let seed = s3_backend(&sdk, &bucket).await;
    let mut state = seed.load().await.unwrap();
    seed.save(&mut state).await.unwrap();

    // Every writer reads serial 1 before any of them saves.
    let mut writers = Vec::new();
    for i in 0..WRITERS {
        let backend = s3_backend(&sdk, &bucket).await;
        let state = marked(backend.load().await.unwrap(), &format!("writer-{i}"));
        assert_eq!(state.serial, 1);
        writers.push((backend, state));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (backend, state) in writers {
        tasks.spawn(async move {
            let mut state = state;
            let result = backend.save(&mut state).await;
            (state, result)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (state, result) = joined.unwrap();
        match result {
            Ok(()) => winners.push(state),
            Err(StateError::Conflict { .. }) => {}
            Err(e) => panic!("a refused writer gets the conflict error, not {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer of {WRITERS} wins");
    let stored: State = serde_json::from_str(&sdk.object(&bucket, KEY).await.unwrap()).unwrap();
    assert_eq!(stored, winners[0]);
    assert_eq!(stored.serial, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_s3_lock_refuses_a_second_holder_and_breaks_only_with_its_id() {
    let (sdk, bucket) = fresh_bucket().await;
    let backend = s3_backend(&sdk, &bucket).await;
    let lock_key = format!("{KEY}.lock");

    let guard = backend.lock("apply").await.unwrap();
    let stored: Value =
        serde_json::from_str(&sdk.object(&bucket, &lock_key).await.unwrap()).unwrap();
    assert_eq!(stored["id"], guard.id());
    assert_eq!(stored["pid"], std::process::id());
    match backend.lock("unlock").await {
        Err(StateError::Locked(holder)) => {
            assert_eq!(holder.id, guard.id());
            assert!(holder.describe().contains("(apply since "), "{holder:?}");
        }
        other => panic!(
            "expected Locked, got {:?}",
            other.map(|g| g.id().to_string())
        ),
    }
    guard.release().await.unwrap();
    assert!(sdk.object(&bucket, &lock_key).await.is_none(), "released");

    let stale = backend.lock("apply").await.unwrap();
    let id = stale.id().to_string();
    std::mem::forget(stale); // a process that died holding the lock
    assert!(matches!(
        backend.force_unlock("not-the-id").await,
        Err(StateError::WrongLockId { .. })
    ));
    assert!(sdk.object(&bucket, &lock_key).await.is_some());
    backend.force_unlock(&id).await.unwrap();
    assert!(sdk.object(&bucket, &lock_key).await.is_none());
    assert!(matches!(
        backend.force_unlock(&id).await,
        Err(StateError::NotLocked)
    ));
}

/// Dropping the guard (an early return, a cancelled future) releases the lock too, even
/// on a single-threaded runtime where blocking on the release would deadlock; and it
/// leaves alone a lock that is no longer its own.
#[tokio::test]
async fn a_dropped_s3_lock_guard_releases_only_its_own_lock() {
    let (sdk, bucket) = fresh_bucket().await;
    let backend = s3_backend(&sdk, &bucket).await;
    let lock_key = format!("{KEY}.lock");

    drop(backend.lock("apply").await.unwrap());
    assert!(
        sdk.object(&bucket, &lock_key).await.is_none(),
        "released on drop"
    );

    let broken = backend.lock("apply").await.unwrap();
    backend.force_unlock(broken.id()).await.unwrap();
    let taken_since = backend.lock("apply").await.unwrap();
    drop(broken);
    let stored: Value =
        serde_json::from_str(&sdk.object(&bucket, &lock_key).await.unwrap()).unwrap();
    assert_eq!(
        stored["id"],
        taken_since.id(),
        "a broken lock's guard does not release the lock taken since"
    );
    taken_since.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_travel_through_the_bucket() {
    use immune::state::{Answer, AnswerKind};
    let (sdk, bucket) = fresh_bucket().await;
    let apply_side = s3_backend(&sdk, &bucket).await;
    let operator_side = s3_backend(&sdk, &bucket).await;
    let answer = Answer {
        kind: AnswerKind::Approve,
        group: "web-v002".into(),
        by: "ops".into(),
        at: "now".into(),
    };
    operator_side.post_answer("web", &answer).await.unwrap();
    assert!(sdk
        .object(&bucket, &format!("{KEY}.answers/web.json"))
        .await
        .is_some());
    assert_eq!(
        apply_side.pending_answer("web", "web-v002").await.unwrap(),
        Some(answer.clone())
    );
    assert_eq!(
        apply_side.pending_answer("web", "web-v003").await.unwrap(),
        None,
        "an answer about another group is stale"
    );
    assert_eq!(
        apply_side.pending_answer("web", "web-v002").await.unwrap(),
        None,
        "and was dropped"
    );
    operator_side.post_answer("web", &answer).await.unwrap();
    apply_side.clear_answer("web").await.unwrap();
    assert_eq!(
        apply_side.pending_answer("web", "web-v002").await.unwrap(),
        None,
        "a cleared answer is gone"
    );
}

/// A lock object as an apply on this host leaves it when it is killed.
async fn leave_s3_lock(sdk: &Sdk, bucket: &str, text: &str) {
    sdk.s3
        .put_object()
        .bucket(bucket)
        .key(format!("{KEY}.lock"))
        .body(text.as_bytes().to_vec().into())
        .send()
        .await
        .expect("PutObject");
}

fn dead_holder() -> immune::state::LockInfo {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    immune::state::LockInfo {
        pid,
        ..immune::state::LockInfo::new("apply")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn of_processes_taking_over_a_dead_holders_s3_lock_exactly_one_gets_it() {
    const TAKERS: usize = 6;
    let (sdk, bucket) = fresh_bucket().await;
    let stale = dead_holder();
    leave_s3_lock(&sdk, &bucket, &stale.to_json()).await;
    let alone = s3_backend(&sdk, &bucket).await;
    assert_eq!(alone.lock_holder().await.unwrap(), Some(stale.clone()));
    let guard = alone.lock("apply").await.unwrap();
    assert_eq!(guard.taken_over(), Some(&stale));
    guard.release().await.unwrap();

    leave_s3_lock(&sdk, &bucket, &dead_holder().to_json()).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TAKERS {
        let backend = s3_backend(&sdk, &bucket).await;
        tasks.spawn(async move {
            backend
                .lock("apply")
                .await
                .map(|guard| std::mem::ManuallyDrop::new(guard).id().to_string())
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            Ok(id) => winners.push(id),
            Err(StateError::Locked(_)) => {}
            Err(e) => panic!("a refused taker is told who holds it, not {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of {TAKERS} takes it over");
    let stored: Value =
        serde_json::from_str(&sdk.object(&bucket, &format!("{KEY}.lock")).await.unwrap()).unwrap();
    assert_eq!(stored["id"], winners[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_s3_lock_refuses_and_force_unlock_corrupt_removes_it() {
    let (sdk, bucket) = fresh_bucket().await;
    let backend = s3_backend(&sdk, &bucket).await;
    leave_s3_lock(&sdk, &bucket, "not a lock").await;
    let err = backend.lock("apply").await.err().expect("refused");
    assert!(matches!(err, StateError::CorruptLock { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("s3://{bucket}/{KEY}.lock cannot be read")),
        "{err}"
    );
    assert!(matches!(
        backend.lock_holder().await,
        Err(StateError::CorruptLock { .. })
    ));
    backend
        .force_unlock(immune::state::CORRUPT_ID)
        .await
        .unwrap();
    assert!(sdk.object(&bucket, &format!("{KEY}.lock")).await.is_none());
    backend
        .lock("apply")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn init_on_a_fresh_directory_says_what_it_found_and_checks_the_credentials() {
    let w = World::new();
    let s = &w.surroundings;
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, ""),
    );
    let init = w.immune(&["init"]);
    assert_eq!(init.code, 0, "{init:?}");
    assert!(
        init.stdout.contains("Configuration: 1 fleet (in "),
        "{init:?}"
    );
    assert!(init.stdout.contains("(no state yet)"), "{init:?}");
    assert!(
        init.stdout
            .contains("AWS us-east-1 (1 fleet): account 000000000000 as arn:aws:"),
        "{init:?}"
    );
    assert!(init.stdout.contains("nothing to migrate"), "{init:?}");
    assert!(
        !w.dir.join(".immune/state.json").exists(),
        "init writes no state of its own"
    );

    // Without credentials: said as such, with where immune looks for them.
    let out = crate::harness::immune_command(&w.dir, &["init"], crate::harness::ENDPOINT)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no usable AWS credentials"), "{stderr}");
    assert!(stderr.contains("set AWS_PROFILE"), "{stderr}");
}
