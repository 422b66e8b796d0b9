//! The state lock, the same for every backend: who holds it is written into the lock (a
//! file or an object), so a refused command can name the holder, and the guard gives it
//! back on every way out of a command.

use super::StateError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What a lock records about its holder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LockInfo {
    pub id: String,
    pub operation: String,
    pub who: String,
    pub pid: u32,
    /// The machine, since a pid means nothing to an operator on another one.
    pub host: String,
    pub created: String,
}

impl LockInfo {
    /// A fresh lock for `operation` by this process.
    pub fn new(operation: &str) -> Self {
        LockInfo {
            id: uuid::Uuid::new_v4().to_string(),
            operation: operation.to_string(),
            who: super::operator(),
            pid: std::process::id(),
            host: super::hostname(),
            created: super::now(),
        }
    }

    /// Reads a lock's contents. An unreadable lock still refuses: the holder is shown
    /// with question marks instead.
    pub fn parse(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_default()
    }

    pub fn to_json(&self) -> String {
        format!(
            "{}\n",
            serde_json::to_string(self).expect("lock info serializes")
        )
    }

    /// The refusal a second command gets: who, doing what, since when, where.
    pub fn held(&self) -> StateError {
        let or_unknown = |s: &str| {
            if s.is_empty() {
                "?".to_string()
            } else {
                s.to_string()
            }
        };
        let host = if self.host.is_empty() {
            String::new()
        } else {
            format!(" on {}", self.host)
        };
        StateError::Locked {
            holder: format!(
                "{} ({} since {}, pid {}{host})",
                or_unknown(&self.who),
                or_unknown(&self.operation),
                or_unknown(&self.created),
                self.pid
            ),
            id: or_unknown(&self.id),
        }
    }
}

/// How a backend gives its lock back.
#[async_trait]
pub(crate) trait Unlock: Send + Sync {
    async fn unlock(&self) -> Result<(), StateError>;
    /// For `Drop`, which cannot await and may run outside any runtime.
    fn unlock_blocking(&self);
}

/// Holds the state lock. Call [`LockGuard::release`] on the way out to hear about a
/// failure; dropping it (early returns, panics, a cancelled future) releases it too.
pub struct LockGuard {
    id: String,
    held: Option<Box<dyn Unlock>>,
}

impl LockGuard {
    pub(crate) fn new(id: String, held: Box<dyn Unlock>) -> Self {
        LockGuard {
            id,
            held: Some(held),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub async fn release(mut self) -> Result<(), StateError> {
        match self.held.take() {
            Some(held) => held.unlock().await,
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            held.unlock_blocking();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_holder_and_the_id() {
        let info = LockInfo {
            id: "abc".into(),
            operation: "apply".into(),
            who: "ops".into(),
            pid: 42,
            host: "box".into(),
            created: "2026-01-01T00:00:00Z".into(),
        };
        let again = LockInfo::parse(&info.to_json());
        assert_eq!(again, info);
        let StateError::Locked { holder, id } = again.held() else {
            panic!("a refusal")
        };
        assert_eq!(
            holder,
            "ops (apply since 2026-01-01T00:00:00Z, pid 42 on box)"
        );
        assert_eq!(id, "abc");
    }

    #[test]
    fn an_unreadable_lock_still_refuses() {
        let StateError::Locked { holder, id } = LockInfo::parse("garbage").held() else {
            panic!("a refusal")
        };
        assert_eq!(holder, "? (? since ?, pid 0)");
        assert_eq!(id, "?");
    }
}
