//! Taking the state lock for a command: waiting for it (`--lock-timeout`) and saying so
//! when a lock left by a process that is gone was taken over.

use crate::config::{parse_duration, show_duration};
use crate::state::{Backend, LockGuard, LockInfo, StateError};
use std::time::{Duration, Instant};

/// How often a waiting command asks for the lock again.
const POLL: Duration = Duration::from_secs(1);

/// The flag of every command that takes the lock.
#[derive(Debug, Clone, clap::Args)]
pub struct LockArgs {
    /// How long to wait for a state lock another command holds (`30s`, `5m`); 0 refuses
    /// at once.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub lock_timeout: Duration,
}

/// Takes the lock for `operation`, asking again every second while another process
/// holds it, for up to `wait`. A lock that cannot be read is not waited for: it will
/// not go away by itself.
pub async fn take(
    backend: &dyn Backend,
    operation: &str,
    wait: Duration,
) -> Result<LockGuard, StateError> {
    let deadline = Instant::now() + wait;
    let mut told = false;
    loop {
        let held = match backend.lock(operation).await {
            Ok(guard) => {
                if let Some(stale) = guard.taken_over() {
                    eprintln!("{}", takeover_notice(stale));
                }
                return Ok(guard);
            }
            Err(StateError::Locked(held)) => held,
            Err(e) => return Err(e),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StateError::Locked(held));
        }
        if !told {
            eprintln!(
                "waiting up to {} for the state lock held by {}",
                show_duration(wait),
                held.describe()
            );
            told = true;
        }
        tokio::time::sleep(POLL.min(left)).await;
    }
}

fn takeover_notice(stale: &LockInfo) -> String {
    format!(
        "note: took over the state lock {} left by {}, whose process is gone",
        stale.id,
        stale.describe()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::LocalBackend;

    fn scratch() -> (std::path::PathBuf, LocalBackend) {
        let dir = std::env::temp_dir().join(format!("immune-wait-{}", uuid::Uuid::new_v4()));
        let backend = LocalBackend::new(dir.join("state.json"));
        (dir, backend)
    }

    #[tokio::test]
    async fn a_held_lock_is_waited_for_until_the_timeout_and_taken_once_released() {
        let (dir, backend) = scratch();
        let held = backend.lock("apply").unwrap();

        let start = Instant::now();
        let refused = take(&backend, "apply", Duration::from_millis(1500)).await;
        assert!(matches!(refused, Err(StateError::Locked(_))));
        assert!(start.elapsed() >= Duration::from_millis(1500), "it waited");

        let refused = take(&backend, "apply", Duration::ZERO).await;
        assert!(matches!(refused, Err(StateError::Locked(_))));
        assert!(
            start.elapsed() < Duration::from_millis(2500),
            "0 refuses at once"
        );

        let release = async {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            held.release().await.unwrap();
        };
        let (taken, ()) = tokio::join!(take(&backend, "apply", Duration::from_secs(30)), release);
        assert!(taken.is_ok(), "taken once the holder released it");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_takeover_notice_names_the_lock_and_its_holder() {
        let stale = LockInfo {
            id: "abc".into(),
            operation: "apply".into(),
            who: "ops@box".into(),
            pid: 42,
            host: "box".into(),
            created: "2026-01-01T00:00:00Z".into(),
            ..LockInfo::default()
        };
        assert_eq!(
            takeover_notice(&stale),
            "note: took over the state lock abc left by ops@box (apply since 2026-01-01T00:00:00Z, pid 42 on box), whose process is gone"
        );
    }
}
